//! The memory limit: a script that allocates without bound fails its agent
//! with a `memory:` error; the host and the other agents go on.

use orrery::config::Config;

use crate::util::{assert_rest_intact, config, fatal, run, start};

/// Runs `body` as `start` of role `bomb` and checks the memory failure.
async fn assert_out_of_memory(role_script: &str, callback: &str) {
    // A generous time budget, so the heap runs out first even in a debug build.
    let cfg = Config {
        callback_timeout: 20_000,
        ..config()
    };
    let report = run(&[("bomb.lua", role_script)], cfg).await;
    let e = fatal(&report, "bomb-1");
    assert_eq!(e.kind, "script", "{report:#?}");
    assert_eq!(e.exit_code, 3);
    let expected = format!(
        "memory: agent bomb-1 ran out of Lua heap in callback '{callback}' (setting memory_limit = 16777216 bytes)"
    );
    assert!(e.message.starts_with(&expected), "{}", e.message);
    assert_eq!(report.exit_code(), 3);
    assert_rest_intact(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_growing_table_fails_its_agent() {
    let body = "  local t = {}\n  while true do t[#t + 1] = ('x'):rep(1024) .. #t end";
    assert_out_of_memory(&start(body), "start").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_giant_string_fails_its_agent() {
    assert_out_of_memory(&start("  local s = ('x'):rep(2^30)"), "start").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gsub_that_builds_a_giant_result_fails_its_agent() {
    // 2000 matches times a 100 kB replacement: 200 MB, built outside the Lua heap.
    let body = "  local big = ('y'):rep(100000)\n  local s = ('x'):rep(2000):gsub('x', big)";
    assert_out_of_memory(&start(body), "start").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_bomb_at_the_top_level_fails_at_load() {
    assert_out_of_memory(
        "local t = {}\nwhile true do t[#t + 1] = {} end\nreturn {}",
        "load",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_bomb_in_a_message_handler_fails_its_agent() {
    let script = r#"
local M = {}
function M.start(self) bus.send("bomb", "grow", {}) end
function M.on_message(self, msg)
  local t = {}
  while true do t[#t + 1] = ("x"):rep(1024) .. #t end
end
return M
"#;
    assert_out_of_memory(script, "message 'grow' from bomb-1").await;
}

/// A VM is freed when it is dropped with garbage that holds it: a
/// coroutine of the script waiting in an async host call, abandoned with
/// the callback that resumed it (the agent stopped meanwhile), keeps the
/// call's future, which holds the VM (see `sandbox::Vm`, which skips
/// mlua's full collection on drop otherwise).
#[tokio::test]
async fn a_vm_is_freed_with_a_dropped_coroutine_waiting_in_a_host_call() {
    let scratch = crate::common::Scratch::new(&[("probe.lua", "return {}")]);
    let lua = crate::audit::agent_vm(&scratch, false);
    let weak = lua.weak();
    let callback = lua
        .load(
            "local co = coroutine.create(function() sleep(60000) end)\n\
             coroutine.resume(co)\n\
             error('the resume returned before the sleep ended')",
        )
        .exec_async();
    let waited = tokio::time::timeout(std::time::Duration::from_millis(50), callback).await;
    assert!(waited.is_err(), "the callback did not wait: {waited:?}");
    drop(lua);
    assert!(
        weak.try_upgrade().is_none(),
        "the VM outlived its last holder"
    );
}
