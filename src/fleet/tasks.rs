//! The records of submitted tasks (`fleet:task:{id}`, the list
//! `fleet:tasks`) and their code (`fleet:bundle:{hash}`): submit, read,
//! cancel, and a worker's start and end of a task.

use std::collections::HashMap;

use redis::AsyncCommands;
use serde::Serialize;

use super::{Bundle, Fleet, GROUP, SUBMITTED, store_error, task_key};
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
}

impl Fleet {
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
