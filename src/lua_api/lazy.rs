//! Async host functions made on their first call.
//!
//! mlua builds each async function out of two C closures, a userdata and a
//! Lua wrapper it compiles from text once per VM: about a fifth of what a
//! new agent cost, for functions most agents call few of, and many (an
//! agent that only sends, a probe that reports and ends) never. So a VM
//! gets a small Lua stub in their place, from one chunk of cached bytecode;
//! the stub has the host make the real function on its first call and
//! calls it from then on.
//!
//! The stub calls the function without a tail call, so its frame stays in
//! the traceback under the function's own name (`spawn.agent`), as mlua's
//! wrapper was before; `error_text` shows it as the host function it
//! stands for.
//!
//! mlua reads `coroutine.yield` from the globals when it makes the
//! function. By then a script may have replaced it (`coroutine` is an
//! ordinary table), so the globals it sees while making one are a table
//! holding the stock `yield`, taken when the VM was built.

use std::future::Future;
use std::sync::Arc;

use mlua::{FromLuaMulti, Function, IntoLuaMulti, Lua, Table};

use super::chunks;

/// Builds the stub of function `i`.
const STUB: &str = r#"
local make, select = ...
return function(i)
  local f
  return function(...)
    if f == nil then f = make(i) end
    -- Not a tail call: the frame names the host function in tracebacks.
    return select(1, f(...))
  end
end
"#;

/// Chunk name of [`STUB`], as tracebacks show it.
pub(crate) const STUB_CHUNK: &str = "[orrery] async";

/// Name of the registry entry holding the stub factory of the VM.
const FACTORY: &str = "orrery.lazy_async";

/// Makes the real function; kept until it succeeded once.
type Maker = Box<dyn Fn(&Lua) -> mlua::Result<Function> + Send>;

/// The makers of a VM's stubs not called yet, by index.
#[derive(Default)]
struct Makers(Vec<Option<Maker>>);

/// A stub standing for `lua.create_async_function(f)`, which it makes on
/// its first call.
pub(crate) fn async_function<F, A, FR, R>(lua: &Lua, f: F) -> mlua::Result<Function>
where
    F: Fn(Lua, A) -> FR + Send + Sync + 'static,
    A: FromLuaMulti + 'static,
    FR: Future<Output = mlua::Result<R>> + Send + 'static,
    R: IntoLuaMulti + 'static,
{
    let f = Arc::new(f);
    let maker: Maker = Box::new(move |lua| {
        let f = f.clone();
        lua.create_async_function(move |lua, args: A| f(lua, args))
    });
    let factory = match lua.named_registry_value::<Option<Function>>(FACTORY)? {
        Some(factory) => factory,
        None => install(lua)?,
    };
    let index = {
        let mut makers = lua
            .try_app_data_mut::<Makers>()
            .map_err(|_| mlua::Error::runtime("async host functions are being made"))?
            .ok_or_else(|| mlua::Error::runtime("no async host function maker"))?;
        makers.0.push(Some(maker));
        makers.0.len() - 1
    };
    factory.call(index)
}

/// The VM's stub factory, with the host function `make(i)` its stubs call.
fn install(lua: &Lua) -> mlua::Result<Function> {
    lua.set_app_data(Makers::default());
    let coroutine: Table = lua.globals().raw_get("coroutine")?;
    let stock = lua.create_table()?;
    stock.raw_set("yield", coroutine.raw_get::<Function>("yield")?)?;
    let globals = lua.create_table()?;
    globals.raw_set("coroutine", stock)?;
    let make = lua.create_function(move |lua, i: usize| {
        let maker = {
            let mut makers = lua
                .try_app_data_mut::<Makers>()
                .map_err(|_| mlua::Error::runtime("async host functions are being made"))?
                .ok_or_else(|| mlua::Error::runtime("no async host function maker"))?;
            makers
                .0
                .get_mut(i)
                .and_then(Option::take)
                .ok_or_else(|| mlua::Error::runtime(format!("no async host function {i}")))?
        };
        let script_globals = lua.globals();
        lua.set_globals(globals.clone())?;
        let made = maker(lua);
        let restored = lua.set_globals(script_globals);
        if made.is_err()
            && let Ok(Some(mut makers)) = lua.try_app_data_mut::<Makers>()
        {
            // Not made (the budget or the heap ran out meanwhile): the next
            // call tries again.
            makers.0[i] = Some(maker);
        }
        restored?;
        made
    })?;
    let select: Function = lua.globals().raw_get("select")?;
    let factory: Function = chunks::host(lua, "async", STUB)?.call((make, select))?;
    lua.set_named_registry_value(FACTORY, &factory)?;
    Ok(factory)
}
