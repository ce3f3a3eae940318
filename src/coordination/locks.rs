//! Named locks with a TTL, an owner token and a fencing number.
//!
//! Every lock name keeps a fencing number for the rest of the task, so the
//! names one task may use are bounded by the quota `max_locks` (counted per
//! process: the names this process's agents used).
//!
//! The grants each agent of this process holds are kept, so that the host
//! releases them when the agent ends ([`LockManager::release_held`]): a
//! script can leave `lock.with`'s function suspended in a coroutine that
//! never resumes, and its release would never run.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use serde::Serialize;

use super::MetricsCollector;
use super::journal::{Event, Journal};
use super::quotas::exceeded;
use crate::error::{Error, Result};
use crate::store::Store;

/// A held lock: release it with the same grant.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LockGrant {
    /// Lock name.
    pub name: String,
    /// Random owner token; only its holder can release or extend.
    pub token: String,
    /// Grows with every grant of this lock: lets a resource refuse a stale holder.
    pub fence: u64,
}

/// Acquires and releases the task's locks.
pub struct LockManager {
    store: Arc<dyn Store>,
    task: String,
    metrics: Arc<MetricsCollector>,
    journal: Journal,
    max_locks: usize,
    names: Mutex<HashSet<String>>,
    /// The grants this process's agents hold, by token, with their agent.
    held: Mutex<HashMap<String, (String, LockGrant)>>,
}

/// Longest pause between two tries while waiting.
const MAX_BACKOFF: Duration = Duration::from_millis(20);

impl LockManager {
    pub(super) fn new(
        store: Arc<dyn Store>,
        task: &str,
        metrics: Arc<MetricsCollector>,
        max_locks: usize,
        journal: Journal,
    ) -> Self {
        LockManager {
            store,
            task: task.to_string(),
            metrics,
            journal,
            max_locks,
            names: Mutex::default(),
            held: Mutex::default(),
        }
    }

    /// Counts `name` among the task's lock names, or fails when it is a new
    /// name and `max_locks` are in use.
    fn admit(&self, name: &str) -> Result<()> {
        let mut names = self.names.lock();
        if names.contains(name) {
            return Ok(());
        }
        if names.len() >= self.max_locks {
            return Err(exceeded(
                format!("lock '{name}'"),
                "max_locks",
                self.max_locks,
                "names",
                &format!("the task has used {} lock names", names.len()),
            ));
        }
        names.insert(name.to_string());
        Ok(())
    }

    /// Takes `name` for `ttl` for the agent `owner`, waiting up to `wait`
    /// for it to be free. `None` when the wait ran out.
    pub async fn acquire(
        &self,
        owner: &str,
        name: &str,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Option<LockGrant>> {
        check_name(name)?;
        self.admit(name)?;
        let token = format!("{:032x}", rand::random::<u128>());
        // Kept as held from before the first attempt: the agent may stop
        // waiting for the answer (stopped or aborted mid-call) while the
        // server grants it. Releasing a lock not granted changes nothing.
        let maybe = LockGrant {
            name: name.to_string(),
            token: token.clone(),
            fence: 0,
        };
        self.held
            .lock()
            .insert(token.clone(), (owner.to_string(), maybe));
        let started = Instant::now();
        let deadline = started + wait;
        let mut pause = Duration::from_micros(200);
        let mut waited = false;
        loop {
            if let Some(fence) = self
                .store
                .lock_try_acquire(&self.task, name, &token, ttl)
                .await?
            {
                let waited_ms = ms(started.elapsed());
                let name = name.to_string();
                self.journal.record(|| Event::LockAcquired {
                    name: name.clone(),
                    fence,
                    waited_ms,
                });
                let grant = LockGrant { name, token, fence };
                if let Some((_, held)) = self.held.lock().get_mut(&grant.token) {
                    held.fence = fence;
                }
                return Ok(Some(grant));
            }
            if !waited {
                waited = true;
                self.metrics
                    .host
                    .lock_waits
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            let now = Instant::now();
            if now >= deadline {
                let waited_ms = ms(started.elapsed());
                self.journal.record(|| Event::LockTimedOut {
                    name: name.to_string(),
                    waited_ms,
                });
                self.held.lock().remove(&token);
                return Ok(None);
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(MAX_BACKOFF);
        }
    }

    /// Releases a grant; false when it had already expired or been taken over.
    pub async fn release(&self, grant: &LockGrant) -> Result<bool> {
        self.forget(grant);
        let released = self
            .store
            .lock_release(&self.task, &grant.name, &grant.token)
            .await?;
        self.journal.record(|| ended(grant, released));
        Ok(released)
    }

    /// Extends a grant to `ttl` from now; false when it is no longer held.
    pub async fn extend(&self, grant: &LockGrant, ttl: Duration) -> Result<bool> {
        let extended = self
            .store
            .lock_extend(&self.task, &grant.name, &grant.token, ttl)
            .await?;
        if !extended {
            self.forget(grant);
            self.journal.record(|| ended(grant, false));
        }
        Ok(extended)
    }

    /// Releases every lock the agent `owner` still holds: it ended
    /// (finished, failed or stopped), and no one else can release them.
    /// Returns how many were still held; a grant that expired or was taken
    /// over meanwhile is left alone (the release is compare-and-delete).
    pub async fn release_held(&self, owner: &str) -> Result<usize> {
        let mut grants = Vec::new();
        self.held.lock().retain(|_, (agent, grant)| {
            let mine = agent == owner;
            if mine {
                grants.push(grant.clone());
            }
            !mine
        });
        let mut released = 0;
        for grant in &grants {
            let still = self
                .store
                .lock_release(&self.task, &grant.name, &grant.token)
                .await?;
            // A grant whose answer its agent never took (fence 0) was
            // perhaps never granted: journaled only when it was.
            if still {
                self.journal.record(|| ended(grant, true));
                released += 1;
            }
        }
        Ok(released)
    }

    /// No longer keeps `grant` among the held ones.
    fn forget(&self, grant: &LockGrant) {
        self.held.lock().remove(&grant.token);
    }
}

/// The journal event of a grant let go (`released`) or found expired.
fn ended(grant: &LockGrant, released: bool) -> Event {
    let (name, fence) = (grant.name.clone(), grant.fence);
    if released {
        Event::LockReleased { name, fence }
    } else {
        Event::LockExpired { name, fence }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 256 || name.chars().any(char::is_control) {
        return Err(Error::bad_input(
            format!("lock name {name:?}"),
            "must be 1 to 256 bytes with no control characters",
        ));
    }
    Ok(())
}
