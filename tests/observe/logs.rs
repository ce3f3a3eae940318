//! `--log-format json`: every log line on stderr is one JSON object.

use orrery::error::exit;
use serde_json::Value;

use crate::common::{orrery, repo, show};

#[test]
fn json_logs_are_one_object_per_line_with_level_and_message() {
    let out = orrery(
        &repo(),
        &["run", "examples/deploy.toml", "--log-format", "json"],
    );
    assert_eq!(out.status.code(), Some(exit::OK), "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Every line is JSON: the log lines and the host's own (the phase
    // changes shown live).
    let lines: Vec<Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        lines.iter().any(|l| l["level"] == "INFO"
            && l["fields"]["agent"] == "alpha-1"
            && l["fields"]["to"] == "COMPLETE"
            && l["timestamp"].as_str().is_some_and(|t| t.starts_with("20"))),
        "{stderr}"
    );
    assert!(
        lines.iter().any(|l| l["level"] == "INFO"
            && l["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("planned 5 steps"))
            && l["fields"]["agent"] == "alpha-1"),
        "{stderr}"
    );
    let out = orrery(
        &repo(),
        &["run", "examples/deploy.toml", "--log-format", "yaml"],
    );
    assert_eq!(out.status.code(), Some(exit::BAD_INPUT), "{}", show(&out));
}

/// A run that fails under `--log-format json` ends with its error as a
/// JSON object too.
#[test]
fn the_final_error_is_a_json_object_too() {
    let out = orrery(
        &repo(),
        &["run", "examples/no-such-task.toml", "--log-format", "json"],
    );
    assert_eq!(out.status.code(), Some(exit::BAD_INPUT), "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last: Value = serde_json::from_str(stderr.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("not JSON ({e}): {stderr}"));
    assert_eq!(last["level"], "ERROR", "{stderr}");
    assert!(
        last["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("error: ") && m.contains("no-such-task.toml")),
        "{stderr}"
    );
}
