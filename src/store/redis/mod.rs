//! The Redis / DragonflyDB store: all shared state of a task in a server
//! reached over the Redis protocol, so several `orrery` processes can work on
//! one task.
//!
//! Keys follow the original system's schema (see [`keys`]); multi-step writes
//! are server-side scripts that declare every key they touch (see
//! [`scripts`]); queues are streams read through a consumer group (see
//! [`queues`]); watches are explicit publishes made by the write scripts (see
//! [`events`]). A dropped connection is retried with backoff for up to
//! `connect_timeout`; operations that are not idempotent carry a token so a
//! retry cannot apply them twice.

mod blackboard;
mod conn;
mod consumer;
mod events;
mod journal;
mod keys;
mod queues;
mod records;
mod reply;
mod scripts;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::broadcast;

use self::conn::{Connection, OpenError};
use self::consumer::Consumers;
use self::events::Events;
use super::{
    AgentRecord, BlackboardEvent, Delivery, Envelope, HostRecord, QueuedMessage, Store,
    StoreResult, TaskRecord,
};
use crate::config::Config;
use crate::error::{Error, Result};

/// A store on a Redis-protocol server (Redis 7, DragonflyDB).
pub struct RedisStore {
    server: Arc<Server>,
}

/// The server and what this process keeps about it.
struct Server {
    conn: Connection,
    events: Events,
    consumers: Consumers,
    /// Streams whose consumer group this process knows exists.
    groups: Mutex<HashSet<String>>,
}

impl RedisStore {
    /// Connects to `config.store` (a `redis://` or `rediss://` URL, with user,
    /// password and database in it). Fails with a Coordination error naming the
    /// URL (never the password) when the server cannot be reached within
    /// `connect_timeout`, and with BadInput when the URL does not parse.
    pub async fn connect(config: &Config) -> Result<RedisStore> {
        let patience = Duration::from_millis(config.connect_timeout);
        let conn = Connection::open(&config.store, patience)
            .await
            .map_err(|e| match e {
                OpenError::BadUrl(reason) => Error::bad_input(
                    format!("setting store '{}'", redact_url(&config.store)),
                    reason,
                ),
                OpenError::Unavailable(e) => Error::from(e),
            })?;
        Ok(RedisStore {
            server: Arc::new(Server {
                conn,
                events: Events::new(),
                consumers: Consumers::default(),
                groups: Mutex::default(),
            }),
        })
    }
}

/// `url` with its password replaced by `***`, for messages and logs.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            let hidden = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                user.to_string()
            };
            format!("{scheme}://{hidden}@{host}{tail}")
        }
        None => url.to_string(),
    }
}

#[async_trait]
impl Store for RedisStore {
    fn describe(&self) -> String {
        self.server.conn.url.clone()
    }

    async fn bb_set(&self, task: &str, key: &str, value: &Value, ttl: Duration) -> StoreResult<()> {
        self.server.bb_set(task, key, value, ttl).await
    }

    async fn bb_get(&self, task: &str, key: &str) -> StoreResult<Option<Value>> {
        self.server.bb_get(task, key).await
    }

    async fn bb_delete(&self, task: &str, key: &str) -> StoreResult<bool> {
        self.server.bb_delete(task, key).await
    }

    async fn bb_keys(&self, task: &str, prefix: &str) -> StoreResult<Vec<String>> {
        self.server.bb_keys(task, prefix).await
    }

    async fn bb_compare_and_set(
        &self,
        task: &str,
        key: &str,
        expected: Option<&Value>,
        new: Option<&Value>,
        ttl: Duration,
    ) -> StoreResult<bool> {
        self.server
            .bb_compare_and_set(task, key, expected, new, ttl)
            .await
    }

    async fn bb_subscribe(&self, task: &str) -> StoreResult<broadcast::Receiver<BlackboardEvent>> {
        let conn = &self.server.conn;
        self.server
            .events
            .subscribe(conn.client(), task, conn.patience, &conn.url)
            .await
    }

    async fn queue_push(&self, task: &str, queue: &str, envelope: &Envelope) -> StoreResult<()> {
        self.server.push(task, queue, envelope).await
    }

    async fn queue_take(
        &self,
        task: &str,
        queues: &[String],
        consumer: &str,
        wait: Duration,
    ) -> StoreResult<Option<Delivery>> {
        self.server.take(task, queues, consumer, wait).await
    }

    async fn queue_ack(&self, task: &str, delivery: &Delivery) -> StoreResult<()> {
        self.server.ack(task, delivery).await
    }

    async fn queue_nack(
        &self,
        task: &str,
        delivery: &Delivery,
        max_attempts: u32,
    ) -> StoreResult<bool> {
        self.server.nack(task, delivery, max_attempts).await
    }

    async fn queue_release_consumer(&self, task: &str, consumer: &str) -> StoreResult<usize> {
        self.server.consumers.close(task, consumer);
        self.server.release_server_side(task, consumer).await
    }

    async fn queue_list(&self, task: &str) -> StoreResult<Vec<QueuedMessage>> {
        self.server.queue_list(task).await
    }

    async fn queue_revive(&self, task: &str, queue: &str) -> StoreResult<usize> {
        self.server.revive(task, queue).await
    }

    async fn queue_is_drained(&self, task: &str) -> StoreResult<bool> {
        self.server.queue_is_drained(task).await
    }

    async fn agent_put(&self, task: &str, record: &AgentRecord) -> StoreResult<()> {
        self.server.agent_put(task, record).await
    }

    async fn agent_get(&self, task: &str, agent: &str) -> StoreResult<Option<AgentRecord>> {
        self.server.agent_get(task, agent).await
    }

    async fn agent_list(&self, task: &str) -> StoreResult<Vec<AgentRecord>> {
        self.server.agent_list(task).await
    }

    async fn task_put(&self, task: &str, record: &TaskRecord) -> StoreResult<()> {
        self.server.task_put(task, record).await
    }

    async fn task_get(&self, task: &str) -> StoreResult<Option<TaskRecord>> {
        self.server.task_get(task).await
    }

    async fn heartbeat(&self, task: &str, host: &HostRecord, agents: &[String]) -> StoreResult<()> {
        self.server.heartbeat(task, host, agents).await
    }

    async fn host_list(&self, task: &str) -> StoreResult<Vec<HostRecord>> {
        self.server.host_list(task).await
    }

    fn events_in_flight(&self, task: &str) -> usize {
        self.server.events.in_flight(task)
    }

    async fn lock_try_acquire(
        &self,
        task: &str,
        name: &str,
        token: &str,
        ttl: Duration,
    ) -> StoreResult<Option<u64>> {
        self.server.lock_acquire(task, name, token, ttl).await
    }

    async fn lock_release(&self, task: &str, name: &str, token: &str) -> StoreResult<bool> {
        self.server.lock_release(task, name, token).await
    }

    async fn lock_extend(
        &self,
        task: &str,
        name: &str,
        token: &str,
        ttl: Duration,
    ) -> StoreResult<bool> {
        self.server.lock_extend(task, name, token, ttl).await
    }

    async fn metrics_add(&self, task: &str, deltas: &[(String, i64)]) -> StoreResult<()> {
        self.server.metrics_add(task, deltas).await
    }

    async fn metrics_get(&self, task: &str) -> StoreResult<BTreeMap<String, i64>> {
        self.server.metrics_get(task).await
    }

    async fn claim(&self, task: &str, name: &str) -> StoreResult<bool> {
        self.server.claim(task, name).await
    }

    async fn clean(&self, task: &str) -> StoreResult<usize> {
        self.server.clean(task).await
    }

    async fn journal_append(&self, task: &str, lines: &[&str], max_len: usize) -> StoreResult<()> {
        self.server.journal_append(task, lines, max_len).await
    }

    async fn journal_read(
        &self,
        task: &str,
        after: Option<&str>,
        count: usize,
    ) -> StoreResult<Vec<(String, String)>> {
        self.server.journal_read(task, after, count).await
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_never_show() {
        assert_eq!(
            redact_url("redis://user:s3cret@host:6379/2"),
            "redis://user:***@host:6379/2"
        );
        assert_eq!(
            redact_url("rediss://:s3cret@host/0"),
            "rediss://:***@host/0"
        );
        assert_eq!(redact_url("redis://host:6379/0"), "redis://host:6379/0");
        assert_eq!(redact_url("redis://user@host"), "redis://user@host");
        assert_eq!(redact_url("redis://u:p@ss@host/0"), "redis://u:***@host/0");
    }
}
