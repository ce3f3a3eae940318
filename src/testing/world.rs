//! The world of one test: a task on an embedded store of its own, run by an
//! [`Orchestrator`] held open, with the spec itself taking part as the agent
//! `test-1` (role `test`): its host API sends, receives, reads and writes in
//! that task, and its `spawn.agent(role)` starts the roles under test there.
//! [`run_to_end`] runs a task the ordinary way instead, to its report.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::coordination::Coordination;
use crate::error::{Error, Result};
use crate::llm::LlmClient;
use crate::lua_api::AgentContext;
use crate::orchestrator::{Orchestrator, Stopper};
use crate::report::RunReport;
use crate::scripts::ScriptRegistry;
use crate::store::{MemoryStore, Store};
use crate::task::Task;

use super::answers::ScriptedLlm;

/// The spec's own agent id in its test's world.
pub const SPEC_AGENT: &str = "test-1";
/// The spec's own role.
pub const SPEC_ROLE: &str = "test";

/// How long (test time) the agents of a world get to finish once its test ended.
const WIND_DOWN: Duration = Duration::from_secs(10);

/// What every world of a run shares: settings and the scripts.
pub struct Base {
    /// Resolved settings (`store` is ignored: each world has its own embedded store).
    pub config: Config,
    /// The roles and modules of the scripts directory, and the stdlib.
    pub registry: Arc<ScriptRegistry>,
}

/// How one test's world is made (`test.setup{...}`).
#[derive(Clone)]
pub struct Setup {
    /// The task the world runs.
    pub task: Task,
    /// Its LLM.
    pub llm: Arc<ScriptedLlm>,
    /// Settings changed for this world (see [`SETTINGS`]).
    pub settings: Vec<(String, u64)>,
    /// The host calls recorded in its agents' VMs.
    pub host_calls: Arc<HostCalls>,
}

/// The host calls of agents a test spies on (`test.setup{spies = {...}}`).
#[derive(Default)]
pub struct HostCalls {
    /// The host functions recorded (`bus.send`).
    pub names: Vec<String>,
    /// Each call: agent, function, arguments.
    pub calls: parking_lot::Mutex<Vec<(String, String, Vec<serde_json::Value>)>>,
}

impl crate::agent::sandbox::HostSpy for HostCalls {
    fn names(&self) -> Vec<String> {
        self.names.clone()
    }

    fn record(&self, agent: &str, name: &str, args: Vec<serde_json::Value>) {
        self.calls
            .lock()
            .push((agent.to_string(), name.to_string(), args));
    }
}

impl Setup {
    /// Makes the agents' VMs built from now on (on this thread) record the
    /// host calls this setup spies on.
    pub fn spy_on_agents(&self) {
        let spy: Option<Arc<dyn crate::agent::sandbox::HostSpy>> =
            if self.host_calls.names.is_empty() {
                None
            } else {
                Some(self.host_calls.clone())
            };
        crate::agent::sandbox::spy_on_host_calls(spy);
    }
}

/// The settings a test may change, by the names of `orrery.toml`.
pub const SETTINGS: &[&str] = &[
    "max_agents",
    "spawn_timeout",
    "message_timeout",
    "max_attempts",
    "redelivery_backoff",
    "agent_timeout",
];

impl Setup {
    /// `config` with this setup's settings applied (names not in
    /// [`SETTINGS`] were refused when the setup was read).
    fn config(&self, config: &Config) -> Config {
        let mut config = config.clone();
        for (name, value) in &self.settings {
            let v = *value;
            match name.as_str() {
                "max_agents" => config.max_agents = v as usize,
                "spawn_timeout" => config.spawn_timeout = v,
                "message_timeout" => config.message_timeout = v,
                "max_attempts" => config.max_attempts = v as u32,
                "redelivery_backoff" => config.redelivery_backoff = v,
                "agent_timeout" => config.agent_timeout = v,
                _ => {}
            }
        }
        config
    }

    fn client(&self, config: &Config) -> LlmClient {
        LlmClient::with_answerer(self.llm.clone(), &config.llm.model, self.llm.configured())
    }
}

/// A running world (see the module docs).
pub struct World {
    /// The task's primitives.
    pub coord: Arc<Coordination>,
    /// The spec's agent context in it.
    pub spec: Arc<AgentContext>,
    /// Its LLM.
    pub llm: Arc<ScriptedLlm>,
    stopper: Stopper,
    run: tokio::task::JoinHandle<Result<RunReport>>,
}

impl World {
    /// Starts the world of `setup`, with no agent but the spec's.
    pub async fn held(base: &Base, setup: &Setup) -> Result<World> {
        let mut orchestrator = orchestrator(base, setup)?;
        orchestrator.hold_open();
        let coord = orchestrator.coordination().clone();
        let spec = AgentContext::new(
            SPEC_AGENT,
            SPEC_ROLE,
            coord.clone(),
            base.registry.clone(),
            orchestrator.task_llm(),
        );
        let stopper = orchestrator.stopper();
        let run = tokio::spawn(orchestrator.run());
        // The run claims the task first; then the spec joins it.
        tokio::task::yield_now().await;
        coord
            .states
            .register(SPEC_AGENT, SPEC_ROLE, usize::MAX)
            .await?;
        coord.bus.join(SPEC_AGENT, SPEC_ROLE);
        Ok(World {
            coord,
            spec,
            llm: setup.llm.clone(),
            stopper,
            run,
        })
    }

    /// Ends the world: its agents are stopped (aborted when they take more
    /// than [`WIND_DOWN`] of test time). Returns the run's report.
    pub async fn finish(self) -> Result<RunReport> {
        self.coord.bus.leave(SPEC_AGENT);
        self.stopper.stop();
        let mut run = self.run;
        let joined = match tokio::time::timeout(WIND_DOWN, &mut run).await {
            Ok(joined) => joined,
            Err(_) => {
                self.stopper.stop();
                run.await
            }
        };
        joined.map_err(|e| Error::Coordination(format!("the test's run ended abnormally: {e}")))?
    }
}

/// What [`run_to_end`] gives: the report, and the blackboard as the run left it.
pub struct Finished {
    /// The run's report.
    pub report: RunReport,
    /// Every blackboard key and its value at the end.
    pub blackboard: BTreeMap<String, serde_json::Value>,
}

/// Runs the task of `setup` from its start to its end, as `orrery run`
/// would on the embedded store (on the test's clock).
pub async fn run_to_end(base: &Base, setup: &Setup) -> Result<Finished> {
    let orchestrator = orchestrator(base, setup)?;
    let coord = orchestrator.coordination().clone();
    let report = orchestrator.run().await?;
    let mut blackboard = BTreeMap::new();
    for key in coord.blackboard.keys("").await? {
        if let Some(value) = coord.blackboard.get(&key).await? {
            blackboard.insert(key, value);
        }
    }
    Ok(Finished { report, blackboard })
}

/// An orchestrator of `setup`'s task on a fresh embedded store.
fn orchestrator(base: &Base, setup: &Setup) -> Result<Orchestrator> {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    Orchestrator::with_llm(
        setup.task.clone(),
        setup.config(&base.config),
        store,
        base.registry.clone(),
        setup.client(&base.config),
    )
}
