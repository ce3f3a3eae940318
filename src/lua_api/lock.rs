//! `lock`: named locks with TTL, owner token and fencing number.
//!
//! `acquire(name [, {ttl = ms, wait = ms}])` returns a grant `{name, token, fence}`
//! or nil when the wait ran out; `release(grant)`, `extend(grant, ttl_ms)`;
//! `with(name, fn [, opts])` runs `fn(grant)` under the lock and releases it even
//! when `fn` raises.

use std::sync::Arc;
use tracing::Instrument;

use mlua::{Function, Lua, Table};

use super::{AgentContext, arg_err, chunks, host_err, millis, ms_option, store_fn};
use crate::coordination::LockGrant;

/// Default TTL of a lock (ms).
const DEFAULT_TTL_MS: u64 = 30_000;

const WITH: &str = r#"
local acquire, release = ...
return function(name, fn, opts)
  if type(fn) ~= "function" then
    error("lock.with: argument #2 'fn' must be a function, got " .. type(fn), 2)
  end
  local grant = acquire(name, opts)
  if grant == nil then
    error("lock.with: timed out waiting for lock '" .. tostring(name) .. "'", 2)
  end
  local result = table.pack(pcall(fn, grant))
  release(grant)
  if not result[1] then error(result[2], 0) end
  return table.unpack(result, 2, result.n)
end
"#;

/// The grant table `lock.acquire` returned, read back for `func`.
fn grant_from(func: &str, t: &Table) -> mlua::Result<LockGrant> {
    let read = || -> mlua::Result<LockGrant> {
        Ok(LockGrant {
            name: t.get("name")?,
            token: t.get("token")?,
            fence: t.get("fence")?,
        })
    };
    read().map_err(|_| {
        arg_err(
            func,
            "expected the grant lock.acquire returned ({name, token, fence})",
        )
    })
}

pub(super) fn register(lua: &Lua, ctx: &Arc<AgentContext>) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    let message_timeout = ctx.coord.config.message_timeout;

    let c = ctx.clone();
    let acquire =
        lua.create_async_function(move |lua, (name, opts): (String, Option<Table>)| {
            let c = c.clone();
            let ttl = ms_option("lock.acquire", opts.as_ref(), "ttl", DEFAULT_TTL_MS);
            let wait = ms_option("lock.acquire", opts.as_ref(), "wait", message_timeout);
            async move {
                let (ttl, wait) = (ttl?, wait?);
                let grant = c
                    .coord
                    .locks
                    .acquire(&name, ttl, wait)
                    .instrument(crate::trace::host_call("lock.acquire"))
                    .await
                    .map_err(host_err)?;
                let Some(g) = grant else {
                    return Ok(mlua::Value::Nil);
                };
                let out = lua.create_table()?;
                out.set("name", g.name)?;
                out.set("token", g.token)?;
                out.set("fence", g.fence)?;
                Ok(mlua::Value::Table(out))
            }
        })?;
    t.set("acquire", &acquire)?;

    let embedded = ctx.embedded();
    let c = ctx.clone();
    let release = store_fn(lua, embedded, move |_, grant: Table| {
        let c = c.clone();
        let grant = grant_from("lock.release", &grant);
        async move { c.coord.locks.release(&grant?).await.map_err(host_err) }
    })?;
    t.set("release", &release)?;

    let c = ctx.clone();
    t.set(
        "extend",
        store_fn(lua, embedded, move |_, (grant, ttl): (Table, f64)| {
            let c = c.clone();
            let grant = grant_from("lock.extend", &grant);
            async move {
                c.coord
                    .locks
                    .extend(&grant?, millis(ttl))
                    .await
                    .map_err(host_err)
            }
        })?,
    )?;

    let with: Function = chunks::host(lua, "lock.with", WITH)?.call((acquire, release))?;
    t.set("with", with)?;
    Ok(t)
}
