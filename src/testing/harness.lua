-- The test harness of `orrery test`, run in each spec file's VM before the
-- spec: describe/it/pending/before_each/after_each, luassert-like `assert`,
-- and spies. The runner (src/testing/runner.rs) reads the tests it collected
-- and runs them one by one with `H.run(i)`, each in a fresh world.
local pretty = require("pretty")

local H = {}

local tests = {}
local root = { name = nil, befores = {}, afters = {} }
local stack = { root }
local running = false
local spies = {}

-- "spec/x_spec.lua:12": the innermost caller outside the harness and the
-- host's own Lua (error's levels, read through pcall, start inside them).
local function where()
  for level = 3, 20 do
    local _, at = pcall(error, "", level)
    at = tostring(at)
    if at == "" then break end
    if not at:find("^orrery test harness:") and not at:find("^%[orrery%]") then
      return (at:gsub(": $", ""))
    end
  end
  return "?"
end

local function arg(fname, name, value, expected)
  if type(value) ~= expected then
    error(("%s: expected %s '%s', got %s"):format(fname, expected, name, type(value)), 3)
  end
end

local function collecting(fname)
  if running then
    error(fname .. ": tests are declared at the top of the spec or inside describe, not inside a test", 3)
  end
end

--- Groups tests under a name; `fn` runs at once, to declare them.
function describe(name, fn)
  arg("describe", "name", name, "string")
  arg("describe", "fn", fn, "function")
  collecting("describe")
  local block = { name = name, befores = {}, afters = {} }
  stack[#stack + 1] = block
  local ok, err = pcall(fn)
  stack[#stack] = nil
  if not ok then error(err, 0) end
end

local function add(name, fn, pending)
  local blocks, names = {}, {}
  for i, b in ipairs(stack) do
    blocks[i] = b
    if b.name then names[#names + 1] = b.name end
  end
  names[#names + 1] = name
  tests[#tests + 1] = {
    name = table.concat(names, " > "),
    fn = fn,
    pending = pending,
    blocks = blocks,
    at = where(),
  }
end

--- A test: `fn` runs in a fresh world (store, agents, clock, LLM script).
function it(name, fn)
  arg("it", "name", name, "string")
  arg("it", "fn", fn, "function")
  collecting("it")
  add(name, fn, false)
end

--- A test written down but not run yet (reported as pending).
function pending(name, fn)
  arg("pending", "name", name, "string")
  collecting("pending")
  add(name, fn, true)
end

--- Runs `fn` before each test of the enclosing describe (outer blocks' first).
function before_each(fn)
  arg("before_each", "fn", fn, "function")
  collecting("before_each")
  local b = stack[#stack].befores
  b[#b + 1] = fn
end

--- Runs `fn` after each test of the enclosing describe, also when it failed.
function after_each(fn)
  arg("after_each", "fn", fn, "function")
  collecting("after_each")
  local a = stack[#stack].afters
  a[#a + 1] = fn
end

-- Values ----------------------------------------------------------------------

local function show(v)
  if type(v) == "table" then
    local text = pretty.format(v)
    if #text > 2000 then text = text:sub(1, 2000) .. "\n...(cut)" end
    return text
  elseif type(v) == "string" then
    return ("%q"):format(v)
  end
  return tostring(v)
end

local function path_of(path, k)
  if type(k) == "string" and k:match("^[%a_][%w_]*$") then
    return path == "" and k or (path .. "." .. k)
  end
  return path .. "[" .. show(k) .. "]"
end

-- Every place where `a` (expected) and `b` (found) differ, as lines.
local function differences(a, b, path, out, seen)
  if a == b then return out end
  if type(a) ~= "table" or type(b) ~= "table" then
    out[#out + 1] = ("  %s: expected %s, found %s"):format(path == "" and "value" or path,
      type(a) == "table" and "a table" or show(a), type(b) == "table" and "a table" or show(b))
    return out
  end
  if seen[a] == b then return out end
  seen[a] = b
  local keys = {}
  for k in pairs(a) do keys[#keys + 1] = k end
  for k in pairs(b) do
    if a[k] == nil then keys[#keys + 1] = k end
  end
  table.sort(keys, function(x, y)
    local tx, ty = type(x), type(y)
    if tx ~= ty then return tx < ty end
    if tx == "number" or tx == "string" then return x < y end
    return tostring(x) < tostring(y)
  end)
  for _, k in ipairs(keys) do
    if #out >= 20 then
      out[#out + 1] = "  ..."
      break
    end
    differences(a[k], b[k], path_of(path, k), out, seen)
  end
  return out
end

local function same(a, b)
  return #differences(a, b, "", {}, {}) == 0
end

H.same = same

local function fail(message, level)
  error(message, level + 1)
end

-- Assertions ------------------------------------------------------------------

local stock_assert = assert
local A = {}

--- Fails unless `found == expected` (no deep comparison: see assert.same).
function A.equals(expected, found, message)
  if expected ~= found then
    fail(("%sexpected %s\n  found    %s"):format(message and (message .. ": ") or "",
      show(expected), show(found)), 2)
  end
end
A.equal = A.equals

--- Fails unless `found` has the same content as `expected`, deeply.
function A.same(expected, found, message)
  local diff = differences(expected, found, "", {}, {})
  if #diff > 0 then
    fail(("%sexpected the same as %s\n  found %s\n  differences (expected, found):\n%s"):format(
      message and (message .. ": ") or "", show(expected), show(found), table.concat(diff, "\n")), 2)
  end
end

function A.not_equals(unexpected, found, message)
  if unexpected == found then
    fail(("%sexpected anything but %s"):format(message and (message .. ": ") or "", show(found)), 2)
  end
end

function A.not_same(unexpected, found, message)
  if same(unexpected, found) then
    fail(("%sexpected anything but %s"):format(message and (message .. ": ") or "", show(found)), 2)
  end
end

function A.truthy(value, message)
  if not value then
    fail(("%sexpected a truthy value\n  found    %s"):format(message and (message .. ": ") or "", show(value)), 2)
  end
end

function A.falsy(value, message)
  if value then
    fail(("%sexpected a falsy value (nil or false)\n  found    %s"):format(
      message and (message .. ": ") or "", show(value)), 2)
  end
end

function A.is_true(value, message)
  if value ~= true then
    fail(("%sexpected true\n  found    %s"):format(message and (message .. ": ") or "", show(value)), 2)
  end
end

function A.is_false(value, message)
  if value ~= false then
    fail(("%sexpected false\n  found    %s"):format(message and (message .. ": ") or "", show(value)), 2)
  end
end

function A.is_nil(value, message)
  if value ~= nil then
    fail(("%sexpected nil\n  found    %s"):format(message and (message .. ": ") or "", show(value)), 2)
  end
end

function A.is_not_nil(value, message)
  if value == nil then
    fail(("%sexpected a value, found nil"):format(message and (message .. ": ") or ""), 2)
  end
end

--- Fails unless `text` (a string) matches the Lua pattern `pattern`.
function A.matches(pattern, text, message)
  if type(text) ~= "string" or not text:find(pattern) then
    fail(("%sexpected a string matching %s\n  found    %s"):format(
      message and (message .. ": ") or "", show(pattern), show(text)), 2)
  end
end

--- Fails unless `fn()` raises; with `pattern`, an error whose text contains it
--- (as plain text, or as a Lua pattern). Returns the error.
function A.has_error(fn, pattern, message)
  if type(fn) ~= "function" then
    fail("assert.has_error: expected function 'fn', got " .. type(fn), 2)
  end
  local ok, err = pcall(fn)
  if ok then
    fail(("%sexpected an error%s\n  found    no error"):format(message and (message .. ": ") or "",
      pattern and (" containing " .. show(pattern)) or ""), 2)
  end
  local text = tostring(err)
  if pattern and not (text:find(pattern, 1, true) or text:find(pattern)) then
    fail(("%sexpected an error containing %s\n  found    %s"):format(
      message and (message .. ": ") or "", show(pattern), show(text)), 2)
  end
  return err
end
A.error = A.has_error
A.has_errors = A.has_error

function A.has_no_error(fn, message)
  local ok, err = pcall(fn)
  if not ok then
    fail(("%sexpected no error\n  found    %s"):format(message and (message .. ": ") or "", tostring(err)), 2)
  end
end

-- Spies -----------------------------------------------------------------------

local Spy = {}
Spy.__index = Spy

local function new_spy(fn, target, name)
  local s = setmetatable({ calls = {}, target = target, name = name, original = fn }, Spy)
  s.fn = function(...)
    s.calls[#s.calls + 1] = table.pack(...)
    if fn then return fn(...) end
  end
  spies[#spies + 1] = s
  spies[s.fn] = s
  return s
end

--- Puts the original function back.
function Spy:revert()
  if self.target and self.target[self.name] == self.fn then
    self.target[self.name] = self.original
  end
end

--- Forgets the calls seen so far.
function Spy:clear()
  self.calls = {}
end

--- The arguments of call `n` (default: the last) as a list.
function Spy:args(n)
  local call = self.calls[n or #self.calls]
  return call and table.move(call, 1, call.n, 1, {}) or nil
end

spy = {}

--- A spy around `fn` (or a function doing nothing): call `s.fn`, read `s.calls`.
function spy.new(fn)
  return new_spy(fn)
end

--- Replaces `target[name]` (a host function such as `bus.send`, or one of a
--- module) by a spy that records each call and then calls the original.
--- Reverted when the test ends.
function spy.on(target, name)
  if type(target) ~= "table" then error("spy.on: expected table 'target', got " .. type(target), 2) end
  if type(name) ~= "string" then error("spy.on: expected string 'name', got " .. type(name), 2) end
  local fn = target[name]
  if type(fn) ~= "function" then
    error(("spy.on: %s is not a function (%s)"):format(name, type(fn)), 2)
  end
  local s = new_spy(fn, target, name)
  target[name] = s.fn
  return s
end

local function spy_of(s)
  local found = spies[s] or (getmetatable(s) == Spy and s)
  if not found then error("assert.spy: expected a spy (from spy.on or spy.new)", 3) end
  return found
end

local function describe_calls(s)
  if #s.calls == 0 then return "no calls" end
  local lines = {}
  for i, c in ipairs(s.calls) do
    local args = {}
    for j = 1, c.n do args[j] = show(c[j]) end
    lines[i] = ("  call %d: (%s)"):format(i, table.concat(args, ", "))
  end
  return table.concat(lines, "\n")
end

--- Assertions about a spy: `assert.spy(s).was_called([n])`,
--- `.was_not_called()`, `.was_called_with(...)` (any call, arguments compared
--- deeply; fewer expected arguments than passed compare the first ones).
function A.spy(s)
  local sp = spy_of(s)
  local label = sp.name and ("'" .. sp.name .. "'") or "the spy"
  local checks = {}
  function checks.was_called(n)
    if (n == nil and #sp.calls == 0) or (n ~= nil and #sp.calls ~= n) then
      fail(("expected %s to be called %s\n  found    %s"):format(label,
        n and (n .. " time(s)") or "at least once", describe_calls(sp)), 2)
    end
  end
  function checks.was_not_called()
    if #sp.calls > 0 then
      fail(("expected %s not to be called\n  found    %s"):format(label, describe_calls(sp)), 2)
    end
  end
  function checks.was_called_with(...)
    local want = table.pack(...)
    for _, c in ipairs(sp.calls) do
      local all = true
      for j = 1, want.n do
        if not same(want[j], c[j]) then all = false break end
      end
      if all then return end
    end
    local args = {}
    for j = 1, want.n do args[j] = show(want[j]) end
    fail(("expected %s to be called with (%s)\n  found    %s"):format(label, table.concat(args, ", "),
      describe_calls(sp)), 2)
  end
  return checks
end
A.stub = A.spy

-- luassert's word chains: assert.are.same, assert.is.truthy, assert.is_not_nil ...
A.are, A.is, A.has = A, A, A

assert = setmetatable(A, {
  __call = function(_, v, message, ...)
    if not v then error(message or "assertion failed!", 2) end
    return v, message, ...
  end,
})
H.stock_assert = stock_assert

-- Running ---------------------------------------------------------------------

--- The tests collected: name, place, pending.
function H.tests()
  local list = {}
  for i, t in ipairs(tests) do
    list[i] = { name = t.name, at = t.at, pending = t.pending }
  end
  return list
end

local function text_of(err)
  if type(err) == "table" and err.message then return tostring(err.message) end
  local text = tostring(err)
  if type(err) ~= "string" then
    -- Not by its address, a new one each run: as Lua's own `lua.c` says it.
    local kind = text:match("^(.-): 0x%x%x%x%x%x%x%x%x+$")
    if kind then
      -- A `__name` that is not one plain word (a line feed in it, say) is
      -- named by the value's type.
      if not kind:match("^[^%s:%c]+$") then kind = type(err) end
      text = "(error object is a " .. kind .. " value)"
    end
  end
  return text
end

--- Runs test `i`: the before_each functions (outer blocks first), the test,
--- then the after_each functions (inner first, also after a failure); every
--- spy is reverted. Returns true, or false and the first error's text, with
--- an after_each's own error after it (a cleanup that fails too is news).
function H.run(i)
  local t = tests[i]
  running = true
  local failure
  local ok = true
  for _, block in ipairs(t.blocks) do
    for _, fn in ipairs(block.befores) do
      if ok then
        local done, err = pcall(fn)
        if not done then ok, failure = false, "in before_each: " .. text_of(err) end
      end
    end
  end
  if ok then
    local done, err = pcall(t.fn)
    if not done then ok, failure = false, text_of(err) end
  end
  for b = #t.blocks, 1, -1 do
    for _, fn in ipairs(t.blocks[b].afters) do
      local done, err = pcall(fn)
      if not done then
        if ok then
          ok, failure = false, "in after_each: " .. text_of(err)
        else
          failure = failure .. "\nalso in after_each: " .. text_of(err)
        end
      end
    end
  end
  for j = #spies, 1, -1 do
    local s = spies[j]
    s:revert()
    spies[s.fn] = nil
    spies[j] = nil
  end
  running = false
  return ok, failure
end

return H
