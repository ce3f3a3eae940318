//! Agent records, the task record, host heartbeats, locks, metric counters,
//! claims, and cleaning a task's keys.

use std::collections::BTreeMap;
use std::time::Duration;

use super::RedisStore;
use super::blackboard::{decode, millis};
use super::keys::{Keys, token};
use super::scripts::{
    AGENT_PUT, CHECKPOINT, CLAIM, FENCE, HEARTBEAT, JOIN, LEASE, LOCK_ACQUIRE, LOCK_EXTEND,
    LOCK_RELEASE, METRICS_ADD, RETAIN,
};
use crate::store::{AgentRecord, HostRecord, LockStore, RecordStore, StoreResult, TaskRecord};

/// Keys deleted per UNLINK while cleaning.
const CLEAN_BATCH: usize = 500;

#[async_trait::async_trait]
impl RecordStore for RedisStore {
    async fn agent_put(&self, task: &str, record: &AgentRecord) -> StoreResult<()> {
        self.put_agent(task, record, 0).await.map(|_| ())
    }

    async fn agent_register(
        &self,
        task: &str,
        record: &AgentRecord,
        max_live: usize,
    ) -> StoreResult<bool> {
        self.put_agent(task, record, max_live.max(1)).await
    }

    async fn agent_get(&self, task: &str, agent: &str) -> StoreResult<Option<AgentRecord>> {
        let state = Keys::new(task).state(agent);
        let fields: BTreeMap<String, String> =
            self.conn.query("agent get", || hash_all(&state)).await?;
        record_from(&state, fields)
    }

    async fn agent_list(&self, task: &str) -> StoreResult<Vec<AgentRecord>> {
        let keys = Keys::new(task);
        let set = keys.agents();
        let mut ids: Vec<String> = self
            .conn
            .query("agent list", || {
                let mut cmd = redis::cmd("SMEMBERS");
                cmd.arg(&set);
                cmd
            })
            .await?;
        ids.sort();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let all: Vec<BTreeMap<String, String>> = self
            .conn
            .pipeline("agent list", || {
                let mut pipe = redis::pipe();
                for id in &ids {
                    pipe.add_command(hash_all(&keys.state(id)));
                }
                pipe
            })
            .await?;
        let mut out = Vec::new();
        for (id, fields) in ids.iter().zip(all) {
            if let Some(r) = record_from(&keys.state(id), fields)? {
                out.push(r);
            }
        }
        Ok(out)
    }

    async fn task_put(&self, task: &str, record: &TaskRecord) -> StoreResult<()> {
        let meta = Keys::new(task).meta();
        let json = serde_json::to_string(record).expect("a record always serializes");
        self.conn
            .query("task put", || {
                let mut cmd = redis::cmd("SET");
                cmd.arg(&meta).arg(&json);
                cmd
            })
            .await
    }

    async fn task_get(&self, task: &str) -> StoreResult<Option<TaskRecord>> {
        let meta = Keys::new(task).meta();
        let raw: Option<String> = self
            .conn
            .query("task get", || {
                let mut cmd = redis::cmd("GET");
                cmd.arg(&meta);
                cmd
            })
            .await?;
        raw.map(|s| decode(&meta, &s)).transpose()
    }

    async fn heartbeat(
        &self,
        task: &str,
        host: &HostRecord,
        agents: &[String],
    ) -> StoreResult<bool> {
        let keys = Keys::new(task);
        let json = serde_json::to_string(host).expect("a record always serializes");
        // A process writes its own heartbeat as a member; another's record
        // (the reaper marking it lost) is written unchecked.
        let (member, fenced) = if self.fence(task).0 == keys.member(&host.id) {
            self.fence(task)
        } else {
            (keys.member("-"), "0")
        };
        let mut all = vec![keys.hosts()];
        all.extend(agents.iter().map(|a| keys.state(a)));
        all.push(member);
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        let beat: i64 = self
            .conn
            .eval("heartbeat", &HEARTBEAT, &all, |c| {
                c.arg(&host.id)
                    .arg(&json)
                    .arg(host.heartbeat_ms)
                    .arg(fenced);
            })
            .await?;
        Ok(beat != 2)
    }

    async fn host_list(&self, task: &str) -> StoreResult<Vec<HostRecord>> {
        let hosts = Keys::new(task).hosts();
        let all: BTreeMap<String, String> =
            self.conn.query("host list", || hash_all(&hosts)).await?;
        all.values().map(|json| decode(&hosts, json)).collect()
    }

    async fn metrics_add(
        &self,
        task: &str,
        token: &str,
        deltas: &[(String, i64)],
    ) -> StoreResult<()> {
        if deltas.is_empty() {
            return Ok(());
        }
        let keys = Keys::new(task);
        let (metrics, once) = (keys.metrics(), keys.once(token));
        self.conn
            .eval::<i64>("metrics flush", &METRICS_ADD, &[&metrics, &once], |c| {
                for (name, delta) in deltas {
                    c.arg(name).arg(*delta);
                }
            })
            .await?;
        Ok(())
    }

    async fn metrics_get(&self, task: &str) -> StoreResult<BTreeMap<String, i64>> {
        let metrics = Keys::new(task).metrics();
        self.conn.query("metrics get", || hash_all(&metrics)).await
    }

    async fn member_join(&self, task: &str, host: &str) -> StoreResult<u64> {
        let keys = Keys::new(task);
        let (counter, member) = (keys.epoch(), keys.member(host));
        let epoch: u64 = self
            .conn
            .eval("join", &JOIN, &[&counter, &member], |_| {})
            .await?;
        self.members.write().insert(task.to_string(), member);
        // Joining again after the server lost the task's data: what this
        // process recorded there (queues in the set of queues, the index's
        // TTL) must be recorded again.
        let prefix = keys.bus("");
        self.registered.lock().retain(|s| !s.starts_with(&prefix));
        self.index_raised.lock().remove(task);
        Ok(epoch)
    }

    async fn checkpoint_put(&self, task: &str, agent: &str, json: &str) -> StoreResult<()> {
        let state = Keys::new(task).state(agent);
        let (member, fenced) = self.fence(task);
        self.conn
            .eval::<i64>("agent checkpoint", &CHECKPOINT, &[&state, &member], |c| {
                c.arg(json).arg(fenced);
            })
            .await?;
        Ok(())
    }

    async fn checkpoint_get(&self, task: &str, agent: &str) -> StoreResult<Option<String>> {
        let state = Keys::new(task).state(agent);
        self.conn
            .query("agent checkpoint", || {
                let mut cmd = redis::cmd("HGET");
                cmd.arg(&state).arg("checkpoint");
                cmd
            })
            .await
    }

    async fn lease(&self, task: &str, holder: &str, ttl: Duration) -> StoreResult<bool> {
        let keys = Keys::new(task);
        let lease = keys.lease();
        let (member, fenced) = self.fence(task);
        let held: i64 = self
            .conn
            .eval("lease", &LEASE, &[&lease, &member], |c| {
                c.arg(holder).arg(millis(ttl)).arg(fenced);
            })
            .await?;
        Ok(held == 1)
    }

    async fn member_fence(&self, task: &str, host: &str) -> StoreResult<bool> {
        let member = Keys::new(task).member(host);
        let fenced: i64 = self.conn.eval("fence", &FENCE, &[&member], |_| {}).await?;
        Ok(fenced == 1)
    }

    async fn claim(&self, task: &str, name: &str) -> StoreResult<bool> {
        self.claim_as(task, name, &token()).await
    }

    async fn claim_as(&self, task: &str, name: &str, holder: &str) -> StoreResult<bool> {
        let claims = Keys::new(task).claims();
        self.conn
            .eval("claim", &CLAIM, &[&claims], |c| {
                c.arg(name).arg(holder);
            })
            .await
    }

    /// Deletes every key of the task (SCAN + UNLINK); returns how many.
    async fn clean(&self, task: &str) -> StoreResult<usize> {
        let pattern = Keys::new(task).all();
        let mut removed = 0;
        let mut cursor: u64 = 0;
        loop {
            let (next, batch) = self.scan_page("clean", &pattern, cursor).await?;
            if !batch.is_empty() {
                let n: usize = self
                    .conn
                    .query("clean", || {
                        let mut cmd = redis::cmd("UNLINK");
                        cmd.arg(&batch);
                        cmd
                    })
                    .await?;
                removed += n;
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        self.forget_task(task);
        Ok(removed)
    }

    /// SCAN, and one script per batch that lowers each key's expiry to the
    /// retention (keys written after this pass, e.g. by a process still
    /// leaving, get theirs from that process's own pass).
    async fn retain(&self, task: &str, retention: Duration) -> StoreResult<usize> {
        let pattern = Keys::new(task).all();
        let ms = millis(retention);
        let mut given = 0;
        let mut cursor: u64 = 0;
        loop {
            let (next, batch) = self.scan_page("retain", &pattern, cursor).await?;
            if !batch.is_empty() {
                let keys: Vec<&str> = batch.iter().map(String::as_str).collect();
                let n: usize = self
                    .conn
                    .eval("retain", &RETAIN, &keys, |c| {
                        c.arg(ms);
                    })
                    .await?;
                given += n;
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        Ok(given)
    }

    async fn retain_journal(&self, task: &str, retention: Duration) -> StoreResult<bool> {
        let key = Keys::new(task).journal();
        let n: usize = self
            .conn
            .eval("retain", &RETAIN, &[key.as_str()], |c| {
                c.arg(millis(retention));
            })
            .await?;
        Ok(n > 0)
    }

    async fn journal_append(&self, task: &str, lines: &[&str], max_len: usize) -> StoreResult<()> {
        self.0.journal_append(task, lines, max_len).await
    }

    async fn journal_read(
        &self,
        task: &str,
        after: Option<&str>,
        count: usize,
    ) -> StoreResult<Vec<(String, String)>> {
        self.0.journal_read(task, after, count).await
    }
}

impl RedisStore {
    /// One page of the keys matching `pattern` (SCAN), with the cursor of
    /// the next page (0 after the last).
    async fn scan_page(
        &self,
        what: &str,
        pattern: &str,
        cursor: u64,
    ) -> StoreResult<(u64, Vec<String>)> {
        self.conn
            .query(what, || {
                let mut cmd = redis::cmd("SCAN");
                cmd.arg(cursor)
                    .arg("MATCH")
                    .arg(pattern)
                    .arg("COUNT")
                    .arg(CLEAN_BATCH);
                cmd
            })
            .await
    }
}

#[async_trait::async_trait]
impl LockStore for RedisStore {
    async fn lock_try_acquire(
        &self,
        task: &str,
        name: &str,
        token: &str,
        ttl: Duration,
    ) -> StoreResult<Option<u64>> {
        let keys = Keys::new(task);
        let (lock, fences) = (keys.lock(name), keys.fences());
        let (member, fenced) = self.fence(task);
        self.conn
            .eval(
                "lock acquire",
                &LOCK_ACQUIRE,
                &[&lock, &fences, &member],
                |c| {
                    c.arg(token).arg(millis(ttl)).arg(name).arg(fenced);
                },
            )
            .await
    }

    async fn lock_release(&self, task: &str, name: &str, token: &str) -> StoreResult<bool> {
        let lock = Keys::new(task).lock(name);
        let (member, fenced) = self.fence(task);
        self.conn
            .eval("lock release", &LOCK_RELEASE, &[&lock, &member], |c| {
                c.arg(token).arg(fenced);
            })
            .await
    }

    async fn lock_extend(
        &self,
        task: &str,
        name: &str,
        token: &str,
        ttl: Duration,
    ) -> StoreResult<bool> {
        let lock = Keys::new(task).lock(name);
        let (member, fenced) = self.fence(task);
        self.conn
            .eval("lock extend", &LOCK_EXTEND, &[&lock, &member], |c| {
                c.arg(token).arg(millis(ttl)).arg(fenced);
            })
            .await
    }
}

fn hash_all(key: &str) -> redis::Cmd {
    let mut cmd = redis::cmd("HGETALL");
    cmd.arg(key);
    cmd
}

/// An agent record from its hash: `record` JSON, with `heartbeat` (written
/// on its own by heartbeats) taking precedence.
fn record_from(
    key: &str,
    mut fields: BTreeMap<String, String>,
) -> StoreResult<Option<AgentRecord>> {
    let Some(json) = fields.remove("record") else {
        return Ok(None);
    };
    let mut record: AgentRecord = decode(key, &json)?;
    if let Some(beat) = fields.get("heartbeat").and_then(|h| h.parse().ok()) {
        record.heartbeat_ms = record.heartbeat_ms.max(beat);
    }
    Ok(Some(record))
}

impl RedisStore {
    /// [`AGENT_PUT`]: the record written, unless `limit` (0: none) agents
    /// not ended are recorded already and this one is not among them.
    async fn put_agent(&self, task: &str, record: &AgentRecord, limit: usize) -> StoreResult<bool> {
        let keys = Keys::new(task);
        let (state, agents, live) = (keys.state(&record.id), keys.agents(), keys.live());
        let json = serde_json::to_string(record).expect("a record always serializes");
        let (member, fenced) = self.fence(task);
        let alive = crate::coordination::is_live(record);
        let written = self
            .conn
            .eval::<i64>(
                "agent put",
                &AGENT_PUT,
                &[&state, &agents, &live, &member],
                |c| {
                    c.arg(&json)
                        .arg(record.heartbeat_ms)
                        .arg(&record.id)
                        .arg(if alive { "1" } else { "0" })
                        .arg(limit)
                        .arg(fenced);
                },
            )
            .await?;
        Ok(written == 1)
    }
}
