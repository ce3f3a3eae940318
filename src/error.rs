//! The host's typed errors and the exit code each one maps to.
//!
//! Every message names the file, line, key, agent or flag at fault, because the
//! person reading it is a script author in the middle of a run.

use std::path::PathBuf;

use crate::llm::{BudgetSpent, LlmError};
use crate::store::StoreError;

/// Exit codes of the `orrery` binary, one per error kind (documented in README.md).
pub mod exit {
    /// The task completed.
    pub const OK: i32 = 0;
    /// A bug or an unexpected failure in the host itself.
    pub const INTERNAL: i32 = 1;
    /// Bad input: a malformed task or config file, an unknown role, a bad flag.
    pub const BAD_INPUT: i32 = 2;
    /// A script raised an error (or failed to compile).
    pub const SCRIPT: i32 = 3;
    /// The task or an agent ran out of time.
    pub const TIMEOUT: i32 = 4;
    /// The store or the message bus failed.
    pub const COORDINATION: i32 = 5;
    /// A spawn would have exceeded `max_agents`.
    pub const SPAWN_LIMIT: i32 = 6;
    /// An agent reported failure on its own (for example a validator rejecting the results).
    pub const TASK_FAILED: i32 = 7;
    /// The task's LLM token budget was spent and an agent asked for more.
    pub const LLM_BUDGET: i32 = 8;
    /// The task ended without what its `[success]` table requires (an output).
    pub const INCOMPLETE: i32 = 9;
    /// `orrery test`: a test failed.
    pub const TESTS_FAILED: i32 = 10;
    /// This process was declared lost by the others sharing the task (it
    /// stopped heartbeating) and fenced out: it stopped its agents.
    pub const FENCED: i32 = 11;
    /// The run was stopped by Ctrl-C (SIGINT), as shells report it: 128 + 2.
    pub const INTERRUPTED: i32 = 130;
}

/// Everything that can go wrong in the host, typed so the CLI can map it to an exit code.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// A task, config or script file (or a flag) the user gave is malformed.
    #[error("{origin}: {message}")]
    BadInput {
        /// The file (with line where known), key or flag at fault.
        origin: String,
        /// What is wrong with it.
        message: String,
    },
    /// A role with no script behind it was asked for.
    #[error("unknown role '{role}': no {dir}/{role}.lua")]
    UnknownRole {
        /// The role that was asked for.
        role: String,
        /// The scripts directory that was searched.
        dir: PathBuf,
    },
    /// A role whose file was deleted while the task ran (hot reload) was asked for.
    #[error(
        "role '{role}' cannot start: {path} was deleted while the task ran \
         (agents of the role already running keep their code)",
        path = path.display()
    )]
    RoleDeleted {
        /// The role that was asked for.
        role: String,
        /// Its deleted file.
        path: PathBuf,
    },
    /// A script failed to compile or raised an error; the message carries `path:line`.
    #[error("{message}")]
    Script {
        /// `path:line: message`, followed by the Lua traceback when there is one.
        message: String,
    },
    /// The task or an agent exceeded its time.
    #[error("timeout: {what} exceeded {limit_ms} ms")]
    AgentTimeout {
        /// The task or agent that ran out of time.
        what: String,
        /// The limit it exceeded.
        limit_ms: u64,
    },
    /// The store or the bus failed, or a coordination rule was broken.
    #[error("coordination: {0}")]
    Coordination(String),
    /// A spawn would exceed the number of live agents allowed.
    #[error(
        "spawn limit: cannot start '{role}', {} live and max_agents is {max}",
        crate::text::plural(*live as u64, "agent", "agents")
    )]
    SpawnLimit {
        /// The role whose spawn was refused.
        role: String,
        /// Agents live at the time.
        live: usize,
        /// The configured bound.
        max: usize,
    },
    /// A spawn would exceed the number of agents one task may start over its run.
    #[error(
        "spawn limit: cannot start '{role}', {started} agents were started in this task and max_spawns is {max}"
    )]
    SpawnQuota {
        /// The role whose spawn was refused.
        role: String,
        /// Agents started so far.
        started: usize,
        /// The configured bound.
        max: usize,
    },
    /// A host error (SpawnLimit, SpawnQuota) a script's call raised and the
    /// script did not catch: it keeps the kind and exit code of `error`, and
    /// reads as the script would have caught it — `path:line: func: ` in
    /// front of `error`'s message, the Lua traceback behind.
    #[error("{message}")]
    Raised {
        /// `path:line: func: message`, then the traceback.
        message: String,
        /// The host's error.
        error: Box<Error>,
    },
    /// An agent asked the LLM for more once the task's token budget was spent.
    #[error(
        "LLM token budget exhausted: {agent} asked for more after {used} of {budget} tokens were used"
    )]
    LlmBudget {
        /// The agent whose call was refused.
        agent: String,
        /// Tokens used by the task when the call was refused.
        used: u64,
        /// The task's budget (`--token-budget`, `[llm] token_budget`).
        budget: u64,
    },
    /// The run was stopped from outside (Ctrl-C) twice, and this agent was still running.
    #[error("interrupted: agent {agent} was still running when the run was aborted")]
    Interrupted {
        /// The agent that was aborted.
        agent: String,
    },
    /// This process was declared lost and fenced out of a shared task.
    #[error(
        "fenced: this process ({host}) was declared lost by the others sharing task '{task}'{} \
         and may no longer write to it; its agents were stopped and their messages go to the \
         others. Run it again to rejoin as a new member",
        fenced_after(*lost_after_ms)
    )]
    Fenced {
        /// The task.
        task: String,
        /// This process's member id.
        host: String,
        /// The silence after which the process that fenced it declared it
        /// lost (5 of that process's heartbeat intervals, not necessarily
        /// this one's), when it recorded it.
        lost_after_ms: Option<u64>,
    },
    /// An agent moved itself to FAILED with a reason.
    #[error("agent {agent} failed: {reason}")]
    AgentFailed {
        /// The agent that failed.
        agent: String,
        /// The reason it gave.
        reason: String,
    },
}

/// The words of [`Error::Fenced`] on the silence it was fenced after: the
/// fencing process's loss limit when it recorded one, nothing otherwise (a
/// number of this process's own would be a guess).
fn fenced_after(lost_after_ms: Option<u64>) -> String {
    match lost_after_ms {
        Some(ms) => {
            format!(" (silent for {ms} ms or more, the loss limit of the process that fenced it)")
        }
        None => String::new(),
    }
}

impl Error {
    /// Builds a [`Error::BadInput`] from anything printable.
    pub fn bad_input(origin: impl Into<String>, message: impl Into<String>) -> Self {
        Error::BadInput {
            origin: origin.into(),
            message: message.into(),
        }
    }

    /// The exit code the CLI uses for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::BadInput { .. } | Error::UnknownRole { .. } | Error::RoleDeleted { .. } => {
                exit::BAD_INPUT
            }
            Error::Script { .. } => exit::SCRIPT,
            Error::AgentTimeout { .. } => exit::TIMEOUT,
            Error::Coordination(_) => exit::COORDINATION,
            Error::SpawnLimit { .. } | Error::SpawnQuota { .. } => exit::SPAWN_LIMIT,
            Error::Raised { error, .. } => error.exit_code(),
            Error::AgentFailed { .. } => exit::TASK_FAILED,
            Error::LlmBudget { .. } => exit::LLM_BUDGET,
            Error::Interrupted { .. } => exit::INTERRUPTED,
            Error::Fenced { .. } => exit::FENCED,
        }
    }

    /// The kind of the error, whose stable name JSON reports show.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::BadInput { .. } => ErrorKind::BadInput,
            Error::UnknownRole { .. } => ErrorKind::UnknownRole,
            Error::RoleDeleted { .. } => ErrorKind::RoleDeleted,
            Error::Script { .. } => ErrorKind::Script,
            Error::AgentTimeout { .. } => ErrorKind::Timeout,
            Error::Coordination(_) => ErrorKind::Coordination,
            Error::SpawnLimit { .. } | Error::SpawnQuota { .. } => ErrorKind::SpawnLimit,
            Error::Raised { error, .. } => error.kind(),
            Error::AgentFailed { .. } => ErrorKind::Failed,
            Error::LlmBudget { .. } => ErrorKind::LlmBudget,
            Error::Interrupted { .. } => ErrorKind::Interrupted,
            Error::Fenced { .. } => ErrorKind::Fenced,
        }
    }
}

text_enum! {
    /// The kind of an error a run reports, with the stable name JSON reports show.
    pub enum ErrorKind {
        /// A bad file, setting, flag or value ([`Error::BadInput`]).
        BadInput = "bad_input",
        /// [`Error::UnknownRole`].
        UnknownRole = "unknown_role",
        /// [`Error::RoleDeleted`].
        RoleDeleted = "role_deleted",
        /// A script raised an error ([`Error::Script`]).
        Script = "script",
        /// [`Error::AgentTimeout`].
        Timeout = "timeout",
        /// [`Error::Coordination`].
        Coordination = "coordination",
        /// [`Error::SpawnLimit`].
        SpawnLimit = "spawn_limit",
        /// [`Error::AgentFailed`].
        Failed = "failed",
        /// [`Error::LlmBudget`].
        LlmBudget = "llm_budget",
        /// [`Error::Interrupted`].
        Interrupted = "interrupted",
        /// [`Error::Fenced`].
        Fenced = "fenced",
        /// Messages no agent took before the task ended (a report entry, not an [`Error`]).
        Undelivered = "undelivered",
        /// A dead letter whose handler's error this process did not see (a report entry).
        DeadLetter = "dead_letter",
        /// An output the task's `[success]` requires was not recorded (a report entry).
        Incomplete = "incomplete",
        /// A journal sink could not take entries: a full disk, a store gone (a report entry).
        Journal = "journal",
        /// Answers `--llm-record` could not write (a report entry).
        LlmRecord = "llm_record",
    }
}

impl Error {
    /// A [`Error::BadInput`] for LLM settings that could not be used
    /// (`origin` says where they came from, e.g. "LLM settings").
    pub fn bad_llm_settings(origin: &str, e: LlmError) -> Self {
        match e {
            LlmError::Config { message } => Error::bad_input(origin, message),
            other => Error::bad_input(origin, other.to_string()),
        }
    }
}

impl From<StoreError> for Error {
    /// A bad store URL is bad input naming the setting; every other store
    /// failure is a Coordination error.
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::BadUrl { url, reason } => {
                Error::bad_input(format!("setting store '{url}'"), reason)
            }
            // An agent's call refused: the orchestrator notices the fence
            // at its next heartbeat and ends with Error::Fenced.
            other => Error::Coordination(other.to_string()),
        }
    }
}

/// A TOML error in `text` (read from `origin`) as BadInput naming
/// `origin:line` and, when a value has the wrong type, its key.
pub(crate) fn toml_error(origin: &str, text: &str, e: &toml::de::Error) -> Error {
    let message = plain_types(e.message());
    let Some(span) = e.span() else {
        return Error::bad_input(origin, message);
    };
    let at = span.start.min(text.len());
    file_error(origin, text, at, message)
}

/// A JSON error in `text` (read from `origin`) as BadInput naming
/// `origin:line` and, when a value has the wrong type, its key.
pub(crate) fn json_error(origin: &str, text: &str, e: &serde_json::Error) -> Error {
    let full = plain_types(&e.to_string());
    // serde_json appends " at line L column C"; the origin carries the line.
    let message = match full.rfind(" at line ") {
        Some(i) => full[..i].to_string(),
        None => full,
    };
    if e.line() == 0 {
        return Error::bad_input(origin, message);
    }
    let line_start: usize = text
        .split_inclusive('\n')
        .take(e.line() - 1)
        .map(str::len)
        .sum();
    let at = (line_start + e.column().saturating_sub(1)).min(text.len());
    file_error(origin, text, at, message)
}

/// `message` with the Rust type names serde puts in its messages
/// (`expected u64`) said in words (`expected a whole number of 0 or more`).
pub(crate) fn plain_types(message: &str) -> String {
    const WORDS: &[(&str, &str)] = &[
        ("u8", "a whole number of 0 or more"),
        ("u16", "a whole number of 0 or more"),
        ("u32", "a whole number of 0 or more"),
        ("u64", "a whole number of 0 or more"),
        ("usize", "a whole number of 0 or more"),
        ("i32", "a whole number"),
        ("i64", "a whole number"),
        ("f32", "a number"),
        ("f64", "a number"),
        ("a sequence", "a list"),
    ];
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find("expected ") {
        let after = at + "expected ".len();
        out.push_str(&rest[..after]);
        rest = &rest[after..];
        let plain = WORDS.iter().find(|(rust, _)| {
            rest.strip_prefix(rust)
                .is_some_and(|tail| !tail.starts_with(|c: char| c.is_alphanumeric() || c == '_'))
        });
        if let Some((rust, words)) = plain {
            out.push_str(words);
            rest = &rest[rust.len()..];
        }
    }
    out.push_str(rest);
    out
}

/// `origin:line: [key: ]message` for an error at byte `at` of `text` (the key
/// only for a value of the wrong kind; syntax errors name no key).
fn file_error(origin: &str, text: &str, at: usize, message: String) -> Error {
    // Parsers report positions that may fall inside a multi-byte character.
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    let line = 1 + text[..at].matches('\n').count();
    let bad_value = ["invalid type", "invalid value", "invalid length"]
        .iter()
        .any(|p| message.starts_with(p));
    match key_before(&text[..at]).filter(|_| bad_value) {
        Some(key) => Error::bad_input(format!("{origin}:{line}"), format!("{key}: {message}")),
        None => Error::bad_input(format!("{origin}:{line}"), message),
    }
}

/// The key of the value that ends `before`: the nearest `key =` (TOML) or
/// `"key":` (JSON) on its last line.
fn key_before(before: &str) -> Option<String> {
    let line = before.rsplit('\n').next()?;
    let sep = line.rfind([':', '='])?;
    let key = line[..sep].trim().trim_matches('"').trim();
    let key = key.rsplit([',', '{', ' ']).next()?.trim_matches('"');
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_alphanumeric() || "_-.".contains(c));
    plain.then(|| key.to_string())
}

/// Result with the host's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<BudgetSpent> for Error {
    fn from(spent: BudgetSpent) -> Self {
        Error::LlmBudget {
            agent: spent.agent,
            used: spent.used,
            budget: spent.budget,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn rust_type_names_are_said_in_words() {
        assert_eq!(
            super::plain_types("invalid type: string \"soon\", expected u64"),
            "invalid type: string \"soon\", expected a whole number of 0 or more"
        );
        assert_eq!(
            super::plain_types("invalid value: integer `-5`, expected usize"),
            "invalid value: integer `-5`, expected a whole number of 0 or more"
        );
        assert_eq!(
            super::plain_types("expected f64 or expected u64s"),
            "expected a number or expected u64s"
        );
        assert_eq!(
            super::plain_types("invalid type: string, expected a sequence"),
            "invalid type: string, expected a list"
        );
    }
}
