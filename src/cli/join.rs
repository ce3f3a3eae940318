//! `orrery run --join TASK_ID --role ROLE [--role ROLE ...]`: add agents to a
//! task that another process runs on a shared store. They work until the
//! owner records the task's end (or they finish on their own).

use std::sync::Arc;

use anyhow::Context;
use orrery::config::Config;
use orrery::orchestrator::Orchestrator;
use orrery::report::TaskStatus;
use orrery::scripts::ScriptRegistry;

use super::drive::{drive, print_report};

/// Joins `task_id` with one agent per entry of `roles`, shows phase changes
/// unless `quiet`, and prints the report (as JSON with `json`); returns the
/// exit code the report maps to.
pub fn execute(task_id: &str, args: &super::run::RunArgs, config: Config) -> anyhow::Result<i32> {
    orrery::task::check_id(task_id, &format!("flag --join {task_id}"))?;
    super::require_shared_store(&config, "--join")?;
    let registry = Arc::new(ScriptRegistry::load(&config.scripts, &config.stdlib)?);
    let runtime = super::runtime()?;
    runtime.block_on(async {
        let store = super::open_store(&config).await?;
        let roles = args.role.clone();
        let orchestrator = Orchestrator::join(task_id, roles, config, store, registry).await?;
        let observers = args.observe.start(orchestrator.coordination()).await?;
        let report = drive(orchestrator, args.quiet)
            .await
            .context("could not join the task")?;
        let code = print_report(&report, args.json)?;
        observers
            .finish(report.status == TaskStatus::Interrupted)
            .await;
        Ok(code)
    })
}
