//! The Redis store measured through the real Lua API, beside what
//! `redis-benchmark` gets from the same server in the same run.
//!
//! - **Workload** (the original system's): N agents of one role, each doing K
//!   `blackboard.set` of `{step = j, status = "done", by = agent.id}` under
//!   its own keys, K `blackboard.get` of them, M `bus.send` of `{stepId = j}`
//!   to the next agent of a ring and M `bus.receive`. Throughput is
//!   N·(2K + 2M) over the wall time from the first agent's start to the last
//!   one's end; compared with `redis-benchmark -t set -c N` (no pipelining).
//! - **Sequential**: one agent doing `blackboard.set` + `blackboard.get`,
//!   compared with `redis-benchmark -c 1 -t set,get`: the get of the key it
//!   just set (read back without asking the server), and of another key
//!   (one round trip for the pair: the set is sent without waiting).
//! - **Connections**: the most connections this process holds to the server
//!   while N agents run the workload (N = 5, 50, 500), in relay order: every
//!   agent but the first waits for its messages before it sends, so all of
//!   them wait at once.
//!
//! Each figure is taken over several rounds, orrery and `redis-benchmark`
//! alternating, and given as median, minimum and maximum. Beside the
//! throughput: the host's CPU time per operation (`getrusage` of this
//! process), the server's, and the commands the server executed per operation
//! (`INFO commandstats` before and after; VM start-up and the orchestrator's
//! own records included).
//!
//! `redis-benchmark` writes its own keys (`key:__rand_int__`) into the URL's
//! database: run this against a server you do not mind writing to.

mod baseline;
mod server;
mod workload;

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

use self::baseline::Baseline;
use self::server::Probe;
use self::workload::{Run, measure, peer_inputs, sequential_inputs};
use super::Spread;
use crate::error::Result;
use crate::store::redact_url;

/// How much work each part does.
#[derive(Debug, Clone)]
pub struct RedisBenchOptions {
    /// Rounds of every figure (medians are taken over them).
    pub rounds: usize,
    /// Set+get pairs of the sequential agent.
    pub sequential_pairs: u64,
    /// Workload sizes: `(N agents, K = M steps)`.
    pub workloads: Vec<(usize, u64)>,
    /// Agent counts whose connections are counted.
    pub scale: Vec<usize>,
    /// K = M of each agent in the connection runs.
    pub scale_steps: u64,
    /// Requests `redis-benchmark` makes per test (`-n`).
    pub baseline_requests: u64,
}

impl Default for RedisBenchOptions {
    fn default() -> Self {
        RedisBenchOptions {
            rounds: 5,
            sequential_pairs: 10_000,
            workloads: vec![(5, 2_000), (50, 200)],
            scale: vec![5, 50, 500],
            scale_steps: 20,
            baseline_requests: 100_000,
        }
    }
}

impl RedisBenchOptions {
    /// A smoke run: every part once, small sizes, rough figures.
    pub fn quick() -> Self {
        RedisBenchOptions {
            rounds: 1,
            sequential_pairs: 500,
            workloads: vec![(5, 100)],
            scale: vec![5, 20],
            scale_steps: 5,
            baseline_requests: 2_000,
        }
    }
}

/// One measured figure over the rounds, and `redis-benchmark` beside it.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    /// What was measured.
    pub what: String,
    /// Agents doing it.
    pub agents: usize,
    /// Store operations per round.
    pub ops: u64,
    /// Operations per second through the Lua API.
    pub ops_per_sec: Spread,
    /// The `redis-benchmark` command it is compared with.
    pub baseline: String,
    /// Requests per second `redis-benchmark` got.
    pub baseline_ops_per_sec: Spread,
    /// `ops_per_sec / baseline_ops_per_sec`, round by round.
    pub ratio: Spread,
    /// The ratio aimed for.
    pub aim: f64,
    /// CPU time of this process per operation (µs).
    pub host_cpu_us_per_op: Spread,
    /// CPU time of the server per operation (µs).
    pub server_cpu_us_per_op: Spread,
    /// Commands the server executed per operation.
    pub commands_per_op: Spread,
    /// Those commands by name, per operation (the median round's).
    pub commands: BTreeMap<String, f64>,
    /// Commands that failed on the server, all rounds together.
    pub failed_commands: u64,
    /// Most connections to the server this process held at once.
    pub connections: u64,
}

/// Connections held while N agents run the workload.
#[derive(Debug, Clone, Serialize)]
pub struct Connections {
    /// Agents in the process.
    pub agents: usize,
    /// Most connections to the server held at once.
    pub connections: u64,
    /// Connections the server accepted during the run.
    pub accepted: u64,
}

/// Everything one run of the Redis benchmark measured.
#[derive(Debug, Clone, Serialize)]
pub struct RedisBenchReport {
    /// The server (password hidden).
    pub store: String,
    /// Rounds per figure.
    pub rounds: usize,
    /// The machine's load averages (1, 5, 15 min) before and after.
    pub load_before: Option<[f64; 3]>,
    /// The same, after.
    pub load_after: Option<[f64; 3]>,
    /// One agent, sequential set+get: of the key it set (read back without
    /// asking the server), and of another key (every get asks).
    pub sequential: Vec<Figure>,
    /// The workload, at each size.
    pub workloads: Vec<Figure>,
    /// Connections at each agent count.
    pub connections: Vec<Connections>,
}

/// Measures the store at `url` and runs `redis-benchmark` against the same
/// server. Fails with BadInput when `redis-benchmark` is not installed, and
/// with the run's error when a measured task fails.
pub async fn run(url: &str, options: &RedisBenchOptions) -> Result<RedisBenchReport> {
    let load_before = server::load_average();
    let target = Baseline::from_url(url)?;
    let mut probe = Probe::connect(url).await?;
    let rounds = options.rounds.max(1);

    let pairs = options.sequential_pairs.max(1);
    let mut sequential = Vec::new();
    for (elsewhere, what) in [
        (false, "sequential set + get of the key it set, one agent"),
        (true, "sequential set + get of another key, one agent"),
    ] {
        let (mut runs, mut baselines, mut command) = (Vec::new(), Vec::new(), String::new());
        for _ in 0..rounds {
            let inputs = sequential_inputs(pairs, elsewhere);
            runs.push(measure(url, &mut probe, "seq", 1, inputs).await?);
            let c1 = target.run(1, options.baseline_requests, "set,get")?;
            baselines.push((c1.set + c1.get.unwrap_or(c1.set)) / 2.0);
            command = c1.command;
        }
        sequential.push(figure(what.into(), 1, &runs, &baselines, command, 1.0));
    }

    let mut workloads = Vec::new();
    for &(agents, steps) in &options.workloads {
        let agents = agents.max(1);
        let (mut runs, mut baselines, mut command) = (Vec::new(), Vec::new(), String::new());
        for _ in 0..rounds {
            let inputs = peer_inputs(agents, steps.max(1), false);
            runs.push(measure(url, &mut probe, "peer", agents, inputs).await?);
            let cn = target.run(agents, options.baseline_requests, "set")?;
            baselines.push(cn.set);
            command = cn.command;
        }
        workloads.push(figure(
            format!("workload, {agents} agents, K = M = {steps}"),
            agents,
            &runs,
            &baselines,
            command,
            2.5,
        ));
    }

    let mut connections = Vec::new();
    for &agents in &options.scale {
        let inputs = peer_inputs(agents, options.scale_steps.max(1), true);
        let run = measure(url, &mut probe, "peer", agents, inputs).await?;
        connections.push(Connections {
            agents,
            connections: run.connections,
            accepted: run.delta.accepted,
        });
    }
    Ok(RedisBenchReport {
        store: redact_url(url),
        rounds,
        load_before,
        load_after: server::load_average(),
        sequential,
        workloads,
        connections,
    })
}

fn figure(
    what: String,
    agents: usize,
    runs: &[Run],
    baselines: &[f64],
    baseline: String,
    aim: f64,
) -> Figure {
    let per_op = |f: &dyn Fn(&Run) -> f64| {
        Spread::of(runs.iter().map(|r| f(r) / r.ops.max(1) as f64).collect())
    };
    let rates: Vec<f64> = runs.iter().map(Run::ops_per_sec).collect();
    let ratios = rates
        .iter()
        .zip(baselines)
        .map(|(r, b)| r / b.max(1e-9))
        .collect();
    // The round whose throughput is the median one gives the command mix.
    let mut order: Vec<usize> = (0..runs.len()).collect();
    order.sort_by(|&a, &b| rates[a].total_cmp(&rates[b]));
    let middle = &runs[order[order.len() / 2]];
    let commands = middle
        .delta
        .calls
        .iter()
        .map(|(name, n)| (name.clone(), *n as f64 / middle.ops.max(1) as f64))
        .collect();
    Figure {
        what,
        agents,
        ops: runs.first().map_or(0, |r| r.ops),
        ops_per_sec: Spread::of(rates),
        baseline,
        baseline_ops_per_sec: Spread::of(baselines.to_vec()),
        ratio: Spread::of(ratios),
        aim,
        host_cpu_us_per_op: per_op(&|r| r.delta.host_cpu * 1e6),
        server_cpu_us_per_op: per_op(&|r| r.delta.server_cpu * 1e6),
        commands_per_op: per_op(&|r| r.delta.commands() as f64),
        commands,
        failed_commands: runs.iter().map(|r| r.delta.failed).sum(),
        connections: runs.iter().map(|r| r.connections).max().unwrap_or(0),
    }
}

/// Renders the report as a few readable lines.
pub fn table(r: &RedisBenchReport) -> String {
    let mut s = String::new();
    let load = |l: Option<[f64; 3]>| {
        l.map_or("unknown".into(), |l| {
            format!("{:.2} {:.2} {:.2}", l[0], l[1], l[2])
        })
    };
    let _ = writeln!(
        s,
        "redis store at {} ({} rounds; median [min-max]; load {} before, {} after):",
        r.store,
        r.rounds,
        load(r.load_before),
        load(r.load_after)
    );
    let spread = |x: &Spread, digits: usize| {
        format!(
            "{:.*} [{:.*}-{:.*}]",
            digits, x.median, digits, x.min, digits, x.max
        )
    };
    for f in r.sequential.iter().chain(&r.workloads) {
        let _ = writeln!(s, "  {}:", f.what);
        let _ = writeln!(
            s,
            "    {} ops/s; {} {} req/s; ratio {} (aim {:.1})",
            spread(&f.ops_per_sec, 0),
            f.baseline,
            spread(&f.baseline_ops_per_sec, 0),
            spread(&f.ratio, 2),
            f.aim
        );
        let mut mix: Vec<(&String, &f64)> = f.commands.iter().collect();
        mix.sort_by(|a, b| b.1.total_cmp(a.1));
        let mix: Vec<String> = mix
            .iter()
            .take(8)
            .map(|(name, n)| format!("{name} {n:.2}"))
            .collect();
        let _ = writeln!(
            s,
            "    per op: host CPU {} us, server CPU {} us, {} commands ({}); {} failed; {} connections",
            spread(&f.host_cpu_us_per_op, 1),
            spread(&f.server_cpu_us_per_op, 1),
            spread(&f.commands_per_op, 2),
            mix.join(", "),
            f.failed_commands,
            f.connections
        );
    }
    let conns: Vec<String> = r
        .connections
        .iter()
        .map(|c| format!("{} agents: {}", c.agents, c.connections))
        .collect();
    let _ = writeln!(s, "  connections held, one process: {}", conns.join(", "));
    s
}
