//! Helpers of the sandbox tests: small limits, runs of scratch script sets,
//! and a witness agent that proves the rest of the task went on.

use orrery::config::Config;
use orrery::report::{ReportedError, RunReport, TaskStatus};
use serde_json::json;

use crate::common::{Backend, Scratch, run_in_process, task};

/// A role that works after the others started and records that it finished.
pub const WITNESS: (&str, &str) = (
    "witness.lua",
    r#"
local M = {}
function M.start(self)
  sleep(20)
  blackboard.set("witness", "alive")
  task.output("witness", "done")
end
return M
"#,
);

/// Defaults with limits small enough for tests: 200 ms per callback, 16 MiB of heap, 4 KiB values.
pub fn config() -> Config {
    Config {
        callback_timeout: 200,
        memory_limit: 16 * 1024 * 1024,
        max_value_bytes: 4096,
        ..Config::default()
    }
}

/// Runs `scripts` (plus the witness) as task `id` on the embedded store.
pub async fn run(scripts: &[(&str, &str)], config: Config) -> RunReport {
    run_on(Backend::Memory, scripts, config).await
}

/// Runs `scripts` (plus the witness) on `backend`.
pub async fn run_on(backend: Backend, scripts: &[(&str, &str)], config: Config) -> RunReport {
    let mut all = scripts.to_vec();
    all.push(WITNESS);
    let scratch = Scratch::new(&all);
    run_in_process(backend, &scratch.scripts(), task("sandbox", 60_000), config).await
}

/// The fatal error of `agent`; panics with the report when there is none.
pub fn fatal<'a>(report: &'a RunReport, agent: &str) -> &'a ReportedError {
    report
        .errors
        .iter()
        .find(|e| e.agent == agent && e.fatal)
        .unwrap_or_else(|| panic!("no fatal error for {agent}: {report:#?}"))
}

/// Asserts that the witness ran to its end and that the task ended before its
/// own timeout (so the failure was the agent's alone).
pub fn assert_rest_intact(report: &RunReport) {
    assert_ne!(report.status, TaskStatus::Timeout, "{report:#?}");
    assert_eq!(
        report.outputs.get("witness"),
        Some(&json!("done")),
        "{report:#?}"
    );
    assert!(
        !report.errors.iter().any(|e| e.agent.starts_with("witness")),
        "{report:#?}"
    );
}

/// A role script whose `start` runs `body`.
pub fn start(body: &str) -> String {
    format!("local M = {{}}\nfunction M.start(self)\n{body}\nend\nreturn M\n")
}
