//! The isolated compile: new code runs in a fresh VM before any agent sees it.
//!
//! The VM is an agent's, built by the same function (same sandbox, same host
//! API, heap limit and time budget, `require` from the registry as it is
//! now), but its host API acts on a scratch embedded store
//! of its own, so whatever the chunk's top level does touches no real state.
//! A role script must return a table whose callbacks are functions; a module
//! must load without raising. Loading is bounded by `callback_timeout`.

use std::sync::Arc;

use mlua::{Value, chunk::ChunkMode};

use crate::agent::{errors, load_module, sandbox};
use crate::coordination::Coordination;
use crate::llm::TaskLlm;
use crate::lua_api::AgentContext;
use crate::scripts::{Script, ScriptKind, ScriptRegistry};
use crate::store::MemoryStore;

/// Loads `script` as `kind` in a fresh VM; on failure returns the error as
/// the user should read it: `path:line: message` (and a traceback for
/// runtime errors).
pub fn check(
    registry: &Arc<ScriptRegistry>,
    coord: &Coordination,
    kind: ScriptKind,
    script: &Script,
) -> Result<(), String> {
    let config = coord.config.clone();
    let scratch = Coordination::new(
        coord.task.clone(),
        config.clone(),
        Arc::new(MemoryStore::new()),
    );
    // Messages the chunk sends at load go to the scratch bus: let them find their roles.
    let mut roles = registry.roles();
    roles.push(script.name.clone());
    scratch.bus.set_known_roles(roles);
    let id = format!("{}-reload-check", script.name.replace('.', "_"));
    // Top-level code that calls the LLM gets the offline mock: a check must not spend tokens.
    let ctx = AgentContext::new(
        &id,
        &script.name,
        scratch,
        registry.clone(),
        TaskLlm::offline(),
    );
    let (lua, budget) = sandbox::agent_vm(&ctx)
        .map_err(|e| format!("cannot build a VM to check {}: {e}", script.path.display()))?;
    let path = script.path.display().to_string();
    let loaded = budget.metered_sync("load", || match kind {
        ScriptKind::Role => load_module(&lua, script)
            .map(|_| ())
            .map_err(|e| e.to_string()),
        ScriptKind::Module => crate::lua_api::top_level::running(&lua, || {
            lua.load(&*script.source)
                .set_name(script.chunk_name())
                .set_mode(ChunkMode::Text)
                .call::<Value>(script.name.as_str())
        })
        .map(|_| ())
        .map_err(|e| match errors::is_memory(&e) {
            true => errors::top_level_out_of_memory(&script.path.display().to_string()).to_string(),
            false => errors::describe(&e),
        }),
    });
    if budget.exceeded().is_some() {
        return Err(format!(
            "{path}: loading took longer than {} ms (callback_timeout): an endless loop at the top level?",
            config.callback_timeout
        ));
    }
    loaded
}
