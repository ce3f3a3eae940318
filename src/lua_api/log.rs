//! `log`: `debug`, `info`, `warn`, `error`, each taking any values (joined with spaces).

use std::sync::Arc;

use mlua::{Lua, MultiValue, Table};

use super::AgentContext;

fn join(args: MultiValue) -> String {
    args.iter()
        .map(|v| {
            v.to_string()
                .unwrap_or_else(|_| format!("<{}>", v.type_name()))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

pub(super) fn register(lua: &Lua, ctx: &Arc<AgentContext>) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    macro_rules! level {
        ($name:literal, $mac:ident) => {
            let id = ctx.id.clone();
            t.set(
                $name,
                lua.create_function(move |_, args: MultiValue| {
                    tracing::$mac!(target: "orrery::script", agent = %id, "{}", join(args));
                    Ok(())
                })?,
            )?;
        };
    }
    level!("debug", debug);
    level!("info", info);
    level!("warn", warn);
    level!("error", error);
    Ok(t)
}
