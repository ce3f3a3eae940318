//! What the benchmark knows of the machine it runs on: the CPU time and the
//! thread sleeps of the process, the load average and the cores, and where a
//! measurement's agents run (the command's runtime, or one thread of their
//! own).

use serde::Serialize;

use crate::error::{Error, Result};

/// CPU seconds this process has used so far (user + system).
pub(crate) fn cpu_seconds() -> f64 {
    Usage::now().cpu_seconds
}

/// What the process has used so far: CPU time and how often its threads
/// went to sleep (each such sleep ends with a wake-up by another thread,
/// whose cost differs a lot between machines: see README, Benchmarks).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Usage {
    /// User + system CPU seconds of every thread.
    pub cpu_seconds: f64,
    /// Voluntary context switches of every thread: a thread parked (a
    /// futex wait, an epoll wait) and was woken later.
    pub sleeps: u64,
}

impl Usage {
    /// The usage so far (zeros where the OS does not tell).
    pub(crate) fn now() -> Usage {
        // SAFETY: getrusage only writes the struct it is given.
        let usage = unsafe {
            let mut usage = std::mem::zeroed::<libc::rusage>();
            if libc::getrusage(libc::RUSAGE_SELF, &mut usage) != 0 {
                return Usage::default();
            }
            usage
        };
        let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        Usage {
            cpu_seconds: secs(usage.ru_utime) + secs(usage.ru_stime),
            sleeps: usage.ru_nvcsw.max(0) as u64,
        }
    }

    /// What was used since `earlier`.
    pub(crate) fn since(self, earlier: Usage) -> Usage {
        Usage {
            cpu_seconds: self.cpu_seconds - earlier.cpu_seconds,
            sleeps: self.sleeps.saturating_sub(earlier.sleeps),
        }
    }
}

/// The machine's load: the 1-minute load average and the cores, as the
/// figures of a run can only be compared between runs on quiet machines.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Load {
    /// 1-minute load average when the run started (`None` where the OS does not tell).
    pub before: Option<f64>,
    /// The same when it ended.
    pub after: Option<f64>,
    /// Cores this process may run on.
    pub cores: usize,
    /// The machine's speed when the run started: nanoseconds per turn of a
    /// fixed Lua loop (see [`reference_ns`]); lower is faster.
    pub reference_ns_before: Option<f64>,
    /// The same when it ended.
    pub reference_ns_after: Option<f64>,
}

impl Load {
    /// The load now, as `before` (and `after` until [`Load::ended`]).
    pub fn started() -> Load {
        let now = load_average();
        let reference = reference_ns();
        Load {
            before: now,
            after: now,
            cores: std::thread::available_parallelism().map_or(1, usize::from),
            reference_ns_before: reference,
            reference_ns_after: reference,
        }
    }

    /// Notes the load and the machine's speed at the end of the run.
    pub fn ended(&mut self) {
        self.after = load_average();
        self.reference_ns_after = reference_ns();
    }

    /// True when other work kept the cores busy for part of the run (a
    /// load above half the cores at its start or end): wall-clock figures
    /// are then lower than on a quiet machine, and move from run to run.
    pub fn busy(&self) -> bool {
        let half = self.cores as f64 / 2.0;
        [self.before, self.after]
            .into_iter()
            .flatten()
            .any(|l| l > half)
    }

    /// One line for the table.
    pub fn line(&self) -> String {
        let show = |l: Option<f64>| l.map_or("?".to_string(), |l| format!("{l:.2}"));
        let mut s = format!(
            "machine: {} cores, load average {} at the start, {} at the end",
            self.cores,
            show(self.before),
            show(self.after)
        );
        if let (Some(before), Some(after)) = (self.reference_ns_before, self.reference_ns_after) {
            s.push_str(&format!(
                "; reference Lua loop {before:.1} ns a turn at the start, {after:.1} at the end"
            ));
        }
        if self.busy() {
            s.push_str(
                " (busy: wall-clock figures are below a quiet machine's; \
                 compare the CPU per operation)",
            );
        }
        s.push('\n');
        s
    }
}

/// Turns of the reference loop in one measurement.
const REFERENCE_TURNS: i64 = 400_000;

/// What the reference loop does: what a message costs Lua (a table of four
/// fields made and stored, a function called, an integer turned into a
/// string now and then), with nothing of orrery's around it.
const REFERENCE_LOOP: &str = r#"
local turns = ...
local ring, kept = {}, 0
local function make(i, s)
  return { from = "sender-1", to = "receiver-1", type = "m", payload = s or i }
end
for i = 1, turns do
  ring[(i & 1023) + 1] = make(i, (i & 63) == 0 and tostring(i) or nil)
  kept = kept + 1
end
return kept
"#;

/// The machine's speed: nanoseconds per turn of a fixed Lua loop in a bare
/// VM (the median of five runs of [`REFERENCE_TURNS`]), `None` if it could
/// not run.
///
/// The same binary's figures moved by about two times between days on the
/// same kind of shared VM at rest (messages 573k and 1.07M/s, spawn p50 288
/// and 161 µs), with the same instructions, and a fixed C loop moves by
/// ±16% from run to run there. This figure, taken at the start and end of
/// every run, says how fast the machine was: compare runs, commits and
/// machines by figures over it, or only between runs whose reference
/// agrees.
pub fn reference_ns() -> Option<f64> {
    let lua = mlua::Lua::new();
    let chunk = lua.load(REFERENCE_LOOP).into_function().ok()?;
    chunk.call::<i64>(REFERENCE_TURNS / 10).ok()?;
    let mut runs = Vec::with_capacity(5);
    for _ in 0..5 {
        let started = std::time::Instant::now();
        let kept = chunk.call::<i64>(REFERENCE_TURNS).ok()?;
        if kept != REFERENCE_TURNS {
            return None;
        }
        runs.push(started.elapsed().as_nanos() as f64 / REFERENCE_TURNS as f64);
    }
    runs.sort_by(f64::total_cmp);
    Some(runs[2])
}

/// The 1-minute load average (Linux `/proc/loadavg`).
fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Where a measurement's agents run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Threads {
    /// On the command's runtime, one worker thread per core, as in `orrery
    /// run`: two agents may run in parallel or take turns, and a thread
    /// with nothing to do sleeps until another wakes it. The figure moves
    /// with the machine's load and with what a wake-up costs there.
    Shared,
    /// On a runtime of one thread: the agents take turns and nothing waits
    /// for a wake-up, so only the CPU's speed counts.
    One,
}

impl Threads {
    /// Runs `measure` here, or on a one-thread runtime of its own.
    pub(crate) async fn run<T, Fut>(self, measure: Fut) -> Result<T>
    where
        T: Send + 'static,
        Fut: std::future::Future<Output = Result<T>> + Send + 'static,
    {
        if self == Threads::Shared {
            return measure.await;
        }
        let on_one = move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| one_thread_failed(&e.to_string()))?
                .block_on(measure)
        };
        tokio::task::spawn_blocking(on_one)
            .await
            .map_err(|e| one_thread_failed(&e.to_string()))?
    }
}

fn one_thread_failed(why: &str) -> Error {
    Error::Coordination(format!("benchmark on one thread failed: {why}"))
}
