//! `orrery inspect TASK_ID [--json]`: show what a task holds in a shared
//! store: its run, processes, agents with phase history, blackboard, pending
//! and dead-lettered messages, and metrics.

use orrery::coordination::now_ms;
use orrery::error::exit;
use orrery::inspect::TaskSnapshot;

use super::ConfigArgs;

/// Arguments of `orrery inspect`.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// Id of the task to show.
    pub task_id: String,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub config: ConfigArgs,
}

pub fn execute(args: InspectArgs) -> anyhow::Result<i32> {
    let config = args.config.resolve()?;
    orrery::task::check_id(&args.task_id, "TASK_ID")?;
    super::require_shared_store(&config, "orrery inspect")?;
    let (snapshot, submitted) = super::runtime()?.block_on(async {
        let store = super::open_store(&config).await?;
        let snapshot = TaskSnapshot::read(store.as_ref(), &args.task_id).await?;
        // Nothing of a run yet: perhaps a submission no worker has started.
        let submitted = if snapshot.is_empty() {
            let timeout = std::time::Duration::from_millis(config.connect_timeout);
            let mut fleet = orrery::fleet::Fleet::open(&config.store, timeout).await?;
            fleet.task(&args.task_id).await?
        } else {
            None
        };
        Ok::<_, orrery::Error>((snapshot, submitted))
    })?;
    if let Some(task) = submitted {
        if args.json {
            let shown = serde_json::json!({ "id": task.id, "submission": task });
            super::print_out(&format!("{}\n", serde_json::to_string_pretty(&shown)?));
        } else {
            super::print_out(&format!(
                "task {}: submitted, {} (no run of it in the store yet; `orrery status {}` follows the submission)\n",
                task.id, task.state, task.id
            ));
        }
        return Ok(exit::OK);
    }
    if snapshot.is_empty() {
        return Err(orrery::Error::bad_input(
            format!("TASK_ID '{}'", args.task_id),
            format!("the store {} holds nothing for this task", snapshot.store),
        )
        .into());
    }
    if args.json {
        super::print_out(&format!("{}\n", serde_json::to_string_pretty(&snapshot)?));
    } else {
        super::print_out(&snapshot.render(now_ms()));
    }
    Ok(exit::OK)
}
