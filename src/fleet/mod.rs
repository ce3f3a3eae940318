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
//! | `fleet:joins:{role}` | Stream of requests for an agent of `role` in a task (group `workers`) |
//! | `fleet:join_roles` | set of the roles asked for (read by workers serving any role) |
//! | `fleet:wake` | Stream of wake-ups every worker blocks on (see [`wake`]) |

pub mod bundle;
mod claims;
mod queue;
mod tasks;
mod wake;
pub mod worker;
mod workers;

use std::time::Duration;

use redis::aio::MultiplexedConnection;

use crate::error::{Error, Result};
pub use bundle::Bundle;
pub use queue::{Taken, joins};
pub use tasks::{FleetTask, TaskEnd};
pub use wake::{WAKE, WakeCursor};
pub use workers::WorkerHealth;

/// The Stream of submitted tasks.
pub const SUBMITTED: &str = "fleet:submitted";
/// The consumer group of the workers on [`SUBMITTED`].
pub const GROUP: &str = "workers";

/// A connection to the fleet's keys on a Redis-protocol server.
#[derive(Clone)]
pub struct Fleet {
    conn: MultiplexedConnection,
    url: String,
    client: redis::Client,
    timeout: Duration,
}

fn store_error(e: redis::RedisError) -> Error {
    Error::Coordination(format!("fleet store: {e}"))
}

impl Fleet {
    /// Connects to the server of `url` (a redis:// or rediss:// URL) and makes
    /// sure the submission Stream and its group exist.
    pub async fn connect(url: &str, timeout: Duration) -> Result<Fleet> {
        let mut fleet = Fleet::open(url, timeout).await?;
        fleet.ensure_group(SUBMITTED).await?;
        Ok(fleet)
    }

    /// Connects to the server of `url` without making anything there (to
    /// read or remove records).
    pub async fn open(url: &str, timeout: Duration) -> Result<Fleet> {
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
        let conn = connection(&client, timeout, &shown).await?;
        Ok(Fleet {
            conn,
            url: shown,
            client,
            timeout,
        })
    }

    /// The same server over a connection of its own (for a blocking wait).
    pub async fn another(&self) -> Result<Fleet> {
        let conn = connection(&self.client, self.timeout, &self.url).await?;
        Ok(Fleet {
            conn,
            ..self.clone()
        })
    }

    /// The server, as shown in messages (password hidden).
    pub fn describe(&self) -> &str {
        &self.url
    }

    /// Makes the Stream `stream` and its group of workers, unless they exist.
    pub async fn ensure_group(&mut self, stream: &str) -> Result<()> {
        let made: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(stream)
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
}

/// A new connection to `client`'s server (`shown` in messages).
async fn connection(
    client: &redis::Client,
    timeout: Duration,
    shown: &str,
) -> Result<MultiplexedConnection> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(None);
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|e| Error::Coordination(format!("store {shown} unreachable: {e}")))
}

fn task_key(id: &str) -> String {
    format!("fleet:task:{id}")
}
