//! Cancel-safe taking of messages.
//!
//! A read that hands a message to a consumer moves it into that consumer's
//! pending list on the server; if the caller's future is dropped before the
//! reply arrives, the message would sit there unseen. So reads do not run in
//! the caller's future: each consumer has a slot, a spawned reader does the
//! reading and puts what it got into the slot's stash, and `take` only waits
//! for the slot. A take dropped mid-wait leaves the reader running; what it
//! reads is returned by the consumer's next take, or given back to the queue
//! if the consumer was released meanwhile.
//!
//! After the server was unreachable, a reader also asks the server which
//! messages the consumer holds that this process does not know of (taken by a
//! command whose reply was lost) and delivers them again.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::Server;
use super::conn::{command_error, is_transient};
use crate::store::{Delivery, StoreError, StoreResult};

/// Longest single blocking read. Messages given back do not wake a blocked
/// read, so this bounds how long one can wait for a blocked consumer.
const BLOCK_SLICE: Duration = Duration::from_millis(250);

/// `(task, queue, entry id)` of a message handed out.
type Receipt = (String, String, String);

/// The consumers of this process.
#[derive(Default)]
pub(super) struct Consumers {
    slots: Mutex<HashMap<(String, String), Arc<Slot>>>,
    /// Messages handed out and not yet acknowledged or given back, with the
    /// consumer holding each.
    outstanding: Mutex<HashMap<Receipt, String>>,
}

#[derive(Default)]
struct Slot {
    state: Mutex<SlotState>,
    ready: Notify,
}

#[derive(Default)]
struct SlotState {
    /// Read for this consumer, not yet handed out.
    stash: VecDeque<Delivery>,
    /// A reader's failure, for the next take.
    error: Option<StoreError>,
    /// A reader runs for this consumer.
    reading: bool,
    /// The consumer was released: late messages go back to their queue.
    closed: bool,
}

impl Consumers {
    fn slot(&self, task: &str, consumer: &str) -> Arc<Slot> {
        self.slots
            .lock()
            .entry((task.to_string(), consumer.to_string()))
            .or_default()
            .clone()
    }

    /// The consumer holding a message handed out by this process.
    pub fn holder(&self, task: &str, delivery: &Delivery) -> Option<String> {
        self.outstanding
            .lock()
            .get(&receipt(task, delivery))
            .cloned()
    }

    /// The message was acknowledged or given back.
    pub fn settled(&self, task: &str, delivery: &Delivery) {
        self.outstanding.lock().remove(&receipt(task, delivery));
    }

    /// Closes a consumer's slot: messages its reader still gets are given back.
    pub fn close(&self, task: &str, consumer: &str) {
        let slot = self
            .slots
            .lock()
            .remove(&(task.to_string(), consumer.to_string()));
        if let Some(slot) = slot {
            let mut st = slot.state.lock();
            st.closed = true;
            // Stashed messages are in the consumer's pending list on the
            // server: the release that follows gives them back.
            st.stash.clear();
        }
        self.outstanding
            .lock()
            .retain(|(t, _, _), c| !(t == task && c == consumer));
    }

    /// Entry ids this process knows `consumer` holds: handed out or stashed.
    fn known(&self, task: &str, consumer: &str, slot: &Slot) -> HashSet<String> {
        let mut ids: HashSet<String> = self
            .outstanding
            .lock()
            .iter()
            .filter(|((t, _, _), c)| t == task && *c == consumer)
            .map(|((_, _, id), _)| id.clone())
            .collect();
        ids.extend(slot.state.lock().stash.iter().map(|d| d.receipt.clone()));
        ids
    }
}

fn receipt(task: &str, d: &Delivery) -> Receipt {
    (task.to_string(), d.queue.clone(), d.receipt.clone())
}

impl Server {
    /// Takes the next message for `consumer` from `queues`, waiting up to `wait`.
    pub(super) async fn take(
        self: &Arc<Self>,
        task: &str,
        queues: &[String],
        consumer: &str,
        wait: Duration,
    ) -> StoreResult<Option<Delivery>> {
        let slot = self.consumers.slot(task, consumer);
        let deadline = Instant::now() + wait;
        let mut started = false;
        loop {
            let own_reader = {
                let mut st = slot.state.lock();
                if let Some(d) = st.stash.pop_front() {
                    self.consumers
                        .outstanding
                        .lock()
                        .insert(receipt(task, &d), consumer.to_string());
                    return Ok(Some(d));
                }
                if let Some(e) = st.error.take() {
                    return Err(e);
                }
                if st.reading {
                    // A reader left by an earlier take (or ours) is still out.
                    started
                } else if started && Instant::now() >= deadline {
                    return Ok(None);
                } else {
                    st.reading = true;
                    started = true;
                    let reader = self.clone().read(
                        slot.clone(),
                        task.to_string(),
                        queues.to_vec(),
                        consumer.to_string(),
                        deadline,
                    );
                    tokio::spawn(reader);
                    true
                }
            };
            if own_reader {
                // Our reader keeps to our deadline: wait for it to report.
                slot.ready.notified().await;
            } else {
                tokio::select! {
                    _ = slot.ready.notified() => {}
                    _ = tokio::time::sleep_until(deadline) => {
                        let mut st = slot.state.lock();
                        let Some(d) = st.stash.pop_front() else { return Ok(None) };
                        self.consumers
                            .outstanding
                            .lock()
                            .insert(receipt(task, &d), consumer.to_string());
                        return Ok(Some(d));
                    }
                }
            }
        }
    }

    /// The reader of one take: reads until it has something or `deadline`
    /// passed, then reports to the slot.
    async fn read(
        self: Arc<Self>,
        slot: Arc<Slot>,
        task: String,
        queues: Vec<String>,
        consumer: String,
        deadline: Instant,
    ) {
        let outcome = self
            .read_until(&slot, &task, &queues, &consumer, deadline)
            .await;
        let late = {
            let mut st = slot.state.lock();
            st.reading = false;
            match outcome {
                Ok(found) if st.closed => found,
                Ok(found) => {
                    st.stash.extend(found);
                    Vec::new()
                }
                Err(e) => {
                    st.error = Some(e);
                    Vec::new()
                }
            }
        };
        slot.ready.notify_one();
        for d in late {
            if let Err(e) = self.park(&task, &d).await {
                tracing::warn!(queue = %d.queue, "cannot give back a message of a released consumer: {e}");
            }
        }
    }

    async fn read_until(
        &self,
        slot: &Slot,
        task: &str,
        queues: &[String],
        consumer: &str,
        deadline: Instant,
    ) -> StoreResult<Vec<Delivery>> {
        let mut failing_since: Option<Instant> = None;
        let mut pause = Duration::from_millis(10);
        loop {
            let step = async {
                let found = self.poll_once(task, queues, consumer).await?;
                if !found.is_empty() {
                    return Ok(found);
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(Vec::new());
                }
                self.block_once(task, queues, consumer, left.min(BLOCK_SLICE))
                    .await
            };
            match step.await {
                Ok(mut found) => {
                    if failing_since.take().is_some() {
                        found.extend(self.orphans(slot, task, queues, consumer, &found).await?);
                    }
                    if !found.is_empty() || Instant::now() >= deadline {
                        return Ok(found);
                    }
                }
                Err(e) if is_transient(&e) => {
                    let since = *failing_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= self.conn.patience {
                        return Err(self.conn.gave_up(&e.to_string()));
                    }
                    tracing::debug!(consumer, "store unavailable while reading, retrying: {e}");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
                Err(e) => return Err(command_error("bus take", &e)),
            }
        }
    }

    /// Messages the server says `consumer` holds that this process never
    /// handed out: taken by a read whose reply was lost to a dropped connection.
    async fn orphans(
        &self,
        slot: &Slot,
        task: &str,
        queues: &[String],
        consumer: &str,
        just_read: &[Delivery],
    ) -> StoreResult<Vec<Delivery>> {
        let mut known = self.consumers.known(task, consumer, slot);
        known.extend(just_read.iter().map(|d| d.receipt.clone()));
        let held = self
            .held_by(task, queues, consumer)
            .await
            .map_err(|e| command_error("bus recover", &e))?;
        let orphans: Vec<Delivery> = held
            .into_iter()
            .filter(|d| !known.contains(&d.receipt))
            .collect();
        if !orphans.is_empty() {
            tracing::info!(
                consumer,
                "recovered {} message(s) taken while the connection dropped",
                orphans.len()
            );
        }
        Ok(orphans)
    }
}
