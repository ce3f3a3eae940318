//! `orrery bench --redis URL` runs the workload end to end through the binary
//! (quick sizes; the figures are reported, never asserted), and reports the
//! server's side of it: commands per operation and connections held.
//! `ORRERY_BENCH_FULL=1` runs the full sizes in-process and prints the report,
//! for the figures in README.md.

use orrery::bench::redis::{RedisBenchOptions, run};
use serde_json::Value;

use crate::common::{RedisServer, orrery, repo, show};

#[test]
fn the_benchmark_reports_the_workload_beside_redis_benchmark() {
    let server = RedisServer::start();
    let out = orrery(
        &repo(),
        &[
            "bench",
            "--quick",
            "--json",
            "--redis-only",
            "--redis",
            &server.url(),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert!(report.get("embedded").is_none(), "--redis-only: {report}");
    let redis = &report["redis"];
    let quick = RedisBenchOptions::quick();
    let sequential = redis["sequential"].as_array().unwrap();
    assert_eq!(sequential.len(), 2, "{redis}");
    for seq in sequential {
        assert_eq!(seq["ops"], 2 * quick.sequential_pairs);
        assert!(seq["baseline"].as_str().unwrap().contains("-c 1 "), "{seq}");
    }
    let workloads = redis["workloads"].as_array().unwrap();
    assert_eq!(workloads.len(), quick.workloads.len());
    for (f, (agents, steps)) in workloads.iter().zip(&quick.workloads) {
        assert_eq!(f["agents"], *agents as u64, "{f}");
        assert_eq!(f["ops"], *agents as u64 * 4 * steps, "{f}");
        assert!(
            f["baseline"]
                .as_str()
                .unwrap()
                .starts_with("redis-benchmark -h 127.0.0.1 -p "),
            "{f}"
        );
        assert!(
            f["baseline"]
                .as_str()
                .unwrap()
                .contains(&format!("-c {agents} "))
        );
        for key in [
            "ops_per_sec",
            "baseline_ops_per_sec",
            "ratio",
            "commands_per_op",
        ] {
            let median = f[key]["median"].as_f64().unwrap();
            assert!(median.is_finite() && median > 0.0, "{key}: {f}");
        }
        // The server ran the agents' commands: blackboard writes and reads at least.
        assert!(f["commands"].as_object().unwrap().len() >= 2, "{f}");
        assert!(f["connections"].as_u64().unwrap() >= 1, "{f}");
    }
    let scale = redis["connections"].as_array().unwrap();
    assert_eq!(scale.len(), quick.scale.len());
    for c in scale {
        assert!(c["connections"].as_u64().unwrap() >= 1, "{c}");
    }
}

/// The full-size figures, printed (`ORRERY_BENCH_FULL=1`, release build advised).
#[tokio::test(flavor = "multi_thread")]
async fn full_figures_when_asked() {
    if std::env::var("ORRERY_BENCH_FULL").is_ok_and(|v| v == "1") {
        let server = RedisServer::start();
        let report = run(&server.url(), &RedisBenchOptions::default())
            .await
            .expect("benchmark runs");
        println!("{}", orrery::bench::redis::table(&report));
    }
}
