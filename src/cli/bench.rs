//! `orrery bench [--json] [--quick] [--redis URL]`: measure the host and print the figures.

use std::fmt::Write;

use orrery::bench::{BenchReport, embedded, journal, redis, reload};
use orrery::error::exit;

/// Arguments of `orrery bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// A short smoke run: every measurement once, with rough figures.
    #[arg(long)]
    pub quick: bool,
    /// Also measure the Redis store on this server, beside `redis-benchmark`
    /// (which writes keys of its own there: use a scratch server).
    #[arg(long, value_name = "URL")]
    pub redis: Option<String>,
    /// With --redis: measure only the Redis store.
    #[arg(long, requires = "redis")]
    pub redis_only: bool,
    /// Measure only the journal's cost (its rounds: 5, or 1 with --quick).
    #[arg(long, conflicts_with = "redis")]
    pub journal_only: bool,
    /// Only one run of the message figure, of N messages (for profiling).
    #[arg(long, hide = true, value_name = "N", conflicts_with_all = ["redis", "journal_only"])]
    pub messages_only: Option<u64>,
    /// Only one run of the blackboard figure, of N set-get pairs (for profiling).
    #[arg(long, hide = true, value_name = "N", conflicts_with_all = ["redis", "journal_only", "messages_only"])]
    pub blackboard_only: Option<u64>,
    /// With --messages-only or --blackboard-only: the journal on, written
    /// to a scratch file.
    #[arg(long, hide = true)]
    pub journal_on: bool,
    /// Rounds of each Redis figure (medians are taken over them).
    #[arg(long, value_name = "N", requires = "redis")]
    pub rounds: Option<usize>,
    /// Measure only the spawn figures, with N timed spawns, and print them
    /// as text (for profiling: the difference of two runs is the cost of
    /// the spawns between them).
    #[arg(long, value_name = "N", hide = true, conflicts_with_all = ["redis", "journal_only", "messages_only", "json"])]
    pub spawns_only: Option<u64>,
}

pub fn execute(args: BenchArgs) -> anyhow::Result<i32> {
    let (sizes, edits, mut redis_options) = if args.quick {
        (
            embedded::Sizes::quick(),
            5,
            redis::RedisBenchOptions::quick(),
        )
    } else {
        (
            embedded::Sizes::full(),
            200,
            redis::RedisBenchOptions::default(),
        )
    };
    if let Some(rounds) = args.rounds {
        redis_options.rounds = rounds;
    }
    let runtime = super::runtime()?;
    if let Some(spawns) = args.spawns_only {
        let sizes = embedded::Sizes { spawns, ..sizes };
        let figures = runtime.block_on(embedded::spawns_only(sizes))?;
        super::print_out(&embedded::spawn_table(&figures));
        return Ok(exit::OK);
    }
    if let Some(count) = args.messages_only {
        let (rate, cpu_us) = runtime.block_on(journal::messages_once(count, args.journal_on))?;
        super::print_out(&format!(
            "{count} messages, journal {}: {rate:.0}/s, {cpu_us:.3} us CPU each (start-up included)\n",
            if args.journal_on { "on" } else { "off" }
        ));
        return Ok(exit::OK);
    }
    if let Some(loops) = args.blackboard_only {
        let (rate, cpu_us) = runtime.block_on(journal::blackboard_once(loops, args.journal_on))?;
        super::print_out(&format!(
            "{loops} set-get pairs, journal {}: {rate:.0} ops/s, {cpu_us:.3} us CPU each (start-up included)\n",
            if args.journal_on { "on" } else { "off" }
        ));
        return Ok(exit::OK);
    }
    let load = orrery::bench::Load::started();
    let mut report = runtime.block_on(async {
        let redis = match &args.redis {
            Some(url) => Some(redis::run(url, &redis_options).await?),
            None => None,
        };
        let (embedded, journal, reload) = if args.redis_only {
            (None, None, None)
        } else if args.journal_only {
            let journal = journal_cost(sizes, args.quick).await?;
            (None, Some(journal), None)
        } else {
            let embedded = embedded::run(sizes).await?;
            let journal = journal_cost(sizes, args.quick).await?;
            let reload = reload::reload_latency(edits).await?;
            (Some(embedded), Some(journal), Some(reload))
        };
        Ok::<_, orrery::Error>(BenchReport {
            version: env!("CARGO_PKG_VERSION"),
            load,
            quick: args.quick,
            embedded,
            journal,
            reload,
            redis,
        })
    })?;
    report.load.ended();
    if args.json {
        super::print_out(&format!("{}\n", serde_json::to_string_pretty(&report)?));
    } else {
        super::print_out(&table(&report));
    }
    Ok(exit::OK)
}

/// The journal's cost: one round of the quick sizes, or the full run's
/// rounds (see [`journal::ROUNDS`]).
async fn journal_cost(sizes: embedded::Sizes, quick: bool) -> orrery::Result<journal::JournalCost> {
    if quick {
        journal::journal_cost(sizes, 1).await
    } else {
        journal::journal_cost(journal::round_sizes(sizes), journal::ROUNDS).await
    }
}

fn table(report: &BenchReport) -> String {
    let mut s = report.load.line();
    if let Some(e) = &report.embedded {
        s.push_str(&embedded::table(e));
    }
    if let Some(j) = &report.journal {
        s.push_str(&journal::table(j));
    }
    if let Some(r) = &report.reload {
        let _ = writeln!(
            s,
            "hot reload, edit to new code handling a message ({} edits, {} ms debounce): p50 {:.1} ms, p99 {:.1} ms",
            r.edits, r.debounce_ms, r.p50_ms, r.p99_ms
        );
    }
    if let Some(r) = &report.redis {
        s.push_str(&redis::table(r));
    }
    s
}
