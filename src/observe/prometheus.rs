//! Prometheus metrics of a run, served as text at `/metrics`
//! (`--metrics-addr ADDR`). Counted from the journal's entries, so they
//! say exactly what the journal says; named `orrery_*` in base units
//! (`_seconds`, `_bytes`, `_total`) and labelled by role and task type, plus
//! bounded labels (phase, model, outcome, error kind), never by agent or
//! message ids.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use parking_lot::Mutex;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::coordination::Coordination;
use crate::coordination::journal::{Batch, Event, Item, Sink};
use crate::error::{Error, Result};

/// A label value as the text exposition format writes it: a backslash, a
/// double quote and a line feed escaped. prometheus-client writes label
/// values as they are, so a task type (which a task file, or a fleet
/// submitter, chooses) holding `"} 1` and a line feed would add series of
/// its own to the endpoint.
#[derive(Clone, Debug, Default, Hash, PartialEq, Eq)]
struct Label(String);

impl EncodeLabelValue for Label {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        use std::fmt::Write;
        let mut rest = self.0.as_str();
        while let Some(at) = rest.find(['\\', '"', '\n']) {
            encoder.write_str(&rest[..at])?;
            encoder.write_str(match rest.as_bytes()[at] {
                b'\\' => "\\\\",
                b'"' => "\\\"",
                _ => "\\n",
            })?;
            rest = &rest[at + 1..];
        }
        encoder.write_str(rest)
    }
}

impl From<&str> for Label {
    fn from(s: &str) -> Label {
        Label(s.to_string())
    }
}

impl From<String> for Label {
    fn from(s: String) -> Label {
        Label(s)
    }
}

/// Role and task type: the labels of every per-agent series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Who {
    role: Label,
    task_type: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    role: Label,
    task_type: Label,
    phase: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LlmLabels {
    role: Label,
    task_type: Label,
    model: Label,
    outcome: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    role: Label,
    task_type: Label,
    model: Label,
    r#type: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabels {
    role: Label,
    task_type: Label,
    model: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    role: Label,
    task_type: Label,
    kind: Label,
    fatal: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    role: Label,
    task_type: Label,
    kind: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    task_type: Label,
    status: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    task_type: Label,
    outcome: Label,
}

type Seconds = Family<Who, Histogram, fn() -> Histogram>;

fn seconds() -> Histogram {
    // 0.5 ms to about 16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Every series of the runs, and what one run's entries so far said about
/// its agents (each run's sink has its own copy of that; the series are
/// shared).
#[derive(Clone)]
struct Metrics {
    runs: Family<RunLabels, Counter>,
    run_duration: Family<RunLabels, Histogram, fn() -> Histogram>,
    agents_started: Family<Who, Counter>,
    agents_live: Family<Who, Gauge>,
    phases: Family<PhaseLabels, Counter>,
    sent: Family<Who, Counter>,
    sent_bytes: Family<Who, Counter>,
    handled: Family<Who, Counter>,
    given_back: Family<Who, Counter>,
    dead_lettered: Family<Who, Counter>,
    bb_writes: Family<Who, Counter>,
    bb_bytes: Family<Who, Counter>,
    bb_failed: Family<Who, Counter>,
    locks: Family<Who, Counter>,
    lock_wait: Seconds,
    lock_timeouts: Family<Who, Counter>,
    locks_expired: Family<Who, Counter>,
    llm_calls: Family<LlmLabels, Counter>,
    llm_tokens: Family<TokenLabels, Counter>,
    llm_duration: Family<ModelLabels, Histogram, fn() -> Histogram>,
    reloads: Family<ReloadLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    handler_failures: Family<KindLabels, Counter>,
    journal_dropped: Counter,
    task_type: Label,
    roles: HashMap<String, Label>,
}

impl Metrics {
    /// The series, registered in `r`.
    fn new(r: &mut Registry) -> Metrics {
        let m = Metrics {
            runs: Family::default(),
            run_duration: Family::new_with_constructor(seconds),
            agents_started: Family::default(),
            agents_live: Family::default(),
            phases: Family::default(),
            sent: Family::default(),
            sent_bytes: Family::default(),
            handled: Family::default(),
            given_back: Family::default(),
            dead_lettered: Family::default(),
            bb_writes: Family::default(),
            bb_bytes: Family::default(),
            bb_failed: Family::default(),
            locks: Family::default(),
            lock_wait: Family::new_with_constructor(seconds),
            lock_timeouts: Family::default(),
            locks_expired: Family::default(),
            llm_calls: Family::default(),
            llm_tokens: Family::default(),
            llm_duration: Family::new_with_constructor(seconds),
            reloads: Family::default(),
            errors: Family::default(),
            handler_failures: Family::default(),
            journal_dropped: Counter::default(),
            task_type: Label::default(),
            roles: HashMap::new(),
        };
        r.register(
            "runs",
            "Task runs this process ended, by status",
            m.runs.clone(),
        );
        r.register_with_unit(
            "run_duration",
            "How long this process ran a task",
            Unit::Seconds,
            m.run_duration.clone(),
        );
        r.register("agents_started", "Agents started", m.agents_started.clone());
        r.register("agents_live", "Agents running now", m.agents_live.clone());
        r.register("phase_changes", "Agents entering a phase", m.phases.clone());
        r.register("messages_sent", "Messages sent", m.sent.clone());
        r.register_with_unit(
            "message_payload",
            "Payload bytes of the messages sent (JSON, approximate)",
            Unit::Bytes,
            m.sent_bytes.clone(),
        );
        r.register(
            "messages_handled",
            "Messages handled (acknowledged)",
            m.handled.clone(),
        );
        r.register(
            "messages_given_back",
            "Deliveries whose handler failed (the message is redelivered)",
            m.given_back.clone(),
        );
        r.register(
            "messages_dead_lettered",
            "Messages dead-lettered after max_attempts deliveries",
            m.dead_lettered.clone(),
        );
        r.register(
            "blackboard_writes",
            "Blackboard writes and deletes",
            m.bb_writes.clone(),
        );
        r.register_with_unit(
            "blackboard_written",
            "Bytes written to the blackboard (JSON, approximate)",
            Unit::Bytes,
            m.bb_bytes.clone(),
        );
        r.register(
            "blackboard_write_failures",
            "Blackboard writes counted above that a server refused or whose outcome stayed unknown",
            m.bb_failed.clone(),
        );
        r.register("lock_acquisitions", "Locks taken", m.locks.clone());
        r.register_with_unit(
            "lock_wait",
            "Time waited for a lock that was taken",
            Unit::Seconds,
            m.lock_wait.clone(),
        );
        r.register(
            "lock_timeouts",
            "Waits for a lock that ran out",
            m.lock_timeouts.clone(),
        );
        r.register(
            "locks_expired",
            "Grants found expired when released or extended",
            m.locks_expired.clone(),
        );
        r.register(
            "llm_calls",
            "LLM calls, by model and outcome",
            m.llm_calls.clone(),
        );
        r.register(
            "llm_tokens",
            "LLM tokens, input or output",
            m.llm_tokens.clone(),
        );
        r.register_with_unit(
            "llm_call_duration",
            "Time from an LLM call to its answer or failure",
            Unit::Seconds,
            m.llm_duration.clone(),
        );
        r.register("reloads", "Script reloads, by outcome", m.reloads.clone());
        r.register(
            "journal_dropped",
            "Journal entries dropped because its sinks fell behind",
            m.journal_dropped.clone(),
        );
        r.register(
            "errors",
            "Errors the run reports, by kind",
            m.errors.clone(),
        );
        r.register(
            "handler_failures",
            "Message handlers and watches that failed, as they failed",
            m.handler_failures.clone(),
        );
        m
    }

    /// The same series, for another run.
    fn for_run(&self) -> Metrics {
        Metrics {
            task_type: Label::default(),
            roles: HashMap::new(),
            ..self.clone()
        }
    }

    fn who(&self, agent: Option<&str>) -> Who {
        let role = agent
            .map(|a| {
                self.roles
                    .get(a)
                    .cloned()
                    .unwrap_or_else(|| role_of(a).into())
            })
            .unwrap_or_else(|| "host".into());
        Who {
            role,
            task_type: self.task_type.clone(),
        }
    }

    fn take(&mut self, e: &Item) {
        let agent = e.agent.as_deref();
        match &e.event {
            Event::RunStarted { task_type, .. } => self.task_type = task_type.as_str().into(),
            Event::RunEnded {
                status,
                duration_ms,
                ..
            } => {
                let labels = RunLabels {
                    task_type: self.task_type.clone(),
                    status: status.as_str().into(),
                };
                self.runs.get_or_create(&labels).inc();
                self.run_duration
                    .get_or_create(&labels)
                    .observe(*duration_ms as f64 / 1e3);
            }
            Event::Phase { role, to, .. } => {
                if let (Some(agent), Some(role)) = (agent, role) {
                    self.roles.insert(agent.to_string(), role.as_str().into());
                }
                let who = self.who(agent);
                if to == "COMPLETE" || to == "FAILED" {
                    self.agents_live.get_or_create(&who).dec();
                }
                self.phases
                    .get_or_create(&PhaseLabels {
                        role: who.role,
                        task_type: who.task_type,
                        phase: to.as_str().into(),
                    })
                    .inc();
            }
            Event::Spawned { role, .. } => {
                if let Some(agent) = agent {
                    self.roles.insert(agent.to_string(), role.as_str().into());
                }
                let who = self.who(agent);
                self.agents_started.get_or_create(&who).inc();
                self.agents_live.get_or_create(&who).inc();
            }
            Event::MessageSent { bytes, .. } => {
                let who = self.who(agent);
                self.sent.get_or_create(&who).inc();
                self.sent_bytes.get_or_create(&who).inc_by(*bytes as u64);
            }
            Event::MessageHandled { .. } => {
                self.handled.get_or_create(&self.who(agent)).inc();
            }
            Event::MessageGivenBack { .. } => {
                self.given_back.get_or_create(&self.who(agent)).inc();
            }
            Event::MessageDeadLettered { .. } => {
                self.dead_lettered.get_or_create(&self.who(agent)).inc();
            }
            Event::BlackboardWrite { bytes, .. } => {
                let who = self.who(agent);
                self.bb_writes.get_or_create(&who).inc();
                self.bb_bytes.get_or_create(&who).inc_by(*bytes as u64);
            }
            Event::BlackboardWriteFailed { .. } => {
                self.bb_failed.get_or_create(&self.who(agent)).inc();
            }
            Event::BlackboardDelete { .. } => {
                self.bb_writes.get_or_create(&self.who(agent)).inc();
            }
            Event::LockAcquired { waited_ms, .. } => {
                let who = self.who(agent);
                self.locks.get_or_create(&who).inc();
                self.lock_wait.get_or_create(&who).observe(waited_ms / 1e3);
            }
            Event::LockTimedOut { .. } => {
                self.lock_timeouts.get_or_create(&self.who(agent)).inc();
            }
            Event::LockExpired { .. } => {
                self.locks_expired.get_or_create(&self.who(agent)).inc();
            }
            Event::LlmCall {
                model,
                latency_ms,
                input_tokens,
                output_tokens,
                error_kind,
                ..
            } => self.llm(
                agent,
                model,
                *latency_ms,
                *input_tokens,
                *output_tokens,
                error_kind,
            ),
            Event::Reload { change, .. } => self.reload(if change == "removed" {
                "removed"
            } else {
                "accepted"
            }),
            Event::ReloadRefused { .. } => self.reload("refused"),
            Event::JournalDropped { count } => {
                self.journal_dropped.inc_by(*count);
            }
            Event::Error {
                error_kind, fatal, ..
            } => {
                let who = self.who(agent);
                self.errors
                    .get_or_create(&ErrorLabels {
                        role: who.role,
                        task_type: who.task_type,
                        kind: error_kind.as_str().into(),
                        fatal: fatal.to_string().into(),
                    })
                    .inc();
            }
            Event::HandlerFailed { error_kind, .. } => {
                let who = self.who(agent);
                self.handler_failures
                    .get_or_create(&KindLabels {
                        role: who.role,
                        task_type: who.task_type,
                        kind: error_kind.as_str().into(),
                    })
                    .inc();
            }
            Event::ConditionMet { .. }
            | Event::MessagesReleased { .. }
            | Event::LockReleased { .. } => {}
        }
    }

    fn llm(
        &self,
        agent: Option<&str>,
        model: &str,
        latency_ms: f64,
        input: u64,
        output: u64,
        error_kind: &Option<String>,
    ) {
        let who = self.who(agent);
        let outcome = error_kind.clone().unwrap_or_else(|| "ok".into());
        let labels = |outcome: &str| LlmLabels {
            role: who.role.clone(),
            task_type: who.task_type.clone(),
            model: model.into(),
            outcome: outcome.into(),
        };
        self.llm_calls.get_or_create(&labels(&outcome)).inc();
        for (kind, n) in [("input", input), ("output", output)] {
            self.llm_tokens
                .get_or_create(&TokenLabels {
                    role: who.role.clone(),
                    task_type: who.task_type.clone(),
                    model: model.into(),
                    r#type: kind.into(),
                })
                .inc_by(n);
        }
        self.llm_duration
            .get_or_create(&ModelLabels {
                role: who.role.clone(),
                task_type: who.task_type.clone(),
                model: model.into(),
            })
            .observe(latency_ms / 1e3);
    }

    fn reload(&self, outcome: &str) {
        self.reloads
            .get_or_create(&ReloadLabels {
                task_type: self.task_type.clone(),
                outcome: outcome.into(),
            })
            .inc();
    }
}

/// `beta` of `beta-2`: the role an agent id was made from.
fn role_of(agent: &str) -> String {
    match agent.rsplit_once('-') {
        Some((role, n)) if n.chars().all(|c| c.is_ascii_digit()) => role.to_string(),
        _ => agent.to_string(),
    }
}

struct MetricsSink(Metrics);

#[async_trait]
impl Sink for MetricsSink {
    async fn write(&mut self, batch: &Batch) {
        for item in batch.items() {
            self.0.take(item);
        }
    }
}

/// A process's metrics endpoint: the series of every run attached to it
/// (a worker runs many), and a worker's own gauges.
#[derive(Clone)]
pub struct Exporter {
    registry: Arc<Mutex<Registry>>,
    metrics: Metrics,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter").finish_non_exhaustive()
    }
}

/// A fleet worker's health and load (`orrery worker --metrics-addr`), each
/// a series labelled with the worker's id; the worker sets them at every
/// beat.
#[derive(Clone, Debug)]
pub struct WorkerGauges {
    /// `orrery_worker_tasks_running`: tasks it runs now.
    pub tasks_running: Gauge,
    /// `orrery_worker_max_tasks`: most tasks it runs at once (`--max-tasks`).
    pub max_tasks: Gauge,
    /// `orrery_worker_agents`: live agents of its running tasks.
    pub agents: Gauge,
    /// `orrery_worker_resident_memory_bytes`: the process's resident memory.
    pub memory: Gauge,
    /// `orrery_worker_claims`: task claims it holds (renewed at its last beat).
    pub claims: Gauge,
    /// `orrery_worker_draining`: 1 once it drains (SIGTERM).
    pub draining: Gauge,
    /// `orrery_worker_tasks_finished_total`: tasks it ran to their end.
    pub finished: Counter,
    /// `orrery_worker_tasks_handed_over_total`: tasks it left to others.
    pub handed_over: Counter,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkerLabels {
    worker: Label,
}

impl Exporter {
    /// Serves the metrics at `http://ADDR/metrics` until the process ends;
    /// returns the endpoint and its address. Fails with BadInput naming
    /// `flag` when `addr` cannot be listened on.
    pub async fn serve(addr: &str, flag: &str) -> Result<(Exporter, SocketAddr)> {
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            Error::bad_input(format!("{flag} {addr}"), format!("cannot listen: {e}"))
        })?;
        let bound = listener
            .local_addr()
            .map_err(|e| Error::Coordination(format!("metrics endpoint: {e}")))?;
        let mut registry = Registry::with_prefix("orrery");
        let metrics = Metrics::new(&mut registry);
        let registry = Arc::new(Mutex::new(registry));
        let shared = registry.clone();
        let app = Router::new().route(
            "/metrics",
            get(move || {
                let registry = shared.clone();
                async move { exposition(&registry.lock()) }
            }),
        );
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!("metrics endpoint stopped: {e}");
            }
        });
        Ok((Exporter { registry, metrics }, bound))
    }

    /// Counts the run of `coord` from its journal from now on.
    pub fn attach(&self, coord: &Coordination) {
        coord
            .journal
            .attach(Box::new(MetricsSink(self.metrics.for_run())));
    }

    /// Registers the gauges of worker `id` (once per process).
    pub fn worker(&self, id: &str) -> WorkerGauges {
        let mut registry = self.registry.lock();
        let labels = WorkerLabels { worker: id.into() };
        let mut gauge = |name: &str, help: &str, unit: Option<Unit>| {
            let family = Family::<WorkerLabels, Gauge>::default();
            match unit {
                Some(unit) => registry.register_with_unit(name, help, unit, family.clone()),
                None => registry.register(name, help, family.clone()),
            }
            family.get_or_create(&labels).clone()
        };
        let tasks_running = gauge("worker_tasks_running", "Tasks the worker runs now", None);
        let max_tasks = gauge(
            "worker_max_tasks",
            "Most tasks the worker runs at once",
            None,
        );
        let agents = gauge(
            "worker_agents",
            "Live agents of the worker's running tasks",
            None,
        );
        let memory = gauge(
            "worker_resident_memory",
            "The worker process's resident memory",
            Some(Unit::Bytes),
        );
        let claims = gauge("worker_claims", "Task claims the worker holds", None);
        let draining = gauge(
            "worker_draining",
            "1 once the worker drains (takes no more tasks)",
            None,
        );
        let mut counter = |name: &str, help: &str| {
            let family = Family::<WorkerLabels, Counter>::default();
            registry.register(name, help, family.clone());
            family.get_or_create(&labels).clone()
        };
        WorkerGauges {
            tasks_running,
            max_tasks,
            agents,
            memory,
            claims,
            draining,
            finished: counter("worker_tasks_finished", "Tasks the worker ran to their end"),
            handed_over: counter(
                "worker_tasks_handed_over",
                "Tasks the worker left to others when draining",
            ),
        }
    }
}

/// Serves the metrics of the run of `coord` at `http://ADDR/metrics` until
/// the process ends; returns the address. Fails with BadInput naming `flag`
/// when `addr` cannot be listened on.
pub async fn serve(addr: &str, flag: &str, coord: &Coordination) -> Result<SocketAddr> {
    let (exporter, bound) = Exporter::serve(addr, flag).await?;
    exporter.attach(coord);
    Ok(bound)
}

fn exposition(registry: &Registry) -> impl IntoResponse + use<> {
    let mut body = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut body, registry) {
        body = format!("# cannot encode the metrics: {e}\n");
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
}

#[cfg(test)]
mod tests {
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::family::Family;
    use prometheus_client::registry::Registry;

    use super::{Label, Who};

    #[test]
    fn label_values_are_escaped_so_no_value_adds_a_series() {
        let mut registry = Registry::default();
        let family = Family::<Who, Counter>::default();
        registry.register("orrery_runs", "runs", family.clone());
        let hostile = "pipe\"} 1\nevil_metric{a=\"b\"} 666\n# x\\";
        family
            .get_or_create(&Who {
                role: Label::from("worker"),
                task_type: Label::from(hostile),
            })
            .inc();
        let mut body = String::new();
        prometheus_client::encoding::text::encode(&mut body, &registry).unwrap();
        let series: Vec<&str> = body.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            series,
            [
                r#"orrery_runs_total{role="worker",task_type="pipe\"} 1\nevil_metric{a=\"b\"} 666\n# x\\"} 1"#
            ],
            "{body}"
        );
    }

    #[test]
    fn a_role_is_the_agent_id_without_its_number() {
        assert_eq!(super::role_of("beta-12"), "beta");
        assert_eq!(super::role_of("my-role-3"), "my-role");
        assert_eq!(super::role_of("solo"), "solo");
    }
}
