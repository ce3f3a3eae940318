//! A fleet of workers sharing submitted tasks through the store.
//!
//! `orrery submit` adds a task to the Stream `fleet:submitted`; workers
//! (`orrery worker`) read it through the consumer group `workers`, so each
//! entry goes to one of them. Before running a task a worker takes its
//! claim, `fleet:claim:{id}`, a key holding the worker's id that expires
//! after the lease unless renewed: a task runs on one worker at a time. A
//! worker renews its claims and re-claims its Stream entries to itself at
//! every beat, so an entry idle for longer than the lease belongs to a dead
//! worker: another takes it with XAUTOCLAIM, takes the free claim, and
//! continues the task with `Orchestrator::resume`, which fences the dead
//! worker's member (issue 13's membership) before any agent comes back.
//!
//! The fleet needs a shared server, so this module talks to Redis directly;
//! the task's own keys stay behind the `Store` trait.
//!
//! | key | holds |
//! |---|---|
//! | `fleet:submitted` | Stream of submitted task ids (group `workers`) |
//! | `fleet:tasks` | sorted set: task ids by submit time |
//! | `fleet:task:{id}` | hash: definition, bundle, state, worker, times, exit code, outputs |
//! | `fleet:bundle:{hash}` | the task's scripts and stdlib (see [`bundle`]) |
//! | `fleet:claim:{id}` | the worker running the task (expires after the lease) |
//! | `fleet:workers`, `fleet:worker:{id}` | the workers and their health (expires after the lease) |

pub mod bundle;
pub mod worker;

use std::collections::HashMap;
use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamAutoClaimReply, StreamReadReply};
use serde::Serialize;

use crate::coordination::now_ms;
use crate::error::{Error, Result};
use crate::task::Task;
pub use bundle::Bundle;

/// The Stream of submitted tasks.
pub const SUBMITTED: &str = "fleet:submitted";
/// The consumer group of the workers on [`SUBMITTED`].
pub const GROUP: &str = "workers";

/// A connection to the fleet's keys on a Redis-protocol server.
#[derive(Clone)]
pub struct Fleet {
    conn: MultiplexedConnection,
    url: String,
}

/// What `orrery status` shows of a submitted task.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FleetTask {
    /// Task id.
    pub id: String,
    /// `queued`, `running`, `finished` or `cancelled`.
    pub state: String,
    /// The run's status once finished (`complete`, `failed`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// The run's exit code once finished.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The worker running (or that ran) it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// Every worker that started it, in order (more than one: taken over).
    pub workers: Vec<String>,
    /// Content hash of its code.
    pub bundle: String,
    /// When it was submitted, started and finished (ms since the epoch).
    pub submitted_ms: u64,
    /// When a worker first started it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_ms: Option<u64>,
    /// When it finished.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_ms: Option<u64>,
    /// A cancel was asked for.
    pub cancel: bool,
    /// How many times its end was recorded (1 once finished: a task ends once).
    pub ends: u64,
    /// What the agents recorded with `task.output` (JSON), once finished.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outputs: Option<serde_json::Value>,
    /// The task definition (JSON).
    #[serde(skip)]
    pub definition: String,
}

/// What `orrery status --workers` shows of a worker.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WorkerHealth {
    /// Worker id (`hostname:pid`).
    pub id: String,
    /// Tasks it runs now.
    pub running: u64,
    /// Most tasks it runs at once.
    pub max_tasks: u64,
    /// Tasks it finished.
    pub finished: u64,
    /// Live agents of its running tasks.
    pub agents: u64,
    /// Its resident memory (MB).
    pub rss_mb: u64,
    /// Its last beat (ms since the epoch).
    pub beat_ms: u64,
    /// It is draining (SIGTERM): it takes no more tasks.
    pub draining: bool,
    /// Roles it serves (empty: any).
    pub roles: String,
}

fn store_error(e: redis::RedisError) -> Error {
    Error::Coordination(format!("fleet store: {e}"))
}

impl Fleet {
    /// Connects to the server of `url` (a redis:// or rediss:// URL) and makes
    /// sure the submission Stream and its group exist.
    pub async fn connect(url: &str, timeout: Duration) -> Result<Fleet> {
        crate::store::check_url(url).map_err(|m| Error::bad_input("flag --store", m))?;
        if url == "memory" {
            return Err(Error::bad_input(
                "flag --store",
                "a fleet needs a shared store: pass --store redis://HOST:PORT/DB",
            ));
        }
        let shown = crate::store::redact_url(url);
        let client = redis::Client::open(url)
            .map_err(|e| Error::bad_input("flag --store", e.to_string()))?;
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(None);
        let conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| Error::Coordination(format!("store {shown} unreachable: {e}")))?;
        let mut fleet = Fleet { conn, url: shown };
        fleet.ensure_group().await?;
        Ok(fleet)
    }

    /// The server, as shown in messages (password hidden).
    pub fn describe(&self) -> &str {
        &self.url
    }

    async fn ensure_group(&mut self) -> Result<()> {
        let made: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(SUBMITTED)
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut self.conn)
            .await;
        match made {
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            other => other.map_err(store_error),
        }
    }

    /// Stores the task (its id already unique) and its code, and queues it.
    pub async fn submit(&mut self, task: &Task, bundle: &Bundle) -> Result<()> {
        let hash = bundle.hash();
        let definition = serde_json::to_string(task).expect("a task serializes");
        let now = now_ms();
        let key = task_key(&task.id);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("SET")
            .arg(format!("fleet:bundle:{hash}"))
            .arg(bundle.to_json())
            .arg("NX")
            .ignore()
            .hset_multiple(
                &key,
                &[
                    ("definition", definition.as_str()),
                    ("bundle", hash.as_str()),
                    ("state", "queued"),
                    ("submitted_ms", &now.to_string()),
                ],
            )
            .ignore()
            .zadd("fleet:tasks", &task.id, now)
            .ignore()
            .xadd(SUBMITTED, "*", &[("id", &task.id)])
            .ignore();
        pipe.query_async::<()>(&mut self.conn)
            .await
            .map_err(store_error)
    }

    /// The record of task `id`, `None` when it was never submitted.
    pub async fn task(&mut self, id: &str) -> Result<Option<FleetTask>> {
        let map: HashMap<String, String> =
            self.conn.hgetall(task_key(id)).await.map_err(store_error)?;
        Ok((!map.is_empty()).then(|| parse_task(id, map)))
    }

    /// Every submitted task still kept, oldest first.
    pub async fn tasks(&mut self) -> Result<Vec<FleetTask>> {
        let ids: Vec<String> = self
            .conn
            .zrange("fleet:tasks", 0, -1)
            .await
            .map_err(store_error)?;
        let mut out = Vec::new();
        for id in ids {
            if let Some(task) = self.task(&id).await? {
                out.push(task);
            }
        }
        Ok(out)
    }

    /// The code stored under `hash`.
    pub async fn bundle(&mut self, hash: &str) -> Result<Bundle> {
        let text: Option<String> = self
            .conn
            .get(format!("fleet:bundle:{hash}"))
            .await
            .map_err(store_error)?;
        let text = text.ok_or_else(|| {
            Error::Coordination(format!("the code bundle {hash} is missing from the store"))
        })?;
        serde_json::from_str(&text)
            .map_err(|e| Error::Coordination(format!("the code bundle {hash} is unreadable: {e}")))
    }

    /// Asks for task `id` to be cancelled: a queued task never starts, a
    /// running one is stopped by its worker. Returns its state before.
    pub async fn cancel(&mut self, id: &str) -> Result<Option<String>> {
        let Some(task) = self.task(id).await? else {
            return Ok(None);
        };
        let key = task_key(id);
        let mut pipe = redis::pipe();
        pipe.hset(&key, "cancel", "1").ignore();
        if task.state == "queued" {
            pipe.hset(&key, "state", "cancelled").ignore();
        }
        pipe.query_async::<()>(&mut self.conn)
            .await
            .map_err(store_error)?;
        Ok(Some(task.state))
    }

    /// New entries for `worker`, at most `count`, waiting up to `block`
    /// (not at all when zero; a wait holds this connection).
    pub async fn take_new(
        &mut self,
        worker: &str,
        count: usize,
        block: Duration,
    ) -> Result<Vec<(String, String)>> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(GROUP)
            .arg(worker)
            .arg("COUNT")
            .arg(count);
        // BLOCK 0 would wait for ever, holding the shared connection.
        if !block.is_zero() {
            cmd.arg("BLOCK").arg(block.as_millis() as u64);
        }
        let reply: Option<StreamReadReply> = cmd
            .arg("STREAMS")
            .arg(SUBMITTED)
            .arg(">")
            .query_async(&mut self.conn)
            .await
            .map_err(store_error)?;
        Ok(reply
            .into_iter()
            .flat_map(|r| r.keys)
            .flat_map(|k| k.ids)
            .filter_map(|e| {
                let id: Option<String> = e.get("id");
                id.map(|id| (e.id, id))
            })
            .collect())
    }

    /// Entries whose worker has not re-claimed them for `idle` (it is gone),
    /// now `worker`'s, at most `count`.
    pub async fn take_abandoned(
        &mut self,
        worker: &str,
        idle: Duration,
        count: usize,
    ) -> Result<Vec<(String, String)>> {
        let reply: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
            .arg(SUBMITTED)
            .arg(GROUP)
            .arg(worker)
            .arg(idle.as_millis() as u64)
            .arg("0-0")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut self.conn)
            .await
            .map_err(store_error)?;
        Ok(reply
            .claimed
            .into_iter()
            .filter_map(|e| {
                let id: Option<String> = e.get("id");
                id.map(|id| (e.id, id))
            })
            .collect())
    }

    /// Re-claims `entries` to `worker`, resetting their idle time (`idle`
    /// zero: still mine), or making them look abandoned at once (`idle`
    /// large: a hand-over).
    pub async fn touch_entries(
        &mut self,
        worker: &str,
        entries: &[String],
        idle: u64,
    ) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut cmd = redis::cmd("XCLAIM");
        cmd.arg(SUBMITTED).arg(GROUP).arg(worker).arg(0);
        for e in entries {
            cmd.arg(e);
        }
        cmd.arg("IDLE").arg(idle).arg("JUSTID");
        cmd.query_async::<redis::Value>(&mut self.conn)
            .await
            .map_err(store_error)?;
        Ok(())
    }

    /// Takes the claim of task `id` for `worker` for `lease`; false when
    /// another worker holds it.
    pub async fn claim(&mut self, id: &str, worker: &str, lease: Duration) -> Result<bool> {
        let set: Option<String> = redis::cmd("SET")
            .arg(format!("fleet:claim:{id}"))
            .arg(worker)
            .arg("NX")
            .arg("PX")
            .arg(lease.as_millis() as u64)
            .query_async(&mut self.conn)
            .await
            .map_err(store_error)?;
        Ok(set.is_some())
    }

    /// Renews `worker`'s claim of task `id`; false when it lost it.
    pub async fn renew(&mut self, id: &str, worker: &str, lease: Duration) -> Result<bool> {
        let script = redis::Script::new(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then \
               return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end",
        );
        let renewed: i64 = script
            .key(format!("fleet:claim:{id}"))
            .arg(worker)
            .arg(lease.as_millis() as u64)
            .invoke_async(&mut self.conn)
            .await
            .map_err(store_error)?;
        Ok(renewed == 1)
    }

    /// Gives up `worker`'s claim of task `id` (others may take it at once).
    pub async fn release(&mut self, id: &str, worker: &str) -> Result<()> {
        let script = redis::Script::new(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then \
               return redis.call('DEL', KEYS[1]) else return 0 end",
        );
        script
            .key(format!("fleet:claim:{id}"))
            .arg(worker)
            .invoke_async::<i64>(&mut self.conn)
            .await
            .map_err(store_error)?;
        Ok(())
    }

    /// Records that `worker` starts (or continues) task `id`.
    pub async fn started(&mut self, id: &str, worker: &str) -> Result<()> {
        let key = task_key(id);
        let now = now_ms().to_string();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .hset(&key, "state", "running")
            .ignore()
            .hset(&key, "worker", worker)
            .ignore()
            .hset_nx(&key, "started_ms", &now)
            .ignore()
            .rpush(format!("{key}:workers"), worker)
            .ignore();
        pipe.query_async::<()>(&mut self.conn)
            .await
            .map_err(store_error)
    }

    /// Records the end of task `id` and acknowledges its entry, in one
    /// transaction, then drops the claim.
    pub async fn finished(
        &mut self,
        id: &str,
        entry: &str,
        worker: &str,
        end: &TaskEnd,
    ) -> Result<()> {
        let key = task_key(id);
        let outputs = end.outputs.to_string();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .hset_multiple(
                &key,
                &[
                    ("state", end.state.as_str()),
                    ("status", end.status.as_str()),
                    ("exit_code", &end.exit_code.to_string()),
                    ("finished_ms", &now_ms().to_string()),
                    ("outputs", outputs.as_str()),
                ],
            )
            .ignore()
            .hincr(&key, "ends", 1)
            .ignore()
            .xack(SUBMITTED, GROUP, &[entry])
            .ignore();
        pipe.query_async::<()>(&mut self.conn)
            .await
            .map_err(store_error)?;
        self.release(id, worker).await
    }

    /// Acknowledges `entry` without running it (a cancelled task).
    pub async fn drop_entry(&mut self, entry: &str) -> Result<()> {
        self.conn
            .xack::<_, _, _, ()>(SUBMITTED, GROUP, &[entry])
            .await
            .map_err(store_error)
    }

    /// Records `health` for the lease: a worker that stops beating drops out.
    pub async fn beat(&mut self, health: &WorkerHealth, lease: Duration) -> Result<()> {
        let key = format!("fleet:worker:{}", health.id);
        let mut pipe = redis::pipe();
        pipe.hset_multiple(
            &key,
            &[
                ("running", health.running.to_string()),
                ("max_tasks", health.max_tasks.to_string()),
                ("finished", health.finished.to_string()),
                ("agents", health.agents.to_string()),
                ("rss_mb", health.rss_mb.to_string()),
                ("beat_ms", health.beat_ms.to_string()),
                ("draining", (health.draining as u8).to_string()),
                ("roles", health.roles.clone()),
            ],
        )
        .ignore()
        .pexpire(&key, lease.as_millis() as i64)
        .ignore()
        .sadd("fleet:workers", &health.id)
        .ignore();
        pipe.query_async::<()>(&mut self.conn)
            .await
            .map_err(store_error)
    }

    /// Removes `worker` from the list at once (it exits).
    pub async fn leave(&mut self, worker: &str) -> Result<()> {
        let mut pipe = redis::pipe();
        pipe.del(format!("fleet:worker:{worker}"))
            .ignore()
            .srem("fleet:workers", worker)
            .ignore();
        pipe.query_async::<()>(&mut self.conn)
            .await
            .map_err(store_error)
    }

    /// The live workers (those that beat within their lease).
    pub async fn workers(&mut self) -> Result<Vec<WorkerHealth>> {
        let ids: Vec<String> = self
            .conn
            .smembers("fleet:workers")
            .await
            .map_err(store_error)?;
        let mut out = Vec::new();
        for id in ids {
            let map: HashMap<String, String> = self
                .conn
                .hgetall(format!("fleet:worker:{id}"))
                .await
                .map_err(store_error)?;
            if map.is_empty() {
                let _: () = self
                    .conn
                    .srem("fleet:workers", &id)
                    .await
                    .map_err(store_error)?;
                continue;
            }
            let num = |k: &str| map.get(k).and_then(|v| v.parse().ok()).unwrap_or(0);
            out.push(WorkerHealth {
                running: num("running"),
                max_tasks: num("max_tasks"),
                finished: num("finished"),
                agents: num("agents"),
                rss_mb: num("rss_mb"),
                beat_ms: num("beat_ms"),
                draining: num("draining") == 1,
                roles: map.get("roles").cloned().unwrap_or_default(),
                id,
            });
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Every worker that started task `id`, in order.
    async fn task_workers(&mut self, id: &str) -> Result<Vec<String>> {
        self.conn
            .lrange(format!("{}:workers", task_key(id)), 0, -1)
            .await
            .map_err(store_error)
    }
}

/// How a task ended, as its worker records it.
#[derive(Debug, Clone)]
pub struct TaskEnd {
    /// `finished` or `cancelled`.
    pub state: String,
    /// The run's status (`complete`, `failed`, ...).
    pub status: String,
    /// The run's exit code.
    pub exit_code: i32,
    /// The run's outputs.
    pub outputs: serde_json::Value,
}

fn task_key(id: &str) -> String {
    format!("fleet:task:{id}")
}

fn parse_task(id: &str, map: HashMap<String, String>) -> FleetTask {
    let num = |k: &str| map.get(k).and_then(|v| v.parse::<u64>().ok());
    FleetTask {
        id: id.to_string(),
        state: map.get("state").cloned().unwrap_or_default(),
        status: map.get("status").cloned(),
        exit_code: map.get("exit_code").and_then(|v| v.parse().ok()),
        worker: map.get("worker").cloned(),
        workers: Vec::new(),
        bundle: map.get("bundle").cloned().unwrap_or_default(),
        submitted_ms: num("submitted_ms").unwrap_or(0),
        started_ms: num("started_ms"),
        finished_ms: num("finished_ms"),
        cancel: map.get("cancel").is_some_and(|v| v == "1"),
        ends: num("ends").unwrap_or(0),
        outputs: map
            .get("outputs")
            .and_then(|v| serde_json::from_str(v).ok()),
        definition: map.get("definition").cloned().unwrap_or_default(),
    }
}

impl Fleet {
    /// [`Fleet::task`] with the list of workers that started it.
    pub async fn task_with_workers(&mut self, id: &str) -> Result<Option<FleetTask>> {
        let Some(mut task) = self.task(id).await? else {
            return Ok(None);
        };
        task.workers = self.task_workers(id).await?;
        Ok(Some(task))
    }
}
