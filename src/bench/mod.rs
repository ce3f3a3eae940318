//! `orrery bench`: figures of the host, measured through the real Lua API and
//! reported as one JSON object. Each store or feature measures in a module of
//! its own and adds its section to [`BenchReport`].

pub mod embedded;
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
}
