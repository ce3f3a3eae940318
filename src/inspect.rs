//! What a task holds in a shared store, for `orrery inspect`: its record, the
//! processes that took part, every agent's phase and history, the blackboard,
//! pending and dead-lettered messages, and the metric counters.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;
use serde_json::Value;

use crate::error::Result;
use crate::store::{AgentRecord, HostRecord, MessageState, QueuedMessage, Store, TaskRecord};

/// A task's state in the store at one moment.
#[derive(Debug, Clone, Serialize)]
pub struct TaskSnapshot {
    /// Task id.
    pub task_id: String,
    /// The store it was read from (password hidden).
    pub store: String,
    /// The owner's record of the run, if one was written.
    pub task: Option<TaskRecord>,
    /// Every process that took part.
    pub hosts: Vec<HostRecord>,
    /// Every agent, with phase, history and heartbeat.
    pub agents: Vec<AgentRecord>,
    /// Every live blackboard key and its value.
    pub blackboard: BTreeMap<String, Value>,
    /// Messages waiting or handed out and not acknowledged.
    pub pending: Vec<QueuedMessage>,
    /// Messages that failed `max_attempts` times.
    pub dead_letters: Vec<QueuedMessage>,
    /// The counters flushed to the store by every process.
    pub metrics: BTreeMap<String, i64>,
}

impl TaskSnapshot {
    /// Reads everything the store holds for `task_id`.
    pub async fn read(store: &dyn Store, task_id: &str) -> Result<TaskSnapshot> {
        let mut blackboard = BTreeMap::new();
        for key in store.bb_keys(task_id, "").await? {
            if let Some(v) = store.bb_get(task_id, &key).await? {
                blackboard.insert(key, v);
            }
        }
        let (dead_letters, pending) = store
            .queue_list(task_id)
            .await?
            .into_iter()
            .partition(|m| m.state == MessageState::Dead);
        Ok(TaskSnapshot {
            task_id: task_id.to_string(),
            store: store.describe(),
            task: store.task_get(task_id).await?,
            hosts: store.host_list(task_id).await?,
            agents: store.agent_list(task_id).await?,
            blackboard,
            pending,
            dead_letters,
            metrics: store.metrics_get(task_id).await?,
        })
    }

    /// True when the store holds nothing for the task.
    pub fn is_empty(&self) -> bool {
        self.task.is_none()
            && self.agents.is_empty()
            && self.blackboard.is_empty()
            && self.pending.is_empty()
            && self.dead_letters.is_empty()
            && self.metrics.is_empty()
    }

    /// A readable account for the terminal; `now_ms` dates the heartbeats.
    pub fn render(&self, now_ms: u64) -> String {
        let mut s = String::new();
        self.render_task(&mut s, now_ms);
        self.render_agents(&mut s, now_ms);
        let _ = writeln!(
            s,
            "blackboard ({}):",
            crate::text::plural(self.blackboard.len() as u64, "key", "keys")
        );
        for (k, v) in &self.blackboard {
            let _ = writeln!(s, "  {k} = {}", one_line(v));
        }
        let _ = writeln!(
            s,
            "messages: {} pending, {} dead-lettered",
            self.pending.len(),
            self.dead_letters.len()
        );
        for m in self.pending.iter().chain(&self.dead_letters) {
            let e = &m.envelope;
            let _ = writeln!(
                s,
                "  {:<7} to {:<10} {:<14} from {:<10} attempts {}  id {}  payload {}",
                m.state,
                m.queue,
                e.kind,
                e.from,
                e.attempts,
                e.id,
                one_line(&e.payload)
            );
        }
        let _ = writeln!(s, "metrics:");
        for (k, v) in &self.metrics {
            let _ = writeln!(s, "  {k} = {v}");
        }
        s
    }

    fn render_task(&self, s: &mut String, now_ms: u64) {
        match &self.task {
            Some(t) => {
                let kind = t
                    .definition
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("?");
                let _ = writeln!(s, "task {} ({kind}): {}", self.task_id, t.status);
                let ran = t.ended_ms.unwrap_or(now_ms).saturating_sub(t.started_ms);
                let verb = if t.ended_ms.is_some() {
                    "ran"
                } else {
                    "running for"
                };
                let _ = writeln!(s, "  owner {}, {verb} {ran} ms", t.owner);
            }
            None => {
                let _ = writeln!(s, "task {}: no run record", self.task_id);
            }
        }
        let _ = writeln!(s, "  store {}", self.store);
        if !self.hosts.is_empty() {
            let _ = writeln!(s, "processes:");
            for h in &self.hosts {
                let _ = writeln!(
                    s,
                    "  {:<24} {:<6} {:<5} last beat {}, {} busy",
                    h.id,
                    h.role,
                    h.state,
                    ago(now_ms, h.heartbeat_ms),
                    crate::text::plural(h.busy as u64, "agent", "agents")
                );
            }
        }
    }

    fn render_agents(&self, s: &mut String, now_ms: u64) {
        let _ = writeln!(s, "agents ({}):", self.agents.len());
        for a in &self.agents {
            let reason = a
                .error
                .as_deref()
                .map(|e| format!("  ({e})"))
                .unwrap_or_default();
            let _ = writeln!(
                s,
                "  {:<10} {:<10} on {}, last beat {}{reason}",
                a.id,
                a.phase,
                a.host,
                ago(now_ms, a.heartbeat_ms)
            );
            let start = a.history.first().map_or(0, |h| h.at_ms);
            let history: Vec<String> = a
                .history
                .iter()
                .map(|h| format!("{} (+{} ms)", h.phase, h.at_ms.saturating_sub(start)))
                .collect();
            let _ = writeln!(s, "             {}", history.join(" > "));
        }
    }
}

fn ago(now_ms: u64, then_ms: u64) -> String {
    let ms = now_ms.saturating_sub(then_ms);
    if ms < 10_000 {
        format!("{ms} ms ago")
    } else {
        format!("{} s ago", ms / 1000)
    }
}

fn one_line(v: &Value) -> String {
    let text = v.to_string();
    if text.chars().count() > 120 {
        format!("{}…", text.chars().take(120).collect::<String>())
    } else {
        text
    }
}
