//! Benchmarks of the host, reporting figures (never asserting them).

pub mod redis;
