//! `orrery check [DIR] [--json]`: what `run` would refuse, found without
//! running anything (see `orrery::check`).

use std::path::PathBuf;
use std::sync::Arc;

use orrery::error::exit;
use orrery::scripts::ScriptRegistry;

use super::ConfigArgs;

/// Arguments of `orrery check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Scripts directory (default: the configured one, `scripts`).
    pub dir: Option<PathBuf>,
    /// Print one JSON object (`ok`, `scripts`, `roles`, `problems`) for editors and CI.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub config: ConfigArgs,
}

pub fn execute(args: CheckArgs) -> anyhow::Result<i32> {
    let config = args.config.resolve()?;
    let dir = args.dir.clone().unwrap_or(config.scripts.clone());
    let registry = Arc::new(ScriptRegistry::load(&dir, &config.stdlib)?);
    for warning in config.grants_to_unknown_roles(&dir, &registry.roles()) {
        super::print_err(&format!("warning: {warning}"));
    }
    // Role scripts load in a VM like an agent's, whose host calls need a runtime.
    let runtime = super::runtime()?;
    let report = runtime.block_on(async { orrery::check::check(&registry, &config) })?;
    let code = if report.problems.is_empty() {
        exit::OK
    } else {
        exit::SCRIPT
    };
    if args.json {
        let mut value = serde_json::to_value(&report)?;
        value["ok"] = serde_json::Value::Bool(report.problems.is_empty());
        super::print_out(&format!("{}\n", serde_json::to_string_pretty(&value)?));
        return Ok(code);
    }
    let mut text = String::new();
    for p in &report.problems {
        text.push_str(&p.message);
        text.push('\n');
    }
    let files = {
        let mut paths: Vec<&str> = report.problems.iter().map(|p| p.path.as_str()).collect();
        paths.dedup();
        paths.len()
    };
    if report.problems.is_empty() {
        text.push_str(&format!(
            "ok: {} checked ({})\n",
            orrery::text::plural(report.scripts as u64, "script", "scripts"),
            orrery::text::plural(report.roles as u64, "role", "roles"),
        ));
    } else {
        text.push_str(&format!(
            "{} in {files} of {}\n",
            orrery::text::plural(report.problems.len() as u64, "problem", "problems"),
            orrery::text::plural(report.scripts as u64, "script", "scripts"),
        ));
    }
    super::print_out(&text);
    Ok(code)
}
