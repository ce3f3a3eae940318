//! `orrery resume TASK_ID --store URL`: continue a task whose processes are
//! all gone. Its agents that had not ended come back here with their ids,
//! phases and checkpoints (`on_resume(self, checkpoint)`), the messages they
//! held are delivered again, and the blackboard is as it was.

use std::sync::Arc;

use anyhow::Context;
use orrery::orchestrator::Orchestrator;
use orrery::scripts::ScriptRegistry;

use super::ConfigArgs;
use super::drive::{drive, print_report};

/// Arguments of `orrery resume`.
#[derive(Debug, clap::Args)]
pub struct ResumeArgs {
    /// Id of the task to continue.
    pub task_id: String,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// Resumes the task and prints its report; returns the exit code it maps to.
pub fn execute(args: ResumeArgs, quiet: bool) -> anyhow::Result<i32> {
    let config = args.config.resolve()?;
    orrery::task::check_id(&args.task_id, "TASK_ID")?;
    super::require_shared_store(&config, "orrery resume")?;
    let registry = Arc::new(ScriptRegistry::load(&config.scripts, &config.stdlib)?);
    let runtime = super::runtime()?;
    runtime.block_on(async {
        let store = super::open_store(&config).await?;
        let orchestrator = Orchestrator::resume(&args.task_id, config, store, registry).await?;
        let report = drive(orchestrator, quiet)
            .await
            .context("could not resume the task")?;
        let code = print_report(&report, args.json)?;
        Ok(code)
    })
}
