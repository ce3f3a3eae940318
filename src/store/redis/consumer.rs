//! Taking messages, cancel-safely.
//!
//! Each consumer of this process has a slot: the streams it reads and the
//! messages read ahead for it. A take hands out what the slot holds, else
//! looks at the server ([`Server::fetch`]: one round trip, which also sends
//! the process's acknowledgements), else waits for news from the process's
//! one blocking reader ([`super::waits`]) and looks again.
//!
//! A look moves messages into the consumer's pending list on the server; if
//! the take is dropped while its look is on the wire, or the connection
//! drops under it, the reply is lost. The slot is then marked suspect, and
//! the next look first asks the server which messages the consumer holds
//! that this process does not know of, and hands those out again.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use super::Server;
use super::conn::is_transient;
use super::keys::Keys;
use super::queues::fetch_error;
use crate::store::{Delivery, StoreResult};

/// The consumers of this process.
#[derive(Default)]
pub(super) struct Consumers {
    /// Slots by task, then consumer.
    slots: Mutex<HashMap<String, HashMap<String, Arc<Slot>>>>,
    /// Messages handed out and not yet acknowledged or given back, with the
    /// consumer holding each, by `task \0 queue \0 entry id`.
    outstanding: Mutex<HashMap<String, Arc<str>>>,
}

/// One consumer's read-ahead.
pub(super) struct Slot {
    /// The consumer's name.
    name: Arc<str>,
    /// The queues it reads, in order.
    queues: Vec<String>,
    /// Their streams.
    streams: Vec<String>,
    state: Mutex<SlotState>,
}

#[derive(Default)]
struct SlotState {
    /// Read for this consumer, not yet handed out.
    stash: VecDeque<Delivery>,
    /// A look's reply may have been lost: ask the server what the consumer holds.
    suspect: bool,
}

fn receipt(task: &str, d: &Delivery) -> String {
    let entry = d.receipt.entry();
    let mut key = String::with_capacity(task.len() + d.queue.len() + entry.len() + 2);
    key.push_str(task);
    key.push('\0');
    key.push_str(&d.queue);
    key.push('\0');
    key.push_str(entry);
    key
}

impl Consumers {
    fn slot(&self, task: &str, consumer: &str, queues: &[String]) -> Arc<Slot> {
        let mut slots = self.slots.lock();
        if let Some(slot) = slots.get(task).and_then(|t| t.get(consumer)) {
            return slot.clone();
        }
        let keys = Keys::new(task);
        let slot = Arc::new(Slot {
            name: Arc::from(consumer),
            queues: queues.to_vec(),
            streams: queues.iter().map(|q| keys.bus(q)).collect(),
            state: Mutex::default(),
        });
        slots
            .entry(task.to_string())
            .or_default()
            .insert(consumer.to_string(), slot.clone());
        slot
    }

    /// The slot of `consumer`, if it has read anything.
    fn existing(&self, task: &str, consumer: &str) -> Option<Arc<Slot>> {
        self.slots.lock().get(task)?.get(consumer).cloned()
    }

    /// The consumer holding a message handed out by this process.
    pub fn holder(&self, task: &str, delivery: &Delivery) -> Option<String> {
        self.outstanding
            .lock()
            .get(&receipt(task, delivery))
            .map(|c| c.to_string())
    }

    /// The message was acknowledged or given back.
    pub fn settled(&self, task: &str, delivery: &Delivery) {
        self.outstanding.lock().remove(&receipt(task, delivery));
    }

    fn handed(&self, task: &str, slot: &Slot, d: &Delivery) {
        self.outstanding
            .lock()
            .insert(receipt(task, d), slot.name.clone());
    }

    /// Closes a consumer's slot; the queues it read, when it had a slot.
    /// Messages it read ahead are in its pending list on the server: the
    /// release that follows gives them back.
    pub fn close(&self, task: &str, consumer: &str) -> Option<Vec<String>> {
        let slot = {
            let mut slots = self.slots.lock();
            let slot = slots.get_mut(task).and_then(|t| t.remove(consumer));
            if slots.get(task).is_some_and(HashMap::is_empty) {
                slots.remove(task);
            }
            slot
        };
        let prefix = format!("{task}\0");
        self.outstanding
            .lock()
            .retain(|k, c| !(k.starts_with(&prefix) && &**c == consumer));
        slot.map(|s| {
            s.state.lock().stash.clear();
            s.queues.clone()
        })
    }

    /// Receipts (see [`receipt`]) of the messages this process knows
    /// `slot`'s consumer holds: handed out or read ahead.
    fn known(&self, task: &str, slot: &Slot) -> HashSet<String> {
        let prefix = format!("{task}\0");
        let mut known: HashSet<String> = self
            .outstanding
            .lock()
            .iter()
            .filter(|(k, c)| k.starts_with(&prefix) && **c == slot.name)
            .map(|(k, _)| k.clone())
            .collect();
        known.extend(slot.state.lock().stash.iter().map(|d| receipt(task, d)));
        known
    }
}

/// Marks a slot suspect if dropped before [`disarm`](Self::disarm): a look
/// abandoned on the wire.
struct SuspectUnlessDone<'a>(Option<&'a Slot>);

impl SuspectUnlessDone<'_> {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for SuspectUnlessDone<'_> {
    fn drop(&mut self) {
        if let Some(slot) = self.0 {
            slot.state.lock().suspect = true;
        }
    }
}

impl Server {
    /// Takes the next message for `consumer` from `queues`, waiting up to `wait`.
    /// `queues` may be fewer than the consumer reads at other times (an
    /// agent not yet in turn for its role's messages takes its own only):
    /// then only those are looked at, and only their messages handed out.
    pub(super) async fn take(
        self: &Arc<Self>,
        task: &str,
        queues: &[String],
        consumer: &str,
        wait: Duration,
    ) -> StoreResult<Option<Delivery>> {
        let slot = self.consumers.slot(task, consumer, queues);
        let keys = Keys::new(task);
        let subset;
        let streams = if queues == &slot.queues[..] {
            &slot.streams
        } else {
            subset = queues.iter().map(|q| keys.bus(q)).collect::<Vec<_>>();
            &subset
        };
        // Messages given back come before what was read ahead.
        if !self.parked_on(streams)
            && let Some(d) = self.pop(task, &slot, queues)
        {
            return Ok(Some(d));
        }
        let deadline = Instant::now() + wait;
        // Registered before looking, so news between the look and the wait
        // is not missed.
        let watch = (!wait.is_zero()).then(|| self.waits.watch(self, streams));
        loop {
            self.look(&keys, task, &slot, streams).await?;
            if let Some(d) = self.pop(task, &slot, queues) {
                return Ok(Some(d));
            }
            let Some(watch) = &watch else {
                return Ok(None);
            };
            if Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::select! {
                _ = watch.changed() => {}
                _ = tokio::time::sleep_until(deadline) => return Ok(None),
            }
        }
    }

    /// A message of `queues` read ahead for `consumer`, unless one given back
    /// must come first.
    pub(super) fn take_ready(
        &self,
        task: &str,
        queues: &[String],
        consumer: &str,
    ) -> Option<Delivery> {
        let slot = self.consumers.slot(task, consumer, queues);
        if self.parked.lock().is_empty() || !self.parked_on(&slot.streams) {
            return self.pop(task, &slot, queues);
        }
        None
    }

    /// A message of `queues` already read for `consumer`: it is in the
    /// consumer's pending list, so no other consumer can take it.
    pub(super) fn take_held(
        &self,
        task: &str,
        queues: &[String],
        consumer: &str,
    ) -> Option<Delivery> {
        let slot = self.consumers.existing(task, consumer)?;
        self.pop(task, &slot, queues)
    }

    /// The first message read ahead for `slot` from one of `queues`.
    fn pop(&self, task: &str, slot: &Slot, queues: &[String]) -> Option<Delivery> {
        let d = {
            let mut st = slot.state.lock();
            if queues == &slot.queues[..] {
                st.stash.pop_front()?
            } else {
                let at = st
                    .stash
                    .iter()
                    .position(|d| queues.iter().any(|q| *q == *d.queue))?;
                st.stash.remove(at)?
            }
        };
        self.consumers.handed(task, slot, &d);
        Some(d)
    }

    /// True when this process gave back a message on one of `streams`
    /// that no look has claimed since.
    fn parked_on(&self, streams: &[String]) -> bool {
        let parked = self.parked.lock();
        !parked.is_empty() && streams.iter().any(|s| parked.contains(s))
    }

    /// Looks at the server for `slot`'s consumer and keeps what it finds in
    /// the slot. Transient failures are retried within `connect_timeout`.
    async fn look(
        &self,
        keys: &Keys,
        task: &str,
        slot: &Slot,
        streams: &[String],
    ) -> StoreResult<()> {
        let mut failing_since: Option<Instant> = None;
        let mut pause = Duration::from_millis(10);
        loop {
            let suspect = std::mem::take(&mut slot.state.lock().suspect);
            let guard = SuspectUnlessDone(Some(slot));
            let outcome = async {
                if suspect {
                    let orphans = self.orphans(keys, task, slot).await?;
                    let mut st = slot.state.lock();
                    for d in orphans.into_iter().rev() {
                        st.stash.push_front(d);
                    }
                }
                self.fetch(task, keys, streams, &slot.name).await
            }
            .await;
            match outcome {
                Ok(fetched) => {
                    guard.disarm();
                    let mut st = slot.state.lock();
                    for d in fetched.returned.into_iter().rev() {
                        st.stash.push_front(d);
                    }
                    st.stash.extend(fetched.new);
                    return Ok(());
                }
                Err(e) if is_transient(&e) => {
                    // The guard marks the slot suspect: the look may have taken
                    // messages whose reply was lost.
                    drop(guard);
                    let since = *failing_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= self.conn.patience {
                        return Err(self.conn.gave_up(&e.to_string()));
                    }
                    tracing::debug!(consumer = %slot.name, "store unavailable while reading, retrying: {e}");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
                Err(e) => {
                    guard.disarm();
                    return Err(fetch_error(&e));
                }
            }
        }
    }

    /// Messages the server says `slot`'s consumer holds that this process
    /// never handed out: taken by a look whose reply was lost.
    async fn orphans(
        &self,
        keys: &Keys,
        task: &str,
        slot: &Slot,
    ) -> redis::RedisResult<Vec<Delivery>> {
        let held = self.held_by(keys, &slot.streams, &slot.name).await?;
        let mut known = self.consumers.known(task, slot);
        known.extend(self.acks_waiting(keys, task, &slot.streams));
        let orphans: Vec<Delivery> = held
            .into_iter()
            .filter(|d| !known.contains(&receipt(task, d)))
            .collect();
        if !orphans.is_empty() {
            tracing::info!(
                consumer = %slot.name,
                "recovered {} message(s) taken while the connection dropped",
                orphans.len()
            );
        }
        Ok(orphans)
    }

    /// Receipts of the messages of `streams` acknowledged but not known to
    /// be applied yet.
    fn acks_waiting(&self, keys: &Keys, task: &str, streams: &[String]) -> Vec<String> {
        let acks = self.acks.lock();
        let mut out = Vec::new();
        for stream in streams {
            let queue = keys.queue_of(stream);
            for id in acks.ids(stream) {
                out.push(format!("{task}\0{queue}\0{id}"));
            }
        }
        out
    }
}
