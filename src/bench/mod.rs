//! Benchmarks of the host, as library functions returning their figures
//! (never asserting them).

pub mod redis;
pub mod reload;
