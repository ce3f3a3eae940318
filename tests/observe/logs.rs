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
    // Log lines are JSON; the phase changes shown live stay as they are.
    let (logs, live): (Vec<&str>, Vec<&str>) = stderr.lines().partition(|l| l.starts_with('{'));
    assert!(
        live.iter()
            .all(|l| l.starts_with('[') && l.contains(" ms] ")),
        "{stderr}"
    );
    let lines: Vec<Value> = logs
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
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
