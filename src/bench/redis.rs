//! The Redis store measured through the real Lua API, beside what
//! `redis-benchmark` gets from the same server in the same run.
//!
//! Two figures: one agent doing sequential `blackboard.set` + `blackboard.get`
//! (compared with `redis-benchmark -c 1 -t set,get`), and many agents writing
//! at once (compared with `redis-benchmark -c N -t set`, no pipelining). Each
//! agent times its own loop with `now()`, so VM start-up is not counted; the
//! concurrent figure spans the first agent's start to the last one's end.
//!
//! `redis-benchmark` writes its own keys (`key:__rand_int__`) into the URL's
//! database: run this against a server you do not mind writing to.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use serde::Serialize;
use serde_json::{Value, json};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::orchestrator::Orchestrator;
use crate::scripts::ScriptRegistry;
use crate::store::{self, Store};
use crate::task::Task;

/// How much work each part does.
#[derive(Debug, Clone)]
pub struct RedisBenchOptions {
    /// Set+get pairs of the sequential agent.
    pub sequential_pairs: u64,
    /// Agents writing at once.
    pub agents: usize,
    /// Sets each of those agents does.
    pub sets_per_agent: u64,
    /// Requests `redis-benchmark` makes per test (`-n`).
    pub baseline_requests: u64,
}

impl Default for RedisBenchOptions {
    fn default() -> Self {
        RedisBenchOptions {
            sequential_pairs: 10_000,
            agents: 50,
            sets_per_agent: 2_000,
            baseline_requests: 100_000,
        }
    }
}

/// One measured figure and the figure `redis-benchmark` got beside it.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    /// What was measured.
    pub what: String,
    /// Agents doing it.
    pub agents: usize,
    /// Store operations done (a set+get pair counts two).
    pub ops: u64,
    /// Wall time of the measured loops (s).
    pub seconds: f64,
    /// Operations per second through the Lua API.
    pub ops_per_sec: f64,
    /// The `redis-benchmark` command it is compared with.
    pub baseline: String,
    /// Requests per second `redis-benchmark` got.
    pub baseline_ops_per_sec: f64,
    /// `ops_per_sec / baseline_ops_per_sec`.
    pub ratio: f64,
    /// The ratio aimed for.
    pub aim: f64,
    /// The same commands sent straight through the Redis client library from
    /// this process (plain SET/GET, no Lua, no store logic): what the async
    /// runtime and the multiplexed connection reach on their own.
    pub client_ops_per_sec: f64,
}

/// Both figures of one run.
#[derive(Debug, Clone, Serialize)]
pub struct RedisBenchReport {
    /// The server (password hidden).
    pub store: String,
    /// One agent, sequential set+get.
    pub sequential: Figure,
    /// Many agents writing at once.
    pub concurrent: Figure,
}

const SEQUENTIAL: &str = r#"
local M = {}
function M.start(self)
  local n = task.inputs.pairs
  local t0 = now()
  for i = 1, n do
    blackboard.set("bench/seq", i)
    blackboard.get("bench/seq")
  end
  task.output("timing/" .. agent.id, { start = t0, stop = now(), ops = 2 * n })
end
return M
"#;

const WRITER: &str = r#"
local M = {}
function M.start(self)
  local n, key = task.inputs.sets, "bench/" .. agent.id
  local t0 = now()
  for i = 1, n do blackboard.set(key, i) end
  task.output("timing/" .. agent.id, { start = t0, stop = now(), ops = n })
end
return M
"#;

/// Measures the store at `url` and runs `redis-benchmark` against the same
/// server. Fails with BadInput when `redis-benchmark` is not installed, and
/// with the run's error when a measured task fails.
pub async fn run(url: &str, options: &RedisBenchOptions) -> Result<RedisBenchReport> {
    let dir = ScratchDir::new()?;
    dir.write("seq.lua", SEQUENTIAL)?;
    dir.write("writer.lua", WRITER)?;
    let config = Config {
        store: url.to_string(),
        scripts: dir.path().to_path_buf(),
        max_agents: options.agents.max(1) + 1,
        ..Config::default()
    };
    let store = store::open(&config).await?;
    let target = Baseline::from_url(url)?;

    let pairs = options.sequential_pairs.max(1);
    let (ops, seconds) = measure(&config, &store, "seq", 1, json!({ "pairs": pairs })).await?;
    let c1 = target.run(1, options.baseline_requests, "set,get")?;
    let c1_mean = (c1.set + c1.get.unwrap_or(c1.set)) / 2.0;
    let mut sequential = figure(
        "sequential blackboard.set + blackboard.get, one agent",
        1,
        ops,
        seconds,
        c1.command,
        c1_mean,
        0.8,
    );
    sequential.client_ops_per_sec = client_floor(url, 1, pairs, true).await?;

    let agents = options.agents.max(1);
    let sets = json!({ "sets": options.sets_per_agent.max(1) });
    let (ops, seconds) = measure(&config, &store, "writer", agents, sets).await?;
    let cn = target.run(agents, options.baseline_requests, "set")?;
    let mut concurrent = figure(
        &format!("concurrent blackboard.set, {agents} agents"),
        agents,
        ops,
        seconds,
        cn.command,
        cn.set,
        1.0,
    );
    concurrent.client_ops_per_sec =
        client_floor(url, agents, options.sets_per_agent.max(1), false).await?;
    Ok(RedisBenchReport {
        store: store.describe(),
        sequential,
        concurrent,
    })
}

fn figure(
    what: &str,
    agents: usize,
    ops: u64,
    seconds: f64,
    baseline: String,
    baseline_ops_per_sec: f64,
    aim: f64,
) -> Figure {
    let ops_per_sec = ops as f64 / seconds.max(1e-9);
    Figure {
        what: what.to_string(),
        agents,
        ops,
        seconds,
        ops_per_sec,
        baseline,
        baseline_ops_per_sec,
        ratio: ops_per_sec / baseline_ops_per_sec.max(1e-9),
        aim,
        client_ops_per_sec: 0.0,
    }
}

/// `tasks` tokio tasks each sending `rounds` SETs (and GETs when `with_get`)
/// over one multiplexed connection; returns commands per second.
async fn client_floor(url: &str, tasks: usize, rounds: u64, with_get: bool) -> Result<f64> {
    let unavailable =
        |e: ::redis::RedisError| Error::Coordination(format!("benchmark client: {e}"));
    let client = ::redis::Client::open(url).map_err(unavailable)?;
    let conn = client
        .get_multiplexed_async_connection()
        .await
        .map_err(unavailable)?;
    let started = std::time::Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for t in 0..tasks {
        let mut conn = conn.clone();
        workers.spawn(async move {
            let key = format!("orrery-bench-client-{t}");
            for i in 0..rounds {
                let () = ::redis::cmd("SET")
                    .arg(&key)
                    .arg(i)
                    .query_async(&mut conn)
                    .await?;
                if with_get {
                    let _: Option<String> =
                        ::redis::cmd("GET").arg(&key).query_async(&mut conn).await?;
                }
            }
            ::redis::cmd("DEL")
                .arg(&key)
                .query_async::<()>(&mut conn)
                .await
        });
    }
    while let Some(done) = workers.join_next().await {
        done.map_err(|e| Error::Coordination(format!("benchmark client: {e}")))?
            .map_err(unavailable)?;
    }
    let commands = tasks as u64 * rounds * if with_get { 2 } else { 1 };
    Ok(commands as f64 / started.elapsed().as_secs_f64())
}

/// Runs `agents` agents of `role` on a fresh task; returns the operations
/// they report and the wall time from the first start to the last stop.
async fn measure(
    config: &Config,
    store: &Arc<dyn Store>,
    role: &str,
    agents: usize,
    inputs: Value,
) -> Result<(u64, f64)> {
    let id = format!("bench-{role}-{:08x}", rand::random::<u32>());
    let mut task = Task::from_json(
        &json!({ "id": id, "type": "bench", "description": "redis store benchmark",
                 "timeout": 600_000, "inputs": inputs })
        .to_string(),
        "benchmark task",
    )?;
    task.agents = Some(vec![role.to_string(); agents]);
    let registry = Arc::new(ScriptRegistry::load(&config.scripts, &config.stdlib)?);
    let report = Orchestrator::new(task, config.clone(), store.clone(), registry)?
        .run()
        .await?;
    store.clean(&id).await?;
    if let Some(e) = report.errors.iter().find(|e| e.fatal) {
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
    Ok((ops, (stop - start) / 1000.0))
}

/// Where `redis-benchmark` connects, from the store URL.
struct Baseline {
    args: Vec<String>,
    /// The same, password hidden, for the report.
    shown: Vec<String>,
}

/// What one `redis-benchmark` run got (requests per second).
struct Measured {
    command: String,
    set: f64,
    get: Option<f64>,
}

impl Baseline {
    fn from_url(url: &str) -> Result<Baseline> {
        use ::redis::{ConnectionAddr, IntoConnectionInfo};
        let info = url
            .into_connection_info()
            .map_err(|e| Error::bad_input("benchmark store URL", e.to_string()))?;
        let (host, port, tls) = match info.addr() {
            ConnectionAddr::Tcp(host, port) => (host.clone(), *port, false),
            ConnectionAddr::TcpTls { host, port, .. } => (host.clone(), *port, true),
            other => {
                return Err(Error::bad_input(
                    "benchmark store URL",
                    format!("redis-benchmark cannot reach {other:?}"),
                ));
            }
        };
        let mut args = vec!["-h".into(), host, "-p".into(), port.to_string()];
        let settings = info.redis_settings();
        args.extend(["--dbnum".into(), settings.db().to_string()]);
        if let Some(user) = settings.username() {
            args.extend(["--user".into(), user.to_string()]);
        }
        if tls {
            args.push("--tls".into());
        }
        let mut shown = args.clone();
        if let Some(password) = settings.password() {
            args.extend(["-a".into(), password.to_string()]);
            shown.extend(["-a".into(), "***".into()]);
        }
        Ok(Baseline { args, shown })
    }

    fn run(&self, clients: usize, requests: u64, tests: &str) -> Result<Measured> {
        let extra = [
            "-c".to_string(),
            clients.to_string(),
            "-n".into(),
            requests.to_string(),
            "-t".into(),
            tests.into(),
            "-q".into(),
        ];
        let out = Command::new("redis-benchmark")
            .args(self.args.iter().chain(&extra))
            .output()
            .map_err(|e| {
                Error::bad_input(
                    "redis-benchmark",
                    format!("cannot run it ({e}); install it with `apt-get install redis-tools`"),
                )
            })?;
        let text = String::from_utf8_lossy(&out.stdout);
        let rate = |name: &str| {
            text.split(['\r', '\n'])
                .filter_map(|line| line.strip_prefix(&format!("{name}: ")))
                .filter_map(|rest| rest.split_whitespace().next()?.parse::<f64>().ok())
                .next_back()
        };
        let set = rate("SET").ok_or_else(|| {
            Error::Coordination(format!(
                "redis-benchmark printed no SET figure: {}{}",
                text,
                String::from_utf8_lossy(&out.stderr)
            ))
        })?;
        let shown: Vec<&str> = self
            .shown
            .iter()
            .chain(&extra)
            .map(String::as_str)
            .collect();
        Ok(Measured {
            command: format!("redis-benchmark {}", shown.join(" ")),
            set,
            get: rate("GET"),
        })
    }
}

/// A directory for the benchmark's scripts, removed on drop.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new() -> Result<ScratchDir> {
        let dir = std::env::temp_dir().join(format!(
            "orrery-bench-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).map_err(|e| {
            Error::bad_input(dir.display().to_string(), format!("cannot create: {e}"))
        })?;
        Ok(ScratchDir(dir))
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn write(&self, name: &str, text: &str) -> Result<()> {
        let path = self.0.join(name);
        std::fs::write(&path, text)
            .map_err(|e| Error::bad_input(path.display().to_string(), format!("cannot write: {e}")))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
