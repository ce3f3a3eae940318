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
use crate::store::{Delivery, Envelope, MessageState, QueuedMessage, Receipt};

/// How long a taker looks again before it parks (see [`Queues::take`]).
const SPIN: Duration = Duration::from_micros(50);

/// A message handed out and not yet acknowledged. The names are shared
/// with the queue's list and the consumer set: a take allocates nothing
/// for them.
struct InFlight {
    queue: Arc<str>,
    consumer: Arc<str>,
    envelope: Arc<Envelope>,
}

/// One queue's waiting messages, with its name to hand out.
struct Waiting {
    name: Arc<str>,
    messages: VecDeque<Arc<Envelope>>,
}

/// The messages, each shared (`Arc`) from its send to its end: taking one
/// hands the consumer the same allocation, and a long queue moves pointers,
/// not envelopes, when it grows.
#[derive(Default)]
struct Lists {
    waiting: FastMap<Arc<str>, Waiting>,
    in_flight: FastMap<u64, InFlight>,
    dead: Vec<(Arc<str>, Arc<Envelope>)>,
    /// The names of the consumers holding messages (or that did since
    /// they were last released), shared by their in-flight records.
    consumers: FastMap<Arc<str>, ()>,
}

impl Lists {
    /// The waiting messages of `queue`, made empty on first use.
    fn waiting(&mut self, queue: &str) -> &mut VecDeque<Arc<Envelope>> {
        if !self.waiting.contains_key(queue) {
            let name: Arc<str> = queue.into();
            let list = Waiting {
                name: name.clone(),
                messages: VecDeque::new(),
            };
            self.waiting.insert(name, list);
        }
        &mut self
            .waiting
            .get_mut(queue)
            .expect("inserted above")
            .messages
    }

    /// The shared name of `consumer`.
    fn consumer(&mut self, consumer: &str) -> Arc<str> {
        if let Some((name, ())) = self.consumers.get_key_value(consumer) {
            return name.clone();
        }
        let name: Arc<str> = consumer.into();
        self.consumers.insert(name.clone(), ());
        name
    }
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
            // One look-up when the queue exists (`waiting` takes two).
            match lists.waiting.get_mut(queue) {
                Some(list) => list.messages.push_back(envelope),
                None => lists.waiting(queue).push_back(envelope),
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
            let Some(list) = lists.waiting.get_mut(name.as_str()) else {
                continue;
            };
            let Some(mut envelope) = list.messages.pop_front() else {
                continue;
            };
            let queue = list.name.clone();
            // A copy only when an earlier consumer still holds this message
            // (given back while its handler's copy lives on).
            Arc::make_mut(&mut envelope).attempts += 1;
            let receipt = self.next_receipt.fetch_add(1, Ordering::Relaxed);
            let in_flight = InFlight {
                queue: queue.clone(),
                consumer: lists.consumer(consumer),
                envelope: envelope.clone(),
            };
            lists.in_flight.insert(receipt, in_flight);
            return Some(Delivery {
                queue,
                envelope,
                receipt: Receipt::Number(receipt),
            });
        }
        None
    }

    /// Forgets a delivered message.
    pub(super) fn ack(&self, delivery: &Delivery) {
        if let Receipt::Number(receipt) = delivery.receipt {
            let finished = self.lists.lock().in_flight.remove(&receipt);
            drop(finished); // freed outside the lock
        }
    }

    /// Puts a delivered message back in front of its queue, or among the dead
    /// letters once it has been delivered `max_attempts` times. True when dead.
    pub(super) fn nack(&self, delivery: &Delivery, max_attempts: u32) -> bool {
        let Receipt::Number(receipt) = delivery.receipt else {
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
                lists.waiting(&f.queue).push_front(f.envelope);
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
                .filter(|(_, f)| &*f.consumer == consumer)
                .map(|(r, _)| *r)
                .collect();
            for r in &receipts {
                if let Some(f) = lists.in_flight.remove(r) {
                    lists.waiting(&f.queue).push_front(f.envelope);
                }
            }
            // It holds nothing now; a later take shares its name again.
            lists.consumers.remove(consumer);
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
                .partition(|(q, _)| &**q == queue);
            lists.dead = dead;
            let list = lists.waiting(queue);
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
        let waiting = lists.waiting.values().flat_map(|list| {
            list.messages.iter().map(move |m| QueuedMessage {
                queue: list.name.to_string(),
                envelope: (**m).clone(),
                state: MessageState::Pending,
            })
        });
        let in_flight = lists.in_flight.values().map(|f| QueuedMessage {
            queue: f.queue.to_string(),
            envelope: (*f.envelope).clone(),
            state: MessageState::Pending,
        });
        let dead = lists.dead.iter().map(|(name, m)| QueuedMessage {
            queue: name.to_string(),
            envelope: (**m).clone(),
            state: MessageState::Dead,
        });
        waiting.chain(in_flight).chain(dead).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(id: &str) -> Envelope {
        Envelope {
            id: id.into(),
            from: "a-1".into(),
            to: "b".into(),
            kind: "m".into(),
            payload: serde_json::Value::Null,
            attempts: 0,
            reply_to: None,
        }
    }

    #[test]
    fn a_stale_receipt_acknowledges_nothing_and_released_consumers_are_forgotten() {
        let q = Queues::default();
        let queues = ["b-1".to_string(), "b".to_string()];
        q.push("b", envelope("m1"));
        let first = q.take_now(&queues, "b-1").expect("m1");
        assert_eq!((&*first.queue, first.envelope.attempts), ("b", 1));
        assert_eq!(q.lists.lock().consumers.len(), 1);
        assert_eq!(q.release_consumer("b-1"), 1);
        assert!(q.lists.lock().consumers.is_empty(), "the name is let go");
        let again = q.take_now(&queues, "b-1").expect("m1 again");
        assert_eq!(again.envelope.attempts, 2);
        assert_ne!(first.receipt, again.receipt);
        // The first delivery's receipt no longer names the message.
        q.ack(&first);
        assert_eq!(q.list().len(), 1, "still in flight");
        q.ack(&again);
        assert!(q.list().is_empty());
    }
}
