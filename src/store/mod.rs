//! Where shared state lives: the [`Store`] trait and its backends.
//!
//! The store knows nothing of Lua. It offers the operations the coordination
//! layer needs (blackboard, queues, agent records, locks, metric counters), each
//! atomic on its own, for one task at a time. A new backend is a new file here.

mod memory;
mod redis;

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::broadcast;

pub use memory::{EVENT_BUFFER, MemoryStore};
pub use redis::{RedisStore, redact_url};

use crate::config::Config;
use crate::error::{Error, Result};

/// Opens the store the configuration names: `memory`, or a Redis-protocol server
/// (`redis://` or `rediss://`). A server that cannot be reached within
/// `connect_timeout` is a Coordination error naming the URL (without password);
/// a URL that does not parse is a BadInput error naming the setting.
pub async fn open(config: &Config) -> Result<std::sync::Arc<dyn Store>> {
    match config.store.as_str() {
        "memory" => Ok(std::sync::Arc::new(MemoryStore::new())),
        url if url.starts_with("redis://") || url.starts_with("rediss://") => {
            Ok(std::sync::Arc::new(RedisStore::connect(config).await?))
        }
        other => Err(Error::bad_input(
            "setting store",
            format!("'{other}' is neither 'memory' nor a redis:// or rediss:// URL"),
        )),
    }
}

/// A failure of the store itself (not of the caller's input).
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Unique within the task.
    pub id: String,
    /// Sender agent id.
    pub from: String,
    /// Recipient as written by the sender: an agent id, a role or `*`.
    pub to: String,
    /// Message type, chosen by the scripts.
    #[serde(rename = "type")]
    pub kind: String,
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
    pub queue: String,
    /// The message, with `attempts` counting this delivery.
    pub envelope: Envelope,
    /// Backend-specific handle used by ack/nack.
    pub receipt: String,
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
        /// Ended failed (or interrupted).
        Failed = "failed",
        /// Ended when its time ran out.
        Timeout = "timeout",
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

/// The operations the host needs from shared state, scoped by task id.
///
/// Every method is atomic on its own. Implementations must be usable from many
/// tokio tasks at once.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// A short name for messages (`memory`, `redis://host:port/0`).
    fn describe(&self) -> String;

    /// True when every future this store returns is ready on first poll, so
    /// callers may drive it without yielding (the embedded store).
    fn is_embedded(&self) -> bool {
        false
    }

    // ---- blackboard ----

    /// Stores `value` under `key`, expiring after `ttl`, and publishes the change.
    async fn bb_set(&self, task: &str, key: &str, value: &Value, ttl: Duration) -> StoreResult<()>;
    /// Reads `key`.
    async fn bb_get(&self, task: &str, key: &str) -> StoreResult<Option<Value>>;
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

    // ---- message queues ----

    /// Appends `envelope` to `queue`.
    async fn queue_push(&self, task: &str, queue: &str, envelope: &Envelope) -> StoreResult<()>;
    /// Appends `envelope` to `queue`, taking it by value, so a store that keeps
    /// envelopes as they are (the embedded one) saves a copy per message.
    async fn queue_push_owned(
        &self,
        task: &str,
        queue: &str,
        envelope: Envelope,
    ) -> StoreResult<()> {
        self.queue_push(task, queue, &envelope).await
    }
    /// Takes the oldest message from the first of `queues` that has one, waiting
    /// up to `wait` for one to arrive. `consumer` names the taker, so a message it
    /// never acknowledges can be handed to another consumer later. A message
    /// given back (nack, released consumer) comes before newer ones.
    ///
    /// Cancel safety: the future may be dropped while it waits (the agent's
    /// event loop races it against blackboard changes and the stop signal). No
    /// message is lost then: one taken for `consumer` after the drop is kept for
    /// that consumer and returned by its next `queue_take`, or handed back by
    /// [`queue_release_consumer`](Store::queue_release_consumer).
    async fn queue_take(
        &self,
        task: &str,
        queues: &[String],
        consumer: &str,
        wait: Duration,
    ) -> StoreResult<Option<Delivery>>;
    /// Acknowledges a delivery: the message is gone for good.
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

    // ---- agent records ----

    /// Writes an agent's record.
    async fn agent_put(&self, task: &str, record: &AgentRecord) -> StoreResult<()>;
    /// Reads an agent's record.
    async fn agent_get(&self, task: &str, agent: &str) -> StoreResult<Option<AgentRecord>>;
    /// Every agent record of the task, sorted by id.
    async fn agent_list(&self, task: &str) -> StoreResult<Vec<AgentRecord>>;

    // ---- the task and the processes sharing it ----

    /// Writes the task's record (only its owner does).
    async fn task_put(&self, task: &str, record: &TaskRecord) -> StoreResult<()>;
    /// Reads the task's record; `None` when no process has started the task.
    async fn task_get(&self, task: &str) -> StoreResult<Option<TaskRecord>>;
    /// Records that `host` is alive with its activity, and sets the heartbeat of
    /// each of its `agents` to `host.heartbeat_ms`.
    async fn heartbeat(&self, task: &str, host: &HostRecord, agents: &[String]) -> StoreResult<()>;
    /// Every process that took part in the task, sorted by id.
    async fn host_list(&self, task: &str) -> StoreResult<Vec<HostRecord>>;
    /// Blackboard changes this process published that its own watchers have not
    /// received yet. The embedded store delivers them before the write returns.
    fn events_in_flight(&self, _task: &str) -> usize {
        0
    }

    // ---- locks ----

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

    // ---- metrics and claims ----

    /// Adds each delta to the task's metric counters.
    async fn metrics_add(&self, task: &str, deltas: &[(String, i64)]) -> StoreResult<()>;
    /// The task's metric counters.
    async fn metrics_get(&self, task: &str) -> StoreResult<BTreeMap<String, i64>>;
    /// Claims `name` for the task once: true for the first caller only. Used so a
    /// spawn condition fires once even when several hosts see the signal.
    async fn claim(&self, task: &str, name: &str) -> StoreResult<bool>;

    /// Deletes every key of the task; returns how many were removed.
    async fn clean(&self, task: &str) -> StoreResult<usize>;

    // ---- the run journal ----

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
    /// Up to `count` journal lines stored after the position `after` (`None`:
    /// from the oldest kept), oldest first, each with its position.
    async fn journal_read(
        &self,
        _task: &str,
        _after: Option<&str>,
        _count: usize,
    ) -> StoreResult<Vec<(String, String)>> {
        Ok(Vec::new())
    }
}
