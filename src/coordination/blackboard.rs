//! The blackboard: shared key/value state of one task.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::broadcast;

use super::MetricsCollector;
use crate::error::{Error, Result};
use crate::store::{BlackboardEvent, Store};

/// Longest key accepted (bytes).
pub const MAX_KEY_BYTES: usize = 512;

/// The outputs of a run (`task.output(name, value)`) are blackboard keys
/// under this prefix, so every agent and every host of the task sees them.
pub const OUTPUT_PREFIX: &str = "outputs/";

/// Shared key/value state of a task; keys are confined to the task.
pub struct Blackboard {
    store: Arc<dyn Store>,
    task: String,
    ttl: Duration,
    metrics: Arc<MetricsCollector>,
    max_value_bytes: usize,
}

impl Blackboard {
    pub(super) fn new(
        store: Arc<dyn Store>,
        task: &str,
        ttl: Duration,
        metrics: Arc<MetricsCollector>,
        max_value_bytes: usize,
    ) -> Self {
        Blackboard {
            store,
            task: task.to_string(),
            ttl,
            metrics,
            max_value_bytes,
        }
    }

    /// Stores `value` under `key`. Fails on a bad key, a value over the size limit, or a store failure.
    pub async fn set(&self, key: &str, value: &Value) -> Result<()> {
        check_key(key)?;
        check_size(value, self.max_value_bytes, || {
            format!("blackboard key '{key}'")
        })?;
        self.store.bb_set(&self.task, key, value, self.ttl).await?;
        self.metrics.blackboard_write();
        Ok(())
    }

    /// Reads `key`.
    pub async fn get(&self, key: &str) -> Result<Option<Value>> {
        check_key(key)?;
        let v = self.store.bb_get(&self.task, key).await?;
        self.metrics.blackboard_read();
        Ok(v)
    }

    /// Deletes `key`; true when it existed.
    pub async fn delete(&self, key: &str) -> Result<bool> {
        check_key(key)?;
        let existed = self.store.bb_delete(&self.task, key).await?;
        self.metrics.blackboard_write();
        Ok(existed)
    }

    /// Keys starting with `prefix`, sorted.
    pub async fn keys(&self, prefix: &str) -> Result<Vec<String>> {
        if prefix.len() > MAX_KEY_BYTES || prefix.chars().any(char::is_control) {
            return Err(bad_key(prefix, "prefix"));
        }
        let keys = self.store.bb_keys(&self.task, prefix).await?;
        self.metrics.blackboard_read();
        Ok(keys)
    }

    /// Sets `key` to `new` (deletes on `None`) only if it holds `expected` (absent on `None`).
    pub async fn compare_and_set(
        &self,
        key: &str,
        expected: Option<&Value>,
        new: Option<&Value>,
    ) -> Result<bool> {
        check_key(key)?;
        if let Some(v) = new {
            check_size(v, self.max_value_bytes, || {
                format!("blackboard key '{key}'")
            })?;
        }
        let swapped = self
            .store
            .bb_compare_and_set(&self.task, key, expected, new, self.ttl)
            .await?;
        self.metrics.blackboard_read();
        if swapped {
            self.metrics.blackboard_write();
        }
        Ok(swapped)
    }

    /// Records output `name` of the run (`None` removes it), as a write of
    /// the key `outputs/<name>`.
    pub async fn set_output(&self, name: &str, value: Option<&Value>) -> Result<()> {
        let key = format!("{OUTPUT_PREFIX}{name}");
        match value {
            Some(v) => self.set(&key, v).await,
            None => self.delete(&key).await.map(|_| ()),
        }
    }

    /// Every output of the run by name, counted as blackboard reads.
    pub async fn outputs(&self) -> Result<BTreeMap<String, Value>> {
        let mut outputs = BTreeMap::new();
        for key in self.keys(OUTPUT_PREFIX).await? {
            if let Some(v) = self.get(&key).await? {
                outputs.insert(key[OUTPUT_PREFIX.len()..].to_string(), v);
            }
        }
        Ok(outputs)
    }

    /// Every output of the run by name, read past the counters: for the
    /// run's report, made after the counters were flushed to the store.
    pub async fn outputs_uncounted(&self) -> Result<BTreeMap<String, Value>> {
        let mut outputs = BTreeMap::new();
        for key in self.store.bb_keys(&self.task, OUTPUT_PREFIX).await? {
            if let Some(v) = self.store.bb_get(&self.task, &key).await? {
                outputs.insert(key[OUTPUT_PREFIX.len()..].to_string(), v);
            }
        }
        Ok(outputs)
    }

    /// Every change from now on.
    pub async fn subscribe(&self) -> Result<broadcast::Receiver<BlackboardEvent>> {
        Ok(self.store.bb_subscribe(&self.task).await?)
    }
}

fn bad_key(key: &str, what: &str) -> Error {
    Error::bad_input(
        format!("blackboard {what} {key:?}"),
        format!("must be 1 to {MAX_KEY_BYTES} bytes with no control characters"),
    )
}

/// Keys are any printable text: the store confines them to the task, so `:`,
/// `..` and glob characters are plain characters here.
fn check_key(key: &str) -> Result<()> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES || key.chars().any(char::is_control) {
        return Err(bad_key(key, "key"));
    }
    Ok(())
}

/// Refuses values whose JSON form is larger than `limit` bytes; the error
/// names `what` (built only then).
pub(crate) fn check_size(value: &Value, limit: usize, what: impl FnOnce() -> String) -> Result<()> {
    let size = json_size(value, limit);
    if size > limit {
        return Err(Error::bad_input(
            what(),
            format!("value is larger than max_value_bytes ({limit} bytes)"),
        ));
    }
    Ok(())
}

/// An upper bound of the JSON size of `v`, computed without serializing and
/// stopping early once it passes `limit`.
fn json_size(v: &Value, limit: usize) -> usize {
    match v {
        Value::Null | Value::Bool(_) => 5,
        Value::Number(_) => 24,
        Value::String(s) => s.len() + 2,
        Value::Array(a) => {
            let mut n = 2;
            for x in a {
                n += json_size(x, limit) + 1;
                if n > limit {
                    break;
                }
            }
            n
        }
        Value::Object(o) => {
            let mut n = 2;
            for (k, x) in o {
                n += k.len() + 4 + json_size(x, limit);
                if n > limit {
                    break;
                }
            }
            n
        }
    }
}
