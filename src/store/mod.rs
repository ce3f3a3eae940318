//! Where shared state lives: the [`Store`] trait and its backends.
//!
//! The store knows nothing of Lua. It offers the operations the coordination
//! layer needs (blackboard, queues, agent records, locks, metric counters), each
//! atomic on its own, for one task at a time. A new backend is a new file here.

mod memory;
mod redis;
mod writes;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::broadcast;

pub use memory::{EVENT_BUFFER, MemoryStore};
pub use redis::{RedisStore, redact_url};
pub use writes::{Outcome, Pending, Sent, Writes};

/// Opens the store `url` names: `memory`, or a Redis-protocol server
/// (`redis://` or `rediss://`, with user, password and database in it). A
/// server that cannot be reached within `connect_timeout` is `Unavailable`
/// naming the URL (without password); a URL that does not parse is `BadUrl`.
pub async fn open(url: &str, connect_timeout: Duration) -> StoreResult<Arc<dyn Store>> {
    check_url(url).map_err(|reason| StoreError::BadUrl {
        url: redact_url(url),
        reason,
    })?;
    if url == "memory" {
        return Ok(Arc::new(MemoryStore::new()));
    }
    Ok(Arc::new(RedisStore::connect(url, connect_timeout).await?))
}

/// Checks a store setting: `memory`, or a well-formed `redis://` /
/// `rediss://` URL with a host. The message says what is wrong.
pub fn check_url(store: &str) -> std::result::Result<(), String> {
    if store == "memory" {
        return Ok(());
    }
    if !store.starts_with("redis://") && !store.starts_with("rediss://") {
        return Err(format!(
            "'{store}' is neither 'memory' nor a redis:// or rediss:// URL"
        ));
    }
    let shown = redact_url(store);
    match ::redis::parse_redis_url(store) {
        // What the client refuses only when it connects (a database that
        // is not a number) is refused here too, naming where it was set.
        Some(url) if url.host_str().is_some_and(|h| !h.is_empty()) => {
            ::redis::IntoConnectionInfo::into_connection_info(store)
                .map(|_| ())
                .map_err(|e| {
                    // "Invalid database number - InvalidClientConfig": the
                    // reason without the client's kind.
                    let text = e.to_string();
                    let reason = text.split_once(" - ").map_or(text.as_str(), |(r, _)| r);
                    format!("'{shown}': {reason} (expected redis://HOST[:PORT][/DB])")
                })
        }
        Some(_) => Err(format!(
            "'{shown}' names no host (expected redis://HOST[:PORT][/DB])"
        )),
        None => Err(format!(
            "'{shown}' is not a valid URL (expected redis://HOST[:PORT][/DB])"
        )),
    }
}

/// A failure of the store itself (not of the caller's input).
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The store setting is not `memory` or a usable `redis://` URL.
    #[error("{reason}")]
    BadUrl {
        /// The setting (password hidden).
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The server could not be reached within the configured time.
    #[error("store {url} unreachable: {reason}")]
    Unavailable {
        /// The store URL (without password).
        url: String,
        /// What the connection attempt reported.
        reason: String,
    },
    /// The server answered with an error.
    #[error("store command {command} failed: {reason}")]
    Command {
        /// The command or operation that failed.
        command: String,
        /// The server's answer.
        reason: String,
    },
    /// This process was declared lost and fenced out of the task: the
    /// server refuses its writes.
    #[error("fenced: {reason} (refused: {command})")]
    Fenced {
        /// The operation that was refused.
        command: String,
        /// The server's words.
        reason: String,
    },
    /// A stored value could not be decoded.
    #[error("store key {key} holds a corrupt value: {reason}")]
    Corrupt {
        /// The key holding it.
        key: String,
        /// Why it could not be decoded.
        reason: String,
    },
}

/// Result of a store operation.
pub type StoreResult<T> = Result<T, StoreError>;

/// A message on the bus, as stored in a queue.
///
/// The names are shared (`Arc<str>`): a sender sends to the same recipient
/// with the same type again and again, and the embedded store hands the
/// envelope out as it was pushed, so a message allocates its id and not
/// its names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Unique within the task.
    pub id: Arc<str>,
    /// Sender agent id.
    pub from: Arc<str>,
    /// Recipient as written by the sender: an agent id, a role or `*`.
    pub to: Arc<str>,
    /// Message type, chosen by the scripts.
    #[serde(rename = "type")]
    pub kind: Arc<str>,
    /// Any JSON value.
    pub payload: Value,
    /// How many times it has been handed out before this delivery.
    #[serde(default)]
    pub attempts: u32,
    /// The id of the message this one answers (`bus.reply`), if it is a reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
}

/// A message handed to a consumer, to be acknowledged (or given back) later.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The queue it came from.
    pub queue: Arc<str>,
    /// The message, with `attempts` counting this delivery (shared with the
    /// store's record of the message in flight, so handing it out copies nothing).
    pub envelope: Arc<Envelope>,
    /// Backend-specific handle used by ack/nack.
    pub receipt: Receipt,
}

/// How the store that handed out a [`Delivery`] finds it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Receipt {
    /// The embedded store's: the number of the delivery (a number, not
    /// text, so a message pays no formatting, parsing or allocation for it).
    Number(u64),
    /// A server's: the id of the stream entry.
    Entry(String),
}

impl Receipt {
    /// The stream entry's id; empty for a receipt of the embedded store,
    /// which no server knows.
    pub fn entry(&self) -> &str {
        match self {
            Receipt::Entry(id) => id,
            Receipt::Number(_) => "",
        }
    }
}

/// A change on the blackboard, published atomically with the write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlackboardEvent {
    /// The key that changed (without the task prefix).
    pub key: String,
    /// The new value; `None` when deleted.
    pub value: Option<Value>,
}

/// One agent's record: phase, history, heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentRecord {
    /// Agent id (`alpha`, `beta-2`, ...).
    pub id: String,
    /// Its role (script name).
    pub role: String,
    /// Current phase name (`INIT`, `READY`, ...).
    pub phase: String,
    /// Every phase entered, in order, with the time (ms since the epoch).
    pub history: Vec<PhaseEntry>,
    /// Last time the agent was seen alive (ms since the epoch).
    pub heartbeat_ms: u64,
    /// Id of the process running it (`hostname:pid-xxxx`).
    pub host: String,
    /// Why it failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A phase an agent entered and when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseEntry {
    /// Phase name.
    pub phase: String,
    /// When (ms since the epoch).
    pub at_ms: u64,
}

/// A message waiting on a queue or parked as a dead letter, for `orrery inspect`.
#[derive(Debug, Clone, Serialize)]
pub struct QueuedMessage {
    /// Queue name (agent id or role).
    pub queue: String,
    /// The message.
    pub envelope: Envelope,
    /// Waiting (or delivered and not acknowledged), or a dead letter.
    pub state: MessageState,
}

text_enum! {
    /// Where a queued message stands.
    pub enum MessageState {
        /// Waiting, or delivered but not acknowledged.
        Pending = "pending",
        /// Delivered `max_attempts` times without success: a dead letter.
        Dead = "dead",
    }
}

/// Where a task stands, as the process that owns it records it in the store, so
/// other processes can join it and `orrery inspect` can show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// The task definition (the task file, as JSON).
    pub definition: Value,
    /// `running`, `stopping` once the owner decided the end, then
    /// `complete`, `failed` or `timeout`.
    pub status: RunStatus,
    /// Host id of the owning process (`hostname:pid`).
    pub owner: String,
    /// Roles the owner has scripts for, so joiners can address them.
    #[serde(default)]
    pub roles: Vec<String>,
    /// When the run started (ms since the epoch).
    pub started_ms: u64,
    /// When it ended (ms since the epoch), once it has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_ms: Option<u64>,
    /// False when the owner keeps no journal stream (`journal_max_len = 0`),
    /// so `orrery tail` says there is nothing to follow. Records written
    /// before the field existed read as true.
    #[serde(default = "journal_kept")]
    pub journal: bool,
    /// The owner's `heartbeat_interval` (ms): its processes are lost once
    /// silent for [`LOST_AFTER_BEATS`](crate::coordination::LOST_AFTER_BEATS)
    /// of them. 0 in records written before the field existed.
    #[serde(default)]
    pub heartbeat_interval: u64,
}

fn journal_kept() -> bool {
    true
}

text_enum! {
    /// Where a task's run stands, as its owner records it.
    pub enum RunStatus {
        /// Agents work.
        Running = "running",
        /// The owner decided the end: joined processes stop their agents.
        Stopping = "stopping",
        /// Ended complete.
        Complete = "complete",
        /// Ended failed.
        Failed = "failed",
        /// Ended when its time ran out.
        Timeout = "timeout",
        /// Stopped from outside (Ctrl-C) before it ended.
        Interrupted = "interrupted",
    }
}

impl TaskRecord {
    /// True while the owner has not recorded an end.
    pub fn is_running(&self) -> bool {
        self.status == RunStatus::Running
    }
}

/// A process taking part in a task: its liveness and whether its agents are busy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostRecord {
    /// `hostname:pid`.
    pub id: String,
    /// Whether it runs the task or adds agents to it.
    pub role: HostRole,
    /// Alive, left (ended normally) or lost (stopped heartbeating).
    pub state: HostState,
    /// Last heartbeat (ms since the epoch).
    pub heartbeat_ms: u64,
    /// Agents of this host busy at the last heartbeat.
    pub busy: usize,
    /// Moves whenever one of its agents goes busy or idle.
    pub epoch: u64,
    /// Once it is lost: the silence after which the process that declared
    /// it lost did so (that process's loss limit, ms), for the fenced
    /// process to name; none when it was fenced for another reason (its
    /// agents adopted by a fleet's worker).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lost_after_ms: Option<u64>,
}

text_enum! {
    /// What a process does in a task.
    pub enum HostRole {
        /// Runs the task (started it with `orrery run TASK_FILE`).
        Owner = "owner",
        /// Adds agents to it (`orrery run --join`).
        Joiner = "joiner",
    }
}

text_enum! {
    /// Whether a process still takes part in a task.
    pub enum HostState {
        /// Heartbeating.
        Alive = "alive",
        /// Ended normally.
        Left = "left",
        /// Stopped heartbeating and was declared lost.
        Lost = "lost",
    }
}

/// The operations the host needs from shared state, scoped by task id: the
/// four families below, each implemented by a backend in a file of its own.
///
/// Every method is atomic on its own. Implementations must be usable from many
/// tokio tasks at once.
pub trait Store:
    BlackboardStore + QueueStore + RecordStore + LockStore + Send + Sync + 'static
{
    /// A short name for messages (`memory`, `redis://host:port/0`).
    fn describe(&self) -> String;

    /// True when every future this store returns is ready on first poll, so
    /// callers may drive it without yielding (the embedded store).
    fn is_embedded(&self) -> bool {
        false
    }

    /// Moves whenever the store's connection is replaced. A [`Pending`] write
    /// sent under an earlier epoch may be applied after writes sent under a
    /// later one, so a caller keeping order settles its older writes first
    /// (see [`Writes`]).
    fn epoch(&self) -> u64 {
        0
    }

    /// This process now reads the own queue of agent `agent`, which ran in
    /// another process (it is resumed or adopted here): messages given
    /// back there by any process are delivered here too. (A process
    /// otherwise looks for messages given back on an agent's own queue
    /// only when it gave them back itself.)
    fn queue_adopt(&self, task: &str, agent: &str) {
        let _ = (task, agent);
    }
}

/// The blackboard: shared key/value state of a task, and its change events.
#[async_trait]
pub trait BlackboardStore: Send + Sync {
    /// Stores `value` under `key`, expiring after `ttl`, and publishes the change.
    async fn bb_set(&self, task: &str, key: &str, value: &Value, ttl: Duration) -> StoreResult<()>;
    /// Sends the same write as [`bb_set`](Self::bb_set) without waiting for
    /// its outcome: anything the caller sends later is applied after it.
    fn bb_set_nowait(&self, task: &str, key: &str, value: &Value, ttl: Duration) -> Pending;
    /// Reads `key`.
    async fn bb_get(&self, task: &str, key: &str) -> StoreResult<Option<Value>>;
    /// Sends the read of `key` now, so it is applied after what the caller
    /// sent before and before what it sends next; the answer comes later.
    fn bb_get_sent(&self, task: &str, key: &str) -> Sent<Option<Value>>;
    /// Deletes `key`; true when it existed. Publishes the change.
    async fn bb_delete(&self, task: &str, key: &str) -> StoreResult<bool>;
    /// Every live key starting with `prefix`, sorted.
    async fn bb_keys(&self, task: &str, prefix: &str) -> StoreResult<Vec<String>>;
    /// Replaces the value of `key` with `new` (deleting it when `None`) only if it
    /// currently equals `expected` (absent when `None`). True when swapped.
    async fn bb_compare_and_set(
        &self,
        task: &str,
        key: &str,
        expected: Option<&Value>,
        new: Option<&Value>,
        ttl: Duration,
    ) -> StoreResult<bool>;
    /// A stream of every blackboard change of the task from now on.
    async fn bb_subscribe(&self, task: &str) -> StoreResult<broadcast::Receiver<BlackboardEvent>>;
    /// Blackboard changes this process published that its own watchers have not
    /// received yet. The embedded store delivers them before the write returns.
    fn events_in_flight(&self, _task: &str) -> usize {
        0
    }
}

/// Message queues: at-least-once delivery with acknowledgement, redelivery
/// and dead letters.
#[async_trait]
pub trait QueueStore: Send + Sync {
    /// Appends `envelope` to `queue`.
    async fn queue_push(&self, task: &str, queue: &str, envelope: &Envelope) -> StoreResult<()>;
    /// Sends the same write as [`queue_push`](Self::queue_push), taking the
    /// envelope by value, without waiting for its outcome: anything the caller
    /// sends later is applied after it. A push whose outcome stays unknown
    /// (the connection dropped) is sent again, so the message may arrive twice
    /// under the same id: delivery is at least once.
    fn queue_push_nowait(&self, task: &str, queue: &str, envelope: Envelope) -> Pending;
    /// Takes the oldest message from the first of `queues` that has one, waiting
    /// up to `wait` for one to arrive. `consumer` names the taker, so a message it
    /// never acknowledges can be handed to another consumer later. A message
    /// given back (nack, released consumer) comes before newer ones.
    ///
    /// Cancel safety: the future may be dropped while it waits (the agent's
    /// event loop races it against blackboard changes and the stop signal). No
    /// message is lost then: one taken for `consumer` after the drop is kept for
    /// that consumer and returned by its next `queue_take`, or handed back by
    /// [`queue_release_consumer`](QueueStore::queue_release_consumer).
    async fn queue_take(
        &self,
        task: &str,
        queues: &[String],
        consumer: &str,
        wait: Duration,
    ) -> StoreResult<Option<Delivery>>;
    /// A message of `queues` that the store already handed to `consumer`
    /// (read ahead with another of its queues) and that no other consumer
    /// can take any more; `None` when there is none. Unlike
    /// [`queue_take_ready`](Self::queue_take_ready) it never takes a message
    /// still open to others, so an agent may call it for its role's queue
    /// while another agent of the role has the turn.
    fn queue_take_held(
        &self,
        _task: &str,
        _queues: &[String],
        _consumer: &str,
    ) -> Option<Delivery> {
        None
    }
    /// A message this process already holds for `consumer` (read ahead),
    /// taken without waiting and without a round trip; `None` when taking one
    /// needs [`queue_take`](Self::queue_take). The same message the next
    /// `queue_take` would return.
    fn queue_take_ready(
        &self,
        _task: &str,
        _queues: &[String],
        _consumer: &str,
    ) -> Option<Delivery> {
        None
    }
    /// Acknowledges a delivery without waiting for the store: the same as
    /// [`queue_ack`](Self::queue_ack), whose outcome is settled later.
    fn queue_ack_nowait(&self, task: &str, delivery: &Delivery) -> Pending;
    /// Acknowledges a delivery: the message is gone for good. A store may
    /// send acknowledgements in batches, with the consumer's next take or
    /// release; until then a crash of this process redelivers the message.
    async fn queue_ack(&self, task: &str, delivery: &Delivery) -> StoreResult<()>;
    /// Gives a delivery back: it is redelivered, or dead-lettered once it has
    /// been delivered `max_attempts` times. True when dead-lettered.
    async fn queue_nack(
        &self,
        task: &str,
        delivery: &Delivery,
        max_attempts: u32,
    ) -> StoreResult<bool>;
    /// Hands every message `consumer` took and never acknowledged back to its queue
    /// (the consumer died).
    async fn queue_release_consumer(&self, task: &str, consumer: &str) -> StoreResult<usize>;
    /// Moves every dead letter taken from `queue` back to the end of
    /// `queue`, its delivery count starting over; returns how many. Hot
    /// reload calls it when the code that failed them was replaced.
    async fn queue_revive(&self, task: &str, queue: &str) -> StoreResult<usize>;
    /// Messages waiting, in flight and dead-lettered, for inspection.
    async fn queue_list(&self, task: &str) -> StoreResult<Vec<QueuedMessage>>;
    /// True when no message of the task waits or is in flight (dead letters do
    /// not count), in every process sharing the store.
    async fn queue_is_drained(&self, task: &str) -> StoreResult<bool> {
        let list = self.queue_list(task).await?;
        Ok(list.iter().all(|m| m.state == MessageState::Dead))
    }
}

/// Records of the agents, the task and the processes sharing it; metric
/// counters, once-only claims, and removing a task.
#[async_trait]
pub trait RecordStore: Send + Sync {
    /// Writes an agent's record.
    async fn agent_put(&self, task: &str, record: &AgentRecord) -> StoreResult<()>;
    /// Writes the record of a new agent unless `max_live` agents of the
    /// task, in any process, have not ended; false when refused. A store
    /// only one process uses (the embedded one) writes it: the process's
    /// own count of its agents is the task's.
    async fn agent_register(
        &self,
        task: &str,
        record: &AgentRecord,
        max_live: usize,
    ) -> StoreResult<bool> {
        let _ = max_live;
        self.agent_put(task, record).await?;
        Ok(true)
    }
    /// Reads an agent's record.
    async fn agent_get(&self, task: &str, agent: &str) -> StoreResult<Option<AgentRecord>>;
    /// Every agent record of the task, sorted by id.
    async fn agent_list(&self, task: &str) -> StoreResult<Vec<AgentRecord>>;
    /// Writes the task's record (only its owner does).
    async fn task_put(&self, task: &str, record: &TaskRecord) -> StoreResult<()>;
    /// Reads the task's record; `None` when no process has started the task.
    async fn task_get(&self, task: &str) -> StoreResult<Option<TaskRecord>>;
    /// Records that `host` is alive with its activity, and sets the heartbeat of
    /// each of its `agents` to `host.heartbeat_ms`. False when `host` is this
    /// store's member of the task and the server no longer holds its
    /// membership: the server lost the task's data (a restart without
    /// persistence). [`StoreError::Fenced`] when it was declared lost.
    async fn heartbeat(
        &self,
        task: &str,
        host: &HostRecord,
        agents: &[String],
    ) -> StoreResult<bool>;
    /// Every process that took part in the task, sorted by id.
    async fn host_list(&self, task: &str) -> StoreResult<Vec<HostRecord>>;
    /// Adds each delta to the task's metric counters, once per `token`: on
    /// a server, a call again with a token already applied (within a
    /// minute) changes nothing, so a flush whose outcome is unknown can be
    /// sent again. (The embedded store applies a call at once: never in
    /// doubt, it ignores the token.)
    async fn metrics_add(
        &self,
        task: &str,
        token: &str,
        deltas: &[(String, i64)],
    ) -> StoreResult<()>;
    /// The task's metric counters.
    async fn metrics_get(&self, task: &str) -> StoreResult<BTreeMap<String, i64>>;
    /// Claims `name` for the task once: true for the first caller only. Used so a
    /// spawn condition fires once even when several hosts see the signal.
    async fn claim(&self, task: &str, name: &str) -> StoreResult<bool>;
    /// Claims `name` for the task for `holder`: true when it was free (it
    /// is `holder`'s now) or `holder` holds it already, so a holder that
    /// died half-way and comes back (a request taken again) goes on.
    async fn claim_as(&self, task: &str, name: &str, holder: &str) -> StoreResult<bool>;
    /// Deletes every key of the task; returns how many were removed.
    async fn clean(&self, task: &str) -> StoreResult<usize>;
    /// Makes process `host` a new member of the task under the next epoch
    /// (a server-side counter), and this store's writes for the task
    /// writes of that member: once it is fenced, the server refuses them
    /// with [`StoreError::Fenced`]. Returns the epoch.
    async fn member_join(&self, task: &str, host: &str) -> StoreResult<u64>;
    /// Keeps agent `agent`'s checkpoint (JSON), for `on_resume` after `orrery resume`.
    async fn checkpoint_put(&self, task: &str, agent: &str, json: &str) -> StoreResult<()>;
    /// Agent `agent`'s last checkpoint (JSON), if it kept one.
    async fn checkpoint_get(&self, task: &str, agent: &str) -> StoreResult<Option<String>>;
    /// Takes or renews the lease of the task's duties (end of task, task
    /// record, report, reaping lost members) for `holder`, for `ttl`; true
    /// when `holder` holds it now.
    async fn lease(&self, task: &str, holder: &str, ttl: Duration) -> StoreResult<bool>;
    /// Fences member `host` for good (it was declared lost); true for the
    /// one caller that fenced it, false when it already was.
    async fn member_fence(&self, task: &str, host: &str) -> StoreResult<bool>;
    /// Makes every key of the ended task expire after `retention` at the
    /// latest (a key that expires sooner keeps its own expiry); returns how
    /// many keys were given one. The embedded store ends with its process.
    async fn retain(&self, task: &str, retention: Duration) -> StoreResult<usize>;
    /// [`retain`](Store::retain) for the task's journal stream alone: its
    /// last lines land after the run's own pass over every key, and a second
    /// pass over the whole keyspace would cost the server a `SCAN` and a
    /// `PTTL` per key again. True when the stream was given an expiry.
    async fn retain_journal(&self, task: &str, retention: Duration) -> StoreResult<bool> {
        Ok(self.retain(task, retention).await? > 0)
    }

    /// Appends journal lines to the task's journal stream, keeping about the
    /// last `max_len`. A store that no other process reads (the embedded
    /// one) keeps none. A retry after a lost reply may append a line twice;
    /// readers drop repeats by `(host, seq)`.
    async fn journal_append(
        &self,
        _task: &str,
        _lines: &[&str],
        _max_len: usize,
    ) -> StoreResult<()> {
        Ok(())
    }
    /// The journal lines of up to `count` stored entries after the position
    /// `after` (`None`: from the oldest kept), oldest first, each with its
    /// position (an entry may hold several lines: they share it).
    async fn journal_read(
        &self,
        _task: &str,
        _after: Option<&str>,
        _count: usize,
    ) -> StoreResult<Vec<(String, String)>> {
        Ok(Vec::new())
    }
}

/// Named locks with a TTL, an owner token and a fencing number.
#[async_trait]
pub trait LockStore: Send + Sync {
    /// Grants `name` to `token` for `ttl` if it is free (or expired); returns the
    /// fencing number, which grows with every grant of this lock.
    async fn lock_try_acquire(
        &self,
        task: &str,
        name: &str,
        token: &str,
        ttl: Duration,
    ) -> StoreResult<Option<u64>>;
    /// Releases `name` if `token` holds it; true when released.
    async fn lock_release(&self, task: &str, name: &str, token: &str) -> StoreResult<bool>;
    /// Extends `name` to `ttl` from now if `token` holds it; true when extended.
    async fn lock_extend(
        &self,
        task: &str,
        name: &str,
        token: &str,
        ttl: Duration,
    ) -> StoreResult<bool>;
}

/// A boxed future of a store answer.
pub(crate) type StoreFuture<T> = BoxFuture<'static, StoreResult<T>>;
