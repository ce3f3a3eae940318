//! `orrery bench`: figures of the host, measured through the real Lua API and
//! reported as one JSON object. Each store or feature measures in a module of
//! its own and adds its section to [`BenchReport`].

pub mod embedded;
pub mod journal;
pub mod redis;
pub mod reload;

use serde::Serialize;

/// Everything one `orrery bench` run measured.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// The orrery version that was measured.
    pub version: &'static str,
    /// The machine's cores and load around the run.
    pub load: Load,
    /// True for the short `--quick` run (fewer iterations, rougher figures).
    pub quick: bool,
    /// The embedded store (not measured with `--redis-only`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embedded: Option<embedded::EmbeddedReport>,
    /// Time from a script edit to the first message handled by the new code
    /// (not measured with `--redis-only`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reload: Option<reload::ReloadLatency>,
    /// The embedded store's figures with the run journal on and off (not
    /// measured with `--redis-only`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub journal: Option<journal::JournalCost>,
    /// The Redis store beside `redis-benchmark`, when a server was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis: Option<redis::RedisBenchReport>,
}

/// Median and range of one quantity over the rounds of a figure.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Spread {
    /// The median round (the mean of the two middle ones for an even count).
    pub median: f64,
    /// The lowest round.
    pub min: f64,
    /// The highest round.
    pub max: f64,
}

impl Spread {
    /// The median, lowest and highest of `values` (all 0 when empty).
    pub fn of(mut values: Vec<f64>) -> Spread {
        if values.is_empty() {
            return Spread {
                median: 0.0,
                min: 0.0,
                max: 0.0,
            };
        }
        values.sort_by(f64::total_cmp);
        let n = values.len();
        let median = if n % 2 == 1 {
            values[n / 2]
        } else {
            (values[n / 2 - 1] + values[n / 2]) / 2.0
        };
        Spread {
            median,
            min: values[0],
            max: values[n - 1],
        }
    }
}

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
}

impl Load {
    /// The load now, as `before` (and `after` until [`Load::ended`]).
    pub fn started() -> Load {
        let now = load_average();
        Load {
            before: now,
            after: now,
            cores: std::thread::available_parallelism().map_or(1, usize::from),
        }
    }

    /// Notes the load at the end of the run.
    pub fn ended(&mut self) {
        self.after = load_average();
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

/// The 1-minute load average (Linux `/proc/loadavg`).
fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
