//! How an error raised by a host function reads, for the script that
//! caught it (`tostring(err)`) and for the report: `path:line:` of the
//! script's call first, then the function and the parameter at fault
//! (`blackboard.set: argument #1 'key' must be a string, got table`), and a
//! traceback without the host's own frames (`__mlua_async_poll`, the
//! sandbox's `pcall` wrapper, the host's Lua chunks).

use std::borrow::Cow;

use mlua::{Error, Lua, Value};

use super::meta;

/// The host function a traceback's innermost frame is in (`blackboard.set`),
/// when it is one the API declares.
pub fn function_of(traceback: &str) -> Option<String> {
    let api = meta::api();
    traceback.lines().find_map(|line| {
        let name = line.split("in function '").nth(1)?.split('\'').next()?;
        api.functions.contains_key(name).then(|| name.to_string())
    })
}

/// The first `path:line` of a script frame in a traceback: frames of `.lua`
/// files only, skipping `[C]` frames and the host's own Lua wrappers.
pub fn script_location(traceback: &str) -> Option<String> {
    traceback.lines().find_map(|line| {
        let mut parts = line.trim().splitn(3, ':');
        let path = parts.next()?;
        let line_no = parts.next()?;
        if !path.ends_with(".lua") {
            return None;
        }
        line_no.parse::<u32>().ok().map(|n| format!("{path}:{n}"))
    })
}

/// `traceback` without the frames of the host's machinery: mlua's async
/// poller and the stub that makes it (see `lazy`), the sandbox's Lua wrappers (`pcall`), the host's own chunks
/// (`[orrery] ...`), and unnamed C frames. Script frames and named host
/// functions stay.
pub fn clean_traceback(traceback: &str) -> String {
    let mut out = Vec::new();
    for line in traceback.lines() {
        let frame = line.trim();
        let keep = frame == "stack traceback:"
            || frame == "(...tail calls...)"
            || frame.split(':').next().is_some_and(|p| p.ends_with(".lua"))
            || (frame.starts_with("[C]: in function '") && !frame.contains("'pcall'"));
        if keep {
            out.push(line.to_string());
        } else if let Some(name) = frame
            .strip_prefix("__mlua_async_poll:")
            .or_else(|| {
                frame
                    .strip_prefix(super::lazy::STUB_CHUNK)?
                    .strip_prefix(':')
            })
            .and_then(|rest| rest.split("in function '").nth(1))
        {
            // An async host function: shown as the C function it stands for.
            out.push(format!("\t[C]: in function '{name}"));
        }
    }
    out.join("\n")
}

/// The message of `cause`, an error a host function raised, said for the
/// person who called it: argument conversions in words, the function's name
/// in front (`func`, from the traceback) when the message does not start
/// with it, nor with the table-qualified name of the same function (the
/// global `every` is `time.every`: not `every: time.every: ...`).
pub fn host_message(cause: &Error, func: Option<&str>) -> String {
    let text = plain(cause, func);
    let named = |f: &str| {
        text.starts_with(f)
            || text
                .split_once(": ")
                .is_some_and(|(head, _)| head.strip_suffix(f).is_some_and(|t| t.ends_with('.')))
    };
    match func {
        Some(f) if !named(f) => format!("{f}: {text}"),
        _ => text,
    }
}

/// The innermost message of `e`, with mlua's argument conversion errors
/// ("bad argument #1: error converting Lua table to String") in words.
fn plain(e: &Error, func: Option<&str>) -> String {
    match e {
        Error::CallbackError { cause, .. } => plain(cause, func),
        Error::WithContext { context, cause } => format!("{context}: {}", plain(cause, func)),
        Error::ExternalError(inner) => inner.to_string(),
        Error::RuntimeError(m) => object_text(m).into_owned(),
        Error::BadArgument { pos, cause, .. } => {
            let param = func
                .and_then(|f| meta::api().params(f))
                .and_then(|params| params.get(pos.wrapping_sub(1)))
                .map(|p| format!(" '{p}'"))
                .unwrap_or_default();
            match &**cause {
                conversion @ Error::FromLuaConversionError { .. } => {
                    format!("argument #{pos}{param} {}", must_be(conversion))
                }
                other => format!("argument #{pos}{param}: {}", plain(other, None)),
            }
        }
        Error::FromLuaConversionError { .. } => must_be(e),
        other => other.to_string(),
    }
}

/// A failed conversion of an argument in words: `must be a string, got a
/// table`. A Lua string where text is needed (a key, a name) is refused
/// when it is not UTF-8: `must be UTF-8 text, got a string that is not
/// (invalid at byte offset 1)`, not "must be a string, got a string".
pub(crate) fn must_be(e: &Error) -> String {
    let Error::FromLuaConversionError { from, to, message } = e else {
        return e.to_string();
    };
    let utf8 = message.as_deref().filter(|m| m.contains("utf-8"));
    match utf8 {
        Some(m) if *from == "string" => {
            let offset = m
                .rsplit_once("from index ")
                .map(|(_, i)| format!(" (invalid at byte offset {i})"))
                .unwrap_or_default();
            format!("must be UTF-8 text, got a string that is not{offset}")
        }
        _ => format!("must be {}, got {}", expected(to), article(from)),
    }
}

/// A Rust type mlua converts to, as the Lua value it takes.
fn expected(rust: &str) -> &'static str {
    match rust {
        "String" | "str" | "&str" | "BString" | "LuaString" => "a string",
        "bool" => "a boolean",
        "Table" => "a table",
        "Function" => "a function",
        "AnyUserData" | "UserData" => "a value the host handed out",
        // A number that is not whole (`0.5`) fails the conversion to an integer.
        r if r.starts_with('i') || r.starts_with('u') => "an integer",
        r if r.starts_with('f') => "a number",
        _ => "a value of another kind",
    }
}

/// `table` → `a table`, `integer` → `an integer`.
fn article(lua_type: &str) -> String {
    if lua_type == "nil" {
        return "nil".to_string();
    }
    match lua_type.chars().next() {
        Some('a' | 'e' | 'i' | 'o' | 'u') => format!("an {lua_type}"),
        _ => format!("a {lua_type}"),
    }
}

/// The message of an error whose object was not a string, as Lua's own
/// `lua.c` says it: `(error object is a table value)`. mlua writes such an
/// object as `table: 0x55d0…`, a new address each time, so the same
/// `error({ code = 1 })` raised twice would read as two different errors and
/// never fold into one counted entry of the report. A `__tostring` result
/// is kept: it is the object's own text. Other messages pass unchanged (a
/// string raised with a level names its place first, so it never reads as
/// `kind: 0x…` alone).
pub fn object_text(message: &str) -> Cow<'_, str> {
    // The object's text runs to the traceback: a metatable's `__name` may
    // hold line feeds of its own.
    let (head, rest) = match message.find("\nstack traceback:") {
        Some(i) => message.split_at(i),
        None => (message, ""),
    };
    // Lua's `%p` of a heap address: 0x and at least 8 hex digits (12 on
    // x86-64), so a short `timeout: 0x1F` of a script's own is left alone.
    let address = |a: &str| {
        a.strip_prefix("0x")
            .is_some_and(|h| h.len() >= 8 && h.bytes().all(|b| b.is_ascii_hexdigit()))
    };
    // The kind is the value's type, or its metatable's `__name`.
    let kind = |k: &str| !k.is_empty() && !k.contains(char::is_whitespace) && !k.contains(':');
    match head.rsplit_once(": ") {
        Some((k, a)) if kind(k) && address(a) => {
            Cow::Owned(format!("(error object is a {k} value){rest}"))
        }
        // A `__name` with control characters (a line feed, an escape) is
        // a script's table dressed up as host text: named by its type, as
        // `lua.c` names every object, so it folds like any other.
        Some((k, a)) if k.contains(char::is_control) && address(a) => {
            Cow::Owned(format!("(error object is a table value){rest}"))
        }
        _ => Cow::Borrowed(message),
    }
}

/// The innermost host function error of `e`: a host function that runs
/// Lua (`require` running a module's top level) wraps the error of a host
/// function called there in its own, whose traceback names `require` and
/// the line calling it; the inner one names the function that failed and
/// the script line that called it.
pub fn innermost(e: &Error) -> &Error {
    match e {
        Error::CallbackError { cause, .. } if matches!(**cause, Error::CallbackError { .. }) => {
            innermost(cause)
        }
        other => other,
    }
}

/// `path:line: message` for an error a script caught, without traceback:
/// what `tostring(err)` gives.
pub fn short(e: &Error) -> String {
    match innermost(e) {
        Error::CallbackError { traceback, cause } => {
            let func = function_of(traceback);
            let message = host_message(cause, func.as_deref());
            match script_location(traceback) {
                Some(at) if !message.starts_with(&at) => format!("{at}: {message}"),
                _ => message,
            }
        }
        Error::RuntimeError(m) => m
            .split("\nstack traceback:")
            .next()
            .unwrap_or_default()
            .to_string(),
        other => plain(other, None),
    }
}

/// Makes `tostring` of an error a host function raised read as [`short`]
/// does, instead of mlua's message with its whole traceback in it. Errors
/// reach scripts as mlua's own userdata, whose metatable is protected from
/// scripts; the host sets its `__tostring` once per VM.
pub fn install_tostring(lua: &Lua) -> mlua::Result<()> {
    let tostring = lua.create_function(|_, err: Value| {
        Ok(match err {
            Value::Error(e) => short(&e),
            other => other.to_string().unwrap_or_default(),
        })
    })?;
    let probe = Value::Error(Box::new(Error::runtime("probe")));
    // SAFETY: the closure only reads the two values pushed as arguments and
    // sets one field of the first one's metatable; the stack is balanced.
    unsafe {
        lua.exec_raw::<()>((probe, tostring), |state| {
            use mlua::ffi;
            if ffi::lua_getmetatable(state, -2) != 0 {
                ffi::lua_pushvalue(state, -2);
                ffi::lua_setfield(state, -2, c"__tostring".as_ptr());
                ffi::lua_pop(state, 1);
            }
            ffi::lua_pop(state, 2);
        })
    }
}

#[cfg(test)]
mod tests {
    use super::clean_traceback;

    #[test]
    fn an_error_object_reads_by_its_type_not_its_address() {
        let text = super::object_text("table: 0x200004d4b40\nstack traceback:");
        assert_eq!(text, "(error object is a table value)\nstack traceback:");
        assert_eq!(super::object_text("table: 0xzz"), "table: 0xzz");
        assert_eq!(
            super::object_text("timeout: 0x1F"),
            "timeout: 0x1F",
            "a script's own text"
        );
        assert_eq!(
            super::object_text("Point: 0x55812345cafe"),
            "(error object is a Point value)",
            "a metatable's __name"
        );
        assert_eq!(
            super::object_text("a.lua:3: boom: 0x1"),
            "a.lua:3: boom: 0x1"
        );
        assert_eq!(super::object_text("boom"), "boom");
        assert_eq!(
            super::object_text(
                "X\nERROR forged\x1b[31m: 0x3c43d964dc0\nstack traceback:\n\t[C]: in ?"
            ),
            "(error object is a table value)\nstack traceback:\n\t[C]: in ?",
            "a __name with a line feed and an escape of its own"
        );
        assert_eq!(
            super::object_text("failed to connect: 0x3c43d964dc0"),
            "failed to connect: 0x3c43d964dc0",
            "a script's own words"
        );
    }

    #[test]
    fn the_host_machinery_leaves_the_traceback() {
        let tb = "stack traceback:\n\t[C]: in upvalue 'get_future'\n\t__mlua_async_poll:5: in function 'spawn.agent'\n\t[C]: in upvalue 'pcall'\n\tpcall:3: in function 'pcall'\n\tscripts/e.lua:3: in upvalue 'try'\n\t[orrery] blackboard.update:12: in function 'blackboard.update'\n\tscripts/e.lua:7: in function <scripts/e.lua:6>";
        assert_eq!(
            clean_traceback(tb),
            "stack traceback:\n\t[C]: in function 'spawn.agent'\n\tscripts/e.lua:3: in upvalue 'try'\n\tscripts/e.lua:7: in function <scripts/e.lua:6>"
        );
    }

    #[test]
    fn an_async_function_made_on_its_first_call_reads_as_the_host_function() {
        let tb = "stack traceback:\n\t[C]: in upvalue 'get_future'\n\t__mlua_async_poll:5: in upvalue 'f'\n\t[orrery] async:7: in function 'bus.request'\n\tscripts/e.lua:3: in function <scripts/e.lua:2>";
        assert_eq!(
            clean_traceback(tb),
            "stack traceback:\n\t[C]: in function 'bus.request'\n\tscripts/e.lua:3: in function <scripts/e.lua:2>"
        );
        assert_eq!(super::function_of(tb).as_deref(), Some("bus.request"));
    }
}
