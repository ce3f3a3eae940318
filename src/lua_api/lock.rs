//! `lock`: named locks with TTL, owner token and fencing number.
//!
//! `acquire(name [, {ttl = ms, wait = ms}])` returns a grant `{name, token, fence}`
//! or nil when the wait ran out; `release(grant)`, `extend(grant, ttl_ms)`;
//! `with(name, fn [, opts])` runs `fn(grant)` under the lock and releases it even
//! when `fn` raises.

use std::sync::Arc;
use std::time::Duration;

use mlua::{Function, Lua, Table, Value};
use tracing::Instrument;

use super::module::{IntoLuaErr, Module};
use super::options::{FromOptions, OptionError, Options, decode};
use super::{AgentContext, arg_err, chunks, millis};
use crate::coordination::LockGrant;

/// Default TTL of a lock (ms).
const DEFAULT_TTL_MS: u64 = 30_000;

pub(super) const WITH: &str = r#"
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

/// The options of `lock.acquire` and `lock.with`.
pub(super) struct AcquireOptions {
    /// How long the lock lives unless extended (default 30 s).
    ttl: Duration,
    /// How long to wait for it (default: the `message_timeout` setting).
    wait: Option<Duration>,
}

impl FromOptions for AcquireOptions {
    const NAMES: &'static [&'static str] = &["ttl", "wait"];

    fn from_options(o: &Options) -> Result<Self, OptionError> {
        Ok(AcquireOptions {
            ttl: o
                .positive_ms("ttl")?
                .unwrap_or(Duration::from_millis(DEFAULT_TTL_MS)),
            wait: o.ms("wait")?,
        })
    }
}

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
    let m = Module::new(lua, ctx)?;
    let acquire = m.wait("acquire", acquire)?;
    let release = m.store("release", release)?;
    m.store("extend", extend)?;
    let with: Function = chunks::host(lua, "lock.with", WITH)?.call((acquire, release))?;
    m.set("with", with)?;
    Ok(m.finish())
}

/// `lock.acquire(name [, opts])`: the grant `{name, token, fence}`, or nil
/// when the wait ran out.
async fn acquire(
    lua: Lua,
    c: Arc<AgentContext>,
    (name, opts): (String, Option<Table>),
) -> mlua::Result<Value> {
    let opts: AcquireOptions = decode("lock.acquire", opts)?;
    let wait = (opts.wait).unwrap_or(Duration::from_millis(c.coord.config.message_timeout));
    let grant = c
        .coord
        .locks
        .acquire(&c.id, &name, opts.ttl, wait)
        .instrument(crate::trace::host_call("lock.acquire"))
        .await
        .into_lua_err()?;
    let Some(g) = grant else {
        return Ok(Value::Nil);
    };
    let out = lua.create_table()?;
    out.set("name", g.name)?;
    out.set("token", g.token)?;
    out.set("fence", g.fence)?;
    Ok(Value::Table(out))
}

/// `lock.release(grant)`.
async fn release(_: Lua, c: Arc<AgentContext>, grant: Table) -> mlua::Result<bool> {
    let grant = grant_from("lock.release", &grant)?;
    c.coord.locks.release(&grant).await.into_lua_err()
}

/// `lock.extend(grant, ttl_ms)`: the lock lives `ttl_ms` from now.
async fn extend(_: Lua, c: Arc<AgentContext>, (grant, ttl): (Table, f64)) -> mlua::Result<bool> {
    let grant = grant_from("lock.extend", &grant)?;
    // NaN and 0 would have made the lock expire at once: held by nobody
    // while its holder goes on.
    if ttl.is_nan() || ttl <= 0.0 {
        return Err(arg_err(
            "lock.extend",
            format!("argument #2 'ttl_ms' must be a number of milliseconds > 0, got {ttl}"),
        ));
    }
    c.coord
        .locks
        .extend(&grant, millis(ttl))
        .await
        .into_lua_err()
}
