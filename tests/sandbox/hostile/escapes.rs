//! Library escapes: every way a script might reach a stock library, the file
//! system or the process. Each tries to create the marker file, and reports
//! `ESCAPED` if any step succeeds; each then ends normally.

use super::{Case, run, start};

/// Runs `body` (which must end normally) as the hostile agent's `start`.
async fn attempt(body: &str) -> super::Outcome {
    let outcome = run(Case {
        hostile: &start(body),
        ..Case::default()
    })
    .await;
    outcome.completed();
    outcome
}

#[tokio::test]
async fn require_os_is_the_clock_only() {
    attempt(
        r#"
  local o = require("os")
  if o.execute or o.getenv or o.remove or o.exit then escaped("require('os')") end
  if o ~= os then escaped("a second os table") end
  pcall(function() o.execute("touch " .. MARKER) end)
"#,
    )
    .await;
}

#[tokio::test]
async fn require_io_and_debug_are_not_found() {
    attempt(
        r#"
  for _, name in ipairs({ "io", "debug", "package", "ffi", "jit", "socket", "lfs" }) do
    local ok, lib = pcall(require, name)
    if ok then escaped("require('" .. name .. "')") end
  end
"#,
    )
    .await;
}

#[tokio::test]
async fn package_loaded_holds_only_safe_tables() {
    attempt(
        r#"
  for name, lib in pairs(package.loaded) do
    if type(lib) == "table" then
      for _, f in ipairs({ "execute", "getenv", "open", "popen", "loadlib", "getregistry", "sethook", "dump" }) do
        if rawget(lib, f) ~= nil then escaped(name .. "." .. f) end
      end
    end
  end
  local io = package.loaded.io
  if io then escaped("package.loaded.io") end
"#,
    )
    .await;
}

#[tokio::test]
async fn package_has_no_loaders_paths_or_loadlib() {
    attempt(
        r#"
  for _, f in ipairs({ "loadlib", "searchers", "searchpath", "path", "cpath", "preload" }) do
    if package[f] ~= nil then escaped("package." .. f) end
  end
"#,
    )
    .await;
}

#[tokio::test]
async fn a_deep_search_of_everything_reachable_finds_no_dangerous_function() {
    // The script's own reachability walk: every table it can reach, by keys,
    // values and metatables; no function may be named like a stock escape.
    attempt(
        r#"
  local seen, bad = {}, { execute = true, getenv = true, popen = true, open = true,
    loadlib = true, getregistry = true, sethook = true, getupvalue = true, dump = true, exit = true }
  local function walk(t, depth)
    if seen[t] or depth > 12 then return end
    seen[t] = true
    for k, v in next, t do
      if type(k) == "string" and bad[k] and type(v) == "function" then escaped("found " .. k) end
      if type(v) == "table" then walk(v, depth + 1) end
      if type(k) == "table" then walk(k, depth + 1) end
    end
    local mt = getmetatable(t)
    if type(mt) == "table" then walk(mt, depth + 1) end
  end
  walk(_G, 0)
  walk(package.loaded, 0)
  local smt = getmetatable("")
  if type(smt) == "table" then walk(smt, 0) end
"#,
    )
    .await;
}

#[tokio::test]
async fn dofile_loadfile_and_string_dump_are_absent() {
    attempt(
        r#"
  if dofile or loadfile or string.dump or io or debug or warn then escaped("a file function") end
  if ("").dump then escaped("string.dump through the metatable") end
"#,
    )
    .await;
}

#[tokio::test]
async fn binary_chunks_are_refused_whatever_the_mode() {
    attempt(
        r#"
  for _, mode in ipairs({ "b", "bt", "t", nil }) do
    local f = load("\27Lua\84\0\25\147\13\10\26\10\4\8\8", "x", mode)
    if f then escaped("a binary chunk with mode " .. tostring(mode)) end
  end
"#,
    )
    .await;
}

#[tokio::test]
async fn load_with_an_environment_cannot_reach_more() {
    attempt(
        r#"
  local env = setmetatable({}, { __index = function(_, k) return _G[k] end })
  local f = load("return os.execute, io, require('os').getenv", "c", "t", env)
  local a, b, c = f()
  if a or b or c then escaped("load with an env") end
"#,
    )
    .await;
}

#[tokio::test]
async fn finalizers_are_refused() {
    attempt(
        r#"
  local ok = pcall(setmetatable, {}, { __gc = function() while true do end end })
  if ok then escaped("a __gc finalizer") end
  local mt = { __gc = false }
  if pcall(setmetatable, {}, mt) then escaped("a false __gc") end
"#,
    )
    .await;
}

#[tokio::test]
async fn collectgarbage_cannot_stop_or_retune_the_collector() {
    attempt(
        r#"
  for _, opt in ipairs({ "stop", "restart", "generational", "incremental", "setpause", "setstepmul" }) do
    if pcall(collectgarbage, opt) then escaped("collectgarbage " .. opt) end
  end
  collectgarbage("collect")
"#,
    )
    .await;
}

#[tokio::test]
async fn changing_shared_looking_tables_changes_nothing_outside_the_vm() {
    // The witness (another VM) goes on with the stock string functions.
    attempt(
        r#"
  string.find = function() return 999 end
  getmetatable("").__index = { find = function() return 999 end }
  _G.blackboard = nil
  rawset(task, "id", "hijacked")
  pcall(function() task.inputs.marker = "elsewhere" end)
"#,
    )
    .await;
}

#[tokio::test]
async fn print_cannot_forge_a_host_log_line() {
    attempt(
        r#"
  print("x\nFORGED [   12 ms] witness-1  READY -> COMPLETE")
  print("\rFORGED\27[2K")
"#,
    )
    .await;
}

#[tokio::test]
async fn log_cannot_forge_a_host_log_line() {
    attempt(
        r#"
  log.error("x\nFORGED ERROR timeout: everything is on fire")
  log.warn("x\r\nFORGED", "\nFORGED")
"#,
    )
    .await;
}

#[tokio::test]
async fn an_uncaught_error_cannot_forge_a_host_log_line() {
    let outcome = run(Case {
        hostile: &start(
            r#"
  local f = load("error('x\\nFORGED ERROR in the host')", "=\nFORGED chunk")
  f()
"#,
        ),
        ..Case::default()
    })
    .await;
    outcome.failed("hostile-1", "script", "FORGED ERROR in the host");
}

#[tokio::test]
async fn a_phase_reason_cannot_forge_a_host_line() {
    let outcome = run(Case {
        hostile: &start(
            r#"  state.set("FAILED", "x\nFORGED [ 1 ms] witness-1 READY -> COMPLETE")"#,
        ),
        ..Case::default()
    })
    .await;
    outcome.failed("hostile-1", "failed", "FORGED");
}

#[tokio::test]
async fn a_message_type_with_a_newline_is_refused() {
    attempt(
        r#"
  local ok, err = pcall(bus.send, "witness", "job\nFORGED", {})
  if ok then escaped("a message type with a newline") end
  if not tostring(err):find("control characters") then escaped("wrong error: " .. tostring(err)) end
"#,
    )
    .await;
}
