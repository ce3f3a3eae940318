//! The embedded-store benchmarks: four figures, each taken by Lua agents
//! calling the real API, run by the real orchestrator.
//!
//! - **Blackboard ops/s**: one agent calls `blackboard.set(k, i)` then
//!   `blackboard.get(k)` in a Lua loop over 64 keys; each call is one op.
//! - **Messages/s**: one agent sends N messages with `bus.send`, another takes
//!   them one by one with `bus.receive` (the pull path, with an
//!   acknowledgement per message); the clock runs from the first send to the
//!   last receive.
//! - **Spawn time** (p50, p99): from a script's `spawn.agent(role)` call to the
//!   first line of the new agent's `start`, one spawn at a time. That covers
//!   the orchestrator's bookkeeping, a fresh VM with the API, loading the role
//!   script and the READY transition.
//! - **Memory per idle agent**: growth of the process's resident set over K
//!   agents that wait for messages, divided by K (Lua heap, VM and host side
//!   together). The Lua heap alone (`collectgarbage("count")` after a full
//!   collection at the end of `start`) is reported beside it.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Value, json};

use super::{Spread, Threads, Usage};
use crate::config::Config;
use crate::coordination::Coordination;
use crate::coordination::journal::FileSink;
use crate::error::{Error, Result};
use crate::orchestrator::Orchestrator;
use crate::report::{RunReport, TaskStatus};
use crate::scripts::ScriptRegistry;
use crate::store::MemoryStore;
use crate::task::Task;

/// How much work each measurement does.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sizes {
    /// set+get pairs in the blackboard loop.
    pub blackboard_loops: u64,
    /// Messages sent from one agent to the other.
    pub messages: u64,
    /// Spawns timed (after `warmup_spawns` untimed ones).
    pub spawns: u64,
    /// Spawns run first and not timed.
    pub warmup_spawns: u64,
    /// Idle agents held at once for the memory figure.
    pub idle_agents: u64,
    /// Measured rounds of the blackboard and message figures (medians are
    /// taken over them), after one round that warms up and is not counted.
    pub rounds: usize,
}

impl Sizes {
    /// Enough work for stable figures (a few seconds).
    pub fn full() -> Sizes {
        Sizes {
            blackboard_loops: 1_000_000,
            messages: 500_000,
            spawns: 1_000,
            warmup_spawns: 50,
            idle_agents: 500,
            rounds: 5,
        }
    }

    /// A smoke run: every path once, rough figures.
    pub fn quick() -> Sizes {
        Sizes {
            blackboard_loops: 20_000,
            messages: 20_000,
            spawns: 50,
            warmup_spawns: 5,
            idle_agents: 20,
            rounds: 1,
        }
    }
}

/// The four figures of the embedded store.
#[derive(Debug, Clone, Serialize)]
pub struct EmbeddedReport {
    /// `blackboard.set` and `blackboard.get` calls per second from one agent
    /// (median of the rounds).
    pub blackboard_ops_per_sec: f64,
    /// The rounds' median, lowest and highest.
    pub blackboard_spread: Spread,
    /// Messages per second from one agent to another (`bus.send` →
    /// `bus.receive`; median of the rounds).
    pub messages_per_sec: f64,
    /// The rounds' median, lowest and highest.
    pub messages_spread: Spread,
    /// CPU time of the process per message, both agents together (µs;
    /// median of the rounds). Unlike the rate, it hardly moves with the
    /// machine's load.
    pub message_cpu_us: f64,
    /// Thread sleeps (voluntary context switches) of the process per
    /// message (median of the rounds): each ends with a wake-up, whose cost
    /// depends on the machine far more than the CPU time does.
    pub message_sleeps: f64,
    /// The same with both agents on one thread of their own (no second
    /// thread to run in parallel or to wake): the figure that depends only
    /// on the CPU, the same on every quiet machine of a kind.
    pub messages_one_thread: MessageFigures,
    /// Median time from `spawn.agent` to the new agent's `start` (µs;
    /// median of the rounds' medians).
    pub spawn_p50_us: f64,
    /// The rounds' median, lowest and highest p50.
    pub spawn_p50_spread: Spread,
    /// 99th percentile of the same (µs; median of the rounds).
    pub spawn_p99_us: f64,
    /// CPU time of the process per spawn (µs; median of the rounds).
    pub spawn_cpu_us: f64,
    /// Thread sleeps of the process per spawn (median of the rounds).
    pub spawn_sleeps: f64,
    /// The spawn figures on one thread of their own (see
    /// `messages_one_thread`).
    pub spawn_one_thread: SpawnFigures,
    /// Resident memory per idle agent (bytes); `None` where the OS does not tell.
    pub idle_agent_bytes: Option<u64>,
    /// Lua heap per idle agent (bytes).
    pub idle_agent_lua_heap_bytes: u64,
    /// The work each figure is based on.
    pub sizes: Sizes,
}

const BLACKBOARD: &str = include_str!("agents/blackboard.lua");

const SENDER: &str = include_str!("agents/sender.lua");

const RECEIVER: &str = include_str!("agents/receiver.lua");

const SPAWNER: &str = include_str!("agents/spawner.lua");

const PROBE: &str = include_str!("agents/probe.lua");

/// Busy until told to stop, so the task does not go quiet under the idle agents.
const KEEPER: &str = include_str!("agents/keeper.lua");

const IDLE: &str = include_str!("agents/idle.lua");

/// The message figures of one way of running the agents.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct MessageFigures {
    /// Messages per second over the rounds.
    pub rate: Spread,
    /// Process CPU per message (µs; median of the rounds).
    pub cpu_us: f64,
    /// Thread sleeps per message (median of the rounds).
    pub sleeps: f64,
}

/// The spawn figures of one way of running the agents.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct SpawnFigures {
    /// The rounds' p50 (µs).
    pub p50: Spread,
    /// p99 (µs; median of the rounds).
    pub p99: f64,
    /// Process CPU per spawn (µs; median of the rounds): the new VM, the
    /// bookkeeping, and the probe's run and end. Unlike the times, it
    /// hardly moves with the machine's load.
    pub cpu_us: f64,
    /// Thread sleeps per spawn (median of the rounds).
    pub sleeps: f64,
}

/// The message figures over the rounds (after one that warms up, with
/// several rounds).
async fn message_rounds(sizes: Sizes, threads: Threads) -> Result<MessageFigures> {
    let (mut rates, mut cpu, mut sleeps) = (Vec::new(), Vec::new(), Vec::new());
    let per_message = |n: f64| n / sizes.messages.max(1) as f64;
    for round in 0..sizes.rounds.max(1) + warm_up(sizes) {
        let started = Usage::now();
        let rate = threads.run(messages(sizes.messages)).await?;
        let used = Usage::now().since(started);
        if round >= warm_up(sizes) {
            rates.push(rate);
            cpu.push(per_message(used.cpu_seconds * 1e6));
            sleeps.push(per_message(used.sleeps as f64));
        }
    }
    Ok(MessageFigures {
        rate: Spread::of(rates),
        cpu_us: Spread::of(cpu).median,
        sleeps: Spread::of(sleeps).median,
    })
}

/// The spawn figures over the rounds (as [`message_rounds`]).
async fn spawn_rounds(sizes: Sizes, threads: Threads) -> Result<SpawnFigures> {
    let (mut p50s, mut p99s, mut cpu, mut sleeps) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let spawns = (sizes.spawns + sizes.warmup_spawns).max(1) as f64;
    for round in 0..sizes.rounds.max(1) + warm_up(sizes) {
        let started = Usage::now();
        let (p50, p99) = threads
            .run(spawn_times(sizes.spawns, sizes.warmup_spawns))
            .await?;
        let used = Usage::now().since(started);
        if round >= warm_up(sizes) {
            p50s.push(p50);
            p99s.push(p99);
            cpu.push(used.cpu_seconds * 1e6 / spawns);
            sleeps.push(used.sleeps as f64 / spawns);
        }
    }
    Ok(SpawnFigures {
        p50: Spread::of(p50s),
        p99: Spread::of(p99s).median,
        cpu_us: Spread::of(cpu).median,
        sleeps: Spread::of(sleeps).median,
    })
}

/// Rounds run first and not counted: with several rounds, the first warms
/// up (allocator, caches, lazy statics); a smoke run of one has none.
fn warm_up(sizes: Sizes) -> usize {
    usize::from(sizes.rounds > 1)
}

/// Runs the four measurements, memory first (before the others have grown the heap).
pub async fn run(sizes: Sizes) -> Result<EmbeddedReport> {
    let (idle_agent_bytes, idle_agent_lua_heap_bytes) = idle_memory(sizes.idle_agents).await?;
    let blackboard_spread = rounds(sizes.rounds, || blackboard_ops(sizes.blackboard_loops)).await?;
    let two = message_rounds(sizes, Threads::Shared).await?;
    let one = message_rounds(sizes, Threads::One).await?;
    let spawn = spawn_rounds(sizes, Threads::Shared).await?;
    let spawn_one = spawn_rounds(sizes, Threads::One).await?;
    Ok(EmbeddedReport {
        blackboard_ops_per_sec: blackboard_spread.median,
        blackboard_spread,
        messages_per_sec: two.rate.median,
        messages_spread: two.rate,
        message_cpu_us: two.cpu_us,
        message_sleeps: two.sleeps,
        messages_one_thread: one,
        spawn_p50_us: spawn.p50.median,
        spawn_p50_spread: spawn.p50,
        spawn_p99_us: spawn.p99,
        spawn_cpu_us: spawn.cpu_us,
        spawn_sleeps: spawn.sleeps,
        spawn_one_thread: spawn_one,
        idle_agent_bytes,
        idle_agent_lua_heap_bytes,
        sizes,
    })
}

/// Only the spawn figures: on the command's runtime, then on one thread.
pub async fn spawns_only(sizes: Sizes) -> Result<[SpawnFigures; 2]> {
    let shared = spawn_rounds(sizes, Threads::Shared).await?;
    let one = spawn_rounds(sizes, Threads::One).await?;
    Ok([shared, one])
}

/// The figures of [`spawns_only`] as text.
pub fn spawn_table([shared, one]: &[SpawnFigures; 2]) -> String {
    let row = |what: &str, f: &SpawnFigures| {
        format!(
            "{what:<40} p50 {} / p99 {:.0} us ({:.0} us CPU, {:.2} sleeps)\n",
            spread(&f.p50),
            f.p99,
            f.cpu_us,
            f.sleeps
        )
    };
    row("spawn (spawn.agent -> start)", shared) + &row("spawn on one thread", one)
}

/// The median and range of `rounds` runs of `measure`, after one more that
/// warms up and is not counted (none for a single round: a smoke run).
async fn rounds<F, Fut>(rounds: usize, measure: F) -> Result<Spread>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<f64>>,
{
    if rounds > 1 {
        measure().await?;
    }
    let mut values = Vec::new();
    for _ in 0..rounds.max(1) {
        values.push(measure().await?);
    }
    Ok(Spread::of(values))
}

async fn blackboard_ops(loops: u64) -> Result<f64> {
    blackboard_ops_journaled(loops, None).await
}

/// The blackboard figure, with the run's journal written to `journal` when given.
pub(super) async fn blackboard_ops_journaled(loops: u64, journal: Option<&Path>) -> Result<f64> {
    let mut bench = Bench::new(
        "blackboard",
        &[("bb", BLACKBOARD)],
        &["bb"],
        json!({ "loops": loops }),
    );
    bench.journal = journal.map(Path::to_path_buf);
    let report = run_to_end(bench).await?;
    let seconds = output_f64(&report, "elapsed_ms")? / 1000.0;
    Ok((2 * loops) as f64 / seconds)
}

async fn messages(count: u64) -> Result<f64> {
    messages_journaled(count, None).await
}

/// The message figure, with the run's journal written to `journal` when given.
pub(super) async fn messages_journaled(count: u64, journal: Option<&Path>) -> Result<f64> {
    let mut bench = Bench::new(
        "messages",
        &[("sender", SENDER), ("receiver", RECEIVER)],
        &["receiver", "sender"],
        json!({ "messages": count }),
    );
    bench.journal = journal.map(Path::to_path_buf);
    // The sender queues every message before the receiver takes one.
    bench.config.quotas.max_queue_depth = count as usize + 1;
    bench.config.quotas.max_queued_bytes = (count as usize + 1) * 256;
    let report = run_to_end(bench).await?;
    let seconds = output_f64(&report, "elapsed_ms")? / 1000.0;
    Ok(count as f64 / seconds)
}

async fn spawn_times(spawns: u64, warmup: u64) -> Result<(f64, f64)> {
    spawn_times_journaled(spawns, warmup, None).await
}

/// The spawn figures, with the run's journal written to `journal` when given.
pub(super) async fn spawn_times_journaled(
    spawns: u64,
    warmup: u64,
    journal: Option<&Path>,
) -> Result<(f64, f64)> {
    let mut bench = Bench::new(
        "spawn",
        &[("spawner", SPAWNER), ("probe", PROBE)],
        &["spawner"],
        json!({ "spawns": spawns, "warmup": warmup }),
    );
    // Probes end on their own, but may not be joined yet when the next starts.
    bench.config.max_agents = 64;
    bench.journal = journal.map(Path::to_path_buf);
    bench.config.quotas.max_spawns = (spawns + warmup) as usize + 1;
    let report = run_to_end(bench).await?;
    let mut samples_us: Vec<f64> = report
        .outputs
        .get("samples_ms")
        .and_then(Value::as_array)
        .ok_or_else(|| failed("spawn", "no samples"))?
        .iter()
        .filter_map(Value::as_f64)
        .map(|ms| ms * 1000.0)
        .collect();
    if samples_us.is_empty() {
        return Err(failed("spawn", "no samples"));
    }
    samples_us.sort_by(f64::total_cmp);
    Ok((percentile(&samples_us, 0.50), percentile(&samples_us, 0.99)))
}

/// Resident bytes and Lua heap bytes per idle agent.
async fn idle_memory(agents: u64) -> Result<(Option<u64>, u64)> {
    let mut bench = Bench::new(
        "memory",
        &[("keeper", KEEPER), ("idle", IDLE)],
        &["keeper"],
        json!({}),
    );
    bench.config.max_agents = agents as usize + 1;
    bench.config.quotas.max_spawns = agents as usize + 1;
    let orchestrator = bench.orchestrator()?;
    let coord = orchestrator.coordination().clone();
    let running = tokio::spawn(orchestrator.run());

    // Only the keeper, busy in its start.
    settle(&coord, 1).await?;
    let before = resident_bytes();
    for _ in 0..agents {
        coord.spawner.spawn("idle", None).await?;
    }
    settle(&coord, 1).await?;
    let after = resident_bytes();

    coord
        .bus
        .send("bench", "keeper", "stop", Value::Null)
        .await?;
    let report = running
        .await
        .map_err(|e| failed("memory", &e.to_string()))??;
    check(&report, "memory")?;
    let heap = report
        .metrics
        .custom
        .get("lua_heap_bytes")
        .copied()
        .unwrap_or(0);
    let per_agent = |total: u64| total / agents.max(1);
    let resident = before
        .zip(after)
        .map(|(b, a)| per_agent(a.saturating_sub(b)));
    Ok((resident, per_agent(heap.max(0) as u64)))
}

/// Waits until exactly `busy` agents are busy (the rest idle) and the task has
/// at least that many agents.
async fn settle(coord: &Coordination, busy: usize) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while coord.activity.busy_count() != busy || coord.spawner.live() < busy {
        if Instant::now() > deadline {
            return Err(failed("memory", "agents did not settle within 60 s"));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}

/// One benchmark task: its agents (carried as source) and settings.
struct Bench {
    name: &'static str,
    registry: Arc<ScriptRegistry>,
    task: Task,
    config: Config,
    /// Where the run's journal goes (none: the journal stays off).
    journal: Option<std::path::PathBuf>,
}

impl Bench {
    fn new(name: &'static str, roles: &[(&str, &str)], start: &[&str], inputs: Value) -> Bench {
        let task = Task {
            id: format!("bench-{name}-{:08x}", rand::random::<u32>()),
            kind: "benchmark".into(),
            description: format!("orrery bench: {name}"),
            constraints: Vec::new(),
            timeout: 600_000,
            inputs,
            agents: Some(start.iter().map(|s| s.to_string()).collect()),
            spawn: Vec::new(),
            success: Default::default(),
        };
        Bench {
            name,
            registry: Arc::new(ScriptRegistry::from_sources(Path::new("bench"), roles)),
            task,
            config: Config::default(),
            journal: None,
        }
    }

    fn orchestrator(self) -> Result<Orchestrator> {
        let orchestrator = Orchestrator::new(
            self.task,
            self.config,
            Arc::new(MemoryStore::new()),
            self.registry,
        )?;
        if let Some(path) = &self.journal {
            let sink = FileSink::create(path, "benchmark journal")?;
            orchestrator.coordination().journal.attach(Box::new(sink));
        }
        Ok(orchestrator)
    }
}

async fn run_to_end(bench: Bench) -> Result<RunReport> {
    let name = bench.name;
    let report = bench.orchestrator()?.run().await?;
    check(&report, name)?;
    Ok(report)
}

fn check(report: &RunReport, name: &str) -> Result<()> {
    if report.status == TaskStatus::Complete && report.errors.iter().all(|e| !e.fatal) {
        return Ok(());
    }
    let why = report
        .errors
        .first()
        .map_or("the task did not complete".to_string(), |e| {
            e.message.clone()
        });
    Err(failed(name, &why))
}

fn output_f64(report: &RunReport, key: &str) -> Result<f64> {
    report
        .outputs
        .get(key)
        .and_then(Value::as_f64)
        .filter(|v| *v > 0.0)
        .ok_or_else(|| failed(&report.task_id, &format!("no output '{key}'")))
}

fn failed(name: &str, why: &str) -> Error {
    Error::Coordination(format!("benchmark {name} failed: {why}"))
}

/// The `q` quantile of sorted `samples` (nearest rank).
fn percentile(sorted: &[f64], q: f64) -> f64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// The process's resident set (Linux `/proc/self/status`), in bytes.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// `median [min-max]`, or the one value of a single round.
fn spread(s: &Spread) -> String {
    if s.min == s.max {
        format!("{:.0}", s.median)
    } else {
        format!("{:.0} [{:.0}-{:.0}]", s.median, s.min, s.max)
    }
}

/// Renders the figures as a table, each beside its target from the design.
pub fn table(r: &EmbeddedReport) -> String {
    let kb = |bytes: u64| bytes as f64 / 1024.0;
    let memory = match r.idle_agent_bytes {
        Some(b) => format!(
            "{:.0} KB (Lua heap {:.0} KB)",
            kb(b),
            kb(r.idle_agent_lua_heap_bytes)
        ),
        None => format!("Lua heap {:.0} KB", kb(r.idle_agent_lua_heap_bytes)),
    };
    let rows = [
        (
            "blackboard ops/s (set+get, one agent)",
            spread(&r.blackboard_spread),
            ">= 1000000",
            r.blackboard_ops_per_sec >= 1_000_000.0,
        ),
        (
            "messages/s (bus.send -> bus.receive)",
            format!(
                "{} ({:.2} us CPU, {:.3} sleeps)",
                spread(&r.messages_spread),
                r.message_cpu_us,
                r.message_sleeps
            ),
            ">= 500000",
            r.messages_per_sec >= 500_000.0,
        ),
        (
            "messages/s on one thread",
            format!(
                "{} ({:.2} us CPU, {:.3} sleeps)",
                spread(&r.messages_one_thread.rate),
                r.messages_one_thread.cpu_us,
                r.messages_one_thread.sleeps
            ),
            ">= 500000",
            r.messages_one_thread.rate.median >= 500_000.0,
        ),
        (
            "spawn p50 / p99 (spawn.agent -> start)",
            format!(
                "{} / {:.0} us ({:.0} us CPU, {:.1} sleeps)",
                spread(&r.spawn_p50_spread),
                r.spawn_p99_us,
                r.spawn_cpu_us,
                r.spawn_sleeps
            ),
            "p50 <= 300 us",
            r.spawn_p50_us <= 300.0,
        ),
        (
            "spawn p50 / p99 on one thread",
            format!(
                "{} / {:.0} us ({:.0} us CPU, {:.1} sleeps)",
                spread(&r.spawn_one_thread.p50),
                r.spawn_one_thread.p99,
                r.spawn_one_thread.cpu_us,
                r.spawn_one_thread.sleeps
            ),
            "p50 <= 300 us",
            r.spawn_one_thread.p50.median <= 300.0,
        ),
        (
            "memory per idle agent",
            memory,
            "<= 200 KB",
            r.idle_agent_bytes.unwrap_or(r.idle_agent_lua_heap_bytes) <= 200 * 1024,
        ),
    ];
    let mut out = String::from("embedded store\n");
    for (what, figure, target, met) in rows {
        let verdict = if met { "ok" } else { "MISSED" };
        out.push_str(&format!(
            "  {what:<40} {figure:>40}   target {target:<14} {verdict}\n"
        ));
    }
    out
}
