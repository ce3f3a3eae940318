//! Turns an error coming out of a VM into the host's [`Error`], keeping the
//! script's `path:line` in front and the Lua traceback behind.

use crate::error::Error;
use crate::lua_api::error_text;
use crate::lua_api::log::one_line;

/// Classifies `e`: host errors that mean more than "the script failed"
/// (SpawnLimit, AgentTimeout, Coordination) keep their kind; everything else
/// becomes a Script error whose message starts with the script's `path:line`.
pub fn from_lua(e: &mlua::Error) -> Error {
    if let Some(host) = host_error(e) {
        match host {
            Error::SpawnLimit { .. }
            | Error::SpawnQuota { .. }
            | Error::AgentTimeout { .. }
            | Error::Coordination(_) => {
                return host.clone();
            }
            _ => {}
        }
    }
    Error::Script {
        message: describe(e),
    }
}

/// True when `e` is (or was caused by) the VM running out of heap.
pub fn is_memory(e: &mlua::Error) -> bool {
    match e {
        mlua::Error::MemoryError(_) => true,
        mlua::Error::CallbackError { cause, .. } | mlua::Error::WithContext { cause, .. } => {
            is_memory(cause)
        }
        _ => false,
    }
}

/// The error of an agent whose Lua heap reached `memory_limit` in `callback`:
/// a Script error whose message starts with `memory:`.
pub fn out_of_memory(agent: &str, callback: &str, limit: usize) -> Error {
    Error::Script {
        message: format!(
            "memory: agent {agent} ran out of Lua heap in callback '{callback}' \
             (setting memory_limit = {limit} bytes)"
        ),
    }
}

/// The error of a script whose top level (a role's or a module's, checked
/// or loaded) reached `memory_limit`: Lua's own "not enough memory" names
/// neither the file nor the setting.
pub fn top_level_out_of_memory(path: &str) -> Error {
    Error::Script {
        message: format!(
            "memory: {path}: its top level ran out of Lua heap (setting memory_limit)"
        ),
    }
}

/// The host error carried inside `e`, if any.
pub fn host_error(e: &mlua::Error) -> Option<&Error> {
    match e {
        mlua::Error::ExternalError(inner) => inner.downcast_ref::<Error>(),
        mlua::Error::CallbackError { cause, .. } => host_error(cause),
        mlua::Error::WithContext { cause, .. } => host_error(cause),
        _ => None,
    }
}

/// `path:line: message` followed by the traceback, without the host's own
/// frames (see [`error_text`]).
///
/// The message holds text a script chose (`error("...")`, a chunk or key
/// name), so it is made one line (control characters escaped), and every line
/// of the traceback after its header starts with a tab: logged, nothing in it
/// can pass for a line of the host's own.
pub fn describe(e: &mlua::Error) -> String {
    match error_text::innermost(e) {
        mlua::Error::CallbackError { traceback, cause } => {
            let func = error_text::function_of(traceback);
            let message = error_text::host_message(cause, func.as_deref());
            with_location(&message, &error_text::clean_traceback(traceback))
        }
        mlua::Error::SyntaxError { message, .. } => one_line(message),
        // An error raised by Lua code: the message already holds its traceback
        // (and names a non-string error object by its address: see object_text).
        mlua::Error::RuntimeError(message) => {
            let message = error_text::object_text(message);
            match message.find("\nstack traceback:") {
                Some(i) => with_location(
                    &message[..i],
                    &error_text::clean_traceback(&message[i + 1..]),
                ),
                None => one_line(&message),
            }
        }
        mlua::Error::MemoryError(message) => format!("memory: {}", one_line(message)),
        other => one_line(&other.to_string()),
    }
}

/// `traceback` with control characters but newlines and tabs escaped, and a
/// tab in front of every line after the first.
fn indented(traceback: &str) -> String {
    let mut out = String::with_capacity(traceback.len());
    for (i, line) in traceback.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
            if !line.starts_with('\t') {
                out.push('\t');
            }
        }
        out.push_str(&one_line(line));
    }
    out
}

/// `message` with the first script frame of `traceback` in front (unless it
/// already starts with one), then the traceback.
fn with_location(message: &str, traceback: &str) -> String {
    let hint = if message.contains("attempt to yield across a C-call boundary") {
        YIELD_HINT
    } else {
        ""
    };
    let (message, traceback) = (one_line(message), indented(traceback));
    match error_text::script_location(&traceback) {
        Some(loc)
            if error_text::script_location(&message).is_none_or(|m| !message.starts_with(&m)) =>
        {
            format!("{loc}: {message}{hint}\n{traceback}")
        }
        _ => format!("{message}{hint}\n{traceback}"),
    }
}

/// Why a script hits "attempt to yield across a C-call boundary", and the way out.
const YIELD_HINT: &str = " (a host function that waits — bus.receive, sleep, lock.acquire, \
spawn.*, or any store call on a remote store — was called from inside a C function \
such as a table.sort comparator or a string.gsub replacement; call it outside)";
