//! The embedded store's message queues: one FIFO per queue name, messages in
//! flight until acknowledged, dead letters, and wake-ups for waiting takers.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
// tokio's clock, so tests can pause and advance time past waits.
use tokio::time::Instant;

use crate::fast_map::FastMap;
use crate::store::{Delivery, Envelope, MessageState, QueuedMessage};

/// How long a taker looks again before it parks (see [`Queues::take`]).
const SPIN: Duration = Duration::from_micros(50);

struct InFlight {
    queue: String,
    consumer: String,
    envelope: Arc<Envelope>,
}

/// The messages, each shared (`Arc`) from its send to its end: taking one
/// hands the consumer the same allocation, and a long queue moves pointers,
/// not envelopes, when it grows.
#[derive(Default)]
struct Lists {
    waiting: FastMap<String, VecDeque<Arc<Envelope>>>,
    in_flight: FastMap<u64, InFlight>,
    dead: Vec<(String, Arc<Envelope>)>,
}

/// Every queue of one task.
#[derive(Default)]
pub(super) struct Queues {
    lists: Mutex<Lists>,
    next_receipt: AtomicU64,
    /// Takers parked in [`Queues::take`]; a push wakes them only when there
    /// are any, so a busy consumer costs its producer no wake-up.
    waiters: AtomicUsize,
    pushed: Notify,
}

/// Counts a parked taker for as long as it waits (also when its wait is dropped).
struct Parked<'a>(&'a AtomicUsize);

impl<'a> Parked<'a> {
    fn new(waiters: &'a AtomicUsize) -> Self {
        waiters.fetch_add(1, Ordering::SeqCst);
        Parked(waiters)
    }
}

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Queues {
    fn wake(&self) {
        if self.waiters.load(Ordering::SeqCst) > 0 {
            self.pushed.notify_waiters();
        }
    }

    /// Appends `envelope` to `queue`.
    pub(super) fn push(&self, queue: &str, envelope: Envelope) {
        let envelope = Arc::new(envelope);
        {
            let mut lists = self.lists.lock();
            match lists.waiting.get_mut(queue) {
                Some(list) => list.push_back(envelope),
                None => {
                    lists
                        .waiting
                        .insert(queue.to_string(), VecDeque::from([envelope]));
                }
            }
        }
        self.wake();
    }

    /// Takes the oldest message of the first of `queues` that has one,
    /// waiting up to `wait` for one to arrive.
    pub(super) async fn take(
        &self,
        queues: &[String],
        consumer: &str,
        wait: Duration,
    ) -> Option<Delivery> {
        if let Some(d) = self.take_now(queues, consumer) {
            return Some(d);
        }
        if wait.is_zero() {
            return None;
        }
        let deadline = Instant::now() + wait;
        // A producer on another thread usually pushes again within
        // microseconds. Parking at once would make each of its pushes pay a
        // wake-up (a futex call and a thread switch, whose cost differs a lot
        // between machines), so look again for a short while first, letting
        // other tasks of this thread run in between. Real time, not tokio's:
        // a paused clock does not move while a task keeps yielding.
        let spin_until = std::time::Instant::now() + SPIN.min(wait);
        while std::time::Instant::now() < spin_until {
            tokio::task::yield_now().await;
            if let Some(d) = self.take_now(queues, consumer) {
                return Some(d);
            }
        }
        let _parked = Parked::new(&self.waiters);
        loop {
            // Register for wake-ups before looking, so a push between the look
            // and the wait is not missed.
            let pushed = self.pushed.notified();
            tokio::pin!(pushed);
            pushed.as_mut().enable();
            if let Some(d) = self.take_now(queues, consumer) {
                return Some(d);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            if tokio::time::timeout(deadline - now, pushed).await.is_err() {
                return self.take_now(queues, consumer);
            }
        }
    }

    /// Takes the oldest message of the first of `queues` that has one, now.
    pub(super) fn take_now(&self, queues: &[String], consumer: &str) -> Option<Delivery> {
        let mut lists = self.lists.lock();
        for name in queues {
            let Some(mut envelope) = lists.waiting.get_mut(name).and_then(VecDeque::pop_front)
            else {
                continue;
            };
            // A copy only when an earlier consumer still holds this message
            // (given back while its handler's copy lives on).
            Arc::make_mut(&mut envelope).attempts += 1;
            let receipt = self.next_receipt.fetch_add(1, Ordering::Relaxed);
            let in_flight = InFlight {
                queue: name.clone(),
                consumer: consumer.to_string(),
                envelope: envelope.clone(),
            };
            lists.in_flight.insert(receipt, in_flight);
            return Some(Delivery {
                queue: name.clone(),
                envelope,
                receipt: itoa::Buffer::new().format(receipt).to_string(),
            });
        }
        None
    }

    /// Forgets a delivered message.
    pub(super) fn ack(&self, delivery: &Delivery) {
        if let Ok(receipt) = delivery.receipt.parse::<u64>() {
            let finished = self.lists.lock().in_flight.remove(&receipt);
            drop(finished); // freed outside the lock
        }
    }

    /// Puts a delivered message back in front of its queue, or among the dead
    /// letters once it has been delivered `max_attempts` times. True when dead.
    pub(super) fn nack(&self, delivery: &Delivery, max_attempts: u32) -> bool {
        let Ok(receipt) = delivery.receipt.parse::<u64>() else {
            return false;
        };
        let dead = {
            let mut lists = self.lists.lock();
            let Some(f) = lists.in_flight.remove(&receipt) else {
                return false;
            };
            if f.envelope.attempts >= max_attempts {
                lists.dead.push((f.queue, f.envelope));
                true
            } else {
                lists
                    .waiting
                    .entry(f.queue)
                    .or_default()
                    .push_front(f.envelope);
                false
            }
        };
        self.wake();
        dead
    }

    /// Puts every message `consumer` holds back in front of its queue.
    pub(super) fn release_consumer(&self, consumer: &str) -> usize {
        let released = {
            let mut lists = self.lists.lock();
            let receipts: Vec<u64> = lists
                .in_flight
                .iter()
                .filter(|(_, f)| f.consumer == consumer)
                .map(|(r, _)| *r)
                .collect();
            for r in &receipts {
                if let Some(f) = lists.in_flight.remove(r) {
                    lists
                        .waiting
                        .entry(f.queue)
                        .or_default()
                        .push_front(f.envelope);
                }
            }
            receipts.len()
        };
        self.wake();
        released
    }

    /// Moves the dead letters of `queue` back to its end, their attempts
    /// starting over; returns how many.
    pub(super) fn revive(&self, queue: &str) -> usize {
        let revived = {
            let mut lists = self.lists.lock();
            let (back, dead): (Vec<_>, Vec<_>) = std::mem::take(&mut lists.dead)
                .into_iter()
                .partition(|(q, _)| q == queue);
            lists.dead = dead;
            let list = lists.waiting.entry(queue.to_string()).or_default();
            let count = back.len();
            for (_, mut envelope) in back {
                Arc::make_mut(&mut envelope).attempts = 0;
                list.push_back(envelope);
            }
            count
        };
        if revived > 0 {
            self.wake();
        }
        revived
    }

    /// Every message, waiting, in flight or dead.
    pub(super) fn list(&self) -> Vec<QueuedMessage> {
        let lists = self.lists.lock();
        let waiting = lists.waiting.iter().flat_map(|(name, msgs)| {
            msgs.iter().map(move |m| QueuedMessage {
                queue: name.clone(),
                envelope: (**m).clone(),
                state: MessageState::Pending,
            })
        });
        let in_flight = lists.in_flight.values().map(|f| QueuedMessage {
            queue: f.queue.clone(),
            envelope: (*f.envelope).clone(),
            state: MessageState::Pending,
        });
        let dead = lists.dead.iter().map(|(name, m)| QueuedMessage {
            queue: name.clone(),
            envelope: (**m).clone(),
            state: MessageState::Dead,
        });
        waiting.chain(in_flight).chain(dead).collect()
    }
}
