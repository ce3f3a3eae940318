//! Turns an error coming out of a VM into the host's [`Error`], keeping the
//! script's `path:line` in front and the Lua traceback behind.

use crate::error::Error;
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

/// The host error carried inside `e`, if any.
pub fn host_error(e: &mlua::Error) -> Option<&Error> {
    match e {
        mlua::Error::ExternalError(inner) => inner.downcast_ref::<Error>(),
        mlua::Error::CallbackError { cause, .. } => host_error(cause),
        mlua::Error::WithContext { cause, .. } => host_error(cause),
        _ => None,
    }
}

/// `path:line: message` followed by the traceback.
///
/// The message holds text a script chose (`error("...")`, a chunk or key
/// name), so it is made one line (control characters escaped), and every line
/// of the traceback after its header starts with a tab: logged, nothing in it
/// can pass for a line of the host's own.
pub fn describe(e: &mlua::Error) -> String {
    match e {
        mlua::Error::CallbackError { traceback, cause } => {
            let message = innermost(cause);
            with_location(&message, traceback)
        }
        mlua::Error::SyntaxError { message, .. } => one_line(message),
        // An error raised by Lua code: the message already holds its traceback.
        mlua::Error::RuntimeError(message) => match message.find("\nstack traceback:") {
            Some(i) => with_location(&message[..i], &message[i + 1..]),
            None => one_line(message),
        },
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
    match script_location(&traceback) {
        Some(loc) if script_location(&message).is_none_or(|m| !message.starts_with(&m)) => {
            format!("{loc}: {message}{hint}\n{traceback}")
        }
        _ => format!("{message}{hint}\n{traceback}"),
    }
}

/// Why a script hits "attempt to yield across a C-call boundary", and the way out.
const YIELD_HINT: &str = " (a host function that waits — bus.receive, sleep, lock.acquire, \
spawn.*, or any store call on a remote store — was called from inside a C function \
such as a table.sort comparator or a string.gsub replacement; call it outside)";

/// The message of the innermost cause (a host error, or a script's `error(...)`).
fn innermost(e: &mlua::Error) -> String {
    match e {
        mlua::Error::CallbackError { cause, .. } => innermost(cause),
        mlua::Error::WithContext { context, cause } => format!("{context}: {}", innermost(cause)),
        mlua::Error::ExternalError(inner) => inner.to_string(),
        mlua::Error::RuntimeError(m) => m.clone(),
        other => other.to_string(),
    }
}

/// The first `path:line` of a script frame in a traceback: frames of `.lua`
/// files only, skipping `[C]` frames and the host's own Lua wrappers.
fn script_location(traceback: &str) -> Option<String> {
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
