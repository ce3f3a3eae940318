//! One measured run: a fresh task with N agents of one role on a store of
//! its own, with the server's counters read before and after and its
//! connections sampled meanwhile.

use std::path::Path;
use std::sync::Arc;

use serde_json::{Value, json};

use super::server::{Delta, Probe};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::orchestrator::Orchestrator;
use crate::scripts::ScriptRegistry;
use crate::store;
use crate::task::Task;

const PEER: &str = include_str!("../agents/peer.lua");

const SEQUENTIAL: &str = include_str!("../agents/sequential.lua");

/// What one run measured.
#[derive(Debug, Clone)]
pub(super) struct Run {
    /// Store operations the agents report.
    pub ops: u64,
    /// From the first agent's start to the last one's end (s).
    pub seconds: f64,
    /// The server's and this process's counters over the whole task (VM
    /// start-up and the orchestrator's own records included).
    pub delta: Delta,
    /// Most connections this process had open to the server at once.
    pub connections: u64,
}

impl Run {
    /// Operations per second.
    pub fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.seconds.max(1e-9)
    }
}

/// The scripts of the benchmark roles (`peer`, `seq`).
pub(super) fn registry() -> Arc<ScriptRegistry> {
    Arc::new(ScriptRegistry::from_sources(
        Path::new("bench"),
        &[("peer", PEER), ("seq", SEQUENTIAL)],
    ))
}

/// Runs `agents` agents of `role` with `inputs` on a store of their own at
/// `url`, opened after the connection count of `probe` was read, so the peak
/// counts only this store's connections.
pub(super) async fn measure(
    url: &str,
    probe: &mut Probe,
    role: &str,
    agents: usize,
    inputs: Value,
) -> Result<Run> {
    let mut config = Config {
        store: url.to_string(),
        max_agents: agents + 1,
        ..Config::default()
    };
    // Each peer writes K keys of its own: room for all of them and the outputs.
    let keys = inputs["k"].as_u64().unwrap_or(0) as usize * agents + agents + 64;
    config.quotas.max_blackboard_keys = config.quotas.max_blackboard_keys.max(keys);
    let others = probe.settled_clients().await?;
    let store = store::open(
        url,
        std::time::Duration::from_millis(config.connect_timeout),
    )
    .await?;
    let id = format!("bench-{role}-{:08x}", rand::random::<u32>());
    let mut task = Task::from_json(
        &json!({ "id": id, "type": "bench", "description": "redis store benchmark",
                 "timeout": 600_000, "inputs": inputs })
        .to_string(),
        "benchmark task",
    )?;
    task.agents = Some(vec![role.to_string(); agents]);
    let before = probe.snapshot().await?;
    let watch = probe.watch_clients();
    let report = Orchestrator::new(task, config, store.clone(), registry())?
        .run()
        .await;
    let peak = watch.stop();
    let delta = probe.snapshot().await?.since(&before);
    let report = report?;
    store.clean(&id).await?;
    if let Some(e) = report.errors.first() {
        return Err(Error::Coordination(format!(
            "benchmark agent {} failed: {}",
            e.agent, e.message
        )));
    }
    let timings: Vec<&Value> = report
        .outputs
        .iter()
        .filter(|(k, _)| k.starts_with("timing/"))
        .map(|(_, v)| v)
        .collect();
    if timings.len() != agents {
        return Err(Error::Coordination(format!(
            "benchmark: {} of {agents} agents reported a timing",
            timings.len()
        )));
    }
    let field = |v: &Value, name: &str| v[name].as_f64().unwrap_or(0.0);
    let start = timings
        .iter()
        .map(|t| field(t, "start"))
        .fold(f64::MAX, f64::min);
    let stop = timings.iter().map(|t| field(t, "stop")).fold(0.0, f64::max);
    let ops = timings.iter().map(|t| field(t, "ops") as u64).sum();
    Ok(Run {
        ops,
        seconds: (stop - start) / 1000.0,
        delta,
        connections: peak.saturating_sub(others),
    })
}

/// The workload's inputs: `agents` peers, each doing `steps` of each kind;
/// with `relay`, all but the first wait for their messages before sending.
pub(super) fn peer_inputs(agents: usize, steps: u64, relay: bool) -> Value {
    json!({ "agents": agents, "k": steps, "m": steps, "relay": relay })
}

/// The sequential role's inputs; with `elsewhere`, every get reads a key
/// the agent did not write.
pub(super) fn sequential_inputs(pairs: u64, elsewhere: bool) -> Value {
    json!({ "pairs": pairs, "elsewhere": elsewhere })
}
