//! `test.setup`'s table read into a [`Setup`]: the task, the LLM script,
//! the settings and the host spies of a test's world.

use std::path::PathBuf;
use std::sync::Arc;

use mlua::{Lua, Table, Value};

use crate::lua_api;

use super::host_err;
use crate::task::Task;

use super::answers::{Entry, Reply, ScriptedLlm};
use super::world::{HostCalls, SETTINGS, Setup};

/// The task of a test that sets none.
fn default_task() -> serde_json::Value {
    serde_json::json!({
        "id": "spec",
        "type": "test",
        "description": "a test of orrery test",
        "constraints": [],
        "timeout": 60000,
    })
}

/// A world with the default task and no LLM configured.
pub fn default_setup() -> crate::Result<Setup> {
    Ok(Setup {
        task: serde_json::from_value(default_task())
            .map_err(|e| crate::Error::Coordination(format!("default test task: {e}")))?,
        llm: Arc::new(
            ScriptedLlm::new(Vec::new(), None)
                .map_err(|e| crate::Error::bad_input("llm", e.to_string()))?,
        ),
        settings: Vec::new(),
        host_calls: Arc::default(),
    })
}

/// Reads `test.setup`'s table: `task` (a task file's path, or a table laid
/// over the default task), `llm` (a replay file's path, or a list of answers:
/// strings answered in order, `{prompt = piece, answer = text or table}`,
/// `{error = kind, message = text}`, plus `replay = path`), `settings`
/// (whole numbers by the names of `orrery.toml`, see `world::SETTINGS`).
pub fn read_setup(lua: &Lua, opts: Option<Table>) -> mlua::Result<Setup> {
    let mut setup = default_setup().map_err(host_err)?;
    let Some(opts) = opts else { return Ok(setup) };
    for pair in opts.pairs::<Value, Value>() {
        let (key, _) = pair?;
        let name = key.to_string().unwrap_or_default();
        if !matches!(name.as_str(), "task" | "llm" | "settings" | "spies") {
            return Err(lua_api::arg_err(
                "test.setup",
                format!("unknown option '{name}' (known: task, llm, settings, spies)"),
            ));
        }
    }
    if let Some(spies) = opts.get::<Option<Vec<String>>>("spies")? {
        for name in &spies {
            let known = name
                .split_once('.')
                .is_some_and(|(t, f)| crate::lua_api::meta::api().has(t, f));
            if !known {
                return Err(lua_api::arg_err(
                    "test.setup",
                    format!("spies: '{name}' is not a host function (as `bus.send`)"),
                ));
            }
        }
        setup.host_calls = Arc::new(HostCalls {
            names: spies,
            ..HostCalls::default()
        });
    }
    if let Some(settings) = opts.get::<Option<Table>>("settings")? {
        for pair in settings.pairs::<String, Value>() {
            let (name, value) = pair?;
            if !SETTINGS.contains(&name.as_str()) {
                return Err(lua_api::arg_err(
                    "test.setup",
                    format!("unknown setting '{name}' (known: {})", SETTINGS.join(", ")),
                ));
            }
            let n = match value {
                Value::Integer(n) if n > 0 => n as u64,
                Value::Number(n) if n >= 1.0 && n.fract() == 0.0 => n as u64,
                other => {
                    return Err(lua_api::arg_err(
                        "test.setup",
                        format!(
                            "setting '{name}' must be a whole number greater than 0, got {}",
                            other
                                .to_string()
                                .unwrap_or_else(|_| other.type_name().into())
                        ),
                    ));
                }
            };
            setup.settings.push((name, n));
        }
        setup.settings.sort();
    }
    match opts.get::<Value>("task")? {
        Value::Nil => {}
        Value::String(path) => {
            let path = PathBuf::from(path.to_str()?.to_string());
            setup.task = Task::load(&path).map_err(host_err)?;
        }
        Value::Table(t) => {
            let given = lua_api::to_json(lua, Value::Table(t), || "test.setup task".into())?;
            let mut task = default_task();
            if let (Some(task), Some(given)) = (task.as_object_mut(), given.as_object()) {
                for (k, v) in given {
                    task.insert(k.clone(), v.clone());
                }
            }
            setup.task = Task::from_json(&task.to_string(), "test.setup task").map_err(host_err)?;
        }
        other => {
            return Err(lua_api::arg_err(
                "test.setup",
                format!(
                    "option 'task' must be a task file's path or a table, got {}",
                    other.type_name()
                ),
            ));
        }
    }
    let (entries, replay) = match opts.get::<Value>("llm")? {
        Value::Nil => (Vec::new(), None),
        Value::String(path) => (Vec::new(), Some(PathBuf::from(path.to_str()?.to_string()))),
        Value::Table(t) => read_answers(lua, &t)?,
        other => {
            return Err(lua_api::arg_err(
                "test.setup",
                format!(
                    "option 'llm' must be a list of answers or a replay file's path, got {}",
                    other.type_name()
                ),
            ));
        }
    };
    setup.llm = Arc::new(
        ScriptedLlm::new(entries, replay)
            .map_err(|e| lua_api::arg_err("test.setup", format!("option 'llm': {e}")))?,
    );
    Ok(setup)
}

fn read_answers(lua: &Lua, t: &Table) -> mlua::Result<(Vec<Entry>, Option<PathBuf>)> {
    let replay = t.get::<Option<String>>("replay")?.map(PathBuf::from);
    let mut entries = Vec::new();
    for (i, v) in t.sequence_values::<Value>().enumerate() {
        let bad = |what: &str| lua_api::arg_err("test.setup", format!("llm[{}]: {what}", i + 1));
        let entry = match v? {
            Value::String(s) => Entry {
                prompt: None,
                reply: Reply::Content(s.to_str()?.to_string()),
            },
            Value::Table(e) => {
                let prompt = e.get::<Option<String>>("prompt")?;
                let reply = match (e.get::<Value>("answer")?, e.get::<Option<String>>("error")?) {
                    (Value::String(s), None) => Reply::Content(s.to_str()?.to_string()),
                    (Value::Table(json), None) => {
                        let value = lua_api::to_json(lua, Value::Table(json), || {
                            format!("llm[{}].answer", i + 1)
                        })?;
                        Reply::Content(value.to_string())
                    }
                    (Value::Nil, Some(kind)) => Reply::Error(
                        kind,
                        e.get::<Option<String>>("message")?
                            .unwrap_or_else(|| "scripted failure".into()),
                    ),
                    _ => {
                        return Err(bad(
                            "give either 'answer' (text or table) or 'error' (a kind)",
                        ));
                    }
                };
                Entry { prompt, reply }
            }
            other => {
                return Err(bad(&format!(
                    "expected a string or a table, got {}",
                    other.type_name()
                )));
            }
        };
        entries.push(entry);
    }
    Ok((entries, replay))
}
