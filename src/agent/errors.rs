//! Turns an error coming out of a VM into the host's [`Error`], keeping the
//! script's `path:line` in front and the Lua traceback behind.

use crate::error::Error;

/// Classifies `e`: host errors that mean more than "the script failed"
/// (SpawnLimit, AgentTimeout, Coordination) keep their kind; everything else
/// becomes a Script error whose message starts with the script's `path:line`.
pub fn from_lua(e: &mlua::Error) -> Error {
    if let Some(host) = host_error(e) {
        match host {
            Error::SpawnLimit { .. } | Error::AgentTimeout { .. } | Error::Coordination(_) => {
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
pub fn describe(e: &mlua::Error) -> String {
    match e {
        mlua::Error::CallbackError { traceback, cause } => {
            let message = innermost(cause);
            match script_location(traceback) {
                Some(loc) if !message.starts_with(&loc) => format!("{loc}: {message}\n{traceback}"),
                _ => format!("{message}\n{traceback}"),
            }
        }
        mlua::Error::SyntaxError { message, .. } => message.clone(),
        mlua::Error::RuntimeError(message) => message.clone(),
        mlua::Error::MemoryError(message) => format!("memory: {message}"),
        other => other.to_string(),
    }
}

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

/// The first `path:line` of a Lua frame in a traceback (skipping `[C]` frames).
fn script_location(traceback: &str) -> Option<String> {
    traceback.lines().skip(1).find_map(|line| {
        let frame = line.trim();
        if frame.starts_with('[') {
            return None;
        }
        let mut parts = frame.splitn(3, ':');
        let path = parts.next()?;
        let line_no = parts.next()?;
        line_no.parse::<u32>().ok().map(|n| format!("{path}:{n}"))
    })
}
