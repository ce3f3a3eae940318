//! `log`: `debug`, `info`, `warn`, `error`, each taking any values (joined with spaces).
//!
//! A script's text is one line of the host's log, whatever it holds: control
//! characters (newlines, carriage returns, terminal escapes) are written as
//! escapes (`\n`, `\x1b`), so a script cannot forge a line of the host's own,
//! and a line is cut at [`MAX_LINE_BYTES`]. `print` (see `agent::safe_std`)
//! goes through here too.

use std::fmt::Write;
use std::sync::Arc;

use mlua::{Lua, MultiValue, Table};

use super::AgentContext;
use super::module::Module;

/// Longest text one `log.*` or `print` call writes; the rest is replaced by a
/// note of how much was cut.
pub const MAX_LINE_BYTES: usize = 16 * 1024;

/// A log level of a script's line.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

/// Writes the script text `text` of agent `agent` to the host's log.
pub(crate) fn emit(level: Level, agent: &str, text: &str) {
    let line = one_line(text);
    match level {
        Level::Debug => tracing::debug!(target: "orrery::script", agent = %agent, "{line}"),
        Level::Info => tracing::info!(target: "orrery::script", agent = %agent, "{line}"),
        Level::Warn => tracing::warn!(target: "orrery::script", agent = %agent, "{line}"),
        Level::Error => tracing::error!(target: "orrery::script", agent = %agent, "{line}"),
    }
}

/// `text` as one line: control characters but tabs escaped, cut at
/// [`MAX_LINE_BYTES`] (on a character boundary).
pub fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_LINE_BYTES));
    for c in text.chars() {
        if out.len() >= MAX_LINE_BYTES {
            let _ = write!(out, "… (cut at {MAX_LINE_BYTES} bytes)");
            break;
        }
        match c {
            '\t' => out.push(c),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// The values of a `log.*` or `print` call as text, joined by `separator`.
/// Strings and numbers as they are, other values as `tostring` shows them.
pub(crate) fn join(lua: &Lua, args: MultiValue, separator: &str) -> mlua::Result<String> {
    let mut text = String::new();
    for (i, v) in args.into_iter().enumerate() {
        if i > 0 {
            text.push_str(separator);
        }
        match lua.coerce_string(v.clone())? {
            // Only what the line can hold is copied out of the Lua heap.
            Some(s) => {
                let bytes = s.as_bytes();
                let kept = &bytes[..bytes.len().min(MAX_LINE_BYTES + 1)];
                text.push_str(&String::from_utf8_lossy(kept));
            }
            None => text.push_str(
                &v.to_string()
                    .unwrap_or_else(|_| format!("<{}>", v.type_name())),
            ),
        }
        if text.len() > MAX_LINE_BYTES {
            // The rest would be cut anyway; do not build it.
            break;
        }
    }
    Ok(text)
}

pub(super) fn register(lua: &Lua, ctx: &Arc<AgentContext>) -> mlua::Result<Table> {
    let m = Module::new(lua, ctx)?;
    m.sync("debug", |lua, c, args| line(lua, c, Level::Debug, args))?;
    m.sync("info", |lua, c, args| line(lua, c, Level::Info, args))?;
    m.sync("warn", |lua, c, args| line(lua, c, Level::Warn, args))?;
    m.sync("error", |lua, c, args| line(lua, c, Level::Error, args))?;
    Ok(m.finish())
}

/// `log.<level>(...)`: one line of the host's log, the values joined by spaces.
fn line(lua: &Lua, c: &AgentContext, level: Level, args: MultiValue) -> mlua::Result<()> {
    emit(level, &c.id, &join(lua, args, " ")?);
    Ok(())
}
