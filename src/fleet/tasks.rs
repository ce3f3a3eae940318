//! The records of submitted tasks (`fleet:task:{id}`, the list
//! `fleet:tasks`) and their code (`fleet:bundle:{hash}`): submit, read,
//! cancel, and a worker's start and end of a task.

use std::collections::HashMap;
use std::time::Duration;

use redis::AsyncCommands;
use serde::Serialize;

use super::{Bundle, Fleet, GROUP, SUBMITTED, store_error, task_key};

/// Sorted set of the kept tasks' ids by submit time.
const TASKS: &str = "fleet:tasks";
/// Hash: how many tasks not yet finished use each code bundle.
const BUNDLE_REFS: &str = "fleet:bundle_refs";

fn bundle_key(hash: &str) -> String {
    format!("fleet:bundle:{hash}")
}
use crate::coordination::now_ms;
use crate::error::{Error, Result};
use crate::task::Task;

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
    /// Why it failed, once finished so: the first fatal error of the run
    /// (`agent: message`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
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
    /// Why it failed (the first fatal error), if it did.
    pub error: Option<String>,
}

impl Fleet {
    /// Stores the task (its id already unique) and its code, and queues it,
    /// in one script: its code is kept (no expiry) while a task not yet
    /// finished refers to it (`fleet:bundle_refs` counts them), and its
    /// record holds its Stream entry (for `forget`).
    pub async fn submit(&mut self, task: &Task, bundle: &Bundle) -> Result<()> {
        let hash = bundle.hash();
        let definition = serde_json::to_string(task).expect("a task serializes");
        let script = redis::Script::new(
            "redis.call('SET', KEYS[1], ARGV[1], 'NX') \
             redis.call('PERSIST', KEYS[1]) \
             redis.call('HINCRBY', KEYS[2], ARGV[2], 1) \
             redis.call('HSET', KEYS[3], 'definition', ARGV[3], 'bundle', ARGV[2], \
                        'state', 'queued', 'submitted_ms', ARGV[4]) \
             redis.call('ZADD', KEYS[4], ARGV[4], ARGV[5]) \
             local entry = redis.call('XADD', KEYS[5], '*', 'id', ARGV[5]) \
             redis.call('HSET', KEYS[3], 'entry', entry) \
             return entry",
        );
        script
            .key(bundle_key(&hash))
            .key(BUNDLE_REFS)
            .key(task_key(&task.id))
            .key(TASKS)
            .key(SUBMITTED)
            .arg(bundle.to_json())
            .arg(&hash)
            .arg(definition)
            .arg(now_ms())
            .arg(&task.id)
            .invoke_async::<String>(&mut self.conn)
            .await
            .map_err(store_error)?;
        Ok(())
    }

    /// The record of task `id`, `None` when it was never submitted.
    pub async fn task(&mut self, id: &str) -> Result<Option<FleetTask>> {
        let map: HashMap<String, String> =
            self.conn.hgetall(task_key(id)).await.map_err(store_error)?;
        Ok((!map.is_empty()).then(|| parse_task(id, map)))
    }

    /// Every submitted task still kept, oldest first. Tasks whose record
    /// expired (see [`Fleet::finished`]) leave the list as it is read.
    pub async fn tasks(&mut self) -> Result<Vec<FleetTask>> {
        let ids: Vec<String> = self.conn.zrange(TASKS, 0, -1).await.map_err(store_error)?;
        let mut out = Vec::new();
        let mut gone = Vec::new();
        for id in ids {
            match self.task(&id).await? {
                Some(task) => out.push(task),
                None => gone.push(id),
            }
        }
        if !gone.is_empty() {
            self.conn
                .zrem::<_, _, ()>(TASKS, &gone)
                .await
                .map_err(store_error)?;
        }
        Ok(out)
    }

    /// The code stored under `hash`. One that is not a bundle is a
    /// bad-input error (its task fails); a missing one a coordination error.
    pub async fn bundle(&mut self, hash: &str) -> Result<Bundle> {
        let text: Option<String> = self.conn.get(bundle_key(hash)).await.map_err(store_error)?;
        let text = text.ok_or_else(|| {
            Error::Coordination(format!("the code bundle {hash} is missing from the store"))
        })?;
        // No other try reads it better: the task fails on it.
        serde_json::from_str(&text).map_err(|e| {
            Error::bad_input(format!("code bundle {hash}"), format!("unreadable: {e}"))
        })
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

    /// [`Fleet::task`] with the list of workers that started it.
    pub async fn task_with_workers(&mut self, id: &str) -> Result<Option<FleetTask>> {
        let Some(mut task) = self.task(id).await? else {
            return Ok(None);
        };
        task.workers = self.task_workers(id).await?;
        Ok(Some(task))
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

    /// Records that the run of `entry` (of `stream`) in task `id` is the
    /// task's process `host`: a worker that takes the entry over adopts
    /// that process's agents (see `Orchestrator::adopt`).
    pub async fn ran_as(&mut self, id: &str, stream: &str, entry: &str, host: &str) -> Result<()> {
        self.conn
            .hset::<_, _, _, ()>(task_key(id), format!("host:{stream}:{entry}"), host)
            .await
            .map_err(store_error)
    }

    /// The task's process that last ran `entry` (of `stream`) of task `id`, if one did.
    pub async fn ran_by(&mut self, id: &str, stream: &str, entry: &str) -> Result<Option<String>> {
        self.conn
            .hget(task_key(id), format!("host:{stream}:{entry}"))
            .await
            .map_err(store_error)
    }

    /// Records the end of task `id`, acknowledges and deletes its Stream
    /// entry, in one script, then drops the claim. At its first end the
    /// record (and its list of workers) expires after `retention`, and its
    /// code too when no task left to finish refers to it.
    pub async fn finished(
        &mut self,
        id: &str,
        entry: &str,
        worker: &str,
        end: &TaskEnd,
        retention: Duration,
    ) -> Result<()> {
        let key = task_key(id);
        let hash: Option<String> = self.conn.hget(&key, "bundle").await.map_err(store_error)?;
        let script = redis::Script::new(
            "redis.call('HSET', KEYS[1], 'state', ARGV[1], 'status', ARGV[2], \
                        'exit_code', ARGV[3], 'finished_ms', ARGV[4], 'outputs', ARGV[5]) \
             if ARGV[10] ~= '' then redis.call('HSET', KEYS[1], 'error', ARGV[10]) end \
             local ends = redis.call('HINCRBY', KEYS[1], 'ends', 1) \
             redis.call('XACK', KEYS[3], ARGV[6], ARGV[7]) \
             redis.call('XDEL', KEYS[3], ARGV[7]) \
             if ends == 1 then \
               redis.call('PEXPIRE', KEYS[1], ARGV[8]) \
               redis.call('PEXPIRE', KEYS[2], ARGV[8]) \
               if ARGV[9] ~= '' and redis.call('HINCRBY', KEYS[5], ARGV[9], -1) <= 0 then \
                 redis.call('HDEL', KEYS[5], ARGV[9]) \
                 redis.call('PEXPIRE', KEYS[4], ARGV[8]) \
               end \
             end \
             return ends",
        );
        let hash = hash.unwrap_or_default();
        script
            .key(&key)
            .key(format!("{key}:workers"))
            .key(SUBMITTED)
            .key(bundle_key(&hash))
            .key(BUNDLE_REFS)
            .arg(&end.state)
            .arg(&end.status)
            .arg(end.exit_code)
            .arg(now_ms())
            .arg(end.outputs.to_string())
            .arg(GROUP)
            .arg(entry)
            .arg(retention.as_millis() as u64)
            .arg(&hash)
            .arg(end.error.as_deref().unwrap_or(""))
            .invoke_async::<i64>(&mut self.conn)
            .await
            .map_err(store_error)?;
        self.release(id, worker).await
    }

    /// Removes every fleet record of task `id` at once (`orrery clean`): its
    /// record and list of workers, its claim, its Stream entry and its
    /// place in the list; its code's count of users drops if it had not
    /// finished, and its code goes once nothing uses it. Returns how many
    /// keys or entries went.
    pub async fn forget(&mut self, id: &str) -> Result<usize> {
        let key = task_key(id);
        let hash: Option<String> = self.conn.hget(&key, "bundle").await.map_err(store_error)?;
        let script = redis::Script::new(
            "local entry = redis.call('HGET', KEYS[1], 'entry') \
             local hash = redis.call('HGET', KEYS[1], 'bundle') \
             local ends = tonumber(redis.call('HGET', KEYS[1], 'ends') or '0') \
             local n = redis.call('DEL', KEYS[1], KEYS[2], KEYS[3]) \
             n = n + redis.call('ZREM', KEYS[4], ARGV[1]) \
             if entry then \
               redis.call('XACK', KEYS[5], ARGV[2], entry) \
               n = n + redis.call('XDEL', KEYS[5], entry) \
             end \
             if hash and ends == 0 and redis.call('HINCRBY', KEYS[6], hash, -1) <= 0 then \
               redis.call('HDEL', KEYS[6], hash) \
               if hash == ARGV[3] then n = n + redis.call('DEL', KEYS[7]) end \
             end \
             return n",
        );
        // The last task using its code gone before it finished: the code goes
        // too (it had no expiry while the task was to run, and nothing would
        // ever give it one).
        let hash = hash.unwrap_or_default();
        let removed: i64 = script
            .key(&key)
            .key(format!("{key}:workers"))
            .key(format!("fleet:claim:{id}"))
            .key(TASKS)
            .key(SUBMITTED)
            .key(BUNDLE_REFS)
            .key(bundle_key(&hash))
            .arg(id)
            .arg(GROUP)
            .arg(&hash)
            .invoke_async(&mut self.conn)
            .await
            .map_err(store_error)?;
        Ok(removed as usize)
    }

    /// Every worker that started task `id`, in order.
    async fn task_workers(&mut self, id: &str) -> Result<Vec<String>> {
        self.conn
            .lrange(format!("{}:workers", task_key(id)), 0, -1)
            .await
            .map_err(store_error)
    }
}

fn parse_task(id: &str, map: HashMap<String, String>) -> FleetTask {
    let num = |k: &str| map.get(k).and_then(|v| v.parse::<u64>().ok());
    FleetTask {
        id: id.to_string(),
        state: map.get("state").cloned().unwrap_or_default(),
        status: map.get("status").cloned(),
        exit_code: map.get("exit_code").and_then(|v| v.parse().ok()),
        error: map.get("error").cloned(),
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
