//! Benchmarks of the host, as library functions returning their figures.

pub mod reload;
