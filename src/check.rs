//! `orrery check`: what `run` would refuse, found without running a task.
//!
//! Every role script and module must compile; every role script must load
//! in a VM built like an agent's (on a scratch store) and return a table of
//! callbacks; and no script may call a function of a host table that the API
//! does not have (`blackboard.put`, `bus.sendd`), judged against the
//! annotations in `stdlib/meta` ([`crate::lua_api::meta`]), with the nearest
//! real name suggested.

use std::sync::Arc;

use serde::Serialize;

use crate::agent::{errors, sandbox};
use crate::config::Config;
use crate::coordination::Coordination;
use crate::lua_api::meta;
use crate::reload::validate;
use crate::scripts::{Script, ScriptKind, ScriptRegistry};
use crate::store::MemoryStore;
use crate::task::Task;

/// One thing wrong with a script.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Problem {
    /// The script's path, as the user wrote it.
    pub path: String,
    /// The line, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// `syntax`, `load` (raised, or returned no table) or `unknown_function`.
    pub kind: &'static str,
    /// `path:line: message`, as `run` would report it (first line).
    pub message: String,
    /// The nearest real name, for an unknown function.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suggestion: Option<String>,
}

/// What a check found.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    /// Scripts looked at (roles and modules).
    pub scripts: usize,
    /// Roles among them.
    pub roles: usize,
    /// Everything wrong, in the order of the scripts.
    pub problems: Vec<Problem>,
}

/// Checks every script of `registry` (see the module documentation).
pub fn check(registry: &Arc<ScriptRegistry>, config: &Config) -> crate::Result<CheckReport> {
    // Compiling runs nothing: a bare VM is enough (loading uses an agent's VM).
    let lua = mlua::Lua::new_with(mlua::StdLib::NONE, mlua::LuaOptions::default())
        .map_err(|e| errors::from_lua(&e))?;
    let roles = registry.role_scripts();
    let modules = registry.modules();
    let scratch = scratch_coordination(config);
    let mut problems = Vec::new();
    for (kind, script) in roles
        .iter()
        .map(|s| (ScriptKind::Role, s))
        .chain(modules.iter().map(|s| (ScriptKind::Module, s)))
    {
        if let Err(e) = sandbox::compile(&lua, script) {
            problems.push(problem(script, "syntax", &errors::describe(&e)));
            continue;
        }
        if kind == ScriptKind::Role
            && let Err(message) = validate::check(registry, &scratch, kind, script)
        {
            problems.push(problem(script, "load", &message));
        }
        problems.extend(unknown_calls(script));
    }
    Ok(CheckReport {
        scripts: roles.len() + modules.len(),
        roles: roles.len(),
        problems,
    })
}

/// The primitives of a task nobody runs, on a store of their own: role
/// scripts load against them.
fn scratch_coordination(config: &Config) -> Arc<Coordination> {
    let task = Task::from_toml(
        "id = \"check\"\ntype = \"check\"\ndescription = \"orrery check\"\n",
        "orrery check",
    )
    .expect("the check task parses");
    Coordination::new(
        Arc::new(task),
        Arc::new(config.clone()),
        Arc::new(MemoryStore::new()),
    )
}

fn problem(script: &Script, kind: &'static str, message: &str) -> Problem {
    let first = message.lines().next().unwrap_or_default().to_string();
    let path = script.path.display().to_string();
    let line = first
        .strip_prefix(&format!("{path}:"))
        .and_then(|rest| rest.split(':').next())
        .and_then(|n| n.parse().ok());
    Problem {
        path,
        line,
        kind,
        message: first,
        suggestion: None,
    }
}

/// Uses of `table.name` where `table` is a host API table the script does
/// not redefine and `name` is neither a function nor a field the API has.
pub fn unknown_calls(script: &Script) -> Vec<Problem> {
    let api = meta::api();
    let code = blank_strings_and_comments(&script.source);
    let path = script.path.display().to_string();
    let mut found = Vec::new();
    let shadowed: Vec<&String> = api
        .tables
        .iter()
        .filter(|t| redefines(&code, &script.source, t))
        .collect();
    for (n, line) in code.lines().enumerate() {
        for (table, member) in qualified_names(line) {
            if !api.tables.contains(table) || shadowed.iter().any(|t| *t == table) {
                continue;
            }
            if api.has(table, member) {
                continue;
            }
            let suggestion = api.nearest(table, member);
            let hint = suggestion
                .as_ref()
                .map(|s| format!(" (did you mean {s}?)"))
                .unwrap_or_default();
            found.push(Problem {
                path: path.clone(),
                line: Some(n + 1),
                kind: "unknown_function",
                message: format!(
                    "{path}:{}: {table}.{member} is not part of the host API{hint}",
                    n + 1
                ),
                suggestion,
            });
        }
    }
    found
}

/// `(table, member)` for each `table.member` in `line` that is not itself
/// a field of something (`x.bus.send`) or a method call's receiver.
fn qualified_names(line: &str) -> Vec<(&str, &str)> {
    let bytes = line.as_bytes();
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if !(bytes[i].is_ascii_alphabetic() || bytes[i] == b'_') {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && is_ident(bytes[i]) {
            i += 1;
        }
        let preceded = start > 0 && matches!(bytes[start - 1], b'.' | b':');
        if preceded || i >= bytes.len() || bytes[i] != b'.' {
            continue;
        }
        let member_start = i + 1;
        let mut j = member_start;
        while j < bytes.len() && is_ident(bytes[j]) {
            j += 1;
        }
        if j > member_start && !bytes[member_start].is_ascii_digit() {
            out.push((&line[start..i], &line[member_start..j]));
        }
        i = j;
    }
    out
}

/// True when `code` declares its own `name` (`local bus = ...`, a
/// parameter or loop variable named so), other than by requiring the host
/// table of that name.
fn redefines(code: &str, source: &str, name: &str) -> bool {
    code.lines().zip(source.lines()).any(|(line, original)| {
        let Some(at) = line.find("local ").or_else(|| line.find("function")) else {
            return line.contains("for ") && words(line).any(|w| w == name);
        };
        let rest = &line[at..];
        let declared = rest
            .split(['=', ')'])
            .next()
            .is_some_and(|decl| words(decl).any(|w| w == name));
        declared
            && !original.contains(&format!("require(\"{name}\")"))
            && !original.contains(&format!("require('{name}')"))
    })
}

fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
}

/// `source` with the contents of strings and comments replaced by spaces
/// (newlines kept, so lines stay where they were).
fn blank_strings_and_comments(source: &str) -> String {
    let chars: Vec<char> = source.chars().collect();
    let mut out = String::with_capacity(source.len());
    let mut i = 0;
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    while i < chars.len() {
        let c = chars[i];
        let long_open = |at: usize| -> Option<usize> {
            // `[[`, `[=[`, ...: returns the level.
            if chars.get(at) != Some(&'[') {
                return None;
            }
            let mut level = 0;
            while chars.get(at + 1 + level) == Some(&'=') {
                level += 1;
            }
            (chars.get(at + 1 + level) == Some(&'[')).then_some(level)
        };
        let skip_long = |from: usize, level: usize| -> usize {
            let close: Vec<char> = std::iter::once(']')
                .chain(std::iter::repeat_n('=', level))
                .chain(std::iter::once(']'))
                .collect();
            let mut k = from;
            while k < chars.len() {
                if chars[k..].starts_with(&close) {
                    return k + close.len();
                }
                k += 1;
            }
            chars.len()
        };
        if c == '-' && chars.get(i + 1) == Some(&'-') {
            let end = match long_open(i + 2) {
                Some(level) => skip_long(i + 4 + level, level),
                None => chars[i..]
                    .iter()
                    .position(|&c| c == '\n')
                    .map_or(chars.len(), |p| i + p),
            };
            out.extend(chars[i..end].iter().map(|&c| blank(c)));
            i = end;
        } else if let Some(level) = long_open(i) {
            let end = skip_long(i + 2 + level, level);
            out.extend(chars[i..end].iter().map(|&c| blank(c)));
            i = end;
        } else if c == '"' || c == '\'' {
            let mut k = i + 1;
            while k < chars.len() && chars[k] != c && chars[k] != '\n' {
                if chars[k] == '\\' {
                    k += 1;
                }
                k += 1;
            }
            let end = (k + 1).min(chars.len());
            out.push(c);
            out.extend(
                chars[i + 1..end.saturating_sub(1).max(i + 1)]
                    .iter()
                    .map(|&c| blank(c)),
            );
            if end > i + 1 {
                out.push(chars[end - 1]);
            }
            i = end;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::unknown_calls;
    use crate::scripts::Script;

    fn script(source: &str) -> Script {
        Script {
            name: "x".into(),
            path: "scripts/x.lua".into(),
            source: Arc::from(source),
            version: 0,
        }
    }

    #[test]
    fn a_misspelt_host_function_is_found_with_the_nearest_name() {
        let found = unknown_calls(&script(
            "local M = {}\nfunction M.start(self)\n  blackboard.put('k', 1)\n  bus.sendd('x', 't', {})\n  blackboard.set('k', 2)\nend\nreturn M\n",
        ));
        let messages: Vec<_> = found.iter().map(|p| p.message.as_str()).collect();
        assert_eq!(
            messages,
            [
                "scripts/x.lua:3: blackboard.put is not part of the host API (did you mean blackboard.get?)",
                "scripts/x.lua:4: bus.sendd is not part of the host API (did you mean bus.send?)",
            ]
        );
    }

    #[test]
    fn strings_comments_fields_and_own_tables_are_not_calls() {
        let found = unknown_calls(&script(
            "-- blackboard.put in a comment\n--[[ bus.nope ]]\nlocal s = \"bus.nothing\" .. [[task.x]]\nlocal t = { bus = {} }\nt.bus.whatever()\nlocal x = json.null\nprint(task.inputs.whatever, agent.id)\n",
        ));
        assert!(found.is_empty(), "{found:#?}");
        let shadowing = unknown_calls(&script("local bus = {}\nbus.mine = 1\n"));
        assert!(shadowing.is_empty(), "{shadowing:#?}");
        let required = unknown_calls(&script("local bus = require(\"bus\")\nbus.sned()\n"));
        assert_eq!(required.len(), 1);
    }
}
