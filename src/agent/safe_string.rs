//! `string.find`, `match`, `gmatch` and `gsub` over the matcher of
//! [`super::patterns`], which stops when the callback's budget is spent (the
//! stock C matcher can backtrack for hours in a single call). Results and
//! error messages are Lua 5.4's.

use mlua::{Function, Integer, Lua, MultiValue, Table, Value};
use parking_lot::Mutex;

use super::budget::Budget;
use super::patterns::{self, Capture, Matcher, PatternError};

/// Replaces the four pattern functions of `lua`'s `string` table. `memory_limit`
/// bounds the strings `gsub` builds outside the Lua heap.
pub fn install(lua: &Lua, memory_limit: usize) -> mlua::Result<()> {
    let string: Table = lua.globals().get("string")?;
    string.set(
        "find",
        lua.create_function(|lua, a| find_aux(lua, a, true))?,
    )?;
    string.set(
        "match",
        lua.create_function(|lua, a| find_aux(lua, a, false))?,
    )?;
    string.set("gmatch", lua.create_function(gmatch)?)?;
    string.set(
        "gsub",
        lua.create_function(move |lua, args| gsub(lua, args, memory_limit))?,
    )
}

fn bad_arg(n: usize, fname: &str, expected: &str, got: &Value) -> mlua::Error {
    mlua::Error::runtime(format!(
        "bad argument #{n} to '{fname}' ({expected} expected, got {})",
        got.type_name()
    ))
}

fn arg_string(lua: &Lua, v: Value, n: usize, fname: &str) -> mlua::Result<mlua::LuaString> {
    match lua.coerce_string(v.clone())? {
        Some(s) => Ok(s),
        None => Err(bad_arg(n, fname, "string", &v)),
    }
}

fn arg_int(lua: &Lua, v: Value, n: usize, fname: &str, default: Integer) -> mlua::Result<Integer> {
    if v.is_nil() {
        return Ok(default);
    }
    match lua.coerce_integer(v.clone())? {
        Some(i) => Ok(i),
        None if matches!(v, Value::Number(_)) => Err(mlua::Error::runtime(format!(
            "bad argument #{n} to '{fname}' (number has no integer representation)"
        ))),
        None => Err(bad_arg(n, fname, "number", &v)),
    }
}

fn lua_err(e: PatternError) -> mlua::Error {
    match e {
        PatternError::Malformed(m) => mlua::Error::runtime(m),
        PatternError::Budget(e) => mlua::Error::external(e),
    }
}

/// The budget check of `lua`'s callbacks (none outside an agent).
fn checker(lua: &Lua) -> impl Fn() -> Result<(), crate::error::Error> + use<> {
    let budget = Budget::of(lua);
    move || budget.as_ref().map_or(Ok(()), Budget::check)
}

fn push_captures(
    lua: &Lua,
    src: &[u8],
    caps: Vec<Capture>,
    out: &mut Vec<Value>,
) -> mlua::Result<()> {
    for c in caps {
        out.push(match c {
            Capture::Text(s, e) => Value::String(lua.create_string(&src[s..e])?),
            Capture::Position(p) => Value::Integer(p as Integer),
        });
    }
    Ok(())
}

/// `string.find` (`find = true`) and `string.match`.
fn find_aux(lua: &Lua, args: MultiValue, find: bool) -> mlua::Result<MultiValue> {
    let fname = if find { "find" } else { "match" };
    let mut args = args.into_iter();
    let mut next = || args.next().unwrap_or(Value::Nil);
    let s = arg_string(lua, next(), 1, fname)?;
    let p = arg_string(lua, next(), 2, fname)?;
    let init = arg_int(lua, next(), 3, fname, 1)?;
    let plain = find && !matches!(next(), Value::Nil | Value::Boolean(false));
    let (src, pat) = (s.as_bytes(), p.as_bytes());
    let init = patterns::start_index(init, src.len()) - 1;
    let fail = || Ok(MultiValue::from_iter([Value::Nil]));
    if init > src.len() {
        return fail();
    }
    let check = checker(lua);
    if find && (plain || patterns::is_plain(&pat)) {
        return match patterns::find_plain(&src, &pat, init, &check).map_err(lua_err)? {
            Some(at) => Ok(MultiValue::from_iter([
                Value::Integer(at as Integer + 1),
                Value::Integer((at + pat.len()) as Integer),
            ])),
            None => fail(),
        };
    }
    let (anchor, pat) = match pat.strip_prefix(b"^") {
        Some(rest) => (true, rest),
        None => (false, &pat[..]),
    };
    let mut m = Matcher::new(&src, pat, &check);
    let mut s1 = init;
    loop {
        if let Some(e) = m.match_at(s1).map_err(lua_err)? {
            let mut out = Vec::new();
            if find {
                out.push(Value::Integer(s1 as Integer + 1));
                out.push(Value::Integer(e as Integer));
            }
            let caps = m.captures(s1, e, !find).map_err(lua_err)?;
            push_captures(lua, &src, caps, &mut out)?;
            return Ok(MultiValue::from_iter(out));
        }
        if anchor || s1 >= src.len() {
            return fail();
        }
        s1 += 1;
    }
}

/// `string.gmatch(s, pattern [, init])`: `^` is a plain character here, as in Lua 5.4.
fn gmatch(lua: &Lua, (s, p, init): (Value, Value, Value)) -> mlua::Result<Function> {
    let s = arg_string(lua, s, 1, "gmatch")?;
    let p = arg_string(lua, p, 2, "gmatch")?;
    let len = s.as_bytes().len();
    let init = arg_int(lua, init, 3, "gmatch", 1)?;
    let start = (patterns::start_index(init, len) - 1).min(len + 1);
    // (next position to try, end of the last match)
    let state = Mutex::new((start, None::<usize>));
    lua.create_function(move |lua, ()| {
        let (src, pat) = (s.as_bytes(), p.as_bytes());
        let check = checker(lua);
        let mut m = Matcher::new(&src, &pat, &check);
        let mut st = state.lock();
        let mut at = st.0;
        while at <= src.len() {
            if let Some(e) = m.match_at(at).map_err(lua_err)?
                && Some(e) != st.1
            {
                *st = (e, Some(e));
                let caps = m.captures(at, e, true).map_err(lua_err)?;
                let mut out = Vec::new();
                push_captures(lua, &src, caps, &mut out)?;
                return Ok(MultiValue::from_iter(out));
            }
            at += 1;
        }
        st.0 = at;
        Ok(MultiValue::new())
    })
}

/// `string.gsub(s, pattern, repl [, n])`.
fn gsub(
    lua: &Lua,
    (s, p, repl, n): (Value, Value, Value, Value),
    memory_limit: usize,
) -> mlua::Result<MultiValue> {
    let s = arg_string(lua, s, 1, "gsub")?;
    let p = arg_string(lua, p, 2, "gsub")?;
    if !matches!(
        repl,
        Value::String(_)
            | Value::Integer(_)
            | Value::Number(_)
            | Value::Table(_)
            | Value::Function(_)
    ) {
        return Err(bad_arg(3, "gsub", "string/function/table", &repl));
    }
    let (src, pat) = (s.as_bytes(), p.as_bytes());
    let max = arg_int(lua, n, 4, "gsub", src.len() as Integer + 1)?;
    let (anchor, pat) = match pat.strip_prefix(b"^") {
        Some(rest) => (true, rest),
        None => (false, &pat[..]),
    };
    let check = checker(lua);
    let mut m = Matcher::new(&src, pat, &check);
    let mut out: Vec<u8> = Vec::new();
    let (mut at, mut last, mut count, mut changed) = (0usize, None::<usize>, 0 as Integer, false);
    while count < max {
        match m.match_at(at).map_err(lua_err)? {
            Some(e) if Some(e) != last => {
                count += 1;
                changed |= add_value(lua, &m, &src, at, e, &repl, &mut out)?;
                at = e;
                last = Some(e);
            }
            _ if at < src.len() => {
                out.push(src[at]);
                at += 1;
            }
            _ => break,
        }
        if out.len() > memory_limit {
            return Err(mlua::Error::MemoryError(format!(
                "string.gsub: result larger than memory_limit ({memory_limit} bytes)"
            )));
        }
        if anchor {
            break;
        }
    }
    let result = if changed {
        out.extend_from_slice(&src[at..]);
        Value::String(lua.create_string(&out)?)
    } else {
        Value::String(s.clone())
    };
    Ok(MultiValue::from_iter([result, Value::Integer(count)]))
}

/// Appends the replacement of the match `s..e`; true when it changed the text.
fn add_value(
    lua: &Lua,
    m: &Matcher,
    src: &[u8],
    s: usize,
    e: usize,
    repl: &Value,
    out: &mut Vec<u8>,
) -> mlua::Result<bool> {
    let capture_value = |c: Capture| -> mlua::Result<Value> {
        Ok(match c {
            Capture::Text(a, b) => Value::String(lua.create_string(&src[a..b])?),
            Capture::Position(p) => Value::Integer(p as Integer),
        })
    };
    let value = match repl {
        Value::Function(f) => {
            let mut caps = Vec::new();
            push_captures(
                lua,
                src,
                m.captures(s, e, true).map_err(lua_err)?,
                &mut caps,
            )?;
            f.call::<Value>(MultiValue::from_iter(caps))?
        }
        Value::Table(t) => t.get::<Value>(capture_value(m.capture(0, s, e).map_err(lua_err)?)?)?,
        _ => {
            let template = lua
                .coerce_string(repl.clone())?
                .expect("checked: string or number");
            add_template(lua, m, src, s, e, &template.as_bytes(), out)?;
            return Ok(true);
        }
    };
    match value {
        Value::Nil | Value::Boolean(false) => {
            out.extend_from_slice(&src[s..e]);
            Ok(false)
        }
        Value::String(_) | Value::Integer(_) | Value::Number(_) => {
            let text = lua.coerce_string(value)?.expect("string or number");
            out.extend_from_slice(&text.as_bytes());
            Ok(true)
        }
        other => Err(mlua::Error::runtime(format!(
            "invalid replacement value (a {})",
            other.type_name()
        ))),
    }
}

/// Expands `%0`-`%9` and `%%` of a replacement string.
fn add_template(
    lua: &Lua,
    m: &Matcher,
    src: &[u8],
    s: usize,
    e: usize,
    template: &[u8],
    out: &mut Vec<u8>,
) -> mlua::Result<()> {
    let mut i = 0;
    while i < template.len() {
        let c = template[i];
        i += 1;
        if c != b'%' {
            out.push(c);
            continue;
        }
        match template.get(i).copied() {
            Some(b'%') => out.push(b'%'),
            Some(b'0') => out.extend_from_slice(&src[s..e]),
            Some(d) if d.is_ascii_digit() => {
                match m.capture((d - b'1') as usize, s, e).map_err(lua_err)? {
                    Capture::Text(a, b) => out.extend_from_slice(&src[a..b]),
                    Capture::Position(p) => {
                        let text = lua
                            .coerce_string(Value::Integer(p as Integer))?
                            .expect("integer");
                        out.extend_from_slice(&text.as_bytes());
                    }
                }
            }
            _ => {
                return Err(mlua::Error::runtime(
                    "invalid use of '%' in replacement string",
                ));
            }
        }
        i += 1;
    }
    Ok(())
}
