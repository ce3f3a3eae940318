//! Helpers of this suite: unique task ids, tasks from TOML, runs of inline
//! scripts on a backend, and readable assertions on reports.

use std::sync::atomic::{AtomicU32, Ordering};

use orrery::config::Config;
use orrery::report::{RunReport, TaskStatus};
use orrery::task::Task;
use serde_json::Value;

use crate::common::{Backend, Scratch, run_in_process};

/// A task id no other run of this process uses, so tests sharing a store never meet.
pub fn unique_id(name: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{name}-{}-{n}", std::process::id())
}

/// A task with a unique id built from `name`, the given timeout (ms), and the
/// TOML lines of `extra` (top-level keys first, then tables).
pub fn task_with_timeout(name: &str, timeout_ms: u64, extra: &str) -> Task {
    let text = format!(
        "id = \"{}\"\ntype = \"test\"\ndescription = \"{name}\"\ntimeout = {timeout_ms}\n{extra}",
        unique_id(name)
    );
    Task::from_toml(&text, name).expect("test task parses")
}

/// [`task_with_timeout`] with a timeout long enough that reaching it is a failure.
pub fn task(name: &str, extra: &str) -> Task {
    task_with_timeout(name, 30_000, extra)
}

/// Runs `scripts` (file name, source) as `task` on `backend`.
pub async fn run(
    backend: Backend,
    scripts: &[(&str, &str)],
    task: Task,
    config: Config,
) -> RunReport {
    let scratch = Scratch::new(scripts);
    run_in_process(backend, &scratch.scripts(), task, config).await
}

/// Runs `scripts` as `task` on `backend` with the default settings, and
/// fails, showing the report, unless the run completed with no error at all.
pub async fn run_clean(backend: Backend, scripts: &[(&str, &str)], task: Task) -> RunReport {
    let report = run(backend, scripts, task, Config::default()).await;
    assert_clean(backend, &report);
    report
}

/// The report as pretty JSON, for assertion messages.
pub fn show_report(report: &RunReport) -> String {
    serde_json::to_string_pretty(report).unwrap()
}

/// Fails, showing the report, unless the run completed with no error at all.
pub fn assert_clean(backend: Backend, report: &RunReport) {
    assert!(
        report.status == TaskStatus::Complete && report.errors.is_empty(),
        "{backend:?}: expected a clean run, got:\n{}",
        show_report(report)
    );
}

/// Output `name` of the run; fails, showing the report, when there is none.
pub fn output<'a>(report: &'a RunReport, name: &str) -> &'a Value {
    report
        .outputs
        .get(name)
        .unwrap_or_else(|| panic!("no output '{name}' in:\n{}", show_report(report)))
}

/// Phases agent `id` went through.
pub fn phases(report: &RunReport, id: &str) -> Vec<String> {
    report
        .metrics
        .agent_metrics
        .get(id)
        .unwrap_or_else(|| panic!("no agent '{id}' in:\n{}", show_report(report)))
        .phases
        .clone()
}

/// A config with one setting changed from the defaults.
pub fn config(edit: impl FnOnce(&mut Config)) -> Config {
    let mut c = Config::default();
    edit(&mut c);
    c
}

/// The messages of the report's errors, one per line, for assertion messages.
pub fn error_messages(report: &RunReport) -> Vec<String> {
    report.errors.iter().map(|e| e.message.clone()).collect()
}

/// The 1-based line of `source` that contains `needle` (a script's error line).
pub fn line_of(source: &str, needle: &str) -> usize {
    1 + source
        .lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("'{needle}' is not in the script"))
}
