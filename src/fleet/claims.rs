//! A task's claim, `fleet:claim:{id}`: the id of the worker running it,
//! taken with `NX`, renewed only by its holder, expiring after the lease.
//! One claim holder per task at a time.

use std::time::Duration;

use super::{Fleet, store_error};
use crate::error::Result;

impl Fleet {
    /// Takes the claim of task `id` for `worker` for `lease`; false when
    /// another worker holds it.
    pub async fn claim(&mut self, id: &str, worker: &str, lease: Duration) -> Result<bool> {
        let set: Option<String> = redis::cmd("SET")
            .arg(format!("fleet:claim:{id}"))
            .arg(worker)
            .arg("NX")
            .arg("PX")
            .arg(lease.as_millis() as u64)
            .query_async(&mut self.conn)
            .await
            .map_err(store_error)?;
        Ok(set.is_some())
    }

    /// Renews `worker`'s claim of task `id`; false when it lost it.
    pub async fn renew(&mut self, id: &str, worker: &str, lease: Duration) -> Result<bool> {
        let script = redis::Script::new(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then \
               return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end",
        );
        let renewed: i64 = script
            .key(format!("fleet:claim:{id}"))
            .arg(worker)
            .arg(lease.as_millis() as u64)
            .invoke_async(&mut self.conn)
            .await
            .map_err(store_error)?;
        Ok(renewed == 1)
    }

    /// Gives up `worker`'s claim of task `id` (others may take it at once).
    pub async fn release(&mut self, id: &str, worker: &str) -> Result<()> {
        let script = redis::Script::new(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then \
               return redis.call('DEL', KEYS[1]) else return 0 end",
        );
        script
            .key(format!("fleet:claim:{id}"))
            .arg(worker)
            .invoke_async::<i64>(&mut self.conn)
            .await
            .map_err(store_error)?;
        Ok(())
    }

    /// The worker holding the claim of task `id`, if one does.
    pub async fn holder(&mut self, id: &str) -> Result<Option<String>> {
        redis::cmd("GET")
            .arg(format!("fleet:claim:{id}"))
            .query_async(&mut self.conn)
            .await
            .map_err(store_error)
    }
}
