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
}

pub fn execute(args: BenchArgs) -> anyhow::Result<i32> {
    let (sizes, edits, redis_options) = if args.quick {
        let options = redis::RedisBenchOptions {
            sequential_pairs: 500,
            agents: 5,
            sets_per_agent: 100,
            baseline_requests: 2_000,
        };
        (embedded::Sizes::quick(), 5, options)
    } else {
        (
            embedded::Sizes::full(),
            200,
            redis::RedisBenchOptions::default(),
        )
    };
    let runtime = super::runtime()?;
    let report = runtime.block_on(async {
        let embedded = embedded::run(sizes).await?;
        let journal = journal::journal_cost(sizes, if args.quick { 1 } else { 3 }).await?;
        let reload = reload::reload_latency(edits).await?;
        let redis = match &args.redis {
            Some(url) => Some(redis::run(url, &redis_options).await?),
            None => None,
        };
        Ok::<_, orrery::Error>(BenchReport {
            version: env!("CARGO_PKG_VERSION"),
            quick: args.quick,
            embedded,
            journal,
            reload,
            redis,
        })
    })?;
    if args.json {
        super::print_out(&format!("{}\n", serde_json::to_string_pretty(&report)?));
    } else {
        super::print_out(&table(&report));
    }
    Ok(exit::OK)
}

fn table(report: &BenchReport) -> String {
    let mut s = embedded::table(&report.embedded);
    s.push_str(&journal::table(&report.journal));
    let r = &report.reload;
    let _ = writeln!(
        s,
        "hot reload, edit to new code handling a message ({} edits, {} ms debounce): p50 {:.1} ms, p99 {:.1} ms",
        r.edits, r.debounce_ms, r.p50_ms, r.p99_ms
    );
    if let Some(redis) = &report.redis {
        let _ = writeln!(s, "redis store at {}:", redis.store);
        for f in [&redis.sequential, &redis.concurrent] {
            let _ = writeln!(
                s,
                "  {:<40} {:>10.0} ops/s   {} {:>10.0}   ratio {:.2} (aim {:.1})",
                f.what, f.ops_per_sec, f.baseline, f.baseline_ops_per_sec, f.ratio, f.aim
            );
        }
    }
    s
}
