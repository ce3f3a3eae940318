//! `orrery run TASK`: run a task and print its report.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use orrery::coordination::PhaseChange;
use orrery::orchestrator::Orchestrator;
use orrery::scripts::ScriptRegistry;
use orrery::store;
use orrery::task::Task;

use super::ConfigArgs;

/// Arguments of `orrery run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Task file (.toml or .json).
    pub task: PathBuf,
    /// Print one JSON object instead of the summary.
    #[arg(long)]
    pub json: bool,
    /// Override the task's timeout (ms).
    #[arg(long, value_name = "MS")]
    pub timeout: Option<u64>,
    /// Do not show phase changes while the task runs.
    #[arg(long, short)]
    pub quiet: bool,
    #[command(flatten)]
    pub config: ConfigArgs,
}

pub fn execute(args: RunArgs) -> anyhow::Result<i32> {
    let config = args.config.resolve()?;
    let mut task = Task::load(&args.task)?;
    if let Some(ms) = args.timeout {
        if ms == 0 {
            return Err(
                orrery::Error::bad_input("flag --timeout", "must be greater than 0 ms").into(),
            );
        }
        task.timeout = ms;
    }
    let registry = Arc::new(ScriptRegistry::load(&config.scripts, &config.stdlib)?);
    task.check_roles(&args.task.display().to_string(), |role| {
        registry.role(role).map(|_| ())
    })?;
    let runtime = super::runtime()?;
    let report = runtime.block_on(async {
        let store = store::open(&config).await?;
        let orchestrator = Orchestrator::new(task, config, store, registry)?;
        let printer = (!args.quiet).then(|| {
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
    });
    let report = report.context("task did not run")?;
    if args.json {
        super::print_out(&format!("{}\n", serde_json::to_string_pretty(&report)?));
    } else {
        super::print_out(&report.summary());
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
