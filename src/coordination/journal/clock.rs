//! The journal's clock: what orders the records of all threads, read on
//! every record, so the cheapest clock that every core agrees on.
//!
//! On x86-64, where the kernel keeps time with the CPU's time-stamp
//! counter (its clocksource is `tsc`: it found the counter constant and in
//! step on every core), a record reads the counter itself, about 17 ns
//! against 29 ns for `clock_gettime` through the vDSO on the development
//! machine (that is some 12 ns of the 50-70 a record costs its thread).
//! Elsewhere it reads the monotonic clock, in nanoseconds. Either way the
//! reading is a number of [ticks](ticks) that never steps back, on any core;
//! the writer turns ticks into wall-clock time with a [`Scale`] it takes at
//! each round from a pair of readings of both clocks.
//!
//! The counter is read after an `lfence`, which waits for the
//! instructions before it to complete: a record of a message handled,
//! timed after the load that saw the message, is never timed before the
//! record of its sending, timed before the store that queued it.

use std::sync::OnceLock;

/// A reading of the journal's clock (see the module's documentation).
#[inline]
pub(super) fn ticks() -> u64 {
    #[cfg(target_arch = "x86_64")]
    if counter_in_step() {
        // SAFETY: `lfence` and `rdtsc` exist on every x86-64 CPU (SSE2 is
        // part of the architecture) and touch no memory.
        return unsafe {
            std::arch::x86_64::_mm_lfence();
            std::arch::x86_64::_rdtsc()
        };
    }
    monotonic_ns()
}

/// True when the kernel keeps time with the time-stamp counter. Decided
/// once per process: the journal's ticks never change unit.
#[cfg(target_arch = "x86_64")]
#[inline]
fn counter_in_step() -> bool {
    static IN_STEP: OnceLock<bool> = OnceLock::new();
    *IN_STEP.get_or_init(|| {
        std::fs::read_to_string("/sys/devices/system/clocksource/clocksource0/current_clocksource")
            .is_ok_and(|s| s.trim() == "tsc")
    })
}

/// Nanoseconds on the monotonic clock.
#[inline]
pub(super) fn monotonic_ns() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the struct it is given, and
    // CLOCK_MONOTONIC exists on every system tokio runs on.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    (t.tv_sec as u64) * 1_000_000_000 + t.tv_nsec as u64
}

/// Microseconds since the Unix epoch.
pub(super) fn now_us() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the struct it is given.
    if unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut t) } != 0 {
        return 0;
    }
    (t.tv_sec as u64) * 1_000_000 + (t.tv_nsec as u64) / 1_000
}

/// The three clocks read at a journal's start: the lines show the
/// wall-clock time a record's ticks stand for, counted from here on the
/// monotonic clock (a change of the system's clock during a run does not
/// show in its entries).
#[derive(Debug, Clone, Copy)]
pub(super) struct Epoch {
    ticks: u64,
    monotonic_ns: u64,
    wall_us: u64,
}

impl Epoch {
    pub(super) fn now() -> Epoch {
        Epoch {
            ticks: ticks(),
            monotonic_ns: monotonic_ns(),
            wall_us: now_us(),
        }
    }

    /// How to turn ticks up to now into wall-clock time: the rate of ticks
    /// measured from the epoch to now (its error, the few tens of
    /// nanoseconds between two readings of the two clocks, over the whole
    /// time since the start).
    pub(super) fn scale(&self) -> Scale {
        let (ticks, ns) = (self::ticks(), monotonic_ns());
        let ns_per_tick = if ticks > self.ticks && ns > self.monotonic_ns {
            (ns - self.monotonic_ns) as f64 / (ticks - self.ticks) as f64
        } else {
            1.0
        };
        Scale {
            epoch: *self,
            ns_per_tick,
        }
    }
}

/// Turns ticks into wall-clock time (see [`Epoch::scale`]).
#[derive(Debug, Clone, Copy)]
pub(super) struct Scale {
    epoch: Epoch,
    ns_per_tick: f64,
}

impl Scale {
    /// Microseconds since the Unix epoch at `ticks`.
    #[inline]
    pub(super) fn wall_us(&self, ticks: u64) -> u64 {
        let since = ticks.saturating_sub(self.epoch.ticks) as f64 * self.ns_per_tick;
        self.epoch.wall_us + (since / 1_000.0) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::{Epoch, ticks};

    /// Ticks never step back on one thread, and a scale taken later turns
    /// ticks read between two wall-clock readings into a time between them.
    #[test]
    fn ticks_turn_into_the_wall_clock_time_they_were_read_at() {
        let epoch = Epoch::now();
        let mut last = ticks();
        for _ in 0..10_000 {
            let t = ticks();
            assert!(t >= last);
            last = t;
        }
        std::thread::sleep(std::time::Duration::from_millis(30));
        let before = super::now_us();
        let t = ticks();
        let after = super::now_us();
        std::thread::sleep(std::time::Duration::from_millis(30));
        let at = epoch.scale().wall_us(t);
        // A millisecond either way: the wall clock may be slewed meanwhile.
        assert!(
            at + 1_000 >= before && at <= after + 1_000,
            "{before} <= {at} <= {after}"
        );
    }
}
