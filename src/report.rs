//! The result of a run: what `orrery run` prints, as text or JSON.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;
use serde_json::Value;

use crate::coordination::CoordinationMetrics;
use crate::error::{ErrorKind, exit};

/// How a task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    /// Every agent completed.
    Complete,
    /// An agent failed.
    Failed,
    /// The task ran out of time.
    Timeout,
    /// The run was stopped from outside (Ctrl-C).
    Interrupted,
    /// This process left the task, still running, to another (a worker's
    /// hand-over); the task's end is the other's to report.
    HandedOver,
}

/// An error reported by the run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReportedError {
    /// Agent it happened in (or `host`).
    pub agent: String,
    /// Error kind (`script`, `timeout`, `spawn_limit`, ...).
    pub kind: ErrorKind,
    /// The message, with `path:line` for script errors.
    pub message: String,
    /// Whether it fails the task: an agent that failed, a dead-lettered
    /// message, a missing required output (false for a failed message
    /// handler whose message was given back, and for what the task's
    /// `[success]` table allows).
    pub fatal: bool,
    /// The task's `[success]` table allows it (a failed agent, a dead letter).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub allowed: bool,
    /// How many times it happened (shown when more than once): identical
    /// errors — same agent, kind and first line — are reported once.
    #[serde(skip_serializing_if = "is_one")]
    pub count: u64,
    /// Exit code this error maps to.
    #[serde(skip)]
    pub exit_code: i32,
}

impl ReportedError {
    /// The report's entry for `e`, raised in `agent`.
    pub fn of(agent: &str, e: &crate::Error, fatal: bool) -> Self {
        ReportedError {
            agent: agent.to_string(),
            kind: e.kind(),
            message: e.to_string(),
            fatal,
            allowed: false,
            count: 1,
            exit_code: e.exit_code(),
        }
    }

    /// How the summary labels it: `fatal`, `allowed` or `handled`.
    fn label(&self) -> &'static str {
        match (self.fatal, self.allowed) {
            (true, _) => "fatal",
            (false, true) => "allowed",
            (false, false) => "handled",
        }
    }
}

/// Everything a run produced.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// Task id.
    pub task_id: String,
    /// `complete`, `failed`, `timeout`, `interrupted` or `handed_over`.
    pub status: TaskStatus,
    /// Wall time of the run.
    pub duration_ms: u64,
    /// Every agent that ran, by id, in start order.
    pub agents_used: Vec<String>,
    /// What the agents recorded with `task.output`.
    pub outputs: BTreeMap<String, Value>,
    /// Errors, fatal or not.
    pub errors: Vec<ReportedError>,
    /// The coordination metrics.
    pub metrics: CoordinationMetrics,
}

impl RunReport {
    /// The exit code of the run: 0 when complete, 4 on timeout, 130 when
    /// interrupted or handed over, else the code of the first fatal error.
    pub fn exit_code(&self) -> i32 {
        match self.status {
            TaskStatus::Complete => exit::OK,
            TaskStatus::Timeout => exit::TIMEOUT,
            TaskStatus::Interrupted | TaskStatus::HandedOver => exit::INTERRUPTED,
            TaskStatus::Failed => self
                .errors
                .iter()
                .find(|e| e.fatal)
                .map_or(exit::TASK_FAILED, |e| e.exit_code),
        }
    }

    /// A readable summary for the terminal.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let status = match self.status {
            TaskStatus::Complete => "complete",
            TaskStatus::Failed => "FAILED",
            TaskStatus::Timeout => "TIMEOUT",
            TaskStatus::Interrupted => "INTERRUPTED",
            TaskStatus::HandedOver => "HANDED OVER",
        };
        let _ = writeln!(
            s,
            "task {}: {status} in {} ms",
            self.task_id, self.duration_ms
        );
        let _ = writeln!(s, "agents: {}", self.agents_used.join(", "));
        if !self.outputs.is_empty() {
            let _ = writeln!(s, "outputs:");
            for (k, v) in &self.outputs {
                let _ = writeln!(s, "  {k}: {}", one_line(v));
            }
        }
        if !self.errors.is_empty() {
            let _ = writeln!(s, "errors:");
            for e in &self.errors {
                let times = if e.count > 1 {
                    format!(" ×{}", e.count)
                } else {
                    String::new()
                };
                let _ = writeln!(
                    s,
                    "  [{}] {} ({}){times}: {}",
                    e.kind,
                    e.agent,
                    e.label(),
                    e.message
                );
            }
        }
        let m = &self.metrics;
        let _ = writeln!(
            s,
            "metrics: blackboard {} writes / {} reads, {} spawn events",
            m.blackboard_writes, m.blackboard_reads, m.spawn_events
        );
        for (id, a) in &m.agent_metrics {
            let _ = writeln!(
                s,
                "  {id:<10} sent {:>4}  received {:>4}  errors {:>2}  phases {}",
                a.messages_sent,
                a.messages_received,
                a.errors,
                a.phases.join(" > ")
            );
        }
        let llm = &m.llm;
        if llm.task.total.calls + llm.task.failed_calls > 0 {
            let usage = |u: &crate::llm::UsageReport| {
                format!(
                    "{}, {} failed, {}",
                    crate::text::plural(u.total.calls, "call", "calls"),
                    u.failed_calls,
                    crate::text::plural(u.total.total_tokens, "token", "tokens")
                )
            };
            let _ = writeln!(s, "  llm: {}", usage(&llm.task));
            for (model, u) in &llm.task.per_model {
                let _ = writeln!(
                    s,
                    "    {model}: {}, {}",
                    crate::text::plural(u.calls, "call", "calls"),
                    crate::text::plural(u.total_tokens, "token", "tokens")
                );
            }
            for (id, u) in &llm.per_agent {
                let _ = writeln!(s, "    {id}: {}", usage(u));
            }
        }
        if !m.custom.is_empty() {
            let custom: Vec<String> = m.custom.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let _ = writeln!(s, "  custom: {}", custom.join(", "));
        }
        s
    }
}

fn is_one(n: &u64) -> bool {
    *n == 1
}

/// Folds identical errors (same agent, kind, verdict and first line of
/// message) into the first of them, counted; the order of first
/// occurrences stays.
pub fn collapse(errors: Vec<ReportedError>) -> Vec<ReportedError> {
    let mut out: Vec<ReportedError> = Vec::with_capacity(errors.len());
    let mut index: BTreeMap<(String, String, bool, bool, String), usize> = BTreeMap::new();
    for e in errors {
        let first = e.message.lines().next().unwrap_or_default().to_string();
        let key = (
            e.agent.clone(),
            e.kind.as_str().to_string(),
            e.fatal,
            e.allowed,
            first,
        );
        match index.get(&key) {
            Some(&i) => out[i].count += e.count,
            None => {
                index.insert(key, out.len());
                out.push(e);
            }
        }
    }
    out
}

fn one_line(v: &Value) -> String {
    let text = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if text.chars().count() > 160 {
        format!("{}…", text.chars().take(160).collect::<String>())
    } else {
        text
    }
}
