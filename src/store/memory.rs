//! The embedded store: every task's state in this process's memory.
//!
//! Every operation completes without waiting (except `queue_take` with a wait,
//! which parks on a [`Notify`]), so the Lua API can call it synchronously.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::{Mutex, RwLock};
use serde_json::Value;
use tokio::sync::{Notify, broadcast};

use super::{
    AgentRecord, BlackboardEvent, Delivery, Envelope, HostRecord, QueuedMessage, Store,
    StoreResult, TaskRecord,
};

/// How many unread blackboard events a slow watcher may fall behind by.
const EVENT_BUFFER: usize = 1024;

/// The in-process store (the default).
#[derive(Default)]
pub struct MemoryStore {
    tasks: RwLock<HashMap<String, Arc<TaskData>>>,
}

struct Entry {
    value: Value,
    expires: Instant,
}

struct LockEntry {
    token: String,
    expires: Instant,
}

#[derive(Default)]
struct Queues {
    waiting: HashMap<String, VecDeque<Envelope>>,
    /// receipt -> (queue, consumer, envelope)
    in_flight: HashMap<String, (String, String, Envelope)>,
    dead: Vec<(String, Envelope)>,
}

struct TaskData {
    blackboard: Mutex<BTreeMap<String, Entry>>,
    events: broadcast::Sender<BlackboardEvent>,
    queues: Mutex<Queues>,
    queue_pushed: Notify,
    next_receipt: AtomicU64,
    agents: Mutex<BTreeMap<String, AgentRecord>>,
    locks: Mutex<HashMap<String, LockEntry>>,
    fences: Mutex<HashMap<String, u64>>,
    metrics: Mutex<BTreeMap<String, i64>>,
    claims: Mutex<HashSet<String>>,
    record: Mutex<Option<TaskRecord>>,
    hosts: Mutex<BTreeMap<String, HostRecord>>,
}

impl TaskData {
    fn new() -> Self {
        TaskData {
            blackboard: Mutex::default(),
            events: broadcast::channel(EVENT_BUFFER).0,
            queues: Mutex::default(),
            queue_pushed: Notify::new(),
            next_receipt: AtomicU64::new(1),
            agents: Mutex::default(),
            locks: Mutex::default(),
            fences: Mutex::default(),
            metrics: Mutex::default(),
            claims: Mutex::default(),
            record: Mutex::default(),
            hosts: Mutex::default(),
        }
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

    fn take_now(&self, queues: &[String], consumer: &str) -> Option<Delivery> {
        let mut q = self.queues.lock();
        for name in queues {
            let Some(mut envelope) = q.waiting.get_mut(name).and_then(VecDeque::pop_front) else {
                continue;
            };
            envelope.attempts += 1;
            let receipt = self
                .next_receipt
                .fetch_add(1, Ordering::Relaxed)
                .to_string();
            q.in_flight.insert(
                receipt.clone(),
                (name.clone(), consumer.to_string(), envelope.clone()),
            );
            return Some(Delivery {
                queue: name.clone(),
                envelope,
                receipt,
            });
        }
        None
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
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

fn live(entry: &Entry, now: Instant) -> bool {
    entry.expires > now
}

#[async_trait]
impl Store for MemoryStore {
    fn describe(&self) -> String {
        "memory".to_string()
    }

    fn is_embedded(&self) -> bool {
        true
    }

    async fn bb_set(&self, task: &str, key: &str, value: &Value, ttl: Duration) -> StoreResult<()> {
        let t = self.task(task);
        t.blackboard.lock().insert(
            key.to_string(),
            Entry {
                value: value.clone(),
                expires: Instant::now() + ttl,
            },
        );
        t.publish(key, Some(value.clone()));
        Ok(())
    }

    async fn bb_get(&self, task: &str, key: &str) -> StoreResult<Option<Value>> {
        let t = self.task(task);
        let bb = t.blackboard.lock();
        Ok(bb
            .get(key)
            .filter(|e| live(e, Instant::now()))
            .map(|e| e.value.clone()))
    }

    async fn bb_delete(&self, task: &str, key: &str) -> StoreResult<bool> {
        let t = self.task(task);
        let removed = t.blackboard.lock().remove(key);
        let existed = removed.is_some_and(|e| live(&e, Instant::now()));
        if existed {
            t.publish(key, None);
        }
        Ok(existed)
    }

    async fn bb_keys(&self, task: &str, prefix: &str) -> StoreResult<Vec<String>> {
        let t = self.task(task);
        let now = Instant::now();
        let bb = t.blackboard.lock();
        Ok(bb
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .filter(|(_, e)| live(e, now))
            .map(|(k, _)| k.clone())
            .collect())
    }

    async fn bb_compare_and_set(
        &self,
        task: &str,
        key: &str,
        expected: Option<&Value>,
        new: Option<&Value>,
        ttl: Duration,
    ) -> StoreResult<bool> {
        let t = self.task(task);
        let now = Instant::now();
        {
            let mut bb = t.blackboard.lock();
            let current = bb.get(key).filter(|e| live(e, now)).map(|e| &e.value);
            if current != expected {
                return Ok(false);
            }
            match new {
                Some(v) => {
                    bb.insert(
                        key.to_string(),
                        Entry {
                            value: v.clone(),
                            expires: now + ttl,
                        },
                    );
                }
                None => {
                    bb.remove(key);
                }
            }
        }
        t.publish(key, new.cloned());
        Ok(true)
    }

    async fn bb_subscribe(&self, task: &str) -> StoreResult<broadcast::Receiver<BlackboardEvent>> {
        Ok(self.task(task).events.subscribe())
    }

    async fn queue_push(&self, task: &str, queue: &str, envelope: &Envelope) -> StoreResult<()> {
        let t = self.task(task);
        t.queues
            .lock()
            .waiting
            .entry(queue.to_string())
            .or_default()
            .push_back(envelope.clone());
        t.queue_pushed.notify_waiters();
        Ok(())
    }

    async fn queue_take(
        &self,
        task: &str,
        queues: &[String],
        consumer: &str,
        wait: Duration,
    ) -> StoreResult<Option<Delivery>> {
        let t = self.task(task);
        let deadline = Instant::now() + wait;
        loop {
            // Register for wake-ups before looking, so a push between the look
            // and the wait is not missed.
            let pushed = t.queue_pushed.notified();
            tokio::pin!(pushed);
            pushed.as_mut().enable();
            if let Some(d) = t.take_now(queues, consumer) {
                return Ok(Some(d));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            if tokio::time::timeout(deadline - now, pushed).await.is_err() {
                return Ok(t.take_now(queues, consumer));
            }
        }
    }

    async fn queue_ack(&self, task: &str, delivery: &Delivery) -> StoreResult<()> {
        self.task(task)
            .queues
            .lock()
            .in_flight
            .remove(&delivery.receipt);
        Ok(())
    }

    async fn queue_nack(
        &self,
        task: &str,
        delivery: &Delivery,
        max_attempts: u32,
    ) -> StoreResult<bool> {
        let t = self.task(task);
        let dead = {
            let mut q = t.queues.lock();
            let Some((queue, _, envelope)) = q.in_flight.remove(&delivery.receipt) else {
                return Ok(false);
            };
            if envelope.attempts >= max_attempts {
                q.dead.push((queue, envelope));
                true
            } else {
                q.waiting.entry(queue).or_default().push_front(envelope);
                false
            }
        };
        t.queue_pushed.notify_waiters();
        Ok(dead)
    }

    async fn queue_release_consumer(&self, task: &str, consumer: &str) -> StoreResult<usize> {
        let t = self.task(task);
        let released = {
            let mut q = t.queues.lock();
            let receipts: Vec<String> = q
                .in_flight
                .iter()
                .filter(|(_, (_, c, _))| c == consumer)
                .map(|(r, _)| r.clone())
                .collect();
            for r in &receipts {
                if let Some((queue, _, envelope)) = q.in_flight.remove(r) {
                    q.waiting.entry(queue).or_default().push_front(envelope);
                }
            }
            receipts.len()
        };
        t.queue_pushed.notify_waiters();
        Ok(released)
    }

    async fn queue_list(&self, task: &str) -> StoreResult<Vec<QueuedMessage>> {
        let t = self.task(task);
        let q = t.queues.lock();
        let waiting = q.waiting.iter().flat_map(|(name, msgs)| {
            msgs.iter().map(move |m| QueuedMessage {
                queue: name.clone(),
                envelope: m.clone(),
                state: "pending",
            })
        });
        let in_flight = q.in_flight.values().map(|(name, _, m)| QueuedMessage {
            queue: name.clone(),
            envelope: m.clone(),
            state: "pending",
        });
        let dead = q.dead.iter().map(|(name, m)| QueuedMessage {
            queue: name.clone(),
            envelope: m.clone(),
            state: "dead",
        });
        Ok(waiting.chain(in_flight).chain(dead).collect())
    }

    async fn agent_put(&self, task: &str, record: &AgentRecord) -> StoreResult<()> {
        self.task(task)
            .agents
            .lock()
            .insert(record.id.clone(), record.clone());
        Ok(())
    }

    async fn agent_get(&self, task: &str, agent: &str) -> StoreResult<Option<AgentRecord>> {
        Ok(self.task(task).agents.lock().get(agent).cloned())
    }

    async fn agent_list(&self, task: &str) -> StoreResult<Vec<AgentRecord>> {
        Ok(self.task(task).agents.lock().values().cloned().collect())
    }

    async fn task_put(&self, task: &str, record: &TaskRecord) -> StoreResult<()> {
        *self.task(task).record.lock() = Some(record.clone());
        Ok(())
    }

    async fn task_get(&self, task: &str) -> StoreResult<Option<TaskRecord>> {
        Ok(self.task(task).record.lock().clone())
    }

    async fn heartbeat(&self, task: &str, host: &HostRecord, agents: &[String]) -> StoreResult<()> {
        let t = self.task(task);
        t.hosts.lock().insert(host.id.clone(), host.clone());
        let mut records = t.agents.lock();
        for id in agents {
            if let Some(r) = records.get_mut(id) {
                r.heartbeat_ms = host.heartbeat_ms;
            }
        }
        Ok(())
    }

    async fn host_list(&self, task: &str) -> StoreResult<Vec<HostRecord>> {
        Ok(self.task(task).hosts.lock().values().cloned().collect())
    }

    async fn lock_try_acquire(
        &self,
        task: &str,
        name: &str,
        token: &str,
        ttl: Duration,
    ) -> StoreResult<Option<u64>> {
        let t = self.task(task);
        let now = Instant::now();
        let mut locks = t.locks.lock();
        if locks.get(name).is_some_and(|l| l.expires > now) {
            return Ok(None);
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
        Ok(Some(*fence))
    }

    async fn lock_release(&self, task: &str, name: &str, token: &str) -> StoreResult<bool> {
        let t = self.task(task);
        let mut locks = t.locks.lock();
        let held = locks
            .get(name)
            .is_some_and(|l| l.token == token && l.expires > Instant::now());
        if held {
            locks.remove(name);
        }
        Ok(held)
    }

    async fn lock_extend(
        &self,
        task: &str,
        name: &str,
        token: &str,
        ttl: Duration,
    ) -> StoreResult<bool> {
        let t = self.task(task);
        let now = Instant::now();
        let mut locks = t.locks.lock();
        match locks.get_mut(name) {
            Some(l) if l.token == token && l.expires > now => {
                l.expires = now + ttl;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn metrics_add(&self, task: &str, deltas: &[(String, i64)]) -> StoreResult<()> {
        let t = self.task(task);
        let mut m = t.metrics.lock();
        for (name, delta) in deltas {
            *m.entry(name.clone()).or_insert(0) += delta;
        }
        Ok(())
    }

    async fn metrics_get(&self, task: &str) -> StoreResult<BTreeMap<String, i64>> {
        Ok(self.task(task).metrics.lock().clone())
    }

    async fn claim(&self, task: &str, name: &str) -> StoreResult<bool> {
        Ok(self.task(task).claims.lock().insert(name.to_string()))
    }

    async fn clean(&self, task: &str) -> StoreResult<usize> {
        let removed = self.tasks.write().remove(task);
        Ok(removed.map_or(0, |t| t.blackboard.lock().len() + t.agents.lock().len()))
    }
}
