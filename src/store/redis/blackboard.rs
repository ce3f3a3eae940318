//! The blackboard on the server: one string key per entry with its TTL, a
//! sorted-set index for `keys(prefix)`, and a PUBLISH of every change made in
//! the same script as the write.

use std::time::Duration;

use serde_json::Value;

use super::Server;
use super::keys::{Keys, token};
use super::scripts::{BB_CAS, BB_DELETE, BB_SET};
use crate::store::{StoreError, StoreResult};

impl Server {
    pub(super) async fn bb_set(
        &self,
        task: &str,
        key: &str,
        value: &Value,
        ttl: Duration,
    ) -> StoreResult<()> {
        let keys = Keys::new(task);
        let (value_key, index, channel) = (keys.blackboard(key), keys.bb_index(), keys.events());
        let json = encode(value);
        let prefix = self.events.set_prefix(key);
        let ttl_ms = millis(ttl);
        let sent = self.events.publishing(task);
        self.conn
            .eval::<i64>("blackboard set", &BB_SET, |s| {
                s.key(&value_key)
                    .key(&index)
                    .arg(&json)
                    .arg(ttl_ms)
                    .arg(key)
                    .arg(&channel)
                    .arg(&prefix);
            })
            .await?;
        sent.delivered();
        Ok(())
    }

    pub(super) async fn bb_get(&self, task: &str, key: &str) -> StoreResult<Option<Value>> {
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

    pub(super) async fn bb_delete(&self, task: &str, key: &str) -> StoreResult<bool> {
        let keys = Keys::new(task);
        let (value_key, index, channel) = (keys.blackboard(key), keys.bb_index(), keys.events());
        let event = self.events.delete_event(key);
        let sent = self.events.publishing(task);
        let removed: i64 = self
            .conn
            .eval("blackboard delete", &BB_DELETE, |s| {
                s.key(&value_key)
                    .key(&index)
                    .arg(key)
                    .arg(&channel)
                    .arg(&event);
            })
            .await?;
        // Nothing is published when the key did not exist.
        if removed == 1 {
            sent.delivered();
        }
        Ok(removed == 1)
    }

    pub(super) async fn bb_keys(&self, task: &str, prefix: &str) -> StoreResult<Vec<String>> {
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

    pub(super) async fn bb_compare_and_set(
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
        let swapped: i64 = self
            .conn
            .eval("blackboard compare-and-set", &BB_CAS, |s| {
                s.key(&value_key)
                    .key(&index)
                    .key(&once)
                    .arg(flag(expected.is_some()))
                    .arg(&expected_json)
                    .arg(flag(new.is_some()))
                    .arg(&new_json)
                    .arg(ttl_ms)
                    .arg(key)
                    .arg(&channel)
                    .arg(&event);
            })
            .await?;
        if swapped == 1 {
            sent.delivered();
        }
        Ok(swapped == 1)
    }
}

/// JSON text of a value. Objects serialize with sorted keys (serde_json's map
/// is ordered), so equal values have equal text: compare-and-set compares text.
pub(super) fn encode(value: &Value) -> String {
    value.to_string()
}

/// Parses a stored value, naming the key when it is not JSON.
pub(super) fn decode<T: serde::de::DeserializeOwned>(key: &str, raw: &str) -> StoreResult<T> {
    serde_json::from_str(raw).map_err(|e| StoreError::Corrupt {
        key: key.to_string(),
        reason: e.to_string(),
    })
}

/// A duration in whole milliseconds, at least 1 (Redis refuses a TTL of 0).
pub(super) fn millis(d: Duration) -> u64 {
    (d.as_millis() as u64).max(1)
}
