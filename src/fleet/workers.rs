//! The workers' health (`fleet:worker:{id}`, expiring after a lease unless
//! beaten again, and the set `fleet:workers`), as `orrery status --workers`
//! shows it.

use std::collections::HashMap;
use std::time::Duration;

use redis::AsyncCommands;
use serde::Serialize;

use super::{Fleet, store_error};
use crate::error::Result;

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

impl Fleet {
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
}
