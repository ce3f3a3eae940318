//! The message bus: `{from, to, type, payload}` messages between agents.
//!
//! Every agent reads two queues: its own (`beta-1`) and its role's (`beta`).
//! A message to a role is handled by exactly one agent of that role; a
//! broadcast (`to = "*"`) is copied to every live agent's own queue. Delivery is
//! at-least-once: a message is acknowledged after its handler returns and given
//! back (redelivered, then dead-lettered) when the handler fails.
//!
//! On the embedded store the queues are host memory, so the quotas
//! `max_queue_depth` (messages on one queue: waiting, in flight or
//! dead-lettered) and `max_queued_bytes` (all of the task's queues) bound
//! them, counted by a ledger here: a message counts from its send to its
//! acknowledgement. A shared store keeps the messages in its server.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::RwLock;
use serde_json::Value;

use super::AgentPhase;
use super::blackboard::{check_size, json_size};
use super::quotas::{check_name, exceeded};
use super::state::is_live;
use crate::config::Quotas;
use crate::error::{Error, Result};
use crate::store::{Delivery, Envelope, MessageState, Store};

/// The address every live agent gets a copy of a message sent to.
pub const BROADCAST: &str = "*";

/// Sends and takes messages of one task.
pub struct MessageBus {
    store: Arc<dyn Store>,
    task: String,
    max_attempts: u32,
    max_value_bytes: usize,
    /// Unique per process, so message ids never collide across hosts.
    origin: String,
    next_id: AtomicU64,
    /// Live agents of this process: id -> role.
    directory: RwLock<BTreeMap<String, String>>,
    /// Agents of this process that have ended (or are ending): messages to
    /// them are refused, as nobody would read them.
    departed: RwLock<HashSet<String>>,
    /// Roles that have a script, so a message to a role nobody runs yet is accepted.
    known_roles: RwLock<Vec<String>>,
    /// Roles another process of the task has scripts for.
    remote_roles: RwLock<Vec<String>>,
    quotas: Quotas,
    /// Messages and bytes on the queues, when the store is embedded.
    queued: Option<parking_lot::Mutex<Queued>>,
}

/// What the task's queues hold (embedded store): messages per queue, bytes in all.
#[derive(Default)]
struct Queued {
    depth: std::collections::HashMap<String, usize>,
    bytes: usize,
}

/// Adds (or, negative, removes) one message of `size` bytes on `queue` in `q`.
fn count(q: &mut Queued, queue: &str, size: isize) {
    if size >= 0 {
        match q.depth.get_mut(queue) {
            Some(d) => *d += 1,
            None => {
                q.depth.insert(queue.to_string(), 1);
            }
        }
        q.bytes += size as usize;
    } else {
        if let Some(d) = q.depth.get_mut(queue) {
            *d = d.saturating_sub(1);
            if *d == 0 {
                q.depth.remove(queue);
            }
        }
        q.bytes = q.bytes.saturating_sub(size.unsigned_abs());
    }
}

/// The bytes a queued message takes, as the ledger counts them.
fn message_size(e: &Envelope) -> usize {
    json_size(&e.payload, usize::MAX) + e.id.len() + e.from.len() + e.to.len() + e.kind.len() + 64
}

impl MessageBus {
    pub(super) fn new(
        store: Arc<dyn Store>,
        task: &str,
        max_attempts: u32,
        max_value_bytes: usize,
        quotas: Quotas,
    ) -> Self {
        let queued = store.is_embedded().then(parking_lot::Mutex::default);
        MessageBus {
            quotas,
            queued,
            store,
            task: task.to_string(),
            max_attempts,
            max_value_bytes,
            origin: format!("{:08x}", rand::random::<u32>()),
            next_id: AtomicU64::new(1),
            directory: RwLock::default(),
            departed: RwLock::default(),
            known_roles: RwLock::default(),
            remote_roles: RwLock::default(),
        }
    }

    /// Records a live agent, so it can be addressed and receives broadcasts.
    pub fn join(&self, id: &str, role: &str) {
        self.directory
            .write()
            .insert(id.to_string(), role.to_string());
    }

    /// Removes an agent that ends: it gets no more broadcasts, and messages
    /// to it are refused from now on.
    pub fn leave(&self, id: &str) {
        if self.directory.write().remove(id).is_some() {
            self.departed.write().insert(id.to_string());
        }
    }

    /// Sets the roles that may be addressed even when none of their agents is live.
    pub fn set_known_roles(&self, roles: Vec<String>) {
        *self.known_roles.write() = roles;
    }

    /// Sets the roles another process sharing the task has scripts for (the
    /// owner's, for a joined process): they may be addressed from here too.
    pub fn set_remote_roles(&self, roles: Vec<String>) {
        *self.remote_roles.write() = roles;
    }

    /// The queues agent `id` of `role` reads, own queue first.
    pub fn queues_of(id: &str, role: &str) -> Vec<String> {
        vec![id.to_string(), role.to_string()]
    }

    /// Sends a message; returns its id. `to` is an agent id, a role, or `*`.
    /// (`to` and `kind` are taken as given, so callers holding Strings hand
    /// them over without a copy.)
    pub async fn send(
        &self,
        from: &str,
        to: impl Into<String>,
        kind: impl Into<String>,
        payload: Value,
    ) -> Result<String> {
        let (to, kind) = (to.into(), kind.into());
        check_name("message type", &kind)?;
        check_name("bus recipient", &to)?;
        check_size(&payload, self.max_value_bytes, || {
            format!("message '{kind}' to '{to}'")
        })?;
        if to != BROADCAST {
            self.check_recipient(&to).await?;
        }
        let id = message_id(&self.origin, self.next_id.fetch_add(1, Ordering::Relaxed));
        let envelope = Envelope {
            id: id.clone(),
            from: from.to_string(),
            to,
            kind,
            payload,
            attempts: 0,
        };
        let size = message_size(&envelope);
        if envelope.to == BROADCAST {
            let targets = self.broadcast_targets(from).await?;
            self.admit(&envelope.kind, targets.iter().map(String::as_str), size)?;
            for target in &targets {
                if let Err(e) = self.store.queue_push(&self.task, target, &envelope).await {
                    // Those not pushed yet were counted too.
                    for t in targets.iter().skip_while(|t| *t != target) {
                        self.count(t, -(size as isize));
                    }
                    return Err(e.into());
                }
            }
        } else {
            let queue = envelope.to.clone();
            self.admit(&envelope.kind, [queue.as_str()], size)?;
            if let Err(e) = self
                .store
                .queue_push_owned(&self.task, &queue, envelope)
                .await
            {
                self.count(&queue, -(size as isize));
                return Err(e.into());
            }
        }
        Ok(id)
    }

    /// Counts a message of `size` bytes on each of `queues`, or fails when
    /// that would pass a queue quota (embedded store only).
    fn admit<'a>(
        &self,
        kind: &str,
        queues: impl IntoIterator<Item = &'a str> + Clone,
        size: usize,
    ) -> Result<()> {
        let Some(queued) = &self.queued else {
            return Ok(());
        };
        let mut q = queued.lock();
        let mut bytes = q.bytes;
        for queue in queues.clone() {
            let subject = || format!("bus message '{kind}' to '{queue}'");
            let depth = q.depth.get(queue).copied().unwrap_or(0);
            if depth >= self.quotas.max_queue_depth {
                return Err(exceeded(
                    subject(),
                    "max_queue_depth",
                    self.quotas.max_queue_depth,
                    "messages",
                    &format!(
                        "queue '{queue}' holds {depth} messages waiting, in flight or dead-lettered"
                    ),
                ));
            }
            bytes += size;
            if bytes > self.quotas.max_queued_bytes {
                return Err(exceeded(
                    subject(),
                    "max_queued_bytes",
                    self.quotas.max_queued_bytes,
                    "bytes",
                    &format!("the task's queues hold {} bytes of messages", q.bytes),
                ));
            }
        }
        for queue in queues {
            count(&mut q, queue, size as isize);
        }
        Ok(())
    }

    /// Adds (or, negative, removes) one message of `size` bytes on `queue` in the ledger.
    fn count(&self, queue: &str, size: isize) {
        let Some(queued) = &self.queued else {
            return;
        };
        count(&mut queued.lock(), queue, size);
    }

    /// Every live agent but the sender: this process's, and those of other
    /// processes sharing the store (their records have not ended).
    async fn broadcast_targets(&self, from: &str) -> Result<BTreeSet<String>> {
        let mut targets: BTreeSet<String> = self.directory.read().keys().cloned().collect();
        for record in self.store.agent_list(&self.task).await? {
            if is_live(&record) {
                targets.insert(record.id);
            }
        }
        targets.remove(from);
        Ok(targets)
    }

    async fn check_recipient(&self, to: &str) -> Result<()> {
        let known = |roles: &RwLock<Vec<String>>| roles.read().iter().any(|r| r == to);
        if self.directory.read().contains_key(to)
            || known(&self.known_roles)
            || known(&self.remote_roles)
        {
            return Ok(());
        }
        let ended = |how: &str| {
            Err(Error::bad_input(
                format!("bus recipient '{to}'"),
                format!("the agent has ended{how}: nobody would read the message"),
            ))
        };
        if self.departed.read().contains(to) {
            return ended("");
        }
        // An agent of another process sharing the store, unless it ended:
        // nobody would ever read a message to it.
        if let Some(record) = self.store.agent_get(&self.task, to).await? {
            if !record.phase.parse().is_ok_and(AgentPhase::is_terminal) {
                return Ok(());
            }
            return ended(&format!(" ({})", record.phase));
        }
        Err(Error::bad_input(
            format!("bus recipient '{to}'"),
            "no live agent has this id and no script has this role",
        ))
    }

    /// Takes the next message for an agent reading `queues`, waiting up to `wait`.
    pub async fn take(
        &self,
        queues: &[String],
        consumer: &str,
        wait: Duration,
    ) -> Result<Option<Delivery>> {
        Ok(self
            .store
            .queue_take(&self.task, queues, consumer, wait)
            .await?)
    }

    /// The handler of `delivery` returned: the message is done.
    pub async fn ack(&self, delivery: &Delivery) -> Result<()> {
        self.store.queue_ack(&self.task, delivery).await?;
        if self.queued.is_some() {
            self.count(
                &delivery.queue,
                -(message_size(&delivery.envelope) as isize),
            );
        }
        Ok(())
    }

    /// The handler of `delivery` failed: redeliver it, or dead-letter it after
    /// `max_attempts`. True when dead-lettered.
    pub async fn nack(&self, delivery: &Delivery) -> Result<bool> {
        Ok(self
            .store
            .queue_nack(&self.task, delivery, self.max_attempts)
            .await?)
    }

    /// Gives back every message agent `consumer` took and did not acknowledge.
    pub async fn release(&self, consumer: &str) -> Result<usize> {
        Ok(self
            .store
            .queue_release_consumer(&self.task, consumer)
            .await?)
    }

    /// True when no message waits or is in flight on a queue a live agent
    /// reads, in any process sharing the store (dead letters do not count,
    /// and neither do messages to an agent that ended or a role nobody runs:
    /// nobody can take those).
    pub async fn is_drained(&self) -> Result<bool> {
        if self.store.queue_is_drained(&self.task).await? {
            return Ok(true);
        }
        let readers = self.live_readers().await?;
        let list = self.store.queue_list(&self.task).await?;
        Ok(list
            .iter()
            .all(|m| m.state == MessageState::Dead || !readers.contains(&m.queue)))
    }

    /// The queues some live agent reads: its id and its role, for the agents
    /// of this process and, on a shared store, of the others.
    async fn live_readers(&self) -> Result<HashSet<String>> {
        let mut readers: HashSet<String> = HashSet::new();
        for (id, role) in self.directory.read().iter() {
            readers.insert(id.clone());
            readers.insert(role.clone());
        }
        if !self.store.is_embedded() {
            for record in self.store.agent_list(&self.task).await? {
                if is_live(&record) {
                    readers.insert(record.id);
                    readers.insert(record.role);
                }
            }
        }
        Ok(readers)
    }

    /// Messages still waiting for a reader, by queue: `(queue, count)`.
    pub async fn undelivered(&self) -> Result<Vec<(String, usize)>> {
        let mut counts = BTreeMap::new();
        for m in self.store.queue_list(&self.task).await? {
            if m.state != MessageState::Dead {
                *counts.entry(m.queue).or_insert(0) += 1;
            }
        }
        Ok(counts.into_iter().collect())
    }
}

/// `origin-n`, written by hand: `format!` costs more than the rest of
/// building a message.
fn message_id(origin: &str, n: u64) -> String {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    let mut rest = n;
    loop {
        start -= 1;
        digits[start] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    let mut id = String::with_capacity(origin.len() + 1 + digits.len() - start);
    id.push_str(origin);
    id.push('-');
    id.extend(digits[start..].iter().map(|&d| char::from(d)));
    id
}

#[cfg(test)]
mod tests {
    #[test]
    fn message_ids_are_origin_dash_number() {
        assert_eq!(super::message_id("ab12", 0), "ab12-0");
        assert_eq!(super::message_id("ab12", 907), "ab12-907");
        assert_eq!(super::message_id("x", u64::MAX), format!("x-{}", u64::MAX));
    }
}
