//! Helpers of the Redis tests: a store of either backend, messages, task files.

use std::sync::Arc;
use std::time::Duration;

use orrery::config::Config;
use orrery::store::{Envelope, MemoryStore, RedisStore, Store};

use crate::common::{Backend, RedisServer};

/// A store of one backend, with the server behind it when there is one
/// (stopped when this is dropped).
pub struct Opened {
    pub store: Arc<dyn Store>,
    pub server: Option<RedisServer>,
}

impl std::ops::Deref for Opened {
    type Target = Arc<dyn Store>;
    fn deref(&self) -> &Arc<dyn Store> {
        &self.store
    }
}

impl Opened {
    /// A second, independent connection to the same store: another process,
    /// as far as the server can tell. The embedded store shares itself.
    pub async fn another(&self) -> Arc<dyn Store> {
        match &self.server {
            Some(server) => connect(&server.url()).await,
            None => self.store.clone(),
        }
    }
}

/// Opens a fresh store of `backend` (a new server for Redis).
pub async fn open(backend: Backend) -> Opened {
    match backend {
        Backend::Memory => Opened {
            store: Arc::new(MemoryStore::new()),
            server: None,
        },
        Backend::Redis => {
            let server = RedisServer::start();
            let store = connect(&server.url()).await;
            Opened {
                store,
                server: Some(server),
            }
        }
    }
}

/// Connects to a Redis URL with the default connect timeout.
pub async fn connect(url: &str) -> Arc<dyn Store> {
    let patience = Duration::from_millis(Config::default().connect_timeout);
    Arc::new(
        RedisStore::connect(url, patience)
            .await
            .expect("redis store connects"),
    )
}

/// A message with the given id and type.
pub fn envelope(id: &str, kind: &str) -> Envelope {
    Envelope {
        id: id.into(),
        from: "tester-1".into(),
        to: "worker".into(),
        kind: kind.into(),
        payload: serde_json::json!({ "id": id }),
        attempts: 0,
        reply_to: None,
    }
}

/// The queue names `[agent, role]` an agent of `role` reads.
pub fn queues(agent: &str, role: &str) -> Vec<String> {
    vec![agent.to_string(), role.to_string()]
}
