//! Seeing what the agents do, from outside the run: the live view in a
//! browser ([`live`]) and the same view as a report file ([`page`]),
//! Prometheus metrics ([`prometheus`]), and OpenTelemetry traces ([`otel`]).
//! Each reads the run's journal (`coordination::journal`) as a sink, except
//! the traces, which export the spans of `crate::trace`.

pub mod live;
pub mod otel;
pub mod page;
pub mod prometheus;
pub mod tail;
