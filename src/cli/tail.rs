//! `orrery tail TASK_ID --store URL [--json] [--no-follow]`: print a task's
//! journal from a shared store: what was stored (the last `journal_max_len`
//! entries), then each entry as the processes of the run store it, until
//! the run ends (or Ctrl-C).

use std::time::{Duration, Instant};

use orrery::coordination::journal::Entry;
use orrery::error::exit;
use orrery::observe::tail::Follower;

use super::ConfigArgs;

/// Pause between two reads while nothing comes.
const POLL: Duration = Duration::from_millis(100);

/// How long a run whose record says it ended may stay silent before `tail`
/// stops without its owner's `run_ended` (an owner that died); also how long
/// it waits after the owner's end for joined processes' last entries.
const SILENT_END: Duration = Duration::from_secs(3);

/// Arguments of `orrery tail`.
#[derive(Debug, clap::Args)]
pub struct TailArgs {
    /// Id of the task to follow.
    pub task_id: String,
    /// Print each entry as its JSON line instead of text.
    #[arg(long)]
    pub json: bool,
    /// Print what is stored and stop, instead of following the run.
    #[arg(long)]
    pub no_follow: bool,
    #[command(flatten)]
    pub config: ConfigArgs,
}

pub fn execute(args: TailArgs) -> anyhow::Result<i32> {
    let config = args.config.resolve()?;
    orrery::task::check_id(&args.task_id, "TASK_ID")?;
    super::require_shared_store(&config, "orrery tail")?;
    super::runtime()?.block_on(async {
        let store = super::open_store(&config).await?;
        let id = &args.task_id;
        let mut follower = Follower::new(store.clone(), id);
        let first = follower.next().await?;
        if first.is_empty() && store.task_get(id).await?.is_none() {
            return Err(orrery::Error::bad_input(
                format!("TASK_ID '{id}'"),
                format!(
                    "the store {} holds no run of this task (start it with `orrery run TASK_FILE --store URL`)",
                    store.describe()
                ),
            )
            .into());
        }
        let start = first.first().map(|(e, _)| e.at_us);
        let mut printer = Printer { json: args.json, start };
        printer.print(&first);
        let mut quiet_since = Instant::now();
        let mut owner_ended: Option<Instant> = None;
        while !args.no_follow && !follower.all_ended() {
            if follower.run_ended() {
                // Joined processes store their end just after the owner's.
                let since = *owner_ended.get_or_insert_with(Instant::now);
                if since.elapsed() > SILENT_END {
                    break;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = tokio::signal::ctrl_c() => return Ok(exit::INTERRUPTED),
            }
            let entries = follower.next().await?;
            if !entries.is_empty() {
                printer.print(&entries);
                quiet_since = Instant::now();
            } else if quiet_since.elapsed() > SILENT_END {
                // No owner's end entry: stop once the run's record says it is over.
                let running = store.task_get(id).await?.is_some_and(|r| r.is_running());
                if !running {
                    break;
                }
                quiet_since = Instant::now();
            }
        }
        Ok(exit::OK)
    })
}

struct Printer {
    json: bool,
    start: Option<u64>,
}

impl Printer {
    fn print(&mut self, entries: &[(Entry, String)]) {
        let mut out = String::new();
        for (entry, line) in entries {
            if self.json {
                out.push_str(line);
            } else {
                let start = *self.start.get_or_insert(entry.at_us);
                let at = entry.at_us.saturating_sub(start) as f64 / 1e6;
                out.push_str(&format!("[{at:>8.3}s] {}", entry.describe()));
            }
            out.push('\n');
        }
        super::print_out(&out);
    }
}
