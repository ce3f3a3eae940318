//! `orrery run TASK`: run a task and print its report. With `--join TASK_ID
//! --role ROLE`, add agents to a task another process runs (see `join.rs`).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use orrery::coordination::PhaseChange;
use orrery::orchestrator::Orchestrator;
use orrery::report::RunReport;
use orrery::scripts::ScriptRegistry;
use orrery::store;
use orrery::task::Task;

use super::ConfigArgs;

/// Arguments of `orrery run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Task file (.toml or .json). Not with --join.
    #[arg(required_unless_present = "join", conflicts_with = "join")]
    pub task: Option<PathBuf>,
    /// Join the running task TASK_ID of a shared store instead of starting one.
    #[arg(long, value_name = "TASK_ID", requires = "role")]
    pub join: Option<String>,
    /// With --join: start one agent of ROLE (repeat the flag for more).
    #[arg(long, value_name = "ROLE", requires = "join")]
    pub role: Vec<String>,
    /// Print one JSON object instead of the summary.
    #[arg(long)]
    pub json: bool,
    /// Override the task's timeout (ms).
    #[arg(long, value_name = "MS", conflicts_with = "join")]
    pub timeout: Option<u64>,
    /// Do not show phase changes while the task runs.
    #[arg(long, short)]
    pub quiet: bool,
    #[command(flatten)]
    pub config: ConfigArgs,
}

pub fn execute(args: RunArgs) -> anyhow::Result<i32> {
    let config = args.config.resolve()?;
    if let Some(task_id) = &args.join {
        return super::join::execute(task_id, &args, config);
    }
    let path = args
        .task
        .as_ref()
        .expect("clap requires TASK without --join");
    let mut task = Task::load(path)?;
    if let Some(ms) = args.timeout {
        if ms == 0 {
            return Err(
                orrery::Error::bad_input("flag --timeout", "must be greater than 0 ms").into(),
            );
        }
        task.timeout = ms;
    }
    let registry = Arc::new(ScriptRegistry::load(&config.scripts, &config.stdlib)?);
    let runtime = super::runtime()?;
    let report = runtime.block_on(async {
        let store = store::open(&config).await?;
        let orchestrator = Orchestrator::new(task, config, store, registry)?;
        drive(orchestrator, args.quiet).await
    });
    print_report(&report.context("task did not run")?, args.json)
}

/// Runs `orchestrator`, showing phase changes on stderr unless `quiet`.
pub(super) async fn drive(orchestrator: Orchestrator, quiet: bool) -> orrery::Result<RunReport> {
    let printer = (!quiet).then(|| {
        let mut changes = orchestrator.coordination().states.subscribe();
        let start = orchestrator.coordination().metrics.start_time();
        tokio::spawn(async move {
            while let Ok(change) = changes.recv().await {
                eprintln!("{}", format_change(&change, start));
            }
        })
    });
    let report = orchestrator.run().await;
    // Every sender is gone once the run ended: let the printer finish its lines.
    if let Some(printer) = printer {
        let _ = tokio::time::timeout(std::time::Duration::from_millis(200), printer).await;
    }
    report
}

/// Prints a report as text or JSON; returns the exit code it maps to.
pub(super) fn print_report(report: &RunReport, json: bool) -> anyhow::Result<i32> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print!("{}", report.summary());
    }
    Ok(report.exit_code())
}

fn format_change(c: &PhaseChange, start_ms: u64) -> String {
    let at = c.at_ms.saturating_sub(start_ms);
    let from = c.from.map_or("-".to_string(), |p| p.to_string());
    let reason = c
        .reason
        .as_deref()
        .map(|r| format!("  ({r})"))
        .unwrap_or_default();
    format!("[{at:>6} ms] {:<10} {from} -> {}{reason}", c.agent, c.to)
}
