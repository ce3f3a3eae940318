//! `orrery submit TASK_FILE --store URL [--wait]`: queue a task for the
//! fleet's workers with the code of its scripts and stdlib directories, and
//! print its id; with `--wait`, follow it and exit with its exit code.

use std::path::PathBuf;
use std::time::Duration;

use orrery::error::exit;
use orrery::fleet::{Bundle, Fleet};
use orrery::scripts::ScriptRegistry;
use orrery::task::Task;

use super::ConfigArgs;

/// Arguments of `orrery submit`.
#[derive(Debug, clap::Args)]
pub struct SubmitArgs {
    /// Task file (.toml or .json).
    pub task: PathBuf,
    /// Wait for the task's end and exit with its exit code.
    #[arg(long)]
    pub wait: bool,
    /// Print one JSON object (the id, and with --wait the task's end).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub config: ConfigArgs,
}

pub fn execute(args: SubmitArgs) -> anyhow::Result<i32> {
    let mut config = args.config.resolve()?;
    super::require_shared_store(&config, "orrery submit")?;
    let mut task = Task::load(&args.task)?;
    config.scripts = super::run::scripts_dir(&config, &args.task)?;
    let registry = ScriptRegistry::load(&config.scripts, &config.stdlib)?;
    task.check_roles(&args.task.display().to_string(), |role| {
        registry.role(role).map(|_| ())
    })?;
    let (bundle, left_out) = Bundle::read(&config.scripts, &config.stdlib)?;
    for file in left_out {
        super::print_err(&format!(
            "warning: {}: not sent to the workers (not a .lua file: workers run only Lua code)",
            file.display()
        ));
    }
    // Each submission is its own run: the file's id with a unique suffix.
    task.id = format!("{}-{:010x}", task.id, rand::random::<u64>() >> 24);
    let runtime = super::runtime()?;
    runtime.block_on(async {
        let timeout = Duration::from_millis(config.connect_timeout);
        let mut fleet = Fleet::connect(&config.store, timeout).await?;
        fleet.submit(&task, &bundle).await?;
        if !args.wait {
            if args.json {
                super::print_out(&format!("{}\n", serde_json::json!({ "id": task.id })));
            } else {
                super::print_out(&format!("{}\n", task.id));
            }
            return Ok(exit::OK);
        }
        if !args.json {
            super::print_out(&format!("{}\n", task.id));
        }
        loop {
            let record = fleet.task(&task.id).await?;
            if let Some(t) = record.filter(|t| t.state == "finished" || t.state == "cancelled") {
                if args.json {
                    super::print_out(&format!("{}\n", serde_json::to_string_pretty(&t)?));
                } else {
                    super::print_err(&format!(
                        "{} {} ({}) on {}",
                        t.id,
                        t.state,
                        t.status.as_deref().unwrap_or("-"),
                        t.worker.as_deref().unwrap_or("-")
                    ));
                    if let Some(error) = &t.error {
                        super::print_err(error);
                    }
                }
                return Ok(t.exit_code.unwrap_or(exit::INTERRUPTED));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}
