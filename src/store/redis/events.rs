//! Blackboard change events: published by the write scripts on the channel
//! `task:{id}:events`, received here on one pub/sub connection per task and
//! fanned out to the watchers of this process.
//!
//! The process also counts the changes it published that its own
//! subscription has not delivered yet, so the orchestrator does not declare a
//! task quiet while a watcher's event is still on the wire.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use parking_lot::Mutex;
use redis::Client;
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::{broadcast, watch};
use tokio::task::AbortHandle;

use super::keys::Keys;
use crate::store::{BlackboardEvent, StoreError, StoreResult};

/// How many unread events a slow watcher may fall behind by (as in the
/// embedded store: each pins its value until every watcher read it).
const EVENT_BUFFER: usize = crate::store::EVENT_BUFFER;

/// The event subscriptions of one store.
pub(super) struct Events {
    /// Tags this process's events, to count its own in-flight changes.
    origin: String,
    tasks: Mutex<HashMap<String, Arc<TaskEvents>>>,
    listeners: Mutex<Vec<AbortHandle>>,
}

struct TaskEvents {
    sender: broadcast::Sender<BlackboardEvent>,
    in_flight: AtomicUsize,
    /// True while the channel subscription is active.
    subscribed: watch::Sender<bool>,
}

/// An event as published: `{"o": origin, "k": key, "v": value}`, or with
/// `"d": 1` and no value for a deletion.
#[derive(Deserialize)]
struct Wire {
    o: String,
    k: String,
    #[serde(default)]
    v: Value,
    #[serde(default)]
    d: u8,
}

/// Counts one change as in flight until it is published (or was not).
pub(super) struct Publishing {
    task: Option<Arc<TaskEvents>>,
}

impl Publishing {
    /// The change was published: it stays in flight until it comes back.
    pub fn delivered(mut self) {
        self.task = None;
    }
}

impl Drop for Publishing {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            decrement(&t.in_flight);
        }
    }
}

fn decrement(n: &AtomicUsize) {
    let _ = n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| v.checked_sub(1));
}

impl Events {
    pub fn new() -> Events {
        Events {
            origin: super::keys::token(),
            tasks: Mutex::default(),
            listeners: Mutex::default(),
        }
    }

    /// The event text of a set of `key`, up to the value (the script appends
    /// the value and the closing brace).
    pub fn set_prefix(&self, key: &str) -> String {
        // Made for every set: joined, where `format!` and `Value`'s
        // `Display` cost several times as much.
        let key = serde_json::to_string(key).expect("a string always serializes");
        [r#"{"o":""#, &self.origin, r#"","k":"#, &key, r#","v":"#].concat()
    }

    /// The event text of a deletion of `key`.
    pub fn delete_event(&self, key: &str) -> String {
        format!(
            r#"{{"o":"{}","k":{},"d":1}}"#,
            self.origin,
            Value::from(key)
        )
    }

    /// Call before a write that publishes; keep the guard until the write returned.
    pub fn publishing(&self, task: &str) -> Publishing {
        let t = self
            .tasks
            .lock()
            .get(task)
            .filter(|t| *t.subscribed.borrow())
            .cloned();
        if let Some(t) = &t {
            t.in_flight.fetch_add(1, Ordering::SeqCst);
        }
        Publishing { task: t }
    }

    /// Changes this process published for `task` that its subscription has not delivered.
    pub fn in_flight(&self, task: &str) -> usize {
        self.tasks
            .lock()
            .get(task)
            .map_or(0, |t| t.in_flight.load(Ordering::SeqCst))
    }

    /// Every change of `task` from now on. Returns once the server confirmed
    /// the subscription, so no later write is missed.
    pub async fn subscribe(
        &self,
        client: &Client,
        task: &str,
        patience: Duration,
        url: &str,
    ) -> StoreResult<broadcast::Receiver<BlackboardEvent>> {
        let (events, started) = {
            let mut tasks = self.tasks.lock();
            match tasks.get(task) {
                Some(t) => (t.clone(), false),
                None => {
                    let t = Arc::new(TaskEvents {
                        sender: broadcast::channel(EVENT_BUFFER).0,
                        in_flight: AtomicUsize::new(0),
                        subscribed: watch::channel(false).0,
                    });
                    tasks.insert(task.to_string(), t.clone());
                    (t, true)
                }
            }
        };
        if started {
            let listener = tokio::spawn(listen(
                Subscription {
                    client: client.clone(),
                    url: url.to_string(),
                    patience,
                    channel: Keys::new(task).events(),
                },
                events.clone(),
                self.origin.clone(),
            ));
            self.listeners.lock().push(listener.abort_handle());
        }
        let receiver = events.sender.subscribe();
        let mut subscribed = events.subscribed.subscribe();
        tokio::time::timeout(patience, subscribed.wait_for(|s| *s))
            .await
            .map_err(|_| StoreError::Unavailable {
                url: url.to_string(),
                reason: format!(
                    "the server did not confirm the subscription to blackboard events \
                     (gave up after {} ms; setting connect_timeout)",
                    patience.as_millis()
                ),
            })?
            .map_err(|_| StoreError::Unavailable {
                url: url.to_string(),
                reason: "the blackboard event listener stopped".into(),
            })?;
        Ok(receiver)
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        for l in self.listeners.lock().drain(..) {
            l.abort();
        }
    }
}

/// Where a task's events are subscribed to, and how long an answer is waited for.
struct Subscription {
    client: Client,
    /// The server's URL, for messages.
    url: String,
    /// `connect_timeout`.
    patience: Duration,
    channel: String,
}

impl Subscription {
    /// A new pub/sub connection subscribed to the channel. Bounded by
    /// `connect_timeout` as every other wait on the server: a server that
    /// accepts the connection and never answers (paused, a hung machine, a
    /// connection the network dropped) is given up on, for a new
    /// connection, instead of holding the subscription for good.
    async fn open(&self) -> Result<redis::aio::PubSub, String> {
        let open = async {
            let mut pubsub = self.client.get_async_pubsub().await?;
            pubsub.subscribe(&self.channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        match tokio::time::timeout(self.patience, open).await {
            Ok(Ok(pubsub)) => Ok(pubsub),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!(
                "the server did not answer (gave up after {} ms; setting connect_timeout)",
                self.patience.as_millis()
            )),
        }
    }
}

/// Keeps one subscription alive: reconnects with backoff when it drops or
/// cannot be made.
async fn listen(at: Subscription, events: Arc<TaskEvents>, origin: String) {
    let Subscription { url, channel, .. } = &at;
    let mut pause = Duration::from_millis(20);
    loop {
        let pubsub = match at.open().await {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!("blackboard event subscription on {url} ({channel}): {e}");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(500));
                continue;
            }
        };
        pause = Duration::from_millis(20);
        events.subscribed.send_replace(true);
        let mut messages = pubsub.into_on_message();
        while let Some(msg) = messages.next().await {
            let Ok(text) = msg.get_payload::<String>() else {
                continue;
            };
            let Ok(wire) = serde_json::from_str::<Wire>(&text) else {
                tracing::warn!("ignoring a malformed event on {channel}: {text}");
                continue;
            };
            if wire.o == origin {
                decrement(&events.in_flight);
            }
            let _ = events.sender.send(BlackboardEvent {
                key: wire.k,
                value: (wire.d == 0).then_some(wire.v),
            });
        }
        // The connection dropped: what was in transit is gone with it.
        events.subscribed.send_replace(false);
        events.in_flight.store(0, Ordering::SeqCst);
        tracing::warn!(
            "lost the blackboard event subscription on {channel}; reconnecting \
             (changes made until then are not delivered to watchers)"
        );
    }
}
