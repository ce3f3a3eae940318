//! `lock`: named locks with TTL, owner token and fencing number.
//!
//! `acquire(name [, {ttl = ms, wait = ms}])` returns a grant `{name, token, fence}`
//! or nil when the wait ran out; `release(grant)`, `extend(grant, ttl_ms)`;
//! `with(name, fn [, opts])` runs `fn(grant)` under the lock and releases it even
//! when `fn` raises.

use std::sync::Arc;
use std::time::Duration;

use mlua::{Function, Lua, Table};

use super::{AgentContext, host_err, store_fn};
use crate::coordination::LockGrant;

/// Default TTL of a lock (ms).
const DEFAULT_TTL_MS: u64 = 30_000;

const WITH: &str = r#"
local acquire, release = ...
return function(name, fn, opts)
  if type(fn) ~= "function" then
    error("lock.with: expected function, got " .. type(fn), 2)
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

fn grant_from(t: &Table) -> mlua::Result<LockGrant> {
    Ok(LockGrant {
        name: t.get("name")?,
        token: t.get("token")?,
        fence: t.get("fence")?,
    })
}

pub(super) fn register(lua: &Lua, ctx: &Arc<AgentContext>) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    let message_timeout = ctx.coord.config.message_timeout;

    let c = ctx.clone();
    let acquire =
        lua.create_async_function(move |lua, (name, opts): (String, Option<Table>)| {
            let c = c.clone();
            async move {
                let ttl: u64 = opts
                    .as_ref()
                    .and_then(|o| o.get("ttl").ok())
                    .unwrap_or(DEFAULT_TTL_MS);
                let wait: u64 = opts
                    .as_ref()
                    .and_then(|o| o.get("wait").ok())
                    .unwrap_or(message_timeout);
                let grant = c
                    .coord
                    .locks
                    .acquire(
                        &name,
                        Duration::from_millis(ttl),
                        Duration::from_millis(wait),
                    )
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
        let grant = grant_from(&grant);
        async move { c.coord.locks.release(&grant?).await.map_err(host_err) }
    })?;
    t.set("release", &release)?;

    let c = ctx.clone();
    t.set(
        "extend",
        store_fn(lua, embedded, move |_, (grant, ttl): (Table, u64)| {
            let c = c.clone();
            let grant = grant_from(&grant);
            async move {
                c.coord
                    .locks
                    .extend(&grant?, Duration::from_millis(ttl))
                    .await
                    .map_err(host_err)
            }
        })?,
    )?;

    let with: Function = lua
        .load(WITH)
        .set_name("=lock.with")
        .call((acquire, release))?;
    t.set("with", with)?;
    Ok(t)
}
