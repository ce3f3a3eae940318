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
    /// True for the short `--quick` run (fewer iterations, rougher figures).
    pub quick: bool,
    /// The embedded store.
    pub embedded: embedded::EmbeddedReport,
    /// Time from a script edit to the first message handled by the new code.
    pub reload: reload::ReloadLatency,
    /// The embedded store's figures with the run journal on and off.
    pub journal: journal::JournalCost,
    /// The Redis store beside `redis-benchmark`, when a server was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis: Option<redis::RedisBenchReport>,
}
