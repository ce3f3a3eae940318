//! The server's clock as this process reads it, for deadlines the server
//! checks: a send carries the server time after which it must not be
//! applied (see [`super::scripts::SEND`]).
//!
//! Read once when the store opens (`TIME`, halfway through the round trip);
//! the offset to this machine's clock is kept, and a deadline is made a
//! margin early, so the server's "too late" comes no later than the moment
//! the sender gives up, whatever the error of the reading and the clocks'
//! drift within the margin.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::conn::Connection;
use crate::store::StoreResult;

/// Taken off every deadline besides the reading's own uncertainty: room
/// for the two clocks drifting apart (or being slewed) while the store is open.
const DRIFT_MARGIN: Duration = Duration::from_millis(100);

/// The server's clock relative to this machine's.
pub(super) struct ServerClock {
    /// Server time minus local time, in ms.
    offset_ms: i64,
    /// Taken off a deadline: half the reading's round trip plus the drift margin.
    margin_ms: i64,
}

impl ServerClock {
    /// Reads the server's clock (one `TIME` round trip).
    pub async fn read(conn: &Connection) -> StoreResult<ServerClock> {
        let before = local_ms();
        let (secs, micros): (i64, i64) = conn.query("server time", || redis::cmd("TIME")).await?;
        let after = local_ms();
        let server = secs * 1000 + micros / 1000;
        Ok(ServerClock {
            offset_ms: server - (before + after) / 2,
            margin_ms: (after - before) / 2 + DRIFT_MARGIN.as_millis() as i64,
        })
    }

    /// The server time (ms since the epoch) by which something started now
    /// must be applied for the sender, which waits `patience`, to still be
    /// waiting for it.
    pub fn deadline(&self, patience: Duration) -> i64 {
        local_ms() + self.offset_ms + patience.as_millis() as i64 - self.margin_ms
    }
}

fn local_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
