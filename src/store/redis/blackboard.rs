//! The blackboard on the server: one string key per entry with its TTL, a
//! sorted-set index for `keys(prefix)`, and a PUBLISH of every change made in
//! the same script as the write.

use std::time::{Duration, Instant};

use futures::FutureExt;
use redis::Value as RedisValue;
use serde_json::Value;
use tokio::sync::broadcast;

use super::batch::{Write, WriteKind};
use super::keys::{Keys, token};
use super::scripts::{BB_CAS, BB_DELETE};
use super::{RedisStore, Server};
use crate::store::{BlackboardEvent, BlackboardStore, Pending, Sent, StoreError, StoreResult};

impl Server {
    fn set_nowait(&self, task: &str, key: &str, value: &Value, ttl: Duration) -> Pending {
        let keys = Keys::new(task);
        let ttl_ms = millis(ttl);
        let (member, flag) = self.fence(task);
        let write = Write {
            member,
            flag,
            kind: WriteKind::Set {
                value_key: keys.blackboard(key),
                index: keys.bb_index(),
                json: encode(value),
                ttl_ms,
                key: key.to_string(),
                channel: keys.events(),
                event_prefix: self.events.set_prefix(key),
                index_ttl: self.index_ttl(task, ttl_ms),
                deadline: self.clock.deadline(self.conn.patience),
            },
        };
        let sent = self.events.publishing(task);
        let (epoch, answer) = self
            .conn
            .write(["blackboard set '", key, "'"].concat(), write);
        Pending::sent(
            epoch,
            async move {
                let (_, again) = answer.await?;
                sent.delivered();
                Ok(again)
            }
            .boxed(),
        )
    }

    /// The TTL to raise the index of `task` to with this write (`0`: none).
    /// The index must outlive its entries: when the TTL this process last
    /// gave it does not cover this entry, the write raises it to twice the
    /// entry's, which covers the entries written for a while after.
    fn index_ttl(&self, task: &str, ttl_ms: u64) -> u64 {
        let now = Instant::now();
        let needed = now + Duration::from_millis(ttl_ms);
        let mut raised = self.index_raised.lock();
        match raised.get(task) {
            Some(until) if *until >= needed => 0,
            _ => {
                let ttl = ttl_ms.saturating_mul(2);
                raised.insert(task.to_string(), now + Duration::from_millis(ttl));
                ttl
            }
        }
    }
}

#[async_trait::async_trait]
impl BlackboardStore for RedisStore {
    async fn bb_set(&self, task: &str, key: &str, value: &Value, ttl: Duration) -> StoreResult<()> {
        self.set_nowait(task, key, value, ttl)
            .settle()
            .await
            .map(|_| ())
    }

    fn bb_set_nowait(&self, task: &str, key: &str, value: &Value, ttl: Duration) -> Pending {
        self.set_nowait(task, key, value, ttl)
    }

    async fn bb_get(&self, task: &str, key: &str) -> StoreResult<Option<Value>> {
        let value_key = Keys::new(task).blackboard(key);
        let raw: Option<String> = self
            .conn
            .query("blackboard get", || {
                let mut cmd = redis::cmd("GET");
                cmd.arg(&value_key);
                cmd
            })
            .await?;
        raw.map(|s| decode(&value_key, &s)).transpose()
    }

    fn bb_get_sent(&self, task: &str, key: &str) -> Sent<Option<Value>> {
        let value_key = Keys::new(task).blackboard(key);
        let mut cmd = redis::cmd("GET");
        cmd.arg(&value_key);
        let (_, answer) = self.conn.read(format!("blackboard get '{key}'"), cmd);
        Sent::waiting(
            async move {
                match answer.await?.0 {
                    RedisValue::Nil => Ok(None),
                    RedisValue::BulkString(raw) => decode_bytes(&value_key, &raw).map(Some),
                    other => Err(StoreError::Corrupt {
                        key: value_key,
                        reason: format!("expected a string, got {other:?}"),
                    }),
                }
            }
            .boxed(),
        )
    }

    async fn bb_delete(&self, task: &str, key: &str) -> StoreResult<bool> {
        let keys = Keys::new(task);
        let (value_key, index, channel) = (keys.blackboard(key), keys.bb_index(), keys.events());
        let event = self.events.delete_event(key);
        let sent = self.events.publishing(task);
        let (member, fenced) = self.fence(task);
        let removed: i64 = self
            .conn
            .eval(
                "blackboard delete",
                &BB_DELETE,
                &[&value_key, &index, &member],
                |c| {
                    c.arg(key).arg(&channel).arg(&event).arg(fenced);
                },
            )
            .await?;
        // Nothing is published when the key did not exist.
        if removed == 1 {
            sent.delivered();
        }
        Ok(removed == 1)
    }

    async fn bb_keys(&self, task: &str, prefix: &str) -> StoreResult<Vec<String>> {
        let keys = Keys::new(task);
        let index = keys.bb_index();
        // Lexicographic range of the members starting with `prefix`: UTF-8 text
        // never holds the byte 0xFF, so `prefix + 0xFF` is above all of them.
        let (min, max): (Vec<u8>, Vec<u8>) = if prefix.is_empty() {
            (b"-".to_vec(), b"+".to_vec())
        } else {
            let mut min = b"[".to_vec();
            min.extend_from_slice(prefix.as_bytes());
            let mut max = b"(".to_vec();
            max.extend_from_slice(prefix.as_bytes());
            max.push(0xFF);
            (min, max)
        };
        let candidates: Vec<String> = self
            .conn
            .query("blackboard keys", || {
                let mut cmd = redis::cmd("ZRANGEBYLEX");
                cmd.arg(&index).arg(&min).arg(&max);
                cmd
            })
            .await?;
        if candidates.is_empty() {
            return Ok(candidates);
        }
        // The index outlives entries that expired: keep the live ones, forget the rest.
        let live: Vec<bool> = self
            .conn
            .pipeline("blackboard keys", || {
                let mut pipe = redis::pipe();
                for k in &candidates {
                    pipe.cmd("EXISTS").arg(keys.blackboard(k));
                }
                pipe
            })
            .await?;
        let (alive, expired): (Vec<_>, Vec<_>) =
            candidates.into_iter().zip(live).partition(|(_, l)| *l);
        if !expired.is_empty() {
            let stale: Vec<String> = expired.into_iter().map(|(k, _)| k).collect();
            self.conn
                .query::<i64>("blackboard keys", || {
                    let mut cmd = redis::cmd("ZREM");
                    cmd.arg(&index).arg(&stale);
                    cmd
                })
                .await?;
        }
        Ok(alive.into_iter().map(|(k, _)| k).collect())
    }

    async fn bb_compare_and_set(
        &self,
        task: &str,
        key: &str,
        expected: Option<&Value>,
        new: Option<&Value>,
        ttl: Duration,
    ) -> StoreResult<bool> {
        let keys = Keys::new(task);
        let (value_key, index, channel) = (keys.blackboard(key), keys.bb_index(), keys.events());
        let once = keys.once(&token());
        let expected_json = expected.map(encode).unwrap_or_default();
        let new_json = new.map(encode).unwrap_or_default();
        let event = match new {
            Some(_) => self.events.set_prefix(key),
            None => self.events.delete_event(key),
        };
        let ttl_ms = millis(ttl);
        let flag = |present: bool| if present { "1" } else { "0" };
        let sent = self.events.publishing(task);
        let (member, fenced) = self.fence(task);
        let swapped: i64 = self
            .conn
            .eval(
                "blackboard compare-and-set",
                &BB_CAS,
                &[&value_key, &index, &once, &member],
                |c| {
                    c.arg(flag(expected.is_some()))
                        .arg(&expected_json)
                        .arg(flag(new.is_some()))
                        .arg(&new_json)
                        .arg(ttl_ms)
                        .arg(key)
                        .arg(&channel)
                        .arg(&event)
                        .arg(fenced);
                },
            )
            .await?;
        if swapped == 1 {
            sent.delivered();
        }
        Ok(swapped == 1)
    }

    async fn bb_subscribe(&self, task: &str) -> StoreResult<broadcast::Receiver<BlackboardEvent>> {
        let conn = &self.conn;
        self.events
            .subscribe(conn.client(), task, conn.patience, &conn.url)
            .await
    }

    fn events_in_flight(&self, task: &str) -> usize {
        self.events.in_flight(task)
    }
}

/// JSON text of a value. Objects serialize with sorted keys (serde_json's map
/// is ordered), so equal values have equal text: compare-and-set compares text.
///
/// `serde_json::to_string`, not `Value`'s `Display` (the same text): that
/// goes through `fmt`'s machinery piece by piece, a visible share of a set.
pub(super) fn encode(value: &Value) -> String {
    serde_json::to_string(value).expect("a JSON value always serializes")
}

/// Parses a stored value, naming the key when it is not JSON.
pub(super) fn decode<T: serde::de::DeserializeOwned>(key: &str, raw: &str) -> StoreResult<T> {
    decode_bytes(key, raw.as_bytes())
}

/// Parses stored bytes, naming the key when they are not JSON.
fn decode_bytes<T: serde::de::DeserializeOwned>(key: &str, raw: &[u8]) -> StoreResult<T> {
    serde_json::from_slice(raw).map_err(|e| StoreError::Corrupt {
        key: key.to_string(),
        reason: e.to_string(),
    })
}

/// A duration in whole milliseconds, at least 1 (Redis refuses a TTL of 0).
pub(super) fn millis(d: Duration) -> u64 {
    (d.as_millis() as u64).max(1)
}
