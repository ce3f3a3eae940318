//! A Lua value on the stack as JSON, read with the C API alone: the fast
//! paths of `blackboard.set` and `bus.send` (see `fast`).
//!
//! Through mlua, `to_json` paid for every entry of a table: a protected
//! call per table walked (twice: the size check, then the conversion),
//! each key and value moved through mlua's reference thread and back.
//! Here the table is walked with `lua_next` in place. Only what converts
//! plainly is taken: tables without a metatable (or with the array one
//! mlua gives the tables it makes from JSON), string or integer keys, and
//! booleans, finite numbers, UTF-8 strings, `json.null` and such tables as
//! values. Anything else, and a value past `max_value_bytes` by
//! `check_shape`'s count, is `None`: the caller takes the slow path, which
//! converts the rest or raises the error naming the place.
//!
//! None of the functions called can raise a Lua error (`lua_next` only on
//! a key not from the table, `lua_tolstring` is called on strings only, so
//! it converts nothing), so no `longjmp` crosses the Rust frames here.

use std::ffi::c_void;
use std::os::raw::c_int;

use mlua::ffi;
use serde_json::{Map, Number, Value};

/// Deepest nesting taken here (the slow path takes up to 100 levels).
const MAX_DEPTH: usize = 32;

/// The value at `idx` as `to_json` makes it, when it converts plainly (see
/// the module); `arrays` is the index of the array metatable (an upvalue).
///
/// # Safety
/// `state` is a running Lua state and `idx` a valid index in it.
pub(super) unsafe fn value_at(
    state: *mut ffi::lua_State,
    idx: c_int,
    arrays: c_int,
    limit: usize,
) -> Option<Value> {
    unsafe {
        if ffi::lua_type(state, idx) != ffi::LUA_TTABLE {
            return scalar_at(state, idx);
        }
        let top = ffi::lua_gettop(state);
        let mut walk = Walk {
            state,
            arrays,
            limit,
            size: 0,
            open: Vec::new(),
        };
        let value = walk.table(ffi::lua_absindex(state, idx));
        // Leaves the stack as it was whatever the walk stopped at.
        ffi::lua_settop(state, top);
        value
    }
}

/// The value at `idx` as `to_json` would make it, for the values that
/// need no walk: nil, booleans, finite numbers, UTF-8 strings, `json.null`.
///
/// # Safety
/// As [`value_at`].
pub(super) unsafe fn scalar_at(state: *mut ffi::lua_State, idx: c_int) -> Option<Value> {
    unsafe {
        match ffi::lua_type(state, idx) {
            ffi::LUA_TNONE | ffi::LUA_TNIL => Some(Value::Null),
            ffi::LUA_TBOOLEAN => Some(Value::Bool(ffi::lua_toboolean(state, idx) != 0)),
            ffi::LUA_TNUMBER if ffi::lua_isinteger(state, idx) != 0 => Some(Value::from(
                ffi::lua_tointegerx(state, idx, std::ptr::null_mut()),
            )),
            ffi::LUA_TNUMBER => {
                Number::from_f64(ffi::lua_tonumberx(state, idx, std::ptr::null_mut()))
                    .map(Value::Number)
            }
            ffi::LUA_TSTRING => string_at(state, idx).map(|s| Value::String(s.to_owned())),
            ffi::LUA_TLIGHTUSERDATA if ffi::lua_touserdata(state, idx).is_null() => {
                Some(Value::Null)
            }
            _ => None,
        }
    }
}

/// The bytes of the string at `idx`, when it is a string (never a number
/// converted in place).
///
/// # Safety
/// As [`value_at`].
pub(super) unsafe fn bytes_at<'a>(state: *mut ffi::lua_State, idx: c_int) -> Option<&'a [u8]> {
    unsafe {
        if ffi::lua_type(state, idx) != ffi::LUA_TSTRING {
            return None;
        }
        let mut len = 0usize;
        let p = ffi::lua_tolstring(state, idx, &mut len);
        Some(std::slice::from_raw_parts(p as *const u8, len))
    }
}

/// The string at `idx`, when it is a UTF-8 string.
///
/// # Safety
/// As [`value_at`].
pub(super) unsafe fn string_at<'a>(state: *mut ffi::lua_State, idx: c_int) -> Option<&'a str> {
    unsafe { std::str::from_utf8(bytes_at(state, idx)?).ok() }
}

/// A table key taken here.
enum Key {
    Index(i64),
    Name(String),
}

struct Walk {
    state: *mut ffi::lua_State,
    arrays: c_int,
    limit: usize,
    /// `check_shape`'s count so far.
    size: usize,
    /// Tables being converted, to refuse a cycle (the slow path names it).
    open: Vec<*const c_void>,
}

impl Walk {
    /// Adds `n` to the count; false once past the limit.
    fn count(&mut self, n: usize) -> bool {
        self.size += n;
        self.size <= self.limit
    }

    /// What a key or value adds to `check_shape`'s count.
    unsafe fn weight(&self, idx: c_int) -> usize {
        unsafe {
            match ffi::lua_type(self.state, idx) {
                ffi::LUA_TSTRING => ffi::lua_rawlen(self.state, idx) + 2,
                ffi::LUA_TTABLE => 2,
                _ => 1,
            }
        }
    }

    /// The table at the absolute index `t`.
    unsafe fn table(&mut self, t: c_int) -> Option<Value> {
        unsafe {
            let state = self.state;
            if self.open.len() >= MAX_DEPTH || ffi::lua_checkstack(state, 4) == 0 {
                return None;
            }
            if ffi::lua_getmetatable(state, t) != 0 {
                let arrays = ffi::lua_rawequal(state, -1, self.arrays) != 0;
                ffi::lua_settop(state, -2);
                if !arrays {
                    return None;
                }
            }
            let id = ffi::lua_topointer(state, t);
            if self.open.contains(&id) {
                return None;
            }
            self.open.push(id);
            let mut entries = Vec::new();
            ffi::lua_pushnil(state);
            while ffi::lua_next(state, t) != 0 {
                let (k, v) = (self.weight(-2), self.weight(-1));
                if !self.count(k + v) {
                    return None;
                }
                let key = match ffi::lua_type(state, -2) {
                    ffi::LUA_TNUMBER if ffi::lua_isinteger(state, -2) != 0 => {
                        Key::Index(ffi::lua_tointegerx(state, -2, std::ptr::null_mut()))
                    }
                    ffi::LUA_TSTRING => Key::Name(string_at(state, -2)?.to_owned()),
                    _ => return None,
                };
                let value = if ffi::lua_type(state, -1) == ffi::LUA_TTABLE {
                    self.table(ffi::lua_absindex(state, -1))?
                } else {
                    scalar_at(state, -1)?
                };
                entries.push((key, value));
                ffi::lua_settop(state, -2);
            }
            self.open.pop();
            Some(match list_length(&entries) {
                Some(len) => {
                    let mut items = vec![Value::Null; len];
                    for (k, v) in entries {
                        if let Key::Index(i) = k {
                            items[i as usize - 1] = v;
                        }
                    }
                    Value::Array(items)
                }
                None => {
                    let mut map = Map::new();
                    for (k, v) in entries {
                        let name = match k {
                            Key::Index(i) => i.to_string(),
                            Key::Name(name) => name,
                        };
                        map.insert(name, v);
                    }
                    Value::Object(map)
                }
            })
        }
    }
}

/// `convert::list_length` over the keys taken here.
fn list_length(entries: &[(Key, Value)]) -> Option<usize> {
    let mut max = 0usize;
    for (k, _) in entries {
        match k {
            Key::Index(i) if *i >= 1 => max = max.max(*i as usize),
            _ => return None,
        }
    }
    super::convert::is_list(max, entries.len()).then_some(max)
}

#[cfg(test)]
mod tests {
    use mlua::{Lua, LuaSerdeExt, Value as LuaValue};
    use serde_json::json;

    use super::*;

    /// `value_at` of `value`, with mlua's array metatable as the arrays' one.
    fn fast(lua: &Lua, value: &LuaValue, limit: usize) -> Option<Value> {
        let mut out = None;
        // SAFETY: the two arguments are on the stack; nothing is left on it.
        unsafe {
            lua.exec_raw::<()>((value, lua.array_metatable()), |state| {
                let top = ffi::lua_gettop(state);
                out = value_at(state, top - 1, top, limit);
                ffi::lua_settop(state, top - 2);
            })
            .expect("the raw call runs");
        }
        out
    }

    fn lua() -> Lua {
        let lua = Lua::new();
        lua.globals().set("null", LuaValue::NULL).expect("set");
        lua
    }

    #[test]
    fn what_it_takes_it_converts_as_to_json_does() {
        let lua = lua();
        let sources = [
            r#"{step = 1, status = "done", by = "peer-1"}"#,
            "{1, 2, 3}",
            "{}",
            "{[1] = 1, [3] = 3}",
            "{[1] = 1, [100] = 2}",
            "{1, 2, x = 3}",
            "{[0] = 1, [-1] = 2}",
            "{a = {b = {c = {1.5, true, false, null}}}}",
            r#"{s = "x\0y", ["k\n"] = "é"}"#,
            "{n = 2^53, m = 1e300, i = math.mininteger}",
            "{{}, {{}}, {x = {}}}",
            "42",
            r#""text""#,
            "null",
        ];
        for src in sources {
            let value: LuaValue = lua.load(src).eval().expect(src);
            let slow = crate::lua_api::to_json(&lua, value.clone(), || src.into()).expect(src);
            assert_eq!(fast(&lua, &value, usize::MAX), Some(slow), "{src}");
        }
        // Tables made from JSON carry the array metatable: taken too.
        let made = lua
            .to_value(&json!({"list": [1, [2, 3]], "o": {"e": []}}))
            .expect("to_value");
        let slow = crate::lua_api::to_json(&lua, made.clone(), || "made".into()).expect("made");
        assert_eq!(fast(&lua, &made, usize::MAX), Some(slow));
    }

    #[test]
    fn anything_else_is_left_to_the_slow_path() {
        let lua = lua();
        let sources = [
            "{f = function() end}",
            "{n = 0/0}",
            "{[1.5] = 1}",
            "{[true] = 1}",
            "setmetatable({}, {})",
            "{x = setmetatable({}, {})}",
            "(function() local t = {} t.t = t return t end)()",
            r#"{s = "\xff"}"#,
            r#"{["\xff"] = 1}"#,
            "coroutine.create(print)",
        ];
        for src in sources {
            let value: LuaValue = lua.load(src).eval().expect(src);
            assert_eq!(fast(&lua, &value, usize::MAX), None, "{src}");
        }
        // Past the limit by `check_shape`'s count (and deeper than taken here).
        let long: LuaValue = lua
            .load(r#"{s = string.rep("x", 100)}"#)
            .eval()
            .expect("long");
        assert_eq!(fast(&lua, &long, 50), None);
        assert!(fast(&lua, &long, 200).is_some());
        let deep: LuaValue = lua
            .load("local t = {} for _ = 1, 40 do t = {t} end return t")
            .eval()
            .expect("deep");
        assert_eq!(fast(&lua, &deep, usize::MAX), None);
    }
}
