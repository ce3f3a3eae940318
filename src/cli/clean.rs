//! `orrery clean TASK_ID [--force]`: delete every key of a task from a shared
//! store, with its fleet records when it was submitted (`orrery submit`). A
//! task whose owner is still running, or that a worker runs, is kept unless
//! `--force`.

use orrery::coordination::{LOST_AFTER_BEATS, now_ms};
use orrery::error::exit;
use orrery::store::HostState;

use super::ConfigArgs;

/// Arguments of `orrery clean`.
#[derive(Debug, clap::Args)]
pub struct CleanArgs {
    /// Id of the task to delete.
    pub task_id: String,
    /// Delete even when the task is running.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub config: ConfigArgs,
}

pub fn execute(args: CleanArgs) -> anyhow::Result<i32> {
    let config = args.config.resolve()?;
    let id = &args.task_id;
    orrery::task::check_id(id, "TASK_ID")?;
    super::require_shared_store(&config, "orrery clean")?;
    let lost_after = config.heartbeat_interval * LOST_AFTER_BEATS;
    let (removed, url) = super::runtime()?.block_on(async {
        let store = super::open_store(&config).await?;
        let timeout = std::time::Duration::from_millis(config.connect_timeout);
        let mut fleet = orrery::fleet::Fleet::open(&config.store, timeout).await?;
        if !args.force
            && let Some(worker) = fleet.holder(id).await?
        {
            return Err(orrery::Error::Coordination(format!(
                "task '{id}' is running on worker {worker}; wait for it to end, cancel it \
                 (`orrery cancel {id}`), or pass --force"
            )));
        }
        if !args.force
            && let Some(record) = store.task_get(id).await?
            && record.is_running()
        {
            let now = now_ms();
            let owner_alive = store.host_list(id).await?.iter().any(|h| {
                h.id == record.owner
                    && h.state == HostState::Alive
                    && now.saturating_sub(h.heartbeat_ms) <= lost_after
            });
            if owner_alive {
                return Err(orrery::Error::Coordination(format!(
                    "task '{id}' is running (owned by {}); wait for it to end, or pass --force",
                    record.owner
                )));
            }
        }
        let removed = fleet.forget(id).await? + store.clean(id).await?;
        Ok::<_, orrery::Error>((removed, store.describe()))
    })?;
    if removed == 0 {
        super::print_out(&format!(
            "nothing to remove: {url} holds no key of task '{id}'\n"
        ));
    } else {
        super::print_out(&format!(
            "removed {} of task '{id}' from {url}\n",
            orrery::text::plural(removed as u64, "key", "keys")
        ));
    }
    Ok(exit::OK)
}
