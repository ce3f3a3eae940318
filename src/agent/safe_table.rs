//! `table.insert`, `table.remove` and `table.move` written in Lua.
//!
//! The stock C functions shift or copy elements in a C loop whose length the
//! script chooses: `#t` through a `__len` metamethod (which may answer 1e15,
//! and something else the second time it is asked), or plain indices given as
//! numbers or numeric strings (`table.move({}, "1", "1e15", 1)`). No hook can
//! interrupt a C loop, and one that allocates nothing is not stopped by the
//! heap limit either. Written in Lua, every step is a VM instruction, so the
//! time budget bounds them whatever their arguments: bounded by construction,
//! not by a guard that must read the arguments exactly as the C function would.
//!
//! Results and error messages follow Lua 5.4's (`position out of bounds`,
//! `wrong number of arguments to 'insert'`, `too many elements to move`,
//! `destination wrap around`); the first argument must be a table (the stock
//! functions also accept other values with the right metamethods).

use mlua::{Lua, Table};

/// The host chunk of this file, loaded with the others (see
/// [`crate::lua_api::chunks::HostChunks`]).
pub(super) const CHUNKS: &[(&str, &str)] = &[("table", TABLE)];

const TABLE: &str = r##"
-- Captured now: a script that replaces a global or the string methods later
-- does not change these functions.
local type, select, error, tonumber = type, select, error, tonumber
local tointeger, mtype, ult, maxinteger = math.tointeger, math.type, math.ult, math.maxinteger
local format = string.format

local function int(v, arg, fname)
  local n = tointeger(v)
  if n then return n end
  if type(v) == "number" or (type(v) == "string" and tonumber(v)) then
    error(format("bad argument #%d to '%s' (number has no integer representation)", arg, fname), 3)
  end
  error(format("bad argument #%d to '%s' (number expected, got %s)", arg, fname,
    v == nil and "no value" or type(v)), 3)
end

local function bad_table(t, arg, fname)
  error(format("bad argument #%d to '%s' (table expected, got %s)", arg, fname,
    t == nil and "no value" or type(t)), 3)
end

-- `#t` as an integer; the checks are inline in the callers (a Lua function
-- call costs more than the rest of an append).
local function bad_length()
  error("object length is not an integer", 3)
end

local function insert(t, ...)
  if type(t) ~= "table" then bad_table(t, 1, "insert") end
  local e = #t
  if mtype(e) ~= "integer" then
    e = tointeger(e)
    if e == nil then bad_length() end
  end
  e = e + 1
  local nargs = select("#", ...)
  if nargs == 1 then
    t[e] = ...
    return
  elseif nargs ~= 2 then
    error("wrong number of arguments to 'insert'", 2)
  end
  local pos, v = ...
  pos = int(pos, 2, "insert")
  if not ult(pos - 1, e) then
    error("bad argument #2 to 'insert' (position out of bounds)", 2)
  end
  for i = e, pos + 1, -1 do
    t[i] = t[i - 1]
  end
  t[pos] = v
end

local function remove(t, pos)
  if type(t) ~= "table" then bad_table(t, 1, "remove") end
  local size = #t
  if mtype(size) ~= "integer" then
    size = tointeger(size)
    if size == nil then bad_length() end
  end
  if pos == nil then
    pos = size
  else
    pos = int(pos, 2, "remove")
  end
  if pos ~= size and ult(size, pos - 1) then
    error("bad argument #2 to 'remove' (position out of bounds)", 2)
  end
  local result = t[pos]
  while pos < size do
    t[pos] = t[pos + 1]
    pos = pos + 1
  end
  t[pos] = nil
  return result
end

local function move(a1, f, e, t, a2)
  f = int(f, 2, "move")
  e = int(e, 3, "move")
  t = int(t, 4, "move")
  if a2 == nil then a2 = a1 end
  if type(a1) ~= "table" then bad_table(a1, 1, "move") end
  if type(a2) ~= "table" then bad_table(a2, 5, "move") end
  if e >= f then
    if not (f > 0 or e < maxinteger + f) then
      error("bad argument #3 to 'move' (too many elements to move)", 2)
    end
    local n = e - f + 1
    if t > maxinteger - n + 1 then
      error("bad argument #4 to 'move' (destination wrap around)", 2)
    end
    if t > e or t > f or a1 ~= a2 then
      for i = 0, n - 1 do a2[t + i] = a1[f + i] end
    else
      for i = n - 1, 0, -1 do a2[t + i] = a1[f + i] end
    end
  end
  return a2
end

return insert, remove, move
"##;

/// Replaces `table.insert`, `table.remove` and `table.move` in `lua`'s
/// `table` (the table `package.loaded.table` is too).
pub fn install(lua: &Lua) -> mlua::Result<()> {
    let table: Table = lua.globals().get("table")?;
    let (insert, remove, move_): (mlua::Function, mlua::Function, mlua::Function) =
        crate::lua_api::chunks::host(lua, "table", TABLE)?.call(())?;
    table.raw_set("insert", insert)?;
    table.raw_set("remove", remove)?;
    table.raw_set("move", move_)
}
