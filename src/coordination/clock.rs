//! The host's wall clock: the system's, or, under `orrery test`, a test
//! clock that starts at a fixed date and follows tokio's clock (paused in
//! tests, so it moves only when everything waits, or when a test advances
//! it). `now()`, phase times, heartbeats and the report's times then read the
//! same run after run.
//!
//! The test clock is set per thread: a test runs on a current-thread tokio
//! runtime, so every agent of the test reads the clock on that thread.

use std::cell::Cell;
use std::time::{SystemTime, UNIX_EPOCH};

thread_local! {
    /// The tokio instant the test clock started at, and the date it shows then.
    static TEST_CLOCK: Cell<Option<(tokio::time::Instant, f64)>> = const { Cell::new(None) };
}

/// The date the test clock starts at: 2024-01-01T00:00:00Z, in ms.
pub const TEST_EPOCH_MS: u64 = 1_704_067_200_000;

/// Milliseconds since the Unix epoch, with sub-millisecond precision.
pub fn now_ms_f64() -> f64 {
    if let Some((start, epoch)) = TEST_CLOCK.with(Cell::get) {
        return epoch
            + tokio::time::Instant::now()
                .duration_since(start)
                .as_secs_f64()
                * 1000.0;
    }
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    now_ms_f64() as u64
}

/// From now on this thread's clock shows [`TEST_EPOCH_MS`] plus the time
/// tokio's clock has moved since this call. Call it inside the test's runtime.
pub fn start_test_clock() {
    let start = tokio::time::Instant::now();
    TEST_CLOCK.with(|c| c.set(Some((start, TEST_EPOCH_MS as f64))));
}

/// Back to the system clock on this thread.
pub fn stop_test_clock() {
    TEST_CLOCK.with(|c| c.set(None));
}

/// True while this thread runs on the test clock: what would be random
/// (message id prefixes) is fixed then, so runs repeat exactly.
pub fn is_test_clock() -> bool {
    TEST_CLOCK.with(Cell::get).is_some()
}
