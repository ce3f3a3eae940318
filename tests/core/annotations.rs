//! The LuaLS annotations in `stdlib/meta/` stay in step with the API: every
//! function and field each API table has in a running agent is declared in
//! `stdlib/meta/<table>.lua`, and nothing declared there is missing.

use std::collections::{BTreeMap, BTreeSet};

use orrery::config::Config;
use serde_json::Value;

use crate::common::{Backend, repo};
use crate::util::{assert_clean, output, run, task};

/// Lists, for every global table with a `stdlib/meta` file, its keys as
/// `name:type`; plus the global functions the meta files declare.
const LISTER: &str = r#"
local M = {}
function M.start(self)
  local tables, globals = {}, {}
  for _, name in ipairs(task.inputs.tables) do
    local t = _G[name]
    if type(t) == "table" then
      local keys = {}
      for k, v in pairs(t) do keys[#keys + 1] = k .. ":" .. type(v) end
      table.sort(keys)
      tables[name] = keys
    end
  end
  for _, name in ipairs(task.inputs.globals) do globals[name] = type(_G[name]) end
  task.output("tables", tables)
  task.output("globals", globals)
end
return M
"#;

/// Meta files of what spec files have and agents do not (`orrery test`'s
/// API): tests/specs holds them to a spec's VM.
const SPEC_ONLY: &[&str] = &["test"];

/// What one meta file declares for its table, as `orrery::lua_api::meta`
/// reads it (the same reading errors and `orrery check` rely on).
#[derive(Debug, Default)]
struct Declared {
    functions: BTreeSet<String>,
    fields: BTreeSet<String>,
    globals: BTreeSet<String>,
}

fn declared(table: &str, text: &str) -> Declared {
    let api = orrery::lua_api::meta::parse(table, text);
    let prefix = format!("{table}.");
    let mut d = Declared::default();
    for name in api.functions.keys() {
        match name.strip_prefix(&prefix) {
            Some(f) => d.functions.insert(f.to_string()),
            None => d.globals.insert(name.clone()),
        };
    }
    d.fields = api
        .fields
        .iter()
        .filter_map(|f| f.strip_prefix(&prefix).map(str::to_string))
        .collect();
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_api_table_matches_its_annotations() {
    let meta_dir = repo().join("stdlib/meta");
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(&meta_dir).unwrap() {
        let path = entry.unwrap().path();
        let table = path.file_stem().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        if SPEC_ONLY.contains(&table.as_str()) {
            continue;
        }
        assert!(
            text.starts_with("---@meta"),
            "{} must start with ---@meta",
            path.display()
        );
        files.insert(table, text);
    }
    for table in [
        "task",
        "agent",
        "blackboard",
        "bus",
        "state",
        "spawn",
        "lock",
        "metrics",
        "log",
        "json",
        "time",
        "llm",
        "fs",
        "exec",
        "http",
    ] {
        assert!(files.contains_key(table), "no stdlib/meta/{table}.lua");
    }
    let decls: BTreeMap<&String, Declared> = files
        .iter()
        .map(|(table, text)| (table, declared(table, text)))
        .collect();
    let globals: BTreeSet<&String> = decls.values().flat_map(|d| &d.globals).collect();
    let inputs =
        serde_json::json!({ "tables": files.keys().collect::<Vec<_>>(), "globals": globals });

    for backend in Backend::all() {
        let mut t = task("annotations", "");
        t.inputs = inputs.clone();
        // The capability tables are only real where granted.
        let mut config = Config::default();
        let capabilities = orrery::capabilities::Capabilities {
            read_files: Some(std::env::temp_dir()),
            commands: vec!["echo".into()],
            http: vec!["127.0.0.1:1".into()],
        };
        config.roles.insert(
            "lister".into(),
            orrery::capabilities::RoleConfig { capabilities },
        );
        let report = run(backend, &[("lister.lua", LISTER)], t, config).await;
        assert_clean(backend, &report);
        let tables = output(&report, "tables").as_object().unwrap();
        for (table, d) in &decls {
            // A meta file may describe a table this build does not have (yet).
            let Some(keys) = tables.get(table.as_str()) else {
                continue;
            };
            let mut functions = BTreeSet::new();
            let mut fields = BTreeSet::new();
            for key in keys.as_array().unwrap().iter().filter_map(Value::as_str) {
                let (name, kind) = key.rsplit_once(':').unwrap();
                if kind == "function" {
                    functions.insert(name.to_string());
                } else {
                    fields.insert(name.to_string());
                }
            }
            assert_eq!(
                functions, d.functions,
                "functions of '{table}' (left: the running API, right: stdlib/meta/{table}.lua)"
            );
            let undeclared: Vec<_> = fields.difference(&d.fields).collect();
            assert!(
                undeclared.is_empty(),
                "fields of '{table}' missing from stdlib/meta/{table}.lua: {undeclared:?}"
            );
        }
        for (name, kind) in output(&report, "globals").as_object().unwrap() {
            assert_eq!(
                kind, "function",
                "global '{name}' declared in stdlib/meta but absent"
            );
        }
    }
}

/// The role scripts shipped (the default agents, the examples) say what their
/// table is, so an editor with LuaLS checks their callbacks: a `---@type` of
/// `orrery.Role`, or of a class the file declares as extending it, right
/// before `local M = {}`.
#[test]
fn every_shipped_role_table_is_annotated() {
    let mut dirs = vec![repo().join("scripts")];
    for example in std::fs::read_dir(repo().join("examples")).unwrap() {
        let scripts = example.unwrap().path().join("scripts");
        if scripts.is_dir() {
            dirs.push(scripts);
        }
    }
    let mut checked = 0;
    for dir in dirs {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "lua") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let lines: Vec<&str> = text.lines().collect();
            let at = lines
                .iter()
                .position(|l| *l == "local M = {}")
                .unwrap_or_else(|| panic!("{}: no `local M = {{}}`", path.display()));
            let class = at
                .checked_sub(1)
                .and_then(|i| lines[i].strip_prefix("---@type "))
                .unwrap_or_else(|| {
                    panic!("{}: no ---@type before `local M = {{}}`", path.display())
                })
                .trim();
            let extends = format!("---@class {class}: orrery.Role");
            assert!(
                class == "orrery.Role" || lines.contains(&extends.as_str()),
                "{}: ---@type {class} is neither orrery.Role nor declared as extending it",
                path.display()
            );
            checked += 1;
        }
    }
    assert!(checked >= 5, "only {checked} role scripts found");
}
