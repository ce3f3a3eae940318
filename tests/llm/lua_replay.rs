//! Replay files end to end: the shipped example runs offline, a recorded run
//! replays to the same outputs, and a missing answer is a catchable `replay`
//! error that Alpha falls back from.

use orrery::llm::LlmConfig;
use orrery::report::TaskStatus;
use serde_json::{Value, json};

use crate::util::*;

#[test]
fn the_replay_example_runs_offline() {
    let out = orrery_env(
        &repo(),
        &[
            "run",
            "examples/release-notes.toml",
            "--json",
            "--llm-replay",
            "examples/release-notes.jsonl",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("llm: replaying answers from examples/release-notes.jsonl"),
        "{stderr}"
    );
    let report = json_report(&out);
    let outputs = &report["outputs"];
    assert_eq!(outputs["plan"]["source"], "llm");
    let actions: Vec<&str> = outputs["plan_steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["analyze", "write_notes", "report"]);
    let notes = &outputs["step-2.write_notes"];
    assert_eq!(notes["source"], "replay");
    assert!(
        notes["answer"].as_str().unwrap().starts_with("web 1.4.2"),
        "{notes}"
    );
    assert_eq!(outputs["validation"]["passed"], true);
    assert_eq!(outputs["validation"]["second_opinion"]["source"], "replay");
    assert_eq!(report["metrics"]["llm"]["total"]["calls"], 3);
    assert_eq!(report["metrics"]["llm"]["failed_calls"], 0);
}

/// The outputs that must not depend on who answered.
fn answers(report: &Value) -> Value {
    let o = &report["outputs"];
    json!({
        "plan_steps": o["plan_steps"],
        "notes": o["s2.write_notes"]["answer"],
        "opinion": o["validation"]["second_opinion"]["concerns"],
        "tokens": report["metrics"]["llm"]["total"],
    })
}

#[tokio::test]
async fn a_recorded_run_replays_to_the_same_outputs() {
    let plan = json!({"steps": [
        {"id": "s1", "action": "analyze", "description": "Collect the changes"},
        {"id": "s2", "action": "write_notes", "description": "Write the notes"}
    ]});
    let review = json!({"agree": true, "concerns": ["short notes"]});
    let server = agents_server(plan_answer(plan), "the notes", review).await;
    let scratch = Scratch::new(&[]);
    let record = scratch.path().join("run.jsonl");
    let record = record.to_str().unwrap();
    let task = repo().join("examples/deploy.toml");
    let task = task.to_str().unwrap();
    let scripts = default_scripts();
    let scripts = scripts.to_str().unwrap();
    let url = format!("{}/v1", server.uri());
    let common = ["run", task, "--json", "-q", "--scripts", scripts];

    let live = orrery_env(
        scratch.path(),
        &[&common[..], &["--llm-url", &url, "--llm-record", record]].concat(),
        &[],
    );
    assert_eq!(live.status.code(), Some(0), "{}", show(&live));
    let live = json_report(&live);
    assert_eq!(live["outputs"]["s2.write_notes"]["source"], "api");
    drop(server);
    let lines = std::fs::read_to_string(record).unwrap();
    assert_eq!(
        lines.lines().count(),
        3,
        "planner, executor, reviewer:\n{lines}"
    );

    let replayed = orrery_env(
        scratch.path(),
        &[&common[..], &["--llm-replay", record]].concat(),
        &[],
    );
    assert_eq!(replayed.status.code(), Some(0), "{}", show(&replayed));
    let replayed = json_report(&replayed);
    assert_eq!(replayed["outputs"]["s2.write_notes"]["source"], "replay");
    assert_eq!(answers(&replayed), answers(&live));
    assert_eq!(answers(&live)["notes"], "the notes");
}

#[tokio::test]
async fn a_request_the_file_has_no_answer_for_is_a_replay_error() {
    let scratch = Scratch::new(&[]);
    let file = scratch.write(
        "other.jsonl",
        &json!({"request": {"messages": [{"role": "user", "content": "something else"}]},
                "response": {"content": "x"}})
        .to_string(),
    );
    let cfg = LlmConfig {
        replay: Some(file.clone()),
        ..LlmConfig::default()
    };
    let report = run_with_llm(&default_scripts(), deploy_task(), cfg).await;
    assert_eq!(report.status, TaskStatus::Complete, "{:#?}", report.errors);
    let plan = output(&report, "plan");
    assert_eq!(plan["source"], "fallback");
    let reason = plan["reason"].as_str().unwrap();
    let expected = format!(
        "the LLM call failed (replay): replay file {}: no recorded answer",
        file.display()
    );
    assert!(reason.starts_with(&expected), "{reason}");
    let opinion = &output(&report, "validation")["second_opinion"];
    assert!(
        opinion["error"]
            .as_str()
            .unwrap()
            .contains("llm.chat failed (replay)"),
        "{opinion}"
    );
}

/// A recording the disk cannot take is said in the report (the calls
/// themselves succeeded, so the run does not fail): otherwise it is found
/// out only when the replay has no answers.
#[tokio::test]
async fn a_recording_the_disk_cannot_take_is_reported() {
    let plan = json!({"steps": [
        {"id": "s1", "action": "analyze", "description": "Collect the changes"},
        {"id": "s2", "action": "write_notes", "description": "Write the notes"}
    ]});
    let review = json!({"agree": true, "concerns": []});
    let server = agents_server(plan_answer(plan), "the notes", review).await;
    let scratch = Scratch::new(&[]);
    let task = repo().join("examples/deploy.toml");
    let scripts = default_scripts();
    let url = format!("{}/v1", server.uri());
    let out = orrery_env(
        scratch.path(),
        &[
            "run",
            task.to_str().unwrap(),
            "--json",
            "-q",
            "--scripts",
            scripts.to_str().unwrap(),
            "--llm-url",
            &url,
            "--llm-record",
            "/dev/full",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let report = json_report(&out);
    let errors = report["errors"].as_array().unwrap();
    let record: Vec<&serde_json::Value> = errors
        .iter()
        .filter(|e| e["kind"] == "llm_record")
        .collect();
    assert_eq!(record.len(), 1, "{report:#}");
    let message = record[0]["message"].as_str().unwrap();
    assert!(
        message.contains("cannot append to the LLM record file /dev/full")
            && message.contains("3 answers not recorded"),
        "{message}"
    );
    assert_eq!(record[0]["fatal"], false);
}
