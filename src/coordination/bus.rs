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

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::RwLock;
use serde_json::Value;

use super::AgentPhase;
use super::blackboard::{check_size, json_size};
use super::journal::{Event, Fast, Journal, SMALL_VALUE_BYTES};
use super::lost::LostWrites;
use super::quotas::{check_name, exceeded};
use super::state::is_live;
use super::turns::Turns;
use crate::config::Quotas;
use crate::error::{Error, Result};
use crate::store::{Delivery, Envelope, MessageState, Pending, Store};

/// How often an agent waiting for its turn looks at its own queue for
/// messages no send announced (given back after a failure, or sent by
/// another process).
const RECHECK_OWN: Duration = Duration::from_millis(100);

/// Longest wait before a message whose handler failed is delivered again.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The address every live agent gets a copy of a message sent to.
pub const BROADCAST: &str = "*";

/// Sends and takes messages of one task.
pub struct MessageBus {
    store: Arc<dyn Store>,
    task: String,
    max_attempts: u32,
    /// Wait before the first redelivery of a message whose handler failed.
    backoff: Duration,
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
    journal: Journal,
    quotas: Quotas,
    /// Messages and bytes on the queues, when the store is embedded.
    queued: Option<parking_lot::Mutex<Queued>>,
    /// The last error of each message whose handler failed and that was not
    /// handled since: why a dead letter died. By message id.
    failures: parking_lot::Mutex<HashMap<String, (String, Error)>>,
    /// `failures` is not empty (checked first, so an acknowledgement costs no lock).
    any_failures: std::sync::atomic::AtomicBool,
    /// Which agent of a role takes the role's next message.
    turns: Turns,
    /// Messages given back with a backoff and not yet in their queue again:
    /// message id -> the agent that holds them meanwhile. Whoever removes an
    /// entry (the redelivery after the backoff, or the release of the agent
    /// when it ends first) gives the message back, and the journal counts it
    /// once. A lock held across the store call, so the two never interleave.
    backing_off: Arc<tokio::sync::Mutex<HashMap<String, String>>>,
    /// Sends the store did not apply (see [`LostWrites`]).
    lost: Arc<LostWrites>,
}

/// A message given up on after `max_attempts` deliveries, with why.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// The queue it was taken from (an agent id or a role).
    pub queue: String,
    /// The message.
    pub envelope: Envelope,
    /// The agent whose handler failed last, and its error, when this process saw it.
    pub last_failure: Option<(String, Error)>,
}

/// What the task's queues hold (embedded store): messages per queue, bytes in all.
#[derive(Default)]
struct Queued {
    depth: crate::fast_map::FastMap<String, usize>,
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
        backoff: Duration,
        quotas: Quotas,
        journal: Journal,
    ) -> Self {
        let queued = store.is_embedded().then(parking_lot::Mutex::default);
        MessageBus {
            lost: Arc::default(),
            quotas,
            queued,
            store,
            task: task.to_string(),
            max_attempts,
            backoff,
            max_value_bytes,
            // Fixed under the test clock, so message ids repeat run after run.
            origin: if super::clock::is_test_clock() {
                "00000000".to_string()
            } else {
                format!("{:08x}", rand::random::<u32>())
            },
            next_id: AtomicU64::new(1),
            directory: RwLock::default(),
            departed: RwLock::default(),
            known_roles: RwLock::default(),
            remote_roles: RwLock::default(),
            journal,
            failures: parking_lot::Mutex::default(),
            any_failures: std::sync::atomic::AtomicBool::new(false),
            backing_off: Arc::default(),
            turns: Turns::default(),
        }
    }

    /// The same bus, counting the sends the store did not apply in `lost`
    /// (the run's, shared with the blackboard).
    pub(super) fn counting_lost(mut self, lost: Arc<LostWrites>) -> Self {
        self.lost = lost;
        self
    }

    /// Records a live agent, so it can be addressed and receives broadcasts.
    pub fn join(&self, id: &str, role: &str) {
        let previous = self
            .directory
            .write()
            .insert(id.to_string(), role.to_string());
        if previous.is_none() {
            self.turns.join(id, role);
        }
    }

    /// Removes an agent that ends: it gets no more broadcasts, and messages
    /// to it are refused from now on.
    pub fn leave(&self, id: &str) {
        if let Some(role) = self.directory.write().remove(id) {
            self.turns.leave(id, &role);
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

    /// Sends a message and waits until the store has it; returns its id.
    /// `to` is an agent id, a role, or `*`. (`to` and `kind` are taken as
    /// given, so callers holding Strings hand them over without a copy.)
    pub async fn send(
        &self,
        from: &str,
        to: impl Into<Arc<str>>,
        kind: impl Into<Arc<str>>,
        payload: Value,
    ) -> Result<String> {
        let (id, _, pending) = self
            .send_as(from, to.into(), kind.into(), payload, None)
            .await?;
        pending.settle().await?;
        Ok(id.to_string())
    }

    /// Sends a message without waiting for the store's answer; returns its id
    /// and the write to settle (see [`Writes`](crate::store::Writes)). A bad
    /// recipient or payload fails here; a store failure when settled.
    pub async fn send_nowait(
        &self,
        from: &str,
        to: impl Into<Arc<str>>,
        kind: impl Into<Arc<str>>,
        payload: Value,
    ) -> Result<(String, Pending)> {
        let (id, _, pending) = self
            .send_as(from, to.into(), kind.into(), payload, None)
            .await?;
        Ok((id.to_string(), pending))
    }

    /// Sends a reply to the message `reply_to` (see [`Envelope::reply_to`]);
    /// returns its id.
    pub async fn reply(
        &self,
        from: &str,
        to: String,
        kind: String,
        payload: Value,
        reply_to: String,
    ) -> Result<String> {
        let (id, _, pending) = self
            .send_as(from, to.into(), kind.into(), payload, Some(reply_to))
            .await?;
        pending.settle().await?;
        Ok(id.to_string())
    }

    /// Sends a copy to every other live agent, or to every live agent of
    /// `role`; returns the message id and how many agents it reached.
    pub async fn broadcast(
        &self,
        from: &str,
        kind: String,
        payload: Value,
        role: Option<&str>,
    ) -> Result<(String, usize)> {
        let to = match role {
            Some(role) => format!("{BROADCAST}{role}"),
            None => BROADCAST.to_string(),
        };
        let (id, reached, pending) = self
            .send_as(from, to.into(), kind.into(), payload, None)
            .await?;
        pending.settle().await?;
        Ok((id.to_string(), reached))
    }

    /// Sends to `to` (an agent id, a role, `*`, or `*<role>` for every agent of
    /// a role); returns the id, how many queues got it, and the write to
    /// settle (a copy to several queues is settled already).
    async fn send_as(
        &self,
        from: &str,
        to: Arc<str>,
        kind: Arc<str>,
        payload: Value,
        reply_to: Option<String>,
    ) -> Result<(Arc<str>, usize, Pending)> {
        check_name("message type", &kind)?;
        check_name("bus recipient", &to)?;
        let bytes = check_size(&payload, self.max_value_bytes, || {
            format!("message '{kind}' to '{to}'")
        })?;
        let everyone = to.strip_prefix(BROADCAST).map(str::to_string);
        if everyone.is_none() {
            self.check_recipient(&to, reply_to.is_some()).await?;
        }
        let id = message_id(&self.origin, self.next_id.fetch_add(1, Ordering::Relaxed));
        let envelope = Envelope {
            id: id.clone(),
            from: from.into(),
            to,
            kind,
            payload,
            attempts: 0,
            reply_to,
        };
        let size = message_size(&envelope);
        if let Some(role) = everyone {
            let role = (!role.is_empty()).then_some(role.as_str());
            let targets = self.broadcast_targets(from, role).await?;
            self.admit(&envelope.kind, targets.iter().map(String::as_str), size)?;
            for target in &targets {
                if let Err(e) = self.store.queue_push(&self.task, target, &envelope).await {
                    // Lost work even if the script catches the error.
                    let what = || format!("message '{}' to '{target}'", envelope.kind);
                    self.lost.record(what, &e.to_string());
                    // Those not pushed yet were counted too.
                    for t in targets.iter().skip_while(|t| *t != target) {
                        self.count(t, -(size as isize));
                    }
                    return Err(e.into());
                }
                self.turns.mail(target);
            }
            self.journal.note(|| sent(&envelope, bytes));
            return Ok((id, targets.len(), Pending::done(Ok(()))));
        }
        let pending = self.push_one(envelope, size, bytes)?;
        Ok((id, 1, pending))
    }

    /// Sends a message without waiting, when nothing about it needs the store
    /// first: `to` is a live agent of this process or a known role. Returns
    /// the id and the write to settle, or `None` when [`send_nowait`](Self::send_nowait)
    /// must do it (a broadcast, or a recipient only the store can vouch for).
    /// The names are taken as given: a sender that keeps them shared
    /// (`Arc<str>`) sends without copying them.
    pub fn send_now(
        &self,
        from: impl Into<Arc<str>>,
        to: Arc<str>,
        kind: Arc<str>,
        payload: Value,
    ) -> Result<Option<(Arc<str>, Pending)>> {
        if to.starts_with(BROADCAST) || !self.is_known_locally(&to) {
            return Ok(None);
        }
        check_name("message type", &kind)?;
        check_name("bus recipient", &to)?;
        let bytes = check_size(&payload, self.max_value_bytes, || {
            format!("message '{kind}' to '{to}'")
        })?;
        let id = message_id(&self.origin, self.next_id.fetch_add(1, Ordering::Relaxed));
        let envelope = Envelope {
            id: id.clone(),
            from: from.into(),
            to,
            kind,
            payload,
            attempts: 0,
            reply_to: None,
        };
        let size = message_size(&envelope);
        Ok(Some((id, self.push_one(envelope, size, bytes)?)))
    }

    /// Counts `envelope` (of `bytes` of payload) against the queue quotas
    /// and sends it to its recipient's queue without waiting. It is
    /// journaled as sent once it is known to be in the queue: at once on the
    /// embedded store (the only one with a ledger), where a push cannot
    /// fail; when the write is settled on a server, which may refuse it.
    fn push_one(&self, envelope: Envelope, size: usize, bytes: usize) -> Result<Pending> {
        let queue = envelope.to.clone();
        self.admit(&envelope.kind, [&*queue], size)?;
        let journaled = if !self.journal.is_on() {
            None
        } else if self.store.is_embedded() {
            self.journal.note(|| sent(&envelope, bytes));
            None
        } else {
            Some(self.journal.deferred(sent_event(&envelope, bytes)))
        };
        // The embedded store applies a send at once: nothing to count later.
        let kind = (!self.store.is_embedded()).then(|| envelope.kind.clone());
        let mut pending = self.store.queue_push_nowait(&self.task, &queue, envelope);
        if let Some(record) = journaled {
            pending = pending.on_success(record);
        }
        if let Some(kind) = kind {
            // A send not applied is lost work whatever the script does
            // with the error its settling raises.
            let (lost, to) = (self.lost.clone(), queue.clone());
            pending = pending.on_settled(move |outcome| {
                if let Some(error) = super::lost::why(outcome) {
                    lost.record(|| format!("message '{kind}' to '{to}'"), &error);
                }
            });
        }
        self.turns.mail(&queue);
        Ok(pending)
    }

    /// True when `to` is a live agent of this process or a role with a script.
    fn is_known_locally(&self, to: &str) -> bool {
        let known = |roles: &RwLock<Vec<String>>| roles.read().iter().any(|r| r == to);
        self.directory.read().contains_key(to)
            || known(&self.known_roles)
            || known(&self.remote_roles)
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
        let q = &mut *q;
        let mut names = queues.clone().into_iter();
        if let (Some(queue), None) = (names.next(), names.next()) {
            // One queue, as every send but a broadcast: one look-up.
            let depth = q.depth.get_mut(queue);
            let held = depth.as_deref().copied().unwrap_or(0);
            self.check_room(kind, queue, held, q.bytes, q.bytes + size)?;
            match depth {
                Some(d) => *d += 1,
                None => {
                    q.depth.insert(queue.to_string(), 1);
                }
            }
            q.bytes += size;
            return Ok(());
        }
        let mut bytes = q.bytes;
        for queue in queues.clone() {
            let held = q.depth.get(queue).copied().unwrap_or(0);
            bytes += size;
            self.check_room(kind, queue, held, q.bytes, bytes)?;
        }
        for queue in queues {
            count(q, queue, size as isize);
        }
        Ok(())
    }

    /// Fails when `queue`, holding `depth` messages, is full, or when the
    /// task's queues, holding `held` bytes, would hold `bytes` (too many).
    fn check_room(
        &self,
        kind: &str,
        queue: &str,
        depth: usize,
        held: usize,
        bytes: usize,
    ) -> Result<()> {
        let subject = || format!("bus message '{kind}' to '{queue}'");
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
        if bytes > self.quotas.max_queued_bytes {
            return Err(exceeded(
                subject(),
                "max_queued_bytes",
                self.quotas.max_queued_bytes,
                "bytes",
                &format!("the task's queues hold {held} bytes of messages"),
            ));
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

    /// Every live agent but the sender (of `role` only, when given): this
    /// process's, and those of other processes sharing the store (their
    /// records have not ended).
    async fn broadcast_targets(&self, from: &str, role: Option<&str>) -> Result<BTreeSet<String>> {
        let of_role = |r: &str| role.is_none_or(|wanted| wanted == r);
        let mut targets: BTreeSet<String> = self
            .directory
            .read()
            .iter()
            .filter(|(_, r)| of_role(r))
            .map(|(id, _)| id.clone())
            .collect();
        for record in self.store.agent_list(&self.task).await? {
            if is_live(&record) && of_role(&record.role) {
                targets.insert(record.id);
            }
        }
        targets.remove(from);
        Ok(targets)
    }

    /// Fails a send to an agent that has ended (nobody would read it) or
    /// never was. Not a `reply`: a requester that stopped waiting and ended
    /// is the normal end of `bus.request`'s timeout, and failing the reply
    /// gave the request back to be done again, `max_attempts` times, then
    /// failed the run; the reply stays on the ended agent's queue, which the
    /// report lists as `undelivered` (not fatal).
    async fn check_recipient(&self, to: &str, reply: bool) -> Result<()> {
        if self.is_known_locally(to) {
            return Ok(());
        }
        let ended = |how: &str| {
            if reply {
                return Ok(());
            }
            Err(Error::bad_input(
                format!("recipient '{to}'"),
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
            format!("recipient '{to}'"),
            "no live agent has this id and no script has this role",
        ))
    }

    /// Takes the next message for an agent reading `queues` (its own queue,
    /// then its role's), waiting up to `wait`. When several agents of the role
    /// run in this process, a message of the role goes to the one that has
    /// waited longest (see [`turns`](super::turns)); messages to the agent
    /// itself never wait for that.
    pub async fn take(
        &self,
        queues: &[String],
        consumer: &str,
        wait: Duration,
    ) -> Result<Option<Delivery>> {
        match queues {
            [_, role] if self.turns.is_shared(role) => {
                self.take_in_turn(queues, role, consumer, wait).await
            }
            _ => Ok(self
                .store
                .queue_take(&self.task, queues, consumer, wait)
                .await?),
        }
    }

    async fn take_in_turn(
        &self,
        queues: &[String],
        role: &str,
        consumer: &str,
        wait: Duration,
    ) -> Result<Option<Delivery>> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut ticket = self.turns.enter(role, consumer);
        let changed = ticket.changed();
        loop {
            let moved = changed.notified();
            tokio::pin!(moved);
            moved.as_mut().enable();
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if ticket.is_first() {
                let taken = self
                    .store
                    .queue_take(&self.task, queues, consumer, left)
                    .await?;
                if taken.is_some() {
                    ticket.took();
                }
                return Ok(taken);
            }
            // Another agent of the role has waited longer: the role's
            // messages are its. Our own are ours at once.
            // Unless the store already handed us one of the role's messages,
            // read ahead with our own while we had the turn: no other agent
            // can take it now, so it is ours to handle.
            if let Some(d) = self
                .store
                .queue_take_held(&self.task, &queues[1..], consumer)
            {
                ticket.took();
                return Ok(Some(d));
            }
            let deferring = ticket.defer();
            let mail = deferring.notify.notified();
            let own = &queues[..1];
            if let Some(d) = self
                .store
                .queue_take(&self.task, own, consumer, Duration::ZERO)
                .await?
            {
                // A message to the agent itself: its place in line stays.
                return Ok(Some(d));
            }
            if left.is_zero() {
                return Ok(None);
            }
            // Messages given back to our own queue wake nobody: look again now and then.
            tokio::select! {
                _ = moved => {}
                _ = mail => {}
                _ = tokio::time::sleep(left.min(RECHECK_OWN)) => {}
            }
        }
    }

    /// A message this process already holds for the agent reading `queues`,
    /// taken without waiting; `None` when [`take`](Self::take) must look.
    pub fn take_ready(&self, queues: &[String], consumer: &str) -> Option<Delivery> {
        match queues {
            // Whose turn it is for the role's messages needs `take`: only
            // the agent's own messages are ready here.
            [own, role] if self.turns.is_shared(role) => {
                self.store
                    .queue_take_ready(&self.task, std::slice::from_ref(own), consumer)
            }
            _ => self.store.queue_take_ready(&self.task, queues, consumer),
        }
    }

    /// Acknowledges `delivery` without waiting for the store; the write to
    /// settle. It is journaled as handled once acknowledged: at once on the
    /// embedded store, where an acknowledgement cannot fail; when the write
    /// is settled on a server.
    pub fn ack_nowait(&self, delivery: &Delivery) -> Pending {
        let mut pending = self.store.queue_ack_nowait(&self.task, delivery);
        if self.journal.is_on() {
            if self.store.is_embedded() {
                self.journal.note(|| settled(delivery, Settled::Handled));
            } else {
                let e = &delivery.envelope;
                // `String::from`: `to_string` would go through `Display`.
                pending = pending.on_success(self.journal.deferred(Event::MessageHandled {
                    id: String::from(&*e.id),
                    from: String::from(&*e.from),
                    message_type: String::from(&*e.kind),
                    attempt: e.attempts,
                }));
            }
        }
        if self.queued.is_some() {
            self.count(
                &delivery.queue,
                -(message_size(&delivery.envelope) as isize),
            );
        }
        pending
    }

    /// The handler of `delivery` returned: the message is done.
    pub async fn ack(&self, delivery: &Delivery) -> Result<()> {
        self.store.queue_ack(&self.task, delivery).await?;
        self.journal.note(|| settled(delivery, Settled::Handled));
        if self.queued.is_some() {
            self.count(
                &delivery.queue,
                -(message_size(&delivery.envelope) as isize),
            );
        }
        if self.any_failures.load(Ordering::Relaxed) {
            let mut failures = self.failures.lock();
            failures.remove(&*delivery.envelope.id);
            self.any_failures
                .store(!failures.is_empty(), Ordering::Relaxed);
        }
        Ok(())
    }

    /// The handler of `delivery`, run by `agent`, failed with `cause`:
    /// dead-letter it when it has been delivered `max_attempts` times (true),
    /// else give it back for redelivery after a backoff (the setting
    /// `redelivery_backoff`, doubling with each attempt, at most
    /// [`MAX_BACKOFF`]): a handler broken by an edit does not burn through
    /// every attempt within a millisecond. Until then the message stays
    /// taken (so the task does not go quiet over it); if the agent ends
    /// meanwhile, releasing it gives the message back at once. The cause is
    /// kept for the report of a dead letter.
    pub async fn nack(&self, delivery: &Delivery, agent: &str, cause: &Error) -> Result<bool> {
        {
            let mut failures = self.failures.lock();
            failures.insert(
                delivery.envelope.id.to_string(),
                (agent.to_string(), cause.clone()),
            );
            self.any_failures.store(true, Ordering::Relaxed);
        }
        let attempts = delivery.envelope.attempts;
        if attempts >= self.max_attempts || self.backoff.is_zero() {
            let dead = self
                .store
                .queue_nack(&self.task, delivery, self.max_attempts)
                .await?;
            self.journal
                .note(|| settled(delivery, Settled::GivenBack { dead }));
            return Ok(dead);
        }
        let id = delivery.envelope.id.to_string();
        self.backing_off
            .lock()
            .await
            .insert(id.clone(), agent.to_string());
        self.journal
            .note(|| settled(delivery, Settled::GivenBack { dead: false }));
        let delay = self
            .backoff
            .saturating_mul(1 << attempts.saturating_sub(1).min(16))
            .min(MAX_BACKOFF);
        let (store, task, delivery) = (self.store.clone(), self.task.clone(), delivery.clone());
        let max_attempts = self.max_attempts;
        let backing_off = self.backing_off.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let mut backing_off = backing_off.lock().await;
            // Gone: its agent ended meanwhile, and releasing it gave it back.
            if backing_off.remove(&id).is_none() {
                return;
            }
            if let Err(e) = store.queue_nack(&task, &delivery, max_attempts).await {
                tracing::warn!(queue = %delivery.queue, "cannot give back message {}: {e}", delivery.envelope.id);
            }
        });
        Ok(false)
    }

    /// Gives the dead letters taken from `queue` back to it, their attempts
    /// starting over (hot reload replaced the code that failed them);
    /// returns how many.
    pub async fn revive(&self, queue: &str) -> Result<usize> {
        Ok(self.store.queue_revive(&self.task, queue).await?)
    }

    /// Every dead-lettered message of the task (in any process sharing the
    /// store), with the last error its handler raised where this process saw it.
    pub async fn dead_letters(&self) -> Result<Vec<DeadLetter>> {
        let list = self.store.queue_list(&self.task).await?;
        let failures = self.failures.lock();
        Ok(list
            .into_iter()
            .filter(|m| m.state == MessageState::Dead)
            .map(|m| DeadLetter {
                last_failure: failures.get(&*m.envelope.id).cloned(),
                queue: m.queue,
                envelope: m.envelope,
            })
            .collect())
    }

    /// Gives back every message agent `consumer` took and did not
    /// acknowledge, those waiting out a redelivery backoff included (they
    /// go back at once). The journal counts only the others as released:
    /// those were journaled given back already.
    pub async fn release(&self, consumer: &str) -> Result<usize> {
        let mut backing_off = self.backing_off.lock().await;
        let before = backing_off.len();
        backing_off.retain(|_, holder| holder != consumer);
        let given_back = before - backing_off.len();
        let count = self
            .store
            .queue_release_consumer(&self.task, consumer)
            .await?;
        drop(backing_off);
        let released = count.saturating_sub(given_back);
        if released > 0 {
            self.journal
                .record_for(consumer, || Event::MessagesReleased { count: released });
        }
        Ok(count)
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

/// The journal event of a message sent, with its payload when it is small.
fn sent(envelope: &Envelope, bytes: usize) -> Fast<'_> {
    Fast::MessageSent {
        id: &envelope.id,
        to: &envelope.to,
        message_type: &envelope.kind,
        bytes,
        payload: &envelope.payload,
    }
}

/// The same, owned, to journal once the write is settled.
fn sent_event(envelope: &Envelope, bytes: usize) -> Event {
    Event::MessageSent {
        // `String::from`: `to_string` would go through `Display`.
        id: String::from(&*envelope.id),
        to: String::from(&*envelope.to),
        message_type: String::from(&*envelope.kind),
        bytes,
        payload: (bytes <= SMALL_VALUE_BYTES).then(|| envelope.payload.clone()),
    }
}

/// How a delivery ended.
enum Settled {
    Handled,
    GivenBack { dead: bool },
}

/// The journal event of a delivery that ended `how`.
fn settled(delivery: &Delivery, how: Settled) -> Fast<'_> {
    let e = &delivery.envelope;
    let (id, from, message_type) = (&*e.id, &*e.from, &*e.kind);
    match how {
        Settled::Handled => Fast::MessageHandled {
            id,
            from,
            message_type,
            attempt: e.attempts,
        },
        Settled::GivenBack { dead: false } => Fast::MessageGivenBack {
            id,
            from,
            message_type,
            attempt: e.attempts,
        },
        Settled::GivenBack { dead: true } => Fast::MessageDeadLettered {
            id,
            from,
            message_type,
            attempts: e.attempts,
        },
    }
}

/// `origin-n`, written with `itoa` on the stack and allocated once, shared
/// by the envelope and the sender: `format!` costs more than the rest of
/// building a message.
fn message_id(origin: &str, n: u64) -> Arc<str> {
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(n);
    let mut id = [0u8; 64];
    let len = origin.len() + 1 + digits.len();
    if len > id.len() {
        return format!("{origin}-{digits}").into();
    }
    id[..origin.len()].copy_from_slice(origin.as_bytes());
    id[origin.len()] = b'-';
    id[origin.len() + 1..len].copy_from_slice(digits.as_bytes());
    // SAFETY: two `str`s and an ASCII dash between them are UTF-8 (checking
    // it again was a tenth of this function).
    unsafe { std::str::from_utf8_unchecked(&id[..len]) }.into()
}

#[cfg(test)]
mod tests {
    #[test]
    fn message_ids_are_origin_dash_number() {
        assert_eq!(&*super::message_id("ab12", 0), "ab12-0");
        assert_eq!(&*super::message_id("ab12", 907), "ab12-907");
        assert_eq!(
            &*super::message_id("x", u64::MAX),
            format!("x-{}", u64::MAX)
        );
        let long = "o".repeat(60);
        assert_eq!(&*super::message_id(&long, 7), format!("{long}-7"));
    }
}
