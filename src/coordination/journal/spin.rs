//! The lock of a journal shard's buffer: a spin lock whose release is a
//! plain store.
//!
//! The buffer is held for a copy of some 60 bytes, by its thread and,
//! every [`FLUSH_EVERY`](super::FLUSH_EVERY), by the writer for a swap.
//! A `parking_lot::Mutex` releases with an atomic read-modify-write (it must
//! see whether a thread is parked), and on x86 such an instruction waits
//! for every store before it, here the record just copied, to reach the
//! cache: a profile of a blackboard loop with the journal on put most of
//! the journal's time on the agent's thread on that one instruction. A
//! release store does not wait. Nothing parks: a thread that finds the lock
//! held spins a little, then yields its core, so one preempted while
//! holding it costs the others a time slice, never a deadlock.

use std::cell::UnsafeCell;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, Ordering};

/// Spins this many times before yielding the core.
const SPINS: u32 = 64;

/// A value behind a spin lock (see the module's documentation).
#[derive(Default)]
pub(super) struct SpinLock<T> {
    held: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: the value is reached only through a guard, and one guard at a
// time exists (`lock` takes `held` with an acquire exchange, the guard's
// drop gives it back with a release store), as for `std::sync::Mutex`.
unsafe impl<T: Send> Sync for SpinLock<T> {}
unsafe impl<T: Send> Send for SpinLock<T> {}

impl<T> SpinLock<T> {
    /// Takes the lock, spinning and then yielding while another holds it.
    #[inline]
    pub(super) fn lock(&self) -> SpinGuard<'_, T> {
        if self
            .held
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            self.lock_contended();
        }
        SpinGuard { lock: self }
    }

    #[cold]
    fn lock_contended(&self) {
        let mut spins = 0;
        loop {
            // Read until free before trying again, so waiting does not
            // take the cache line from the holder on every turn.
            while self.held.load(Ordering::Relaxed) {
                if spins < SPINS {
                    spins += 1;
                    std::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
            }
            if self
                .held
                .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return;
            }
        }
    }
}

/// Access to the value of a [`SpinLock`] while it is held.
pub(super) struct SpinGuard<'a, T> {
    lock: &'a SpinLock<T>,
}

impl<T> Deref for SpinGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard holds the lock (see `SpinLock`).
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> DerefMut for SpinGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard holds the lock, and `&mut self` makes this the
        // only reference through it.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for SpinGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        self.lock.held.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::SpinLock;

    /// Threads that add under the lock at once lose no addition.
    #[test]
    fn one_holder_at_a_time() {
        let lock = Arc::new(SpinLock::<u64>::default());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let lock = lock.clone();
                std::thread::spawn(move || {
                    for _ in 0..100_000 {
                        *lock.lock() += 1;
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(*lock.lock(), 400_000);
    }
}
