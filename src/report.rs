//! The result of a run: what `orrery run` prints, as text or JSON.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;
use serde_json::Value;

use crate::coordination::CoordinationMetrics;
use crate::error::{ErrorKind, exit};

/// How a task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskStatus {
    /// Every agent completed.
    Complete,
    /// An agent failed.
    Failed,
    /// The task ran out of time.
    Timeout,
    /// The run was stopped from outside (Ctrl-C).
    Interrupted,
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
    /// Whether it ended the agent (false for a failed message handler whose message was given back).
    pub fatal: bool,
    /// Exit code this error maps to.
    #[serde(skip)]
    pub exit_code: i32,
}

/// Everything a run produced.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// Task id.
    pub task_id: String,
    /// `complete`, `failed`, `timeout` or `interrupted`.
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
    /// interrupted, else the code of the first fatal error.
    pub fn exit_code(&self) -> i32 {
        match self.status {
            TaskStatus::Complete => exit::OK,
            TaskStatus::Timeout => exit::TIMEOUT,
            TaskStatus::Interrupted => exit::INTERRUPTED,
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
                let _ = writeln!(
                    s,
                    "  [{}] {} ({}): {}",
                    e.kind,
                    e.agent,
                    if e.fatal { "fatal" } else { "handled" },
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
                    "{} calls, {} failed, {} tokens",
                    u.total.calls, u.failed_calls, u.total.total_tokens
                )
            };
            let _ = writeln!(s, "  llm: {}", usage(&llm.task));
            for (model, u) in &llm.task.per_model {
                let _ = writeln!(
                    s,
                    "    {model}: {} calls, {} tokens",
                    u.calls, u.total_tokens
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
