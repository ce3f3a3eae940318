//! `orrery tail TASK_ID --store URL [--json] [--no-follow]`: print a task's
//! journal from a shared store: what was stored (the last `journal_max_len`
//! entries), then each entry as the processes of the run store it, until
//! the run ends (or Ctrl-C).

use std::time::{Duration, Instant};

use orrery::coordination::journal::Entry;
use orrery::error::exit;
use orrery::observe::tail::Follower;
use orrery::store::{HostRecord, HostState, RunStatus, TaskRecord};

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
        let mut first = follower.next().await?;
        if first.is_empty() && store.task_get(id).await?.is_none() && !args.no_follow {
            // A submitted task no worker has started yet: followed from its start.
            let timeout = Duration::from_millis(config.connect_timeout);
            let mut fleet = orrery::fleet::Fleet::open(&config.store, timeout).await?;
            let mut said = false;
            loop {
                let Some(submitted) = fleet.task(id).await? else {
                    break;
                };
                if submitted.state != "queued" || store.task_get(id).await?.is_some() {
                    break;
                }
                if !said {
                    super::print_err(&format!(
                        "task {id} is queued: waiting for a worker to start it (Ctrl-C to stop)"
                    ));
                    said = true;
                }
                tokio::select! {
                    _ = tokio::time::sleep(POLL) => {}
                    _ = tokio::signal::ctrl_c() => return Ok(exit::INTERRUPTED),
                }
            }
            first = follower.next().await?;
        }
        if first.is_empty() {
            let refused = |why: String| orrery::Error::bad_input(format!("TASK_ID '{id}'"), why);
            match store.task_get(id).await? {
                None => {
                    return Err(refused(format!(
                        "the store {} holds no run of this task (start it with `orrery run TASK_FILE --store URL`)",
                        store.describe()
                    ))
                    .into());
                }
                Some(record) if !record.journal => {
                    return Err(refused(format!(
                        "its run keeps no journal in the store {} (its owner {} runs with \
                         journal_max_len = 0; set it above 0 to follow a run with `orrery tail`)",
                        store.describe(),
                        record.owner
                    ))
                    .into());
                }
                Some(_) => {}
            }
        }
        let start = first.first().map(|(e, _)| e.at_us);
        let mut printer = Printer { json: args.json, start };
        if !printer.print(&first) {
            return Ok(exit::OK);
        }
        let mut quiet_since = Instant::now();
        let mut owner_ended: Option<Instant> = None;
        let mut beats = Beats::default();
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
                // The reader went away (`| head -1`): nobody is following.
                if !printer.print(&entries) {
                    return Ok(exit::OK);
                }
                quiet_since = Instant::now();
            } else if quiet_since.elapsed() > SILENT_END {
                // No owner's end entry: stop once the run's record says it
                // is over, or once none of its processes is alive.
                let Some(record) = store.task_get(id).await?.filter(|r| {
                    matches!(r.status, RunStatus::Running | RunStatus::Stopping)
                }) else {
                    break;
                };
                // The run's own interval (this command's, for an older record).
                let beat = match record.heartbeat_interval {
                    0 => config.heartbeat_interval,
                    ms => ms,
                };
                let hosts = store.host_list(id).await?;
                if let Some(lost) = beats.lost(id, &record, &hosts, beat) {
                    return Err(lost.into());
                }
                quiet_since = Instant::now();
            }
        }
        Ok(exit::OK)
    })
}

/// Whether a run's processes still heartbeat, judged by this command's own
/// clock: the heartbeats are another machine's wall-clock times, which may
/// be seconds off this one's, so a run is lost only when none of its live
/// processes' heartbeats moved for the lost time as this command counts it.
#[derive(Default)]
struct Beats {
    /// The live processes' last heartbeats, and since when they stand still.
    seen: Option<(Vec<(String, u64)>, Instant)>,
}

impl Beats {
    /// The error of a run stored as running (or stopping) whose processes
    /// all stopped heartbeating (killed, say): nothing more will come.
    /// `None` while one of them beats, or when none ever recorded itself.
    fn lost(
        &mut self,
        id: &str,
        record: &TaskRecord,
        hosts: &[HostRecord],
        interval: u64,
    ) -> Option<orrery::Error> {
        if hosts.is_empty() {
            return None;
        }
        let mut live: Vec<(String, u64)> = hosts
            .iter()
            .filter(|h| h.state == HostState::Alive)
            .map(|h| (h.id.clone(), h.heartbeat_ms))
            .collect();
        live.sort();
        let lost_after = Duration::from_millis(interval * orrery::coordination::LOST_AFTER_BEATS);
        let since = match &self.seen {
            Some((before, since)) if *before == live => *since,
            _ => {
                self.seen = Some((live, Instant::now()));
                return None;
            }
        };
        if since.elapsed() < lost_after {
            return None;
        }
        let now = orrery::coordination::now_ms();
        let last = hosts
            .iter()
            .map(|h| {
                let ago = now.saturating_sub(h.heartbeat_ms) as f64 / 1000.0;
                let state = if h.state == HostState::Alive {
                    String::new()
                } else {
                    format!(", {}", h.state)
                };
                format!(
                    "{} {}{state}, its last heartbeat {ago:.1} s old by this machine's clock",
                    h.role, h.id
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        Some(orrery::Error::Coordination(format!(
            "task '{id}' is stored as {}, but none of its processes has sent a heartbeat in the \
             {:.1} s this command watched ({last}): its run stopped without recording an end \
             (killed?). `orrery resume {id}` takes it up",
            record.status,
            since.elapsed().as_secs_f64()
        )))
    }
}

struct Printer {
    json: bool,
    start: Option<u64>,
}

impl Printer {
    /// Prints `entries`; false once the reader of stdout went away.
    fn print(&mut self, entries: &[(Entry, String)]) -> bool {
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
        out.is_empty() || super::write_out(&out)
    }
}
