//! The embedded store: every task's state in this process's memory.
//!
//! Every operation completes without waiting (except `queue_take` with a wait,
//! which parks until a push), so the Lua API can call it synchronously.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, hash_map};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::{Mutex, RwLock};
use serde_json::Value;
use tokio::sync::broadcast;
// tokio's clock, so tests can pause and advance time past TTLs.
use tokio::time::Instant;

use super::{
    AgentRecord, BlackboardEvent, BlackboardStore, Delivery, Envelope, HostRecord, LockStore,
    Pending, QueueStore, QueuedMessage, RecordStore, Sent, Store, StoreResult, TaskRecord,
};
use crate::fast_map::FastMap;
use queues::Queues;

mod queues;

/// How many unread blackboard events a slow watcher may fall behind by.
/// Each holds its value (up to `max_value_bytes`) until every watcher has
/// read it, so this bounds the memory a lagging watcher can pin.
pub const EVENT_BUFFER: usize = 64;

/// Blackboard size below which expired entries are not swept.
const SWEEP_MIN: usize = 1024;

/// The in-process store (the default).
pub struct MemoryStore {
    /// Tells stores apart in the per-thread cache of [`MemoryStore::with_task`].
    id: u64,
    /// Moves when a task is removed, so per-thread caches drop what they hold.
    generation: AtomicU64,
    tasks: RwLock<FastMap<String, Arc<TaskData>>>,
    /// Agents' checkpoints by (task, agent).
    checkpoints: parking_lot::Mutex<HashMap<(String, String), String>>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        MemoryStore {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            generation: AtomicU64::new(0),
            tasks: RwLock::default(),
            checkpoints: parking_lot::Mutex::default(),
        }
    }
}

/// The task a thread used last, so the next call on it skips the shared map
/// (whose lock and reference count every agent thread would otherwise
/// bounce between cores on every call).
struct Recent {
    store: u64,
    generation: u64,
    task: String,
    data: Arc<TaskData>,
}

thread_local! {
    static RECENT: RefCell<Option<Recent>> = const { RefCell::new(None) };
}

struct Entry {
    value: Value,
    expires: Instant,
}

struct LockEntry {
    token: String,
    expires: Instant,
}

struct TaskData {
    blackboard: Mutex<BTreeMap<String, Entry>>,
    /// The blackboard's size at which the next new key first drops the
    /// expired entries (so expired keys do not pile up in memory).
    sweep_at: std::sync::atomic::AtomicUsize,
    events: broadcast::Sender<BlackboardEvent>,
    queues: Queues,
    agents: Mutex<BTreeMap<String, AgentRecord>>,
    locks: Mutex<HashMap<String, LockEntry>>,
    fences: Mutex<HashMap<String, u64>>,
    metrics: Mutex<BTreeMap<String, i64>>,
    /// Claimed names and who holds each.
    claims: Mutex<HashMap<String, String>>,
    record: Mutex<Option<TaskRecord>>,
    hosts: Mutex<BTreeMap<String, HostRecord>>,
}

impl TaskData {
    fn new() -> Self {
        TaskData {
            blackboard: Mutex::default(),
            sweep_at: std::sync::atomic::AtomicUsize::new(SWEEP_MIN),
            events: broadcast::channel(EVENT_BUFFER).0,
            queues: Queues::default(),
            agents: Mutex::default(),
            locks: Mutex::default(),
            fences: Mutex::default(),
            metrics: Mutex::default(),
            claims: Mutex::default(),
            record: Mutex::default(),
            hosts: Mutex::default(),
        }
    }

    /// Inserts a key the blackboard does not hold; every time the blackboard
    /// has doubled since the last sweep, expired entries go first (amortised
    /// constant work per new key).
    fn insert_new(&self, bb: &mut BTreeMap<String, Entry>, key: &str, entry: Entry) {
        if bb.len() >= self.sweep_at.load(Ordering::Relaxed) {
            let now = Instant::now();
            bb.retain(|_, e| live(e, now));
            self.sweep_at
                .store((2 * bb.len()).max(SWEEP_MIN), Ordering::Relaxed);
        }
        bb.insert(key.to_string(), entry);
    }

    fn publish(&self, key: &str, value: Option<Value>) {
        // Nobody listening is fine: watches are opt-in.
        if self.events.receiver_count() > 0 {
            let _ = self.events.send(BlackboardEvent {
                key: key.to_string(),
                value,
            });
        }
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `f` on the data of `task` (created on first use).
    fn with_task<R>(&self, task: &str, f: impl FnOnce(&TaskData) -> R) -> R {
        let generation = self.generation.load(Ordering::Acquire);
        let mut f = Some(f);
        let hit = RECENT.with_borrow(|recent| match recent {
            Some(r) if r.store == self.id && r.generation == generation && r.task == task => {
                f.take().map(|f| f(&r.data))
            }
            _ => None,
        });
        if let Some(result) = hit {
            return result;
        }
        let data = self.task(task);
        let result = f.take().map(|f| f(&data));
        RECENT.set(Some(Recent {
            store: self.id,
            generation,
            task: task.to_string(),
            data,
        }));
        result.expect("with_task runs f once")
    }

    fn task(&self, task: &str) -> Arc<TaskData> {
        if let Some(t) = self.tasks.read().get(task) {
            return t.clone();
        }
        self.tasks
            .write()
            .entry(task.to_string())
            .or_insert_with(|| Arc::new(TaskData::new()))
            .clone()
    }
}

impl MemoryStore {
    fn set(&self, task: &str, key: &str, value: &Value, ttl: Duration) -> StoreResult<()> {
        self.with_task(task, |t| {
            let entry = Entry {
                value: value.clone(),
                expires: Instant::now() + ttl,
            };
            {
                let mut bb = t.blackboard.lock();
                // Overwriting an existing key needs no new key string.
                match bb.get_mut(key) {
                    Some(old) => *old = entry,
                    None => t.insert_new(&mut bb, key, entry),
                }
            }
            t.publish(key, Some(value.clone()));
        });
        Ok(())
    }

    fn get(&self, task: &str, key: &str) -> Option<Value> {
        self.with_task(task, |t| {
            t.blackboard
                .lock()
                .get(key)
                .filter(|e| live(e, Instant::now()))
                .map(|e| e.value.clone())
        })
    }
}

fn live(entry: &Entry, now: Instant) -> bool {
    entry.expires > now
}

impl Store for MemoryStore {
    fn describe(&self) -> String {
        "memory".to_string()
    }

    fn is_embedded(&self) -> bool {
        true
    }
}

#[async_trait]
impl BlackboardStore for MemoryStore {
    async fn bb_set(&self, task: &str, key: &str, value: &Value, ttl: Duration) -> StoreResult<()> {
        self.set(task, key, value, ttl)
    }

    async fn bb_get(&self, task: &str, key: &str) -> StoreResult<Option<Value>> {
        Ok(self.get(task, key))
    }

    async fn bb_delete(&self, task: &str, key: &str) -> StoreResult<bool> {
        Ok(self.with_task(task, |t| {
            let removed = t.blackboard.lock().remove(key);
            let existed = removed.is_some_and(|e| live(&e, Instant::now()));
            if existed {
                t.publish(key, None);
            }
            existed
        }))
    }

    async fn bb_keys(&self, task: &str, prefix: &str) -> StoreResult<Vec<String>> {
        let now = Instant::now();
        Ok(self.with_task(task, |t| {
            t.blackboard
                .lock()
                .range(prefix.to_string()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .filter(|(_, e)| live(e, now))
                .map(|(k, _)| k.clone())
                .collect()
        }))
    }

    async fn bb_compare_and_set(
        &self,
        task: &str,
        key: &str,
        expected: Option<&Value>,
        new: Option<&Value>,
        ttl: Duration,
    ) -> StoreResult<bool> {
        let now = Instant::now();
        Ok(self.with_task(task, |t| {
            {
                let mut bb = t.blackboard.lock();
                let current = bb.get(key).filter(|e| live(e, now)).map(|e| &e.value);
                if current != expected {
                    return false;
                }
                match new {
                    Some(v) => {
                        let entry = Entry {
                            value: v.clone(),
                            expires: now + ttl,
                        };
                        match bb.get_mut(key) {
                            Some(old) => *old = entry,
                            None => t.insert_new(&mut bb, key, entry),
                        }
                    }
                    None => {
                        bb.remove(key);
                    }
                }
            }
            t.publish(key, new.cloned());
            true
        }))
    }

    async fn bb_subscribe(&self, task: &str) -> StoreResult<broadcast::Receiver<BlackboardEvent>> {
        Ok(self.with_task(task, |t| t.events.subscribe()))
    }

    fn bb_set_nowait(&self, task: &str, key: &str, value: &Value, ttl: Duration) -> Pending {
        Pending::done(self.set(task, key, value, ttl))
    }

    fn bb_get_sent(&self, task: &str, key: &str) -> Sent<Option<Value>> {
        Sent::ready(Ok(self.get(task, key)))
    }
}

#[async_trait]
impl QueueStore for MemoryStore {
    async fn queue_push(&self, task: &str, queue: &str, envelope: &Envelope) -> StoreResult<()> {
        self.with_task(task, |t| t.queues.push(queue, envelope.clone()));
        Ok(())
    }

    async fn queue_take(
        &self,
        task: &str,
        queues: &[String],
        consumer: &str,
        wait: Duration,
    ) -> StoreResult<Option<Delivery>> {
        if let Some(d) = self.with_task(task, |t| t.queues.take_now(queues, consumer)) {
            return Ok(Some(d));
        }
        if wait.is_zero() {
            return Ok(None);
        }
        Ok(self.task(task).queues.take(queues, consumer, wait).await)
    }

    async fn queue_ack(&self, task: &str, delivery: &Delivery) -> StoreResult<()> {
        self.with_task(task, |t| t.queues.ack(delivery));
        Ok(())
    }

    async fn queue_nack(
        &self,
        task: &str,
        delivery: &Delivery,
        max_attempts: u32,
    ) -> StoreResult<bool> {
        Ok(self.with_task(task, |t| t.queues.nack(delivery, max_attempts)))
    }

    async fn queue_release_consumer(&self, task: &str, consumer: &str) -> StoreResult<usize> {
        Ok(self.with_task(task, |t| t.queues.release_consumer(consumer)))
    }

    async fn queue_list(&self, task: &str) -> StoreResult<Vec<QueuedMessage>> {
        Ok(self.with_task(task, |t| t.queues.list()))
    }

    async fn queue_revive(&self, task: &str, queue: &str) -> StoreResult<usize> {
        Ok(self.with_task(task, |t| t.queues.revive(queue)))
    }

    fn queue_take_ready(&self, task: &str, queues: &[String], consumer: &str) -> Option<Delivery> {
        self.with_task(task, |t| t.queues.take_now(queues, consumer))
    }

    fn queue_ack_nowait(&self, task: &str, delivery: &Delivery) -> Pending {
        self.with_task(task, |t| t.queues.ack(delivery));
        Pending::done(Ok(()))
    }

    fn queue_push_nowait(&self, task: &str, queue: &str, envelope: Envelope) -> Pending {
        self.with_task(task, |t| t.queues.push(queue, envelope));
        Pending::done(Ok(()))
    }
}

#[async_trait]
impl RecordStore for MemoryStore {
    async fn agent_put(&self, task: &str, record: &AgentRecord) -> StoreResult<()> {
        self.with_task(task, |t| {
            t.agents.lock().insert(record.id.clone(), record.clone());
        });
        Ok(())
    }

    async fn agent_get(&self, task: &str, agent: &str) -> StoreResult<Option<AgentRecord>> {
        Ok(self.with_task(task, |t| t.agents.lock().get(agent).cloned()))
    }

    async fn agent_list(&self, task: &str) -> StoreResult<Vec<AgentRecord>> {
        Ok(self.with_task(task, |t| t.agents.lock().values().cloned().collect()))
    }

    async fn task_put(&self, task: &str, record: &TaskRecord) -> StoreResult<()> {
        *self.task(task).record.lock() = Some(record.clone());
        Ok(())
    }

    async fn task_get(&self, task: &str) -> StoreResult<Option<TaskRecord>> {
        Ok(self.task(task).record.lock().clone())
    }

    async fn heartbeat(
        &self,
        task: &str,
        host: &HostRecord,
        agents: &[String],
    ) -> StoreResult<bool> {
        let t = self.task(task);
        t.hosts.lock().insert(host.id.clone(), host.clone());
        let mut records = t.agents.lock();
        for id in agents {
            if let Some(r) = records.get_mut(id) {
                r.heartbeat_ms = host.heartbeat_ms;
            }
        }
        Ok(true)
    }

    async fn host_list(&self, task: &str) -> StoreResult<Vec<HostRecord>> {
        Ok(self.task(task).hosts.lock().values().cloned().collect())
    }

    /// Applied at once, never in doubt: the token is not needed.
    async fn metrics_add(
        &self,
        task: &str,
        _token: &str,
        deltas: &[(String, i64)],
    ) -> StoreResult<()> {
        self.with_task(task, |t| {
            let mut m = t.metrics.lock();
            for (name, delta) in deltas {
                *m.entry(name.clone()).or_insert(0) += delta;
            }
        });
        Ok(())
    }

    async fn metrics_get(&self, task: &str) -> StoreResult<BTreeMap<String, i64>> {
        Ok(self.with_task(task, |t| t.metrics.lock().clone()))
    }

    async fn claim(&self, task: &str, name: &str) -> StoreResult<bool> {
        // No holder: no one takes it again.
        self.claim_as(task, name, "").await
    }

    async fn claim_as(&self, task: &str, name: &str, holder: &str) -> StoreResult<bool> {
        let claims = |t: &TaskData| match t.claims.lock().entry(name.to_string()) {
            hash_map::Entry::Occupied(o) => !holder.is_empty() && o.get() == holder,
            hash_map::Entry::Vacant(v) => {
                v.insert(holder.to_string());
                true
            }
        };
        Ok(self.with_task(task, claims))
    }

    async fn clean(&self, task: &str) -> StoreResult<usize> {
        let removed = self.tasks.write().remove(task);
        self.generation.fetch_add(1, Ordering::AcqRel);
        Ok(removed.map_or(0, |t| t.blackboard.lock().len() + t.agents.lock().len()))
    }

    /// One process holds the embedded store: every member is epoch 1 and
    /// none is ever fenced.
    async fn member_join(&self, _task: &str, _host: &str) -> StoreResult<u64> {
        Ok(1)
    }

    async fn checkpoint_put(&self, task: &str, agent: &str, json: &str) -> StoreResult<()> {
        self.checkpoints
            .lock()
            .insert((task.to_string(), agent.to_string()), json.to_string());
        Ok(())
    }

    async fn checkpoint_get(&self, task: &str, agent: &str) -> StoreResult<Option<String>> {
        Ok(self
            .checkpoints
            .lock()
            .get(&(task.to_string(), agent.to_string()))
            .cloned())
    }

    async fn lease(&self, _task: &str, _holder: &str, _ttl: Duration) -> StoreResult<bool> {
        Ok(true)
    }

    async fn member_fence(&self, _task: &str, _host: &str) -> StoreResult<bool> {
        Ok(true)
    }

    async fn retain(&self, _task: &str, _retention: Duration) -> StoreResult<usize> {
        Ok(0)
    }
}

#[async_trait]
impl LockStore for MemoryStore {
    async fn lock_try_acquire(
        &self,
        task: &str,
        name: &str,
        token: &str,
        ttl: Duration,
    ) -> StoreResult<Option<u64>> {
        let now = Instant::now();
        Ok(self.with_task(task, |t| {
            let mut locks = t.locks.lock();
            if locks.get(name).is_some_and(|l| l.expires > now) {
                return None;
            }
            locks.insert(
                name.to_string(),
                LockEntry {
                    token: token.to_string(),
                    expires: now + ttl,
                },
            );
            let mut fences = t.fences.lock();
            let fence = fences.entry(name.to_string()).or_insert(0);
            *fence += 1;
            Some(*fence)
        }))
    }

    async fn lock_release(&self, task: &str, name: &str, token: &str) -> StoreResult<bool> {
        Ok(self.with_task(task, |t| {
            let mut locks = t.locks.lock();
            let held = locks
                .get(name)
                .is_some_and(|l| l.token == token && l.expires > Instant::now());
            if held {
                locks.remove(name);
            }
            held
        }))
    }

    async fn lock_extend(
        &self,
        task: &str,
        name: &str,
        token: &str,
        ttl: Duration,
    ) -> StoreResult<bool> {
        let now = Instant::now();
        Ok(
            self.with_task(task, |t| match t.locks.lock().get_mut(name) {
                Some(l) if l.token == token && l.expires > now => {
                    l.expires = now + ttl;
                    true
                }
                _ => false,
            }),
        )
    }
}
