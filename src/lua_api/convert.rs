//! Lua values <-> JSON, the form everything on the blackboard and the bus
//! takes.
//!
//! Lua to JSON is written out here rather than left to serde, so that a value
//! JSON cannot hold is refused with its place named (`a function at
//! steps[2].run`), NaN and infinities are refused instead of turning into
//! null, a table mixing list items and named keys becomes an object, and the
//! read-only `task` tables are stored with their contents.

use mlua::{Lua, LuaSerdeExt, Table, Value as LuaValue};
use serde_json::{Map, Number, Value};

use super::arg_err;

/// Name of the metatable field under which a read-only proxy (the `task`
/// table) keeps the table it shows, so it is stored by its contents.
pub(crate) const FROZEN: &str = "__orrery_frozen";

/// Deepest nesting of tables stored.
const MAX_DEPTH: usize = 100;

/// A list with keys past this many times its item count is stored as an
/// object, so `{[1000000] = true}` is not a million nulls.
const MAX_SPARSENESS: usize = 2;

const STORABLE: &str = "only nil, booleans, numbers, strings and tables of those";

/// Converts a Lua value to JSON; on failure the error names the call (`what`,
/// built only then), the place in the value and what is wrong there.
pub(crate) fn to_json(
    lua: &Lua,
    value: LuaValue,
    what: impl FnOnce() -> String,
) -> mlua::Result<Value> {
    if let LuaValue::Table(t) = &value {
        let limit = lua
            .app_data_ref::<MaxValueBytes>()
            .map_or(usize::MAX, |l| l.0);
        if let Err(e) = check_shape(t, limit) {
            return Err(arg_err(&what(), e));
        }
    }
    let mut walk = Walk {
        path: Vec::new(),
        open: Vec::new(),
    };
    walk.value(&value)
        .map_err(|refusal| arg_err(&what(), refusal))
}

/// [`to_json`], with nil as `None` (a key set to nil is deleted, a
/// compare-and-set against nil expects no value).
pub(crate) fn to_json_or_nil(
    lua: &Lua,
    value: LuaValue,
    what: impl FnOnce() -> String,
) -> mlua::Result<Option<Value>> {
    if value.is_nil() {
        return Ok(None);
    }
    to_json(lua, value, what).map(Some)
}

/// The `max_value_bytes` of the agent, kept in the VM for [`to_json`].
#[derive(Clone, Copy)]
pub(crate) struct MaxValueBytes(pub(crate) usize);

/// Walks a table before it is converted and refuses values that cannot fit in
/// `limit` bytes of JSON (nesting past [`MAX_DEPTH`] and cycles are left to the
/// conversion, which names where they are), counting every occurrence of a shared sub-table (a
/// table holding the same table twice, 64 times over, would expand to 2^64
/// entries in the host, where nothing could interrupt it).
fn check_shape(root: &Table, limit: usize) -> Result<(), String> {
    let mut stack = vec![(root.clone(), 1usize)];
    let mut size = 0usize;
    let mut too_large = false;
    while let Some((t, depth)) = stack.pop() {
        if depth > MAX_DEPTH + 1 {
            // Too deep or a cycle: the walk that follows names it better.
            continue;
        }
        // `for_each`, not `pairs`: one protected call per table instead of
        // one per entry, a visible share of every `blackboard.set`.
        let walked = t.for_each::<mlua::Value, mlua::Value>(|k, v| {
            for x in [k, v] {
                size += match x {
                    mlua::Value::String(s) => s.as_bytes().len() + 2,
                    mlua::Value::Table(inner) => {
                        stack.push((inner, depth + 1));
                        2
                    }
                    _ => 1,
                };
            }
            if size > limit {
                too_large = true;
                // Stops the iteration; the error said is the one below.
                return Err(mlua::Error::runtime("too large"));
            }
            Ok(())
        });
        if too_large {
            return Err(format!(
                "value is larger than max_value_bytes ({limit} bytes)"
            ));
        }
        walked.map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Converts JSON to a Lua value: objects and arrays become tables, a null
/// inside them becomes `json.null`, a null on its own becomes nil.
pub fn to_lua(lua: &Lua, value: &Value) -> mlua::Result<LuaValue> {
    match value {
        Value::Null => Ok(LuaValue::Nil),
        other => lua.to_value(other),
    }
}

/// One key on the way from the value's root to where the walk is.
enum Step {
    Index(i64),
    Key(String),
}

struct Walk {
    path: Vec<Step>,
    /// Tables being converted, outermost first, to catch cycles.
    open: Vec<*const std::ffi::c_void>,
}

impl Walk {
    fn value(&mut self, v: &LuaValue) -> Result<Value, String> {
        Ok(match v {
            LuaValue::Nil => Value::Null,
            LuaValue::LightUserData(p) if p.0.is_null() => Value::Null,
            LuaValue::Boolean(b) => Value::Bool(*b),
            LuaValue::Integer(i) => Value::Number((*i).into()),
            LuaValue::Number(n) => match Number::from_f64(*n) {
                Some(n) => Value::Number(n),
                None => {
                    return Err(
                        self.refuse(&format!("the number {n}"), "JSON has no NaN or infinity")
                    );
                }
            },
            LuaValue::String(s) => match s.to_str() {
                // `str::to_owned`: `to_string` would go through `Display`.
                Ok(text) => Value::String(str::to_owned(&text)),
                Err(_) => return Err(self.refuse("a string that is not valid UTF-8", STORABLE)),
            },
            LuaValue::Table(t) => self.table(t)?,
            LuaValue::Function(_) => return Err(self.refuse("a function", STORABLE)),
            LuaValue::Thread(_) => return Err(self.refuse("a coroutine", STORABLE)),
            other => return Err(self.refuse(&format!("a {}", other.type_name()), STORABLE)),
        })
    }

    fn table(&mut self, t: &Table) -> Result<Value, String> {
        if let Some(shown) = t
            .metatable()
            .and_then(|mt| mt.raw_get::<Option<Table>>(FROZEN).ok().flatten())
        {
            return self.table(&shown);
        }
        let id = t.to_pointer();
        if self.open.contains(&id) {
            return Err(self.refuse("a table that contains itself (a cycle)", ""));
        }
        if self.open.len() >= MAX_DEPTH {
            return Err(format!(
                "tables nested deeper than {MAX_DEPTH} levels cannot be stored"
            ));
        }
        let mut entries = Vec::new();
        // One protected call for the whole table (see `check_shape`).
        t.for_each::<LuaValue, LuaValue>(|k, v| {
            entries.push((k, v));
            Ok(())
        })
        .map_err(|e| self.refuse("a table", &e.to_string()))?;
        self.open.push(id);
        let result = match list_length(&entries) {
            Some(len) => self.list(entries, len),
            None => self.object(entries),
        };
        self.open.pop();
        result
    }

    fn list(&mut self, entries: Vec<(LuaValue, LuaValue)>, len: usize) -> Result<Value, String> {
        let mut items = vec![Value::Null; len];
        for (k, v) in entries {
            let LuaValue::Integer(i) = k else { continue };
            self.path.push(Step::Index(i));
            items[i as usize - 1] = self.value(&v)?;
            self.path.pop();
        }
        Ok(Value::Array(items))
    }

    fn object(&mut self, entries: Vec<(LuaValue, LuaValue)>) -> Result<Value, String> {
        let mut map = Map::new();
        for (k, v) in entries {
            let key = match &k {
                LuaValue::String(s) => s
                    .to_str()
                    .map(|s| str::to_owned(&s))
                    .map_err(|_| self.refuse("a key that is not valid UTF-8", STORABLE))?,
                LuaValue::Integer(i) => i.to_string(),
                LuaValue::Number(n) => n.to_string(),
                LuaValue::Boolean(b) => b.to_string(),
                other => {
                    return Err(self.refuse(
                        &format!("a {} used as a key", other.type_name()),
                        "keys must be strings or numbers",
                    ));
                }
            };
            // The key goes on the path (for an error's place) and comes back
            // off it, not copied for every entry.
            self.path.push(Step::Key(key));
            let value = self.value(&v)?;
            let Some(Step::Key(key)) = self.path.pop() else {
                unreachable!("the path ends with the key pushed above")
            };
            map.insert(key, value);
        }
        Ok(Value::Object(map))
    }

    /// "`what` at `path` cannot be stored (`why`)".
    fn refuse(&self, what: &str, why: &str) -> String {
        let why = if why.is_empty() {
            String::new()
        } else {
            format!(" ({why})")
        };
        if self.path.is_empty() {
            return format!("{what} cannot be stored{why}");
        }
        let mut at = String::new();
        for step in &self.path {
            match step {
                Step::Index(i) => at.push_str(&format!("[{i}]")),
                Step::Key(k) if is_name(k) => {
                    if !at.is_empty() {
                        at.push('.');
                    }
                    at.push_str(k);
                }
                Step::Key(k) => at.push_str(&format!("[{k:?}]")),
            }
        }
        format!("{what} at {at} cannot be stored{why}")
    }
}

/// The length of the JSON array a table's entries make, or `None` when they
/// make an object: every key a positive integer, not too sparse. An empty
/// table is an empty list (lists are far more common in agent state).
fn list_length(entries: &[(LuaValue, LuaValue)]) -> Option<usize> {
    let mut max = 0usize;
    for (k, _) in entries {
        match k {
            LuaValue::Integer(i) if *i >= 1 => max = max.max(*i as usize),
            _ => return None,
        }
    }
    is_list(max, entries.len()).then_some(max)
}

/// Whether a table of `count` entries, all positive integer keys up to
/// `max`, is stored as a list (not too sparse).
pub(super) fn is_list(max: usize, count: usize) -> bool {
    max <= MAX_SPARSENESS * count.max(1) || max <= 8
}

fn is_name(key: &str) -> bool {
    let mut chars = key.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}
