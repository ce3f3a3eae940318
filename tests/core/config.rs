//! Settings precedence through the binary: defaults < config file <
//! `ORRERY_*` environment < flags, observed through `max_agents`.

use serde_json::Value;

use crate::common::{Scratch, orrery_env, show};

/// Spawns idle agents until the limit stops it; the SpawnLimit error names max_agents.
const GREEDY: &str = r#"
local M = {}
function M.start(self)
  while true do spawn.agent("idle") end
end
return M
"#;

const IDLE: &str = "local M = {}\nfunction M.on_message(self, msg) end\nreturn M\n";

/// The `max_agents` a run used, read from its SpawnLimit error.
fn max_agents_seen(s: &Scratch, args: &[&str], env: &[(&str, &str)]) -> String {
    let mut full = vec!["run", "task.toml", "--json"];
    full.extend_from_slice(args);
    let out = orrery_env(s.path(), &full, env);
    assert_eq!(out.status.code(), Some(6), "{}", show(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    // The first line: the traceback follows.
    let message = report["errors"][0]["message"].as_str().unwrap();
    let message = message.lines().next().unwrap_or_default().to_string();
    message
        .rsplit("max_agents is ")
        .next()
        .unwrap_or_else(|| panic!("no max_agents in '{message}'"))
        .to_string()
}

#[test]
fn max_agents_comes_from_the_file_then_the_environment_then_the_flag() {
    let s = Scratch::new(&[("greedy.lua", GREEDY), ("idle.lua", IDLE)]);
    s.write(
        "task.toml",
        "id = \"greedy\"\ntype = \"test\"\ndescription = \"d\"\nagents = [\"greedy\"]\n",
    );
    assert_eq!(max_agents_seen(&s, &[], &[]), "5", "the default");

    s.write("orrery.toml", "max_agents = 2\n");
    assert_eq!(max_agents_seen(&s, &[], &[]), "2", "./orrery.toml");

    let env = [("ORRERY_MAX_AGENTS", "3")];
    assert_eq!(max_agents_seen(&s, &[], &env), "3", "environment over file");
    assert_eq!(
        max_agents_seen(&s, &["--max-agents", "4"], &env),
        "4",
        "flag over environment"
    );

    s.write("custom.toml", "max_agents = 6\n");
    assert_eq!(
        max_agents_seen(&s, &["--config", "custom.toml"], &[]),
        "6",
        "--config replaces ./orrery.toml"
    );
}
