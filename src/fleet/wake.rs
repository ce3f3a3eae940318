//! Waking idle workers: instead of polling the Streams, each worker blocks
//! on a connection of its own in `XREAD BLOCK` over `fleet:submitted` (a
//! new task) and `fleet:wake` (a request to join, a task or a join handed
//! over), without consuming anything: a wake-up only makes the worker
//! look at its Streams through the group at once. Entries abandoned by a
//! dead worker are looked for at every beat anyway (they can only be taken
//! once idle for a lease).

use std::time::Duration;

use redis::streams::StreamReadReply;

use super::{Fleet, SUBMITTED, store_error};
use crate::error::Result;

/// Stream of wake-ups for every worker (not read through a group); kept to
/// about this many entries.
pub const WAKE: &str = "fleet:wake";
const WAKE_KEPT: usize = 1000;

/// Where a worker's wait goes on from in [`SUBMITTED`] and [`WAKE`].
#[derive(Debug, Clone)]
pub struct WakeCursor([String; 2]);

impl Default for WakeCursor {
    /// From now on: only what is added after the first wait starts.
    fn default() -> Self {
        WakeCursor(["$".into(), "$".into()])
    }
}

impl Fleet {
    /// Adds a wake-up for every worker (`what` says why, for a reader of the Stream).
    pub async fn wake(&mut self, what: &str) -> Result<()> {
        let mut cmd = redis::cmd("XADD");
        add_wake(&mut cmd, what);
        cmd.query_async::<()>(&mut self.conn)
            .await
            .map_err(store_error)
    }

    /// Waits up to `block` for a new task or a wake-up after `cursor`;
    /// true when one came (the cursor moves past it). The wait holds this
    /// connection: give it one of its own ([`Fleet::another`]).
    pub async fn wait_for_work(
        &mut self,
        cursor: &mut WakeCursor,
        block: Duration,
    ) -> Result<bool> {
        let reply: Option<StreamReadReply> = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(WAKE_KEPT)
            .arg("BLOCK")
            .arg(block.as_millis().max(1) as u64)
            .arg("STREAMS")
            .arg(SUBMITTED)
            .arg(WAKE)
            .arg(&cursor.0[0])
            .arg(&cursor.0[1])
            .query_async(&mut self.conn)
            .await
            .map_err(store_error)?;
        let mut woken = false;
        for key in reply.into_iter().flat_map(|r| r.keys) {
            let slot = usize::from(key.key != SUBMITTED);
            if let Some(last) = key.ids.last() {
                cursor.0[slot] = last.id.clone();
                woken = true;
            }
        }
        Ok(woken)
    }
}

/// Makes `cmd` (an `XADD`) add a wake-up saying `what`.
pub(super) fn add_wake(cmd: &mut redis::Cmd, what: &str) {
    cmd.arg(WAKE)
        .arg("MAXLEN")
        .arg("~")
        .arg(WAKE_KEPT)
        .arg("*")
        .arg("what")
        .arg(what);
}
