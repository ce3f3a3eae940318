//! Counters of a run: the original `CoordinationMetrics` plus the host's own.
//!
//! Counting is local (atomics); [`MetricsCollector::flush`] adds what changed
//! since the last flush to the store, so a write costs no extra round trip.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use serde::Serialize;

use super::lost::LostWrites;
use crate::error::Result;
use crate::llm::{Usage, UsageReport};
use crate::store::Store;

/// Per-agent counters, held by the agent itself for cheap updates.
#[derive(Debug, Default)]
pub struct AgentCounters {
    /// Messages the agent sent.
    pub messages_sent: AtomicU64,
    /// Messages handed to the agent.
    pub messages_received: AtomicU64,
    /// Errors its callbacks raised.
    pub errors: AtomicU64,
}

/// The host's own counters.
#[derive(Debug, Default)]
pub struct HostCounters {
    /// Successful hot reloads.
    pub reloads: AtomicU64,
    /// Reloads refused because the new code failed.
    pub reload_errors: AtomicU64,
    /// LLM calls made, answered or failed.
    pub llm_calls: AtomicU64,
    /// LLM tokens used (prompt and completion).
    pub llm_tokens: AtomicU64,
    /// Lock acquisitions that had to wait.
    pub lock_waits: AtomicU64,
}

/// Counters of one task.
pub struct MetricsCollector {
    task_id: String,
    start_time: u64,
    blackboard_writes: AtomicU64,
    blackboard_reads: AtomicU64,
    spawn_events: AtomicU64,
    /// The host's own counters.
    pub host: HostCounters,
    agents: Mutex<BTreeMap<String, Arc<AgentCounters>>>,
    llm: Mutex<LlmMetrics>,
    custom: Mutex<BTreeMap<String, i64>>,
    flushed: Mutex<BTreeMap<String, i64>>,
    /// The flush under way, or one whose outcome is unknown (it failed or
    /// was cancelled): held across a flush, so two never overlap.
    unconfirmed: tokio::sync::Mutex<Option<Flush>>,
    /// Writes the store did not apply (shared with the bus).
    pub lost: Arc<LostWrites>,
}

/// Deltas sent to the store under a token: sent again with the same token
/// until the store confirms them, so the server adds them once.
struct Flush {
    token: String,
    deltas: Vec<(String, i64)>,
}

/// One agent's figures in the report.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AgentMetrics {
    /// Phases entered, in order.
    pub phases: Vec<String>,
    /// Messages sent.
    pub messages_sent: u64,
    /// Messages received.
    pub messages_received: u64,
    /// Errors raised.
    pub errors: u64,
}

/// LLM calls and tokens of a run: for the whole task (`total`,
/// `failed_calls`, `per_model`, flattened in) and the same for each agent.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LlmMetrics {
    /// The task's answered calls and tokens, overall and per model, and its failed calls.
    #[serde(flatten)]
    pub task: UsageReport,
    /// The same figures for each agent that called the LLM, by agent id.
    pub per_agent: BTreeMap<String, UsageReport>,
}

/// The metrics of a run, in the original system's shape plus `custom`, `host` and `llm`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CoordinationMetrics {
    /// Task id.
    pub task_id: String,
    /// Start (ms since the epoch).
    pub start_time: u64,
    /// End (ms since the epoch); `None` while running.
    pub end_time: Option<u64>,
    /// Per agent id.
    pub agent_metrics: BTreeMap<String, AgentMetrics>,
    /// Blackboard writes (set, delete, successful compare-and-set).
    pub blackboard_writes: u64,
    /// Blackboard reads.
    pub blackboard_reads: u64,
    /// Agents spawned after the start (conditions and direct spawns).
    pub spawn_events: u64,
    /// Counters scripts added with `metrics.incr`.
    pub custom: BTreeMap<String, i64>,
    /// The host's own counters.
    pub host: BTreeMap<String, u64>,
    /// LLM use per model and per agent.
    pub llm: LlmMetrics,
}

impl MetricsCollector {
    /// Counters for `task_id`, starting now.
    pub fn new(task_id: &str) -> Self {
        MetricsCollector {
            task_id: task_id.to_string(),
            start_time: super::now_ms(),
            blackboard_writes: AtomicU64::new(0),
            blackboard_reads: AtomicU64::new(0),
            spawn_events: AtomicU64::new(0),
            host: HostCounters::default(),
            agents: Mutex::default(),
            llm: Mutex::default(),
            custom: Mutex::default(),
            flushed: Mutex::default(),
            unconfirmed: tokio::sync::Mutex::default(),
            lost: Arc::default(),
        }
    }

    /// When the run started (ms since the epoch).
    pub fn start_time(&self) -> u64 {
        self.start_time
    }

    pub(crate) fn blackboard_write(&self) {
        self.blackboard_writes.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn blackboard_read(&self) {
        self.blackboard_reads.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn spawn_event(&self) {
        self.spawn_events.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters of agent `id`, created on first use.
    pub fn agent(&self, id: &str) -> Arc<AgentCounters> {
        self.agents
            .lock()
            .entry(id.to_string())
            .or_default()
            .clone()
    }

    /// Counts one LLM call of `agent` to `model`: answered with `usage`, or
    /// failed when `usage` is `None`.
    pub fn llm_call(&self, agent: &str, model: &str, usage: Option<&Usage>) {
        self.host.llm_calls.fetch_add(1, Ordering::Relaxed);
        let mut llm = self.llm.lock();
        let LlmMetrics { task, per_agent } = &mut *llm;
        let of_agent = per_agent.entry(agent.to_string()).or_default();
        match usage {
            Some(usage) => {
                self.host
                    .llm_tokens
                    .fetch_add(usage.total_tokens, Ordering::Relaxed);
                task.record_success(model, usage);
                of_agent.record_success(model, usage);
            }
            None => {
                task.record_failure();
                of_agent.record_failure();
            }
        }
    }

    /// Adds `delta` to the custom counter `name`; returns the new value.
    /// Fails on a bad name, or a new name when `max_metrics` names are in use.
    pub fn incr(&self, name: &str, delta: i64, max_metrics: usize) -> crate::error::Result<i64> {
        let mut custom = self.custom.lock();
        if !custom.contains_key(name) {
            super::quotas::check_name("metric name", name)?;
            if custom.len() >= max_metrics {
                return Err(super::quotas::exceeded(
                    format!("metric '{name}'"),
                    "max_metrics",
                    max_metrics,
                    "names",
                    &format!("the task has {} custom metrics", custom.len()),
                ));
            }
        }
        let v = custom.entry(name.to_string()).or_insert(0);
        *v = v.saturating_add(delta);
        Ok(*v)
    }

    /// A custom counter's value.
    pub fn custom(&self, name: &str) -> i64 {
        self.custom.lock().get(name).copied().unwrap_or(0)
    }

    /// Every counter under a flat name, as stored in `task:{id}:metrics`.
    pub fn flat(&self) -> BTreeMap<String, i64> {
        let mut m = BTreeMap::new();
        m.insert(
            "blackboard_writes".into(),
            self.blackboard_writes.load(Ordering::Relaxed) as i64,
        );
        m.insert(
            "blackboard_reads".into(),
            self.blackboard_reads.load(Ordering::Relaxed) as i64,
        );
        m.insert(
            "spawn_events".into(),
            self.spawn_events.load(Ordering::Relaxed) as i64,
        );
        for (name, v) in self.host_map() {
            m.insert(format!("host.{name}"), v as i64);
        }
        for (id, c) in self.agents.lock().iter() {
            m.insert(
                format!("agent.{id}.messages_sent"),
                c.messages_sent.load(Ordering::Relaxed) as i64,
            );
            m.insert(
                format!("agent.{id}.messages_received"),
                c.messages_received.load(Ordering::Relaxed) as i64,
            );
            m.insert(
                format!("agent.{id}.errors"),
                c.errors.load(Ordering::Relaxed) as i64,
            );
        }
        {
            let llm = self.llm.lock();
            for (id, u) in &llm.per_agent {
                m.insert(format!("llm.agent.{id}.calls"), u.total.calls as i64);
                m.insert(
                    format!("llm.agent.{id}.failed_calls"),
                    u.failed_calls as i64,
                );
                m.insert(
                    format!("llm.agent.{id}.tokens"),
                    u.total.total_tokens as i64,
                );
            }
            for (model, u) in &llm.task.per_model {
                m.insert(format!("llm.model.{model}.calls"), u.calls as i64);
                m.insert(format!("llm.model.{model}.tokens"), u.total_tokens as i64);
            }
        }
        for (name, v) in self.custom.lock().iter() {
            m.insert(format!("custom.{name}"), *v);
        }
        m
    }

    fn host_map(&self) -> BTreeMap<String, u64> {
        let h = &self.host;
        [
            ("reloads", &h.reloads),
            ("reload_errors", &h.reload_errors),
            ("llm_calls", &h.llm_calls),
            ("llm_tokens", &h.llm_tokens),
            ("lock_waits", &h.lock_waits),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.load(Ordering::Relaxed)))
        .collect()
    }

    /// Adds what changed since the last flush to the store's counters.
    ///
    /// A flush whose outcome is unknown (it failed after `connect_timeout`,
    /// its answer lost, or it was cancelled) may still have been applied: a
    /// paused server applies what it held when it resumes. It is sent again
    /// first, with the same token, which the server applies once (within
    /// the minute it remembers a token); only then are newer changes sent
    /// under a new one. Counting them again under a new token added a
    /// pause's changes twice.
    pub async fn flush(&self, store: &dyn Store) -> Result<()> {
        let mut unconfirmed = self.unconfirmed.lock().await;
        if let Some(earlier) = unconfirmed.as_ref() {
            store
                .metrics_add(&self.task_id, &earlier.token, &earlier.deltas)
                .await?;
            let earlier = unconfirmed.take().expect("checked above");
            self.confirm(earlier.deltas);
        }
        let deltas = self.deltas();
        if deltas.is_empty() {
            return Ok(());
        }
        let flush = unconfirmed.insert(Flush {
            token: format!("{:032x}", rand::random::<u128>()),
            deltas,
        });
        store
            .metrics_add(&self.task_id, &flush.token, &flush.deltas)
            .await?;
        let flush = unconfirmed.take().expect("inserted above");
        self.confirm(flush.deltas);
        Ok(())
    }

    /// What changed since the last confirmed flush.
    fn deltas(&self) -> Vec<(String, i64)> {
        let now = self.flat();
        let flushed = self.flushed.lock();
        now.into_iter()
            .filter_map(|(k, v)| {
                let d = v - flushed.get(&k).copied().unwrap_or(0);
                (d != 0).then_some((k, d))
            })
            .collect()
    }

    /// Counts `deltas` as in the store.
    fn confirm(&self, deltas: Vec<(String, i64)>) {
        let mut flushed = self.flushed.lock();
        for (k, d) in deltas {
            *flushed.entry(k).or_insert(0) += d;
        }
    }

    /// The report, with each agent's phases supplied by the caller.
    pub fn snapshot(
        &self,
        phases: &BTreeMap<String, Vec<String>>,
        end_time: Option<u64>,
    ) -> CoordinationMetrics {
        let mut agent_metrics: BTreeMap<String, AgentMetrics> = self
            .agents
            .lock()
            .iter()
            .map(|(id, c)| {
                (
                    id.clone(),
                    AgentMetrics {
                        phases: Vec::new(),
                        messages_sent: c.messages_sent.load(Ordering::Relaxed),
                        messages_received: c.messages_received.load(Ordering::Relaxed),
                        errors: c.errors.load(Ordering::Relaxed),
                    },
                )
            })
            .collect();
        for (id, p) in phases {
            agent_metrics.entry(id.clone()).or_default().phases = p.clone();
        }
        CoordinationMetrics {
            task_id: self.task_id.clone(),
            start_time: self.start_time,
            end_time,
            agent_metrics,
            blackboard_writes: self.blackboard_writes.load(Ordering::Relaxed),
            blackboard_reads: self.blackboard_reads.load(Ordering::Relaxed),
            spawn_events: self.spawn_events.load(Ordering::Relaxed),
            custom: self.custom.lock().clone(),
            host: self.host_map(),
            llm: self.llm.lock().clone(),
        }
    }
}
