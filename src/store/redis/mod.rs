//! The Redis / DragonflyDB store: all shared state of a task in a server
//! reached over the Redis protocol, so several `orrery` processes can work on
//! one task.
//!
//! Keys follow the original system's schema (see [`keys`]); multi-step writes
//! are server-side scripts that declare every key they touch (see
//! [`scripts`]); queues are streams read through a consumer group (see
//! [`queues`], [`consumer`], [`waits`]); watches are explicit publishes made by
//! the write scripts (see [`events`]). Each family of the [`Store`] contract
//! is implemented in its own file.
//!
//! A process holds three connections at most, whatever its number of agents:
//! the shared one every command goes through ([`conn`]), the blocking
//! reader's ([`waits`]) and, once something watches the blackboard, one
//! pub/sub connection per task ([`events`]). A dropped connection is replaced
//! and the command retried with backoff for up to `connect_timeout`;
//! operations that are not idempotent carry a token so a retry cannot apply
//! them twice.

mod acks;
mod batch;
mod blackboard;
mod clock;
mod conn;
mod consumer;
mod events;
mod journal;
mod keys;
mod queues;
mod records;
mod reply;
mod scripts;
mod waits;

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::fast_map::{FastMap, FastSet};

use self::acks::AckBook;
use self::clock::ServerClock;
use self::conn::{Connection, OpenError};
use self::consumer::Consumers;
use self::events::Events;
use self::waits::Waits;
use super::{Store, StoreError, StoreResult};

/// A store on a Redis-protocol server (Redis 7, DragonflyDB).
pub struct RedisStore(Arc<Server>);

/// The server and what this process keeps about it (reachable only through
/// [`RedisStore`]).
pub struct Server {
    conn: Arc<Connection>,
    events: Events,
    consumers: Consumers,
    waits: Waits,
    /// Streams whose consumer group this process knows exists.
    groups: Mutex<FastSet<String>>,
    /// Streams this process recorded in their task's set of queues.
    registered: Arc<Mutex<FastSet<String>>>,
    /// Streams on which this process gave a message back that no look has
    /// claimed since.
    parked: Mutex<FastSet<String>>,
    /// Acknowledgements not applied yet (see [`acks`]).
    acks: Arc<Mutex<AckBook>>,
    /// Until when this process made each task's blackboard index live.
    index_raised: Mutex<FastMap<String, Instant>>,
    /// The member key of each task this process joined; its write scripts
    /// check it (see [`scripts`]).
    members: parking_lot::RwLock<FastMap<String, String>>,
    /// This process as a sender (random, new for every store): its sends to
    /// a task are marked applied in `task:{id}:sent:{sender}`.
    sender: String,
    /// The number of the next send to each task, from 0 (a bit offset).
    sends: Mutex<FastMap<String, u64>>,
    /// The server's clock as this process reads it: sends carry a deadline
    /// in the server's time.
    clock: ServerClock,
}

impl std::ops::Deref for RedisStore {
    type Target = Arc<Server>;
    fn deref(&self) -> &Arc<Server> {
        &self.0
    }
}

impl RedisStore {
    /// Connects to `url` (a `redis://` or `rediss://` URL, with user,
    /// password and database in it). Fails with `Unavailable` naming the URL
    /// (never the password) when the server cannot be reached within
    /// `connect_timeout`, and with `BadUrl` when the URL does not parse.
    pub async fn connect(url: &str, connect_timeout: Duration) -> StoreResult<RedisStore> {
        let conn = Connection::open(url, connect_timeout)
            .await
            .map_err(|e| match e {
                OpenError::BadUrl(reason) => StoreError::BadUrl {
                    url: redact_url(url),
                    reason,
                },
                // The URL names a database the server does not have: the
                // setting is wrong, not the server away.
                OpenError::Unavailable(StoreError::Unavailable { reason, .. })
                    if reason.contains("DB index is out of range") =>
                {
                    StoreError::BadUrl {
                        url: redact_url(url),
                        reason: "the server has no database of that number \
                                 (DB index is out of range)"
                            .to_string(),
                    }
                }
                OpenError::Unavailable(e) => e,
            })?;
        let clock = ServerClock::read(&conn).await?;
        Ok(RedisStore(Arc::new(Server {
            conn,
            events: Events::new(),
            consumers: Consumers::default(),
            waits: Waits::default(),
            groups: Mutex::default(),
            registered: Arc::default(),
            parked: Mutex::default(),
            acks: Arc::default(),
            index_raised: Mutex::default(),
            members: parking_lot::RwLock::default(),
            sender: format!("{:016x}", rand::random::<u64>()),
            sends: Mutex::default(),
            clock,
        })))
    }
}

impl Server {
    /// The member key and flag the write scripts of `task` end with: this
    /// process's key once it joined the task, else a flag that skips the check.
    pub(super) fn fence(&self, task: &str) -> (String, &'static str) {
        match self.members.read().get(task) {
            Some(key) => (key.clone(), "1"),
            None => (keys::Keys::new(task).member("-"), "0"),
        }
    }

    /// The number of this process's next send to `task`: sends are numbered
    /// 0, 1, 2... per task, so their bitmap stays dense (see [`scripts::SEND`]).
    fn next_send(&self, task: &str) -> u64 {
        let mut sends = self.sends.lock();
        let next = match sends.get_mut(task) {
            Some(n) => n,
            None => sends.entry(task.to_string()).or_insert(0),
        };
        let number = *next;
        *next += 1;
        number
    }
}

impl Store for RedisStore {
    fn describe(&self) -> String {
        self.conn.url.clone()
    }

    fn epoch(&self) -> u64 {
        self.conn.epoch()
    }

    fn queue_adopt(&self, task: &str, agent: &str) {
        // Looked at by the next reads, and forgotten once nothing is left there.
        self.parked.lock().insert(keys::Keys::new(task).bus(agent));
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
