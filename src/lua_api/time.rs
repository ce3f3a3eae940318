//! `time`: `sleep(ms)` (blocks only this agent) and `now()` (ms since the epoch,
//! with sub-millisecond precision). Also available as the globals `sleep` and `now`.

use std::time::{SystemTime, UNIX_EPOCH};
use tracing::Instrument;

use mlua::{Lua, Table};

use super::millis;

pub(super) fn register(lua: &Lua) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.set(
        "sleep",
        lua.create_async_function(|_, ms: f64| async move {
            let sleep = tokio::time::sleep(millis(ms));
            sleep.instrument(crate::trace::host_call("sleep")).await;
            Ok(())
        })?,
    )?;
    t.set(
        "now",
        lua.create_function(|_, ()| {
            Ok(SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64() * 1000.0))
        })?,
    )?;
    Ok(t)
}
