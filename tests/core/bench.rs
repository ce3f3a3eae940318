//! `orrery bench --quick --json` runs every measurement and prints the four
//! figures as JSON (no timing is asserted: the figures are reported, not judged).

use serde_json::Value;

use crate::common::{orrery, repo, show};

#[test]
fn bench_quick_prints_the_four_figures_as_json() {
    let out = orrery(&repo(), &["bench", "--quick", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", show(&out)));
    assert_eq!(report["quick"], true);
    let figures = &report["embedded"];
    for key in [
        "blackboard_ops_per_sec",
        "messages_per_sec",
        "spawn_p50_us",
        "spawn_p99_us",
        "idle_agent_lua_heap_bytes",
    ] {
        let v = figures[key]
            .as_f64()
            .unwrap_or_else(|| panic!("no number '{key}' in {figures:#}"));
        assert!(v > 0.0, "{key} = {v}");
    }
    assert!(figures["spawn_p99_us"].as_f64() >= figures["spawn_p50_us"].as_f64());
    // The figures taken on one thread, where nothing waits for a wake-up.
    for (key, figure) in [("messages_one_thread", "rate"), ("spawn_one_thread", "p50")] {
        let median = figures[key][figure]["median"].as_f64();
        assert!(median.is_some_and(|v| v > 0.0), "{key}: {figures:#}");
    }
    // CPU per message and per spawn, the figures a busy machine leaves comparable.
    for (key, figure) in [
        ("messages_one_thread", "cpu_us"),
        ("spawn_one_thread", "cpu_us"),
    ] {
        let cpu = figures[key][figure].as_f64();
        assert!(cpu.is_some_and(|v| v > 0.0), "{key}.{figure}: {figures:#}");
    }
    assert!(figures["spawn_cpu_us"].as_f64() > Some(0.0), "{figures:#}");
    assert!(report["load"]["cores"].as_u64() >= Some(1), "{report:#}");
    // The machine's speed at both ends of the run, to compare runs by.
    for key in ["reference_ns_before", "reference_ns_after"] {
        let ns = report["load"][key].as_f64();
        assert!(ns.is_some_and(|v| v > 0.0), "{key}: {report:#}");
    }
    // Resident memory is known on Linux, where the suite runs in CI.
    if cfg!(target_os = "linux") {
        assert!(figures["idle_agent_bytes"].is_u64(), "{figures:#}");
    }
}

#[test]
fn bench_without_json_prints_a_table_with_the_targets() {
    let out = orrery(&repo(), &["bench", "--quick"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for row in [
        "blackboard ops/s",
        "messages/s",
        "spawn p50 / p99",
        "memory per idle agent",
        "messages/s on one thread",
        "spawn p50 / p99 on one thread",
        "machine: ",
    ] {
        assert!(stdout.contains(row), "no '{row}' in:\n{stdout}");
    }
}
