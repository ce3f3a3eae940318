//! Tests of what a user sees of a run (issue 14): the journal against the
//! report, `orrery tail` across two processes on a real Redis, the live view
//! in a real headless Chromium, the Prometheus endpoint, the OTLP trace
//! export, `orrery report`, and machine-readable logs.

use orrery_test_support as common;

mod journal;
mod logs;
mod metrics;
mod otel;
mod tail;
mod ui;
mod util;
