//! The one way a table of the Lua API is built, after WezTerm's
//! `lua-api-crates`: each host function is a named Rust function over typed
//! arguments (`fn get(lua, ctx, key: String)`), and [`Module`] registers it
//! under its Lua name, handing it the agent's context. No table clones the
//! context into closures of its own.
//!
//! Three kinds of host function, by what they may wait on:
//! - [`Module::sync`]: returns without waiting (`time.now`, `metrics.incr`);
//! - [`Module::store`]: calls the store, synchronous on the embedded store and
//!   async otherwise, after the agent's unsettled writes (see
//!   [`Module::store_fn`]);
//! - [`Module::wait`]: may wait on anything (`bus.receive`, `llm.chat`), so
//!   always async: the script's coroutine yields until it is done.
//!
//! The last two refuse while a script's top level runs, on every store
//! (see [`super::top_level`]), and so does [`Module::store_now_fn`], the
//! part of such a function that acts without waiting.

use std::future::Future;
use std::sync::Arc;

use mlua::{FromLuaMulti, Function, IntoLua, IntoLuaMulti, Lua, Table};

use futures::FutureExt;

use super::{AgentContext, settle_writes};
use crate::error::Error;

/// A table of the Lua API being built for one agent.
pub(crate) struct Module<'a> {
    lua: &'a Lua,
    ctx: &'a Arc<AgentContext>,
    table: Table,
}

impl<'a> Module<'a> {
    /// An empty table whose functions act for the agent `ctx`.
    pub fn new(lua: &'a Lua, ctx: &'a Arc<AgentContext>) -> mlua::Result<Self> {
        Ok(Module {
            lua,
            ctx,
            table: lua.create_table()?,
        })
    }

    /// Sets field `name` of the table to `value`.
    pub fn set(&self, name: &str, value: impl IntoLua) -> mlua::Result<()> {
        self.table.set(name, value)
    }

    /// Registers `f` as `name`: a host function that returns without waiting.
    pub fn sync<A, R, F>(&self, name: &str, f: F) -> mlua::Result<Function>
    where
        A: FromLuaMulti + 'static,
        R: IntoLuaMulti + 'static,
        F: Fn(&Lua, &AgentContext, A) -> mlua::Result<R> + Send + 'static,
    {
        let f = move |lua: &Lua, c: &Arc<AgentContext>, args| f(lua, c, args);
        self.named(name, self.sync_fn(self.ctx.clone(), f))
    }

    /// Registers `f` as `name`: a host function that calls the store.
    pub fn store<A, R, F, Fut>(&self, name: &str, f: F) -> mlua::Result<Function>
    where
        A: FromLuaMulti + 'static,
        R: IntoLuaMulti + 'static,
        F: Fn(Lua, Arc<AgentContext>, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = mlua::Result<R>> + Send + 'static,
    {
        self.named(name, self.store_fn(f))
    }

    /// Registers `f` as `name`: a host function that may wait on anything.
    pub fn wait<A, R, F, Fut>(&self, name: &str, f: F) -> mlua::Result<Function>
    where
        A: FromLuaMulti + 'static,
        R: IntoLuaMulti + 'static,
        F: Fn(Lua, Arc<AgentContext>, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = mlua::Result<R>> + Send + 'static,
    {
        self.named(name, self.wait_fn(self.ctx.clone(), f))
    }

    /// Sets `function` as field `name`, and hands it back.
    fn named(&self, name: &str, function: mlua::Result<Function>) -> mlua::Result<Function> {
        let function = function?;
        self.table.set(name, &function)?;
        Ok(function)
    }

    /// A host function that returns without waiting, over `state` (the
    /// agent's context, or what a capability table resolved once).
    pub fn sync_fn<S, A, R, F>(&self, state: S, f: F) -> mlua::Result<Function>
    where
        S: Send + 'static,
        A: FromLuaMulti + 'static,
        R: IntoLuaMulti + 'static,
        F: Fn(&Lua, &S, A) -> mlua::Result<R> + Send + 'static,
    {
        self.lua
            .create_function(move |lua, args| f(lua, &state, args))
    }

    /// [`Module::sync_fn`] over the agent's context, for the part of a
    /// waiting host function's Lua wrapper that acts without waiting
    /// (`bus.send` of a message the process can hand over at once): it
    /// refuses at a script's top level as the whole function does.
    pub fn store_now_fn<A, R, F>(&self, f: F) -> mlua::Result<Function>
    where
        A: FromLuaMulti + 'static,
        R: IntoLuaMulti + 'static,
        F: Fn(&Lua, &Arc<AgentContext>, A) -> mlua::Result<R> + Send + 'static,
    {
        self.sync_fn(self.ctx.clone(), move |lua, c: &Arc<AgentContext>, args| {
            c.top_level.refuse()?;
            f(lua, c, args)
        })
    }

    /// [`Module::store`] without a name: for the host's Lua wrappers.
    ///
    /// Synchronous when the store is embedded (its futures are ready on
    /// first poll, so no coroutine yield is paid), async otherwise, after
    /// the agent's writes not settled yet (so what `f` does comes after
    /// them, and a write that failed fails this call). `f` must never wait
    /// on anything but the store.
    pub fn store_fn<A, R, F, Fut>(&self, f: F) -> mlua::Result<Function>
    where
        A: FromLuaMulti + 'static,
        R: IntoLuaMulti + 'static,
        F: Fn(Lua, Arc<AgentContext>, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = mlua::Result<R>> + Send + 'static,
    {
        let ctx = self.ctx.clone();
        if self.ctx.embedded() {
            self.lua.create_function(move |lua, args: A| {
                ctx.top_level.refuse()?;
                f(lua.clone(), ctx.clone(), args)
                    .now_or_never()
                    .unwrap_or_else(|| {
                        Err(mlua::Error::runtime(
                            "host function waited on an embedded store",
                        ))
                    })
            })
        } else {
            super::lazy::async_function(self.lua, move |lua, args: A| {
                let op = ctx.top_level.refuse().map(|()| f(lua, ctx.clone(), args));
                let ctx = ctx.clone();
                async move {
                    let op = op?;
                    settle_writes(&ctx).await.into_lua_err()?;
                    op.await
                }
            })
        }
    }

    /// A host function that may wait on anything, over `state` (see
    /// [`Module::sync_fn`]).
    pub fn wait_fn<S, A, R, F, Fut>(&self, state: S, f: F) -> mlua::Result<Function>
    where
        S: Clone + Send + Sync + 'static,
        A: FromLuaMulti + 'static,
        R: IntoLuaMulti + 'static,
        F: Fn(Lua, S, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = mlua::Result<R>> + Send + 'static,
    {
        let top_level = self.ctx.top_level.clone();
        super::lazy::async_function(self.lua, move |lua, args| {
            // Refused before `f` runs: it may act before its future is polled.
            let op = top_level.refuse().map(|()| f(lua, state.clone(), args));
            async move { op?.await }
        })
    }

    /// The table, done.
    pub fn finish(self) -> Table {
        self.table
    }
}

/// Turns the host's errors into Lua errors that keep their kind (the agent
/// reads it back with `agent::errors::host_error`): a script can catch them,
/// and the run ends with the right exit code when it does not.
pub(crate) trait IntoLuaErr<T> {
    /// The result, with its error made a Lua error.
    fn into_lua_err(self) -> mlua::Result<T>;
}

impl<T, E: Into<Error>> IntoLuaErr<T> for Result<T, E> {
    #[inline]
    fn into_lua_err(self) -> mlua::Result<T> {
        self.map_err(|e| mlua::Error::external(e.into()))
    }
}
