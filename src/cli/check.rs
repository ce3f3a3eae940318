//! `orrery check [DIR]`: compile every role script and module, run nothing.

use std::path::PathBuf;
use std::sync::Arc;

use orrery::agent::sandbox;
use orrery::error::exit;
use orrery::scripts::ScriptRegistry;

use super::ConfigArgs;

/// Arguments of `orrery check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Scripts directory (default: the configured one, `scripts`).
    pub dir: Option<PathBuf>,
    #[command(flatten)]
    pub config: ConfigArgs,
}

pub fn execute(args: CheckArgs) -> anyhow::Result<i32> {
    let config = args.config.resolve()?;
    let dir = args.dir.unwrap_or(config.scripts);
    let registry = Arc::new(ScriptRegistry::load(&dir, &config.stdlib)?);
    // Compiling runs nothing: a bare VM is enough.
    let lua = mlua::Lua::new_with(mlua::StdLib::NONE, mlua::LuaOptions::default())?;
    let scripts: Vec<_> = registry
        .role_scripts()
        .into_iter()
        .chain(registry.modules())
        .collect();
    let mut failures = 0;
    for script in &scripts {
        let compiled = sandbox::compile(&lua, script);
        if let Err(e) = compiled {
            failures += 1;
            println!("{}", orrery::agent::errors::describe(&e));
        }
    }
    if failures > 0 {
        println!("{failures} of {} scripts failed to compile", scripts.len());
        return Ok(exit::SCRIPT);
    }
    println!(
        "ok: {} scripts compiled ({} roles)",
        scripts.len(),
        registry.roles().len()
    );
    Ok(exit::OK)
}
