//! `orrery bench`: figures of the host, measured through the real Lua API and
//! reported as one JSON object. Each store or feature measures in a module of
//! its own and adds its section to [`BenchReport`].

pub mod embedded;
pub mod journal;
mod machine;
pub mod redis;
pub mod reload;

use serde::Serialize;

pub use machine::Load;
pub(crate) use machine::{Threads, Usage, cpu_seconds};

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
