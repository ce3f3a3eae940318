//! The blackboard: shared key/value state of one task.
//!
//! The quotas `max_blackboard_keys` and `max_blackboard_bytes` are kept with a
//! ledger of what this process's agents wrote: the key and the size of its
//! value as JSON. On the embedded store that is the whole blackboard; on a
//! shared store each process counts its own writes. A write the ledger would
//! refuse first drops from it the keys the store no longer holds (expired,
//! or deleted by another process), at most once a second.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use serde_json::Value;
use tokio::sync::broadcast;

use super::journal::{Event, Fast};
use super::quotas::exceeded;
use super::{Journal, MetricsCollector};
use crate::config::Quotas;
use crate::error::{Error, Result};
use crate::store::{BlackboardEvent, Pending, Sent, Store};

/// Longest key accepted (bytes).
pub const MAX_KEY_BYTES: usize = 512;

/// The outputs of a run (`task.output(name, value)`) are blackboard keys
/// under this prefix, so every agent and every host of the task sees them.
pub const OUTPUT_PREFIX: &str = "outputs/";

/// How long a run's output lives in the store at least: outputs are the
/// run's result, so `blackboard_ttl` (an hour by default, set shorter for a
/// scratchpad) must not take them before the report reads them. The end of
/// the run gives them the retention, as every other key of the task.
const OUTPUT_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// Shared key/value state of a task; keys are confined to the task.
pub struct Blackboard {
    store: Arc<dyn Store>,
    task: String,
    ttl: Duration,
    metrics: Arc<MetricsCollector>,
    max_value_bytes: usize,
    journal: Journal,
    quotas: Quotas,
    ledger: Mutex<Ledger>,
}

/// What this process's agents wrote: each key with its size.
#[derive(Default)]
struct Ledger {
    /// Hashed with [`Fast`](crate::fast_map::Fast): looked up on every
    /// write, where SipHash showed in profiles.
    sizes: crate::fast_map::FastMap<String, usize>,
    bytes: usize,
    /// When keys the store no longer holds were last dropped.
    synced: Option<Instant>,
}

impl Ledger {
    /// The keys and bytes after `key` takes `size` bytes.
    fn after(&self, key: &str, size: usize) -> (usize, usize) {
        let old = self.sizes.get(key).copied();
        (
            self.sizes.len() + usize::from(old.is_none()),
            self.bytes - old.unwrap_or(0) + size,
        )
    }

    fn put(&mut self, key: &str, size: Option<usize>) {
        let old = match (size, self.sizes.get_mut(key)) {
            // Overwriting a key needs no new key string.
            (Some(size), Some(held)) => Some(std::mem::replace(held, size)),
            (Some(size), None) => self.sizes.insert(key.to_string(), size),
            (None, _) => self.sizes.remove(key),
        };
        self.bytes = self.bytes + size.unwrap_or(0) - old.unwrap_or(0);
    }
}

impl Blackboard {
    pub(super) fn new(
        store: Arc<dyn Store>,
        task: &str,
        ttl: Duration,
        metrics: Arc<MetricsCollector>,
        max_value_bytes: usize,
        journal: Journal,
        quotas: Quotas,
    ) -> Self {
        Blackboard {
            store,
            task: task.to_string(),
            ttl,
            metrics,
            max_value_bytes,
            journal,
            quotas,
            ledger: Mutex::default(),
        }
    }

    /// The expiry of a write of `key`: `blackboard_ttl`, or at least
    /// [`OUTPUT_TTL`] for an output.
    fn ttl_of(&self, key: &str) -> Duration {
        if key.starts_with(OUTPUT_PREFIX) {
            self.ttl.max(OUTPUT_TTL)
        } else {
            self.ttl
        }
    }

    /// Stores `value` under `key`. Fails on a bad key, a value over the size
    /// limit, a quota reached, or a store failure.
    pub async fn set(&self, key: &str, value: &Value) -> Result<()> {
        check_key(key)?;
        let size = check_size(value, self.max_value_bytes, || {
            format!("blackboard key '{key}'")
        })?;
        let before = self.admit(key, size).await?;
        if let Err(e) = self
            .store
            .bb_set(&self.task, key, value, self.ttl_of(key))
            .await
        {
            self.ledger.lock().put(key, before);
            // Lost work even if the script catches the error.
            self.metrics
                .lost
                .record(|| format!("blackboard key '{key}'"), &e.to_string());
            return Err(e.into());
        }
        self.metrics.blackboard_write();
        self.journal.note(|| written(key, size, value));
        Ok(())
    }

    /// Sends the write of `value` under `key` without waiting for the store's
    /// answer (see [`Writes`](crate::store::Writes)). A bad key or a value over
    /// the size limit fails here; a store failure when the write is settled
    /// (the ledger keeps counting the key then). `None` when the ledger is
    /// full: [`set`](Self::set) must look at what the store holds first.
    pub fn set_nowait(&self, key: &str, value: &Value) -> Result<Option<Pending>> {
        check_key(key)?;
        let size = check_size(value, self.max_value_bytes, || {
            format!("blackboard key '{key}'")
        })?;
        if self.try_admit(key, key.len() + size).is_none() {
            return Ok(None);
        }
        let mut pending = self
            .store
            .bb_set_nowait(&self.task, key, value, self.ttl_of(key));
        // Journaled first: a write refused at once has its failure after it.
        self.journal.note(|| written(key, size, value));
        if self.store.is_embedded() {
            // Applied already: the embedded store cannot refuse it now.
            self.metrics.blackboard_write();
        } else {
            // Counted once the server applied it, as a send is: a write it
            // refuses (out of memory) is the error of the agent's next call,
            // not one of the report's writes (all 200 of a full server's
            // were). A write not applied is lost work whatever the script
            // does with that error: the run counts it (see `LostWrites`).
            let metrics = self.metrics.clone();
            // Journaled as it is sent (deferring the line to the server's
            // answer would copy the value out of the fast record: about
            // 1,000 more instructions per operation of the Redis
            // benchmark), and its failure after it, so the journal's
            // writes less its failed ones are the report's.
            let later = self.journal.is_on().then(|| self.journal.later());
            let key = key.to_owned();
            pending = pending.on_settled(move |outcome| {
                let Some(error) = super::lost::why(outcome) else {
                    return metrics.blackboard_write();
                };
                metrics
                    .lost
                    .record(|| format!("blackboard key '{key}'"), &error);
                if let Some(later) = later {
                    later.record(Event::BlackboardWriteFailed { key, error });
                }
            });
        }
        Ok(Some(pending))
    }

    /// Sends the read of `key` now: it sees every write sent before it (see
    /// [`Sent`]). A bad key fails here.
    pub fn get_sent(&self, key: &str) -> Result<Sent<Option<Value>>> {
        check_key(key)?;
        self.metrics.blackboard_read();
        Ok(self.store.bb_get_sent(&self.task, key))
    }

    /// Counts `size` bytes (key and value) under `key` in the ledger when that
    /// fits the quotas; returns what the ledger held for `key` before. `None`
    /// (and nothing counted) when it does not fit.
    fn try_admit(&self, key: &str, size: usize) -> Option<Option<usize>> {
        let mut l = self.ledger.lock();
        // The common case, a key rewritten within the quotas: one lookup.
        let Ledger { sizes, bytes, .. } = &mut *l;
        if let Some(held) = sizes.get_mut(key) {
            let after = *bytes - *held + size;
            if after <= self.quotas.max_blackboard_bytes {
                *bytes = after;
                return Some(Some(std::mem::replace(held, size)));
            }
        }
        let (keys, bytes) = l.after(key, size);
        if keys <= self.quotas.max_blackboard_keys && bytes <= self.quotas.max_blackboard_bytes {
            let before = l.sizes.get(key).copied();
            l.put(key, Some(size));
            return Some(before);
        }
        None
    }

    /// Counts `value_size` bytes under `key` in the ledger, or fails when that
    /// would pass a quota. Returns what the ledger held for `key` before, for
    /// the caller to put back if the write does not happen.
    async fn admit(&self, key: &str, value_size: usize) -> Result<Option<usize>> {
        let size = key.len() + value_size;
        let fits = |l: &Ledger| {
            let (keys, bytes) = l.after(key, size);
            keys <= self.quotas.max_blackboard_keys && bytes <= self.quotas.max_blackboard_bytes
        };
        let record = |l: &mut Ledger| {
            let before = l.sizes.get(key).copied();
            l.put(key, Some(size));
            before
        };
        if let Some(before) = self.try_admit(key, size) {
            return Ok(before);
        }
        let stale = self
            .ledger
            .lock()
            .synced
            .is_none_or(|t| t.elapsed() > Duration::from_secs(1));
        if stale {
            let held: std::collections::HashSet<String> = self
                .store
                .bb_keys(&self.task, "")
                .await?
                .into_iter()
                .collect();
            let mut l = self.ledger.lock();
            let gone: Vec<String> = l
                .sizes
                .keys()
                .filter(|k| !held.contains(*k))
                .cloned()
                .collect();
            for k in gone {
                l.put(&k, None);
            }
            l.synced = Some(Instant::now());
            if fits(&l) {
                return Ok(record(&mut l));
            }
        }
        let l = self.ledger.lock();
        let (keys, _) = l.after(key, size);
        let subject = format!("blackboard key '{key}'");
        Err(if keys > self.quotas.max_blackboard_keys {
            exceeded(
                subject,
                "max_blackboard_keys",
                self.quotas.max_blackboard_keys,
                "keys",
                &format!("the task holds {} keys", l.sizes.len()),
            )
        } else {
            exceeded(
                subject,
                "max_blackboard_bytes",
                self.quotas.max_blackboard_bytes,
                "bytes",
                &format!("the task's keys and values take {} bytes", l.bytes),
            )
        })
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
        self.ledger.lock().put(key, None);
        self.metrics.blackboard_write();
        self.journal.note(|| deleted(key, existed));
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
        let before = match new {
            Some(v) => {
                let size = check_size(v, self.max_value_bytes, || {
                    format!("blackboard key '{key}'")
                })?;
                Some(self.admit(key, size).await?)
            }
            None => None,
        };
        let swapped = self
            .store
            .bb_compare_and_set(&self.task, key, expected, new, self.ttl_of(key))
            .await;
        let mut ledger = self.ledger.lock();
        match (&swapped, before) {
            // Not written: the ledger gets back what it held.
            (Err(_) | Ok(false), Some(before)) => ledger.put(key, before),
            (Ok(true), None) => ledger.put(key, None),
            _ => {}
        }
        drop(ledger);
        let swapped = swapped?;
        self.metrics.blackboard_read();
        if swapped {
            self.metrics.blackboard_write();
            self.journal.note(|| match new {
                Some(v) => written(key, json_size(v, usize::MAX), v),
                None => deleted(key, true),
            });
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
        stored_outputs(self.store.as_ref(), &self.task).await
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
/// names `what` (built only then). Returns the size (an upper bound of it).
pub(crate) fn check_size(
    value: &Value,
    limit: usize,
    what: impl FnOnce() -> String,
) -> Result<usize> {
    let size = json_size(value, limit);
    if size > limit {
        return Err(Error::bad_input(
            what(),
            format!("value is larger than max_value_bytes ({limit} bytes)"),
        ));
    }
    Ok(size)
}

/// The journal event of a write of `key`, with the value itself when it is small.
fn written<'a>(key: &'a str, bytes: usize, value: &'a Value) -> Fast<'a> {
    Fast::BlackboardWrite { key, bytes, value }
}

/// The journal event of a delete of `key`.
fn deleted(key: &str, existed: bool) -> Fast<'_> {
    Fast::BlackboardDelete { key, existed }
}

/// An upper bound of the JSON size of `v`, computed without serializing and
/// stopping early once it passes `limit`.
pub(crate) fn json_size(v: &Value, limit: usize) -> usize {
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

/// Every output task `task` stored, by name, read from `store` directly.
pub async fn stored_outputs(store: &dyn Store, task: &str) -> Result<BTreeMap<String, Value>> {
    let mut outputs = BTreeMap::new();
    for key in store.bb_keys(task, OUTPUT_PREFIX).await? {
        if let Some(v) = store.bb_get(task, &key).await? {
            outputs.insert(key[OUTPUT_PREFIX.len()..].to_string(), v);
        }
    }
    Ok(outputs)
}
