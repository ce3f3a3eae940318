//! The original system's example, end to end: Alpha plans, Beta executes and
//! signals VALIDATION_NEEDED, Gamma is spawned on the condition and validates.

use std::collections::BTreeSet;

use orrery::config::Config;
use orrery::report::TaskStatus;
use orrery::task::Task;
use serde_json::Value;

use crate::common::{Backend, orrery, repo, run_in_process, show};
use crate::util::{error_messages, output, phases, show_report, unique_id};

const LIFECYCLE: [&str; 6] = [
    "INIT",
    "READY",
    "PLANNING",
    "EXECUTING",
    "VALIDATING",
    "COMPLETE",
];

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .cloned()
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[test]
fn deploy_example_runs_through_the_binary_and_reports_the_documented_json() {
    let out = orrery(&repo(), &["run", "examples/deploy.toml", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", show(&out)));

    assert_eq!(
        keys(&report),
        set(&[
            "task_id",
            "status",
            "duration_ms",
            "agents_used",
            "outputs",
            "errors",
            "metrics"
        ])
    );
    assert_eq!(report["task_id"], "deploy-001");
    assert_eq!(report["status"], "complete");
    assert!(report["duration_ms"].is_u64());
    assert_eq!(report["errors"], serde_json::json!([]));
    assert_eq!(
        report["agents_used"],
        serde_json::json!(["alpha-1", "beta-1", "gamma-1"]),
        "gamma is spawned exactly once"
    );

    let metrics = &report["metrics"];
    let documented = set(&[
        "task_id",
        "start_time",
        "end_time",
        "agent_metrics",
        "blackboard_writes",
        "blackboard_reads",
        "spawn_events",
    ]);
    assert!(
        keys(metrics).is_superset(&documented),
        "metrics lack documented keys: {metrics:#}"
    );
    assert_eq!(metrics["task_id"], "deploy-001");
    assert!(metrics["end_time"].as_u64().unwrap() >= metrics["start_time"].as_u64().unwrap());
    assert_eq!(metrics["spawn_events"], 1);
    assert!(metrics["blackboard_writes"].as_u64().unwrap() > 0);
    assert!(metrics["blackboard_reads"].as_u64().unwrap() > 0);

    let agents = &metrics["agent_metrics"];
    assert_eq!(keys(agents), set(&["alpha-1", "beta-1", "gamma-1"]));
    for (id, m) in agents.as_object().unwrap() {
        assert_eq!(
            keys(m),
            set(&["phases", "messages_sent", "messages_received", "errors"]),
            "{id}"
        );
        assert_eq!(m["phases"], serde_json::json!(LIFECYCLE), "{id}");
        assert_eq!(m["errors"], 0, "{id}");
    }
    // Five steps and plan_complete to Beta; one report per step back to Alpha.
    assert_eq!(agents["alpha-1"]["messages_sent"], 6);
    assert_eq!(agents["beta-1"]["messages_received"], 6);
    assert_eq!(agents["beta-1"]["messages_sent"], 5);
    assert_eq!(agents["alpha-1"]["messages_received"], 5);

    let outputs = &report["outputs"];
    assert_eq!(outputs["plan"]["steps"], 5);
    assert_eq!(
        outputs["execution"],
        serde_json::json!({"steps": 5, "done": 5, "failed": 0})
    );
    assert_eq!(outputs["deployment"]["target"], "sandbox");
    assert_eq!(outputs["deployment"]["image"], "web:1.4.2");
    assert_eq!(outputs["validation"]["passed"], true);
    assert_eq!(outputs["validation"]["validated_by"], "gamma-1");

    // Phase changes are shown live on stderr.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("gamma-1") && stderr.contains("VALIDATING -> COMPLETE"),
        "{stderr}"
    );
}

fn deploy_task(edit: impl FnOnce(&mut Task)) -> Task {
    let mut task = Task::load(&repo().join("examples/deploy.toml")).unwrap();
    task.id = unique_id("deploy");
    edit(&mut task);
    task
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_example_completes_on_every_store() {
    for backend in Backend::all() {
        let report = run_in_process(
            backend,
            &repo().join("scripts"),
            deploy_task(|_| {}),
            Config::default(),
        )
        .await;
        assert_eq!(
            report.status,
            TaskStatus::Complete,
            "{}",
            show_report(&report)
        );
        assert_eq!(report.metrics.spawn_events, 1);
        for id in ["alpha-1", "beta-1", "gamma-1"] {
            assert_eq!(phases(&report, id), LIFECYCLE, "{backend:?} {id}");
        }
        assert_eq!(output(&report, "validation")["passed"], true);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_that_breaks_a_constraint_fails_below_the_threshold_without_gamma() {
    for backend in Backend::all() {
        // sandbox-only forbids production: deploy and verify fail, 3 of 5 steps
        // succeed, a confidence of 0.6 is below Gamma's 0.8.
        let task = deploy_task(|t| t.inputs["environment"] = "production".into());
        let report =
            run_in_process(backend, &repo().join("scripts"), task, Config::default()).await;
        assert_eq!(
            report.status,
            TaskStatus::Failed,
            "{}",
            show_report(&report)
        );
        assert_eq!(report.exit_code(), orrery::error::exit::TASK_FAILED);
        assert_eq!(report.metrics.spawn_events, 0);
        assert_eq!(report.agents_used, ["alpha-1", "beta-1"]);
        assert_eq!(
            output(&report, "execution"),
            &serde_json::json!({"steps": 5, "done": 3, "failed": 2})
        );
        let errors = error_messages(&report);
        assert!(
            errors.iter().any(|e| e.contains("alpha-1 failed")
                && e.contains("constraint sandbox-only forbids deploying to 'production'")),
            "{errors:#?}"
        );
        assert_eq!(phases(&report, "alpha-1").last().unwrap(), "FAILED");
    }
}

/// The custom agent set in examples/word-count runs offline as its task file
/// says: a role started twice is a pool, and each document is counted once.
#[test]
fn the_word_count_example_runs_with_its_own_scripts() {
    let out = orrery(
        &repo(),
        // Its roles are found in scripts/ beside the task file.
        &["run", "examples/word-count/task.toml", "--json"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(report["outputs"]["total_words"], 34, "{}", show(&out));
    let by_worker = report["outputs"]["documents_by_worker"]
        .as_object()
        .unwrap();
    let handled: u64 = by_worker.values().map(|n| n.as_u64().unwrap()).sum();
    assert_eq!(
        handled, 4,
        "each document counted exactly once: {by_worker:?}"
    );
    assert_eq!(
        report["agents_used"],
        serde_json::json!(["dispatcher-1", "worker-1", "worker-2"])
    );
    assert_eq!(report["metrics"]["custom"]["documents_counted"], 4);
}
