//! The isolated compile: new code runs in a fresh VM before any agent sees it.
//!
//! The VM is an agent's (same sandbox, same host API, `require` from the
//! registry as it is now), but its host API acts on a scratch embedded store
//! of its own, so whatever the chunk's top level does touches no real state.
//! A role script must return a table whose callbacks are functions; a module
//! must load without raising. Loading is bounded by `callback_timeout`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mlua::{HookTriggers, Value, VmState, chunk::ChunkMode};

use crate::agent::{errors, load_module, sandbox};
use crate::coordination::Coordination;
use crate::llm::TaskLlm;
use crate::lua_api::{self, AgentContext};
use crate::scripts::{Script, ScriptKind, ScriptRegistry};
use crate::store::MemoryStore;

/// Instructions between two checks of the loading deadline.
const DEADLINE_CHECK_EVERY: u32 = 1000;

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
    let (launcher, _) = tokio::sync::mpsc::unbounded_channel();
    let scratch = Coordination::new(
        coord.task.clone(),
        config.clone(),
        Arc::new(MemoryStore::new()),
        launcher,
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
    let lua = sandbox::new_vm(registry.clone(), config.memory_limit)
        .and_then(|lua| lua_api::register_all(&lua, &ctx).map(|()| lua))
        .map_err(|e| format!("cannot build a VM to check {}: {e}", script.path.display()))?;
    let limit = Duration::from_millis(config.callback_timeout);
    let deadline = Instant::now() + limit;
    let path = script.path.display().to_string();
    // Keeps firing once past the deadline, so a `pcall` in the chunk cannot swallow it.
    let _ = lua.set_global_hook(
        HookTriggers::new().every_nth_instruction(DEADLINE_CHECK_EVERY),
        move |_, _| {
            if Instant::now() < deadline {
                return Ok(VmState::Continue);
            }
            Err(mlua::Error::runtime(format!(
                "{path}: loading took longer than {} ms (callback_timeout): an endless loop at the top level?",
                limit.as_millis()
            )))
        },
    );
    match kind {
        ScriptKind::Role => load_module(&lua, script)
            .map(|_| ())
            .map_err(|e| e.to_string()),
        ScriptKind::Module => lua
            .load(&*script.source)
            .set_name(script.chunk_name())
            .set_mode(ChunkMode::Text)
            .call::<Value>(script.name.as_str())
            .map(|_| ())
            .map_err(|e| errors::describe(&e)),
    }
}
