//! The Redis benchmark harness runs end to end (small sizes; the figures are
//! reported, never asserted). `ORRERY_BENCH_FULL=1` runs the full sizes and
//! prints the report, for the figures in README.md.

use orrery::bench::redis::{RedisBenchOptions, run};

use crate::common::RedisServer;

#[tokio::test(flavor = "multi_thread")]
async fn the_benchmark_measures_both_figures() {
    let server = RedisServer::start();
    let full = std::env::var("ORRERY_BENCH_FULL").is_ok_and(|v| v == "1");
    let options = if full {
        RedisBenchOptions::default()
    } else {
        RedisBenchOptions {
            sequential_pairs: 200,
            agents: 5,
            sets_per_agent: 100,
            baseline_requests: 2_000,
        }
    };
    let report = run(&server.url(), &options).await.expect("benchmark runs");
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
    let (seq, conc) = (&report.sequential, &report.concurrent);
    assert_eq!(seq.ops, 2 * options.sequential_pairs);
    assert_eq!(conc.ops, options.agents as u64 * options.sets_per_agent);
    assert_eq!(conc.agents, options.agents);
    for f in [seq, conc] {
        assert!(f.ops_per_sec > 0.0 && f.baseline_ops_per_sec > 0.0, "{f:?}");
        assert!(f.client_ops_per_sec > 0.0, "{f:?}");
        assert!(f.ratio.is_finite() && f.ratio > 0.0, "{f:?}");
        assert!(
            f.baseline.starts_with("redis-benchmark -h 127.0.0.1 -p "),
            "{f:?}"
        );
    }
    assert!(seq.baseline.contains("-c 1 ") && seq.baseline.contains("-t set,get"));
    assert!(conc.baseline.contains(&format!("-c {} ", options.agents)));
}
