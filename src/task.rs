//! The task definition a run starts from, loaded from a TOML or JSON file.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result, json_error, toml_error};

/// True for names a role may have (a role file `scripts/<role>.lua`, a
/// `[roles.<role>]` setting, a task's `agents`): letters, digits and `_`, not
/// starting with a digit, since agents of the role are named `<role>-N`.
pub fn is_role_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Default task timeout when the file gives none (ms).
pub const DEFAULT_TIMEOUT_MS: u64 = 300_000;

/// What the agents work on: read-only for them, shown to them as `task`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Task {
    /// Unique id; names every store key of the task.
    pub id: String,
    /// Kind of task (`deployment`, ...), for the planner.
    #[serde(rename = "type")]
    pub kind: String,
    /// Human description.
    pub description: String,
    /// Rules the agents must honour (`sandbox-only`, `no-secrets`, ...).
    #[serde(default)]
    pub constraints: Vec<String>,
    /// Time the whole task may take (ms).
    #[serde(default = "default_timeout")]
    pub timeout: u64,
    /// Free-form inputs for the scripts.
    #[serde(default = "empty_object")]
    pub inputs: Value,
    /// Roles started up front. Default: every role in the scripts directory that
    /// no spawn condition of the task starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agents: Option<Vec<String>>,
    /// Spawn conditions registered before any agent starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub spawn: Vec<SpawnCondition>,
    /// When the run counts as `complete` (the `[success]` table).
    #[serde(default, skip_serializing_if = "SuccessCondition::is_default")]
    pub success: SuccessCondition,
}

/// The `[success]` table of a task file: what must hold for the run to be
/// `complete`. By default a run that lost work fails: a dead-lettered
/// message (or a blackboard change whose watch raised) or an agent that
/// failed makes it `failed`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuccessCondition {
    /// Outputs (`task.output(name, ...)`) the run must have recorded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<String>,
    /// Dead-lettered messages and failed watches do not fail the run.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_dead_letters: bool,
    /// Agents that failed do not fail the run (their errors are still reported).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_failed_agents: bool,
}

impl SuccessCondition {
    /// True when nothing was set (the defaults).
    pub fn is_default(&self) -> bool {
        *self == SuccessCondition::default()
    }
}

/// `{trigger, threshold, agent}`: start `agent` when a signal `trigger` reaches `threshold`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpawnCondition {
    /// Signal name.
    pub trigger: String,
    /// The signal value at or above which the agent starts.
    pub threshold: f64,
    /// Role to start.
    pub agent: String,
    /// Fire on every qualifying signal instead of once.
    #[serde(default)]
    pub repeat: bool,
}

fn default_timeout() -> u64 {
    DEFAULT_TIMEOUT_MS
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

impl Task {
    /// Reads a task from a `.toml` or `.json` file (by extension; other
    /// extensions are tried as TOML). Errors name the file and, for syntax and
    /// type errors, the line.
    pub fn load(path: &Path) -> Result<Task> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::bad_input(&origin, format!("cannot read task file: {e}")))?;
        let is_json = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"));
        let task = if is_json {
            Self::from_json(&text, &origin)?
        } else {
            Self::from_toml(&text, &origin)?
        };
        task.validate(&origin)?;
        Ok(task)
    }

    /// Parses TOML text; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Task> {
        let mut task: Task = toml::from_str(text).map_err(|e| toml_error(origin, text, &e))?;
        // Read again as TOML values: through serde, a date reached scripts as
        // `{"$__toml_private_datetime": ...}` and inf or nan as null.
        let table: toml::Table = toml::from_str(text).map_err(|e| toml_error(origin, text, &e))?;
        if let Some(inputs) = table.get("inputs") {
            task.inputs = toml_input(inputs, "inputs", origin)?;
        }
        Ok(task)
    }

    /// Parses JSON text; `origin` names it in errors.
    pub fn from_json(text: &str, origin: &str) -> Result<Task> {
        serde_json::from_str(text).map_err(|e| json_error(origin, text, &e))
    }

    /// Checks that every role the task names (`agents`, `spawn[].agent`) has a
    /// script, asking `role_exists`; the error names `origin`, the field and
    /// the role.
    pub fn check_roles(
        &self,
        origin: &str,
        role_exists: impl Fn(&str) -> Result<()>,
    ) -> Result<()> {
        let named = self
            .agents
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, r)| (format!("agents[{i}]"), r))
            .chain(
                self.spawn
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (format!("spawn[{i}].agent"), &c.agent)),
            );
        for (field, role) in named {
            role_exists(role)
                .map_err(|e| Error::bad_input(format!("{origin}: {field}"), e.to_string()))?;
        }
        Ok(())
    }

    /// Checks what the types alone cannot.
    pub fn validate(&self, origin: &str) -> Result<()> {
        let bad =
            |field: &str, msg: String| Err(Error::bad_input(format!("{origin}: {field}"), msg));
        check_id(&self.id, &format!("{origin}: id"))?;
        if self.timeout == 0 {
            return bad("timeout", "must be greater than 0 ms".into());
        }
        if !self.inputs.is_object() {
            return bad("inputs", "must be a table".into());
        }
        if self.agents.as_ref().is_some_and(Vec::is_empty) {
            return bad(
                "agents",
                "an empty list starts no agent, so nothing would run (leave `agents` out to \
                 start every role of the scripts directory)"
                    .into(),
            );
        }
        for (i, c) in self.spawn.iter().enumerate() {
            if !c.threshold.is_finite() {
                return bad(
                    &format!("spawn[{i}].threshold"),
                    "must be a finite number".into(),
                );
            }
            if c.trigger.is_empty() {
                return bad(&format!("spawn[{i}].trigger"), "must not be empty".into());
            }
        }
        for (i, name) in self.success.outputs.iter().enumerate() {
            if name.is_empty() {
                return bad(
                    &format!("success.outputs[{i}]"),
                    "must name an output (task.output(name, value))".into(),
                );
            }
        }
        Ok(())
    }
}

/// An input of a task file as JSON: a date or time as its TOML text
/// (`1979-05-27T07:32:00Z`); inf and nan refused (JSON has no such number).
fn toml_input(value: &toml::Value, at: &str, origin: &str) -> Result<Value> {
    Ok(match value {
        toml::Value::String(s) => Value::String(s.clone()),
        toml::Value::Integer(n) => Value::from(*n),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(Value::Number)
            .ok_or_else(|| {
                Error::bad_input(
                    format!("{origin}: {at}"),
                    format!("{f} cannot reach a script: a value is JSON, which has no inf or nan"),
                )
            })?,
        toml::Value::Boolean(b) => Value::Bool(*b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| toml_input(v, &format!("{at}[{i}]"), origin))
                .collect::<Result<_>>()?,
        ),
        toml::Value::Table(t) => Value::Object(
            t.iter()
                .map(|(k, v)| Ok((k.clone(), toml_input(v, &format!("{at}.{k}"), origin)?)))
                .collect::<Result<_>>()?,
        ),
    })
}

/// Checks a task id (it names every store key of the task, so it may hold
/// only letters, digits, `-`, `_` and `.`); `origin` names where it came from.
pub fn check_id(id: &str, origin: &str) -> Result<()> {
    let valid = !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !valid {
        return Err(Error::bad_input(
            origin,
            format!("'{id}' must be non-empty and use only letters, digits, '-', '_' and '.'"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Task;
    use serde_json::json;

    const HEAD: &str = "id = \"t\"\ntype = \"x\"\ndescription = \"d\"\n";

    /// Dates reach scripts as their TOML text, not as serde's private marker;
    /// inf and nan, which JSON cannot hold, are refused naming the input
    /// (they became null).
    #[test]
    fn inputs_keep_dates_as_text_and_refuse_what_json_cannot_hold() {
        let text = format!(
            "{HEAD}[inputs]\nwhen = 1979-05-27T07:32:00Z\nday = 2026-12-03\n\
             nested = {{ times = [07:32:00, 1.5] }}\n"
        );
        let task = Task::from_toml(&text, "task.toml").unwrap();
        assert_eq!(
            task.inputs,
            json!({
                "when": "1979-05-27T07:32:00Z",
                "day": "2026-12-03",
                "nested": { "times": ["07:32:00", 1.5] }
            })
        );
        for bad in ["inf", "nan", "-inf"] {
            let text = format!("{HEAD}[inputs]\nlimits = {{ top = [1, {bad}] }}\n");
            let e = Task::from_toml(&text, "task.toml").unwrap_err().to_string();
            assert!(
                e.contains("task.toml: inputs.limits.top[1]") && e.contains("no inf or nan"),
                "{e}"
            );
        }
    }
}
