//! The reload-latency benchmark runs end to end and reports sound figures
//! (no timing is asserted). `ORRERY_RELOAD_BENCH_EDITS=200 cargo test
//! --release --test reload bench -- --nocapture` prints real figures.

use orrery::bench::reload::reload_latency;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_latency_reports_percentiles_over_the_edits() {
    let edits = std::env::var("ORRERY_RELOAD_BENCH_EDITS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let figures = reload_latency(edits).await.expect("benchmark runs");
    println!("{}", serde_json::to_string_pretty(&figures).unwrap());
    assert_eq!(figures.edits, edits);
    assert!(figures.min_ms > 0.0);
    assert!(figures.min_ms <= figures.p50_ms);
    assert!(figures.p50_ms <= figures.p99_ms);
    assert!(figures.p99_ms <= figures.max_ms);
    assert!(figures.min_ms <= figures.mean_ms && figures.mean_ms <= figures.max_ms);
}
