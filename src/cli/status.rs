//! `orrery status [ID] --store URL [--workers]`: the fleet's tasks (queued,
//! running, finished, with phases, workers and ages) or its workers' health;
//! and `orrery cancel ID`.

use std::time::Duration;

use orrery::coordination::now_ms;
use orrery::error::exit;
use orrery::fleet::{Fleet, FleetTask};

use super::ConfigArgs;

/// Arguments of `orrery status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Show this task only, with its agents' phases.
    pub task_id: Option<String>,
    /// Show the workers' health and load instead of tasks.
    #[arg(long, conflicts_with = "task_id")]
    pub workers: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// Arguments of `orrery cancel`.
#[derive(Debug, clap::Args)]
pub struct CancelArgs {
    /// Id of the task to cancel.
    pub task_id: String,
    #[command(flatten)]
    pub config: ConfigArgs,
}

fn unknown(id: &str, fleet: &Fleet) -> orrery::Error {
    orrery::Error::bad_input(
        format!("TASK_ID '{id}'"),
        format!("no submitted task with this id in {}", fleet.describe()),
    )
}

fn age(ms: u64, now: u64) -> String {
    format!("{:.1}s", now.saturating_sub(ms) as f64 / 1000.0)
}

pub fn execute(args: StatusArgs) -> anyhow::Result<i32> {
    let config = args.config.resolve()?;
    super::require_shared_store(&config, "orrery status")?;
    if let Some(id) = &args.task_id {
        orrery::task::check_id(id, "TASK_ID")?;
    }
    super::runtime()?.block_on(async {
        let timeout = Duration::from_millis(config.connect_timeout);
        let mut fleet = Fleet::connect(&config.store, timeout).await?;
        let now = now_ms();
        if args.workers {
            let workers = fleet.workers().await?;
            if args.json {
                super::print_out(&format!("{}\n", serde_json::to_string_pretty(&workers)?));
                return Ok(exit::OK);
            }
            let mut out = format!(
                "{:<28} {:>7} {:>6} {:>7} {:>8} {:>8} {:>8}  roles\n",
                "WORKER", "RUNNING", "AGENTS", "RSS", "FINISHED", "BEAT", "DRAINING"
            );
            for w in workers {
                out += &format!(
                    "{:<28} {:>3}/{:<3} {:>6} {:>5}MB {:>8} {:>8} {:>8}  {}\n",
                    w.id,
                    w.running,
                    w.max_tasks,
                    w.agents,
                    w.rss_mb,
                    w.finished,
                    age(w.beat_ms, now),
                    if w.draining { "yes" } else { "no" },
                    if w.roles.is_empty() { "any" } else { &w.roles }
                );
            }
            super::print_out(&out);
            return Ok(exit::OK);
        }
        let tasks: Vec<FleetTask> = match &args.task_id {
            Some(id) => {
                let task = fleet.task_with_workers(id).await?;
                vec![task.ok_or_else(|| unknown(id, &fleet))?]
            }
            None => fleet.tasks().await?,
        };
        if args.json {
            let value = match &args.task_id {
                Some(_) => serde_json::to_value(&tasks[0])?,
                None => serde_json::to_value(&tasks)?,
            };
            super::print_out(&format!("{}\n", serde_json::to_string_pretty(&value)?));
            return Ok(exit::OK);
        }
        let mut out = format!(
            "{:<34} {:<10} {:<12} {:<28} {:>8}\n",
            "TASK", "STATE", "STATUS", "WORKER", "AGE"
        );
        for t in &tasks {
            out += &format!(
                "{:<34} {:<10} {:<12} {:<28} {:>8}\n",
                t.id,
                t.state,
                t.status.as_deref().unwrap_or("-"),
                t.worker.as_deref().unwrap_or("-"),
                age(t.submitted_ms, now)
            );
            if let Some(error) = &t.error {
                out += &format!("  {error}\n");
            }
        }
        if let Some(id) = &args.task_id {
            // The task's agents and their phases, from its own keys.
            let store = super::open_store(&config).await?;
            let snapshot = orrery::inspect::TaskSnapshot::read(store.as_ref(), id).await?;
            if !snapshot.is_empty() {
                out += "\n";
                out += &snapshot.render(now);
            }
        }
        super::print_out(&out);
        Ok(exit::OK)
    })
}

pub fn cancel(args: CancelArgs) -> anyhow::Result<i32> {
    let config = args.config.resolve()?;
    super::require_shared_store(&config, "orrery cancel")?;
    orrery::task::check_id(&args.task_id, "TASK_ID")?;
    super::runtime()?.block_on(async {
        let timeout = Duration::from_millis(config.connect_timeout);
        let mut fleet = Fleet::connect(&config.store, timeout).await?;
        match fleet.cancel(&args.task_id).await? {
            None => Err(unknown(&args.task_id, &fleet).into()),
            Some(before) => {
                let what = match before.as_str() {
                    "queued" => "cancelled: it will not start",
                    "running" => "cancel asked: its worker stops it",
                    _ => "already ended: nothing to cancel",
                };
                super::print_out(&format!("{} {what}\n", args.task_id));
                Ok(exit::OK)
            }
        }
    })
}
