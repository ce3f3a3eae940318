//! What the journal records: one [`Event`] per thing that happened, wrapped in
//! an [`Entry`] with its sequence number, time, host and agent.
//!
//! Serialized as one JSON object per entry, the event's fields flattened in
//! beside a `kind` tag: `{"seq":7,"at_us":…,"host":"h:42-ab12","agent":"alpha-1",
//! "kind":"message_sent","id":"…","to":"beta","type":"step_ready","bytes":57}`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::llm::ChatMessage;

/// One thing that happened in a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// This process started (or joined) the run of a task.
    RunStarted {
        /// Task id.
        task: String,
        /// Task type (`deployment`).
        task_type: String,
        /// The task's description.
        description: String,
        /// True for the process that owns the run, false for one that joined it.
        owner: bool,
    },
    /// This process's part of the run ended.
    RunEnded {
        /// Task id.
        task: String,
        /// `complete`, `failed`, `timeout`, `interrupted`, or `error` when the run could not start.
        status: String,
        /// How long this process ran the task.
        duration_ms: u64,
        /// True for the process that owns the run.
        owner: bool,
        /// Errors in the report.
        errors: usize,
        /// The report's metrics (`CoordinationMetrics`), when there is a report.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        metrics: Option<Value>,
    },
    /// The entry's agent moved to a phase (`from` is absent for the first, INIT).
    Phase {
        /// The agent's role; given with the first phase.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        role: Option<String>,
        /// Phase before.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from: Option<String>,
        /// Phase after.
        to: String,
        /// Why, for FAILED.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// The entry's agent was started.
    Spawned {
        /// Its role.
        role: String,
        /// The agent that asked for it; absent for the agents a task starts with.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parent: Option<String>,
    },
    /// A spawn condition fired on a signal of the entry's agent.
    ConditionMet {
        /// The signal's trigger.
        trigger: String,
        /// The condition's threshold.
        threshold: f64,
        /// The value signalled.
        value: f64,
        /// The role it starts.
        role: String,
        /// The id of the agent it started.
        started: String,
    },
    /// The entry's agent sent a message.
    MessageSent {
        /// Message id.
        id: String,
        /// Recipient as written: an agent id, a role, or `*` for a broadcast.
        to: String,
        /// Message type.
        #[serde(rename = "type")]
        message_type: String,
        /// Approximate size of the payload as JSON.
        bytes: usize,
        /// The payload, when it is small (see [`SMALL_VALUE_BYTES`](super::SMALL_VALUE_BYTES)).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        payload: Option<Value>,
    },
    /// The entry's agent handled a message (its handler returned; acknowledged).
    MessageHandled {
        /// Message id.
        id: String,
        /// Sender.
        from: String,
        /// Message type.
        #[serde(rename = "type")]
        message_type: String,
        /// Which delivery this was (1 for the first).
        attempt: u32,
    },
    /// The entry's agent's handler failed: the message goes back to its queue.
    MessageGivenBack {
        /// Message id.
        id: String,
        /// Sender.
        from: String,
        /// Message type.
        #[serde(rename = "type")]
        message_type: String,
        /// Which delivery failed.
        attempt: u32,
    },
    /// A message failed `max_attempts` deliveries and was dead-lettered.
    MessageDeadLettered {
        /// Message id.
        id: String,
        /// Sender.
        from: String,
        /// Message type.
        #[serde(rename = "type")]
        message_type: String,
        /// Deliveries made.
        attempts: u32,
    },
    /// Messages the entry's agent held unacknowledged went back to their
    /// queues when it ended.
    MessagesReleased {
        /// How many.
        count: usize,
    },
    /// The entry's agent wrote a blackboard key.
    BlackboardWrite {
        /// The key.
        key: String,
        /// Approximate size of the value as JSON.
        bytes: usize,
        /// The value, when it is small (see [`SMALL_VALUE_BYTES`](super::SMALL_VALUE_BYTES)).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        value: Option<Value>,
    },
    /// A blackboard write of the entry's agent, journaled as it was sent,
    /// was not applied: a server refused it (out of memory, say) or its
    /// outcome stayed unknown (the connection broke and it could not be
    /// sent again). The run's errors say the same; its report does not
    /// count it as a write.
    BlackboardWriteFailed {
        /// The key.
        key: String,
        /// Why.
        error: String,
    },
    /// The entry's agent deleted a blackboard key.
    BlackboardDelete {
        /// The key.
        key: String,
        /// False when there was nothing to delete.
        existed: bool,
    },
    /// The entry's agent took a lock.
    LockAcquired {
        /// Lock name.
        name: String,
        /// Its fencing number.
        fence: u64,
        /// How long it waited for it.
        waited_ms: f64,
    },
    /// The entry's agent gave up waiting for a lock.
    LockTimedOut {
        /// Lock name.
        name: String,
        /// How long it waited.
        waited_ms: f64,
    },
    /// The entry's agent released a lock it held.
    LockReleased {
        /// Lock name.
        name: String,
        /// The grant's fencing number.
        fence: u64,
    },
    /// The entry's agent found its grant of a lock expired (or taken over)
    /// when releasing or extending it.
    LockExpired {
        /// Lock name.
        name: String,
        /// The grant's fencing number.
        fence: u64,
    },
    /// The entry's agent called the LLM.
    LlmCall {
        /// The model asked for.
        model: String,
        /// Who answered: `api`, `mock` or `replay`; absent when the call failed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        source: Option<String>,
        /// Time from the call to its answer or failure.
        latency_ms: f64,
        /// Prompt tokens.
        input_tokens: u64,
        /// Completion tokens.
        output_tokens: u64,
        /// Why it failed (`timeout`, `rate_limited`, `http`, ...), when it did.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error_kind: Option<String>,
        /// The messages sent, only when prompts are journaled (`--journal-prompts`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prompt: Option<Vec<ChatMessage>>,
        /// The answer's text, only when prompts are journaled.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        answer: Option<String>,
    },
    /// New code of a file was registered (or a file was deleted).
    Reload {
        /// The file.
        path: String,
        /// `updated`, `added` or `removed`.
        change: String,
        /// Live agents using it.
        agents: Vec<String>,
    },
    /// New code was refused: the file failed its check, or the entry's agent
    /// could not switch to it.
    ReloadRefused {
        /// The file.
        path: String,
        /// `path:line: message`.
        error: String,
    },
    /// A handler or watch of the entry's agent failed (as it happened; the
    /// report lists it among the run's errors, see [`Event::Error`]).
    HandlerFailed {
        /// What was being handled (`message 'x' from alpha-1`, `watch of 'k'`).
        during: String,
        /// The error's kind.
        error_kind: String,
        /// What went wrong.
        message: String,
    },
    /// Entries are missing here: the journal's sinks fell so far behind that
    /// this many were dropped (see [`MAX_PENDING_BYTES`](super::MAX_PENDING_BYTES)).
    JournalDropped {
        /// How many.
        count: u64,
    },
    /// An error of the run, as the report lists it: each process journals
    /// its report's errors when its run ends.
    Error {
        /// The error's kind (`script`, `timeout`, ...).
        error_kind: String,
        /// What went wrong.
        message: String,
        /// True when it failed the task.
        fatal: bool,
    },
}

impl Event {
    /// The `kind` tag of this event (`message_sent`).
    pub fn kind(&self) -> &'static str {
        match self {
            Event::RunStarted { .. } => "run_started",
            Event::RunEnded { .. } => "run_ended",
            Event::Phase { .. } => "phase",
            Event::Spawned { .. } => "spawned",
            Event::ConditionMet { .. } => "condition_met",
            Event::MessageSent { .. } => "message_sent",
            Event::MessageHandled { .. } => "message_handled",
            Event::MessageGivenBack { .. } => "message_given_back",
            Event::MessageDeadLettered { .. } => "message_dead_lettered",
            Event::MessagesReleased { .. } => "messages_released",
            Event::BlackboardWrite { .. } => "blackboard_write",
            Event::BlackboardWriteFailed { .. } => "blackboard_write_failed",
            Event::BlackboardDelete { .. } => "blackboard_delete",
            Event::LockAcquired { .. } => "lock_acquired",
            Event::LockTimedOut { .. } => "lock_timed_out",
            Event::LockReleased { .. } => "lock_released",
            Event::LockExpired { .. } => "lock_expired",
            Event::LlmCall { .. } => "llm_call",
            Event::Reload { .. } => "reload",
            Event::ReloadRefused { .. } => "reload_refused",
            Event::HandlerFailed { .. } => "handler_failed",
            Event::JournalDropped { .. } => "journal_dropped",
            Event::Error { .. } => "error",
        }
    }
}

/// One journal record: an event with where and when it happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Grows by one with every entry of a process's journal.
    pub seq: u64,
    /// When (microseconds since the Unix epoch).
    pub at_us: u64,
    /// The process it came from (`hostname:pid-xxxx`).
    pub host: String,
    /// The agent it is about (or that did it); absent for the host's own events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// What happened.
    #[serde(flatten)]
    pub event: Event,
}

impl Entry {
    /// Parses one JSON line of a journal; the error says what is wrong with it.
    pub fn parse(line: &str) -> Result<Entry, serde_json::Error> {
        serde_json::from_str(line)
    }

    /// One line for a person: `alpha-1 message_sent step_ready -> beta (ab12-3)`.
    pub fn describe(&self) -> String {
        let who = self.agent.as_deref().unwrap_or("host");
        let what = match &self.event {
            Event::RunStarted {
                task,
                task_type,
                owner,
                ..
            } => format!(
                "{} task {task} ({task_type})",
                if *owner { "started" } else { "joined" }
            ),
            Event::RunEnded {
                task,
                status,
                duration_ms,
                ..
            } => format!("task {task} ended {status} after {duration_ms} ms"),
            Event::Phase {
                from, to, reason, ..
            } => format!(
                "{} -> {to}{}",
                from.as_deref().unwrap_or("-"),
                reason
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            ),
            Event::Spawned { role, parent } => match parent {
                Some(p) => format!("spawned ({role}) by {p}"),
                None => format!("started ({role})"),
            },
            Event::ConditionMet {
                trigger,
                value,
                threshold,
                started,
                ..
            } => format!("signal {trigger}={value} >= {threshold} started {started}"),
            Event::MessageSent {
                id,
                to,
                message_type,
                ..
            } => format!("sent {message_type} to {to} ({id})"),
            Event::MessageHandled {
                id,
                from,
                message_type,
                ..
            } => format!("handled {message_type} from {from} ({id})"),
            Event::MessageGivenBack {
                id,
                message_type,
                attempt,
                ..
            } => format!("gave back {message_type} ({id}) after attempt {attempt}"),
            Event::MessageDeadLettered {
                id,
                message_type,
                attempts,
                ..
            } => format!("dead-lettered {message_type} ({id}) after {attempts} attempts"),
            Event::MessagesReleased { count } => format!("released {count} message(s)"),
            Event::BlackboardWrite { key, bytes, .. } => format!("set {key} ({bytes} B)"),
            Event::BlackboardWriteFailed { key, error } => format!("set {key} failed: {error}"),
            Event::BlackboardDelete { key, .. } => format!("deleted {key}"),
            Event::LockAcquired {
                name,
                fence,
                waited_ms,
            } => format!("locked {name} (fence {fence}, waited {waited_ms:.1} ms)"),
            Event::LockTimedOut { name, waited_ms } => {
                format!("gave up on lock {name} after {waited_ms:.1} ms")
            }
            Event::LockReleased { name, fence } => format!("unlocked {name} (fence {fence})"),
            Event::LockExpired { name, fence } => format!("lock {name} expired (fence {fence})"),
            Event::LlmCall {
                model,
                latency_ms,
                input_tokens,
                output_tokens,
                error_kind,
                ..
            } => match error_kind {
                Some(kind) => format!("llm {model} failed ({kind}) after {latency_ms:.0} ms"),
                None => format!(
                    "llm {model} {latency_ms:.0} ms, {input_tokens} in / {output_tokens} out tokens"
                ),
            },
            Event::Reload { path, change, .. } => format!("reload {path}: {change}"),
            Event::ReloadRefused { path, error } => format!("reload of {path} refused: {error}"),
            Event::HandlerFailed {
                during, message, ..
            } => format!("failed handling {during}: {message}"),
            Event::JournalDropped { count } => {
                format!("{count} journal entries dropped here: its sinks fell behind")
            }
            Event::Error {
                error_kind,
                message,
                fatal,
            } => format!(
                "{}error [{error_kind}] {message}",
                if *fatal { "fatal " } else { "" }
            ),
        };
        format!("{who:<10} {what}")
    }
}
