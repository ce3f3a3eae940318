//! Budget evasion: loops in every kind of callback, in coroutines, in
//! metamethods and handlers Lua calls on its own, and in C functions whose
//! cost the arguments choose. Each run ends by itself: the hostile agent fails
//! with a timeout (or a clear error), the rest goes on.

use super::{Case, run, start};

/// Runs a hostile role whose `start` runs `body`, and expects a timeout.
async fn times_out(body: &str) {
    let outcome = run(Case {
        hostile: &start(body),
        ..Case::default()
    })
    .await;
    outcome.failed("hostile-1", "timeout", "setting callback_timeout");
}

/// Runs a whole hostile role script, and expects a timeout.
async fn role_times_out(role: &str) {
    let outcome = run(Case {
        hostile: role,
        ..Case::default()
    })
    .await;
    outcome.failed("hostile-1", "timeout", "setting callback_timeout");
}

#[tokio::test]
async fn a_loop_in_start() {
    times_out("  while true do end").await;
}

#[tokio::test]
async fn a_loop_at_the_top_level() {
    role_times_out("while true do end\nreturn {}\n").await;
}

#[tokio::test]
async fn a_loop_in_a_message_handler() {
    role_times_out(
        r#"
local M = {}
function M.start(self) bus.send(agent.id, "spin", {}) end
function M.on_message(self, msg) while true do end end
return M
"#,
    )
    .await;
}

#[tokio::test]
async fn a_loop_in_a_subscription() {
    role_times_out(
        r#"
local M = {}
function M.start(self)
  bus.subscribe("spin", function() while true do end end)
  bus.send(agent.id, "spin", {})
end
return M
"#,
    )
    .await;
}

#[tokio::test]
async fn a_loop_in_a_watch() {
    role_times_out(
        r#"
local M = {}
function M.start(self)
  blackboard.watch("spin", function() while true do end end)
  blackboard.set("spin", 1)
end
return M
"#,
    )
    .await;
}

#[tokio::test]
async fn a_loop_in_stop() {
    role_times_out(
        r#"
local M = {}
function M.start(self) end
function M.stop(self) while true do end end
return M
"#,
    )
    .await;
}

#[tokio::test]
async fn a_loop_in_a_coroutine() {
    times_out("  coroutine.wrap(function() while true do end end)()").await;
}

#[tokio::test]
async fn pcall_cannot_swallow_the_interruption() {
    times_out("  while true do pcall(function() while true do end end) end").await;
}

#[tokio::test]
async fn xpcall_whose_handler_loops() {
    times_out(
        "  while true do xpcall(function() while true do end end, function() while true do end end) end",
    )
    .await;
}

#[tokio::test]
async fn an_error_object_whose_tostring_loops() {
    times_out("  error(setmetatable({}, { __tostring = function() while true do end end }))").await;
}

#[tokio::test]
async fn a_metamethod_that_loops() {
    times_out("  local x = setmetatable({}, { __index = function() while true do end end }).x")
        .await;
}

#[tokio::test]
async fn a_close_handler_that_loops_after_the_budget_ran_out() {
    times_out(
        r#"
  local x <close> = setmetatable({}, { __close = function() while true do end end })
  while true do end
"#,
    )
    .await;
}

#[tokio::test]
async fn a_generic_for_whose_fourth_value_loops_on_close() {
    // The issue's case: hooks were off while this ran, and the host hung.
    times_out(
        r#"
  local spin = setmetatable({}, { __close = function() while true do end end })
  for _ in function() return 1 end, nil, nil, spin do while true do end end
"#,
    )
    .await;
}

#[tokio::test]
async fn a_close_handler_that_raises_while_unwinding() {
    // Stock Lua runs this handler from mlua's stack reset of the dead
    // coroutine, with no error handler: the process aborted.
    let outcome = run(Case {
        hostile: &start(
            r#"
  local boom = setmetatable({}, { __close = function() error("from close") end })
  for _ in function() return 1 end, nil, nil, boom do error("from body") end
"#,
        ),
        ..Case::default()
    })
    .await;
    outcome.failed("hostile-1", "script", "from");
}

#[tokio::test]
async fn closing_a_coroutine_whose_close_handler_loops() {
    times_out(
        r#"
  local spin = setmetatable({}, { __close = function() while true do end end })
  local co = coroutine.create(function() local x <close> = spin; while true do end end)
  coroutine.resume(co)
  coroutine.close(co)
  while true do end
"#,
    )
    .await;
}

#[tokio::test]
async fn close_handlers_that_declare_more_close_handlers() {
    // Each handler declares another before it loops: every one is cut short.
    times_out(
        r#"
  local chain
  chain = setmetatable({}, { __close = function()
    for _ in function() return 1 end, nil, nil, chain do while true do end end
  end })
  for _ in function() return 1 end, nil, nil, chain do while true do end end
"#,
    )
    .await;
}

#[tokio::test]
async fn coroutines_that_spawn_coroutines_after_the_budget_ran_out() {
    // Each new coroutine would start with a fresh hook count; resuming is
    // refused once the budget is spent, so the tree cannot grow.
    times_out(
        r#"
  local function grow(depth)
    for _ = 1, 100 do
      pcall(coroutine.wrap(function() grow(depth + 1) end))
      for _ = 1, 1000 do end
    end
  end
  grow(0)
  while true do end
"#,
    )
    .await;
}

#[tokio::test]
async fn a_sort_comparator_that_loops() {
    times_out("  table.sort({ 3, 2, 1 }, function() while true do end end)").await;
}

#[tokio::test]
async fn a_gsub_replacement_that_loops() {
    times_out(r#"  string.gsub("abc", "%w", function() while true do end end)"#).await;
}

#[tokio::test]
async fn a_backtracking_pattern() {
    times_out(r#"  string.find(string.rep("a", 200000), string.rep("a-", 40) .. "b")"#).await;
}

#[tokio::test]
async fn table_move_with_numeric_strings() {
    // The issue's case: the stock C loop coerced "1e15" past the guard.
    times_out(r#"  table.move({}, "1", "1e15", 1)"#).await;
}

#[tokio::test]
async fn table_insert_and_remove_with_a_lying_length() {
    times_out(
        r#"
  local n = 0
  local t = setmetatable({}, { __len = function() n = n + 1; return n == 1 and 1 or 1e15 end })
  pcall(table.insert, t, 1, "x")
  table.remove(t, 1)
"#,
    )
    .await;
}

#[tokio::test]
async fn a_load_reader_that_loops() {
    times_out("  load(function() while true do end end)").await;
}

#[tokio::test]
async fn format_and_concat_metamethods_that_loop() {
    times_out(
        r#"
  local spin = setmetatable({}, { __tostring = function() while true do end end,
    __concat = function() while true do end end })
  pcall(string.format, "%s", spin)
  local _ = "x" .. spin
"#,
    )
    .await;
}

#[tokio::test]
async fn costly_c_functions_are_bounded_whatever_their_arguments() {
    // Each call either returns at once, or fails (memory, stack, bounds):
    // none runs unbounded. The agent then ends normally.
    let outcome = run(Case {
        hostile: &start(
            r##"
  local calls = {
    function() return string.rep("", 1e15) end,
    function() return string.rep("", "1e15", "") end,
    function() return string.rep("x", 1e15) end,
    function() return string.rep("x", 1e9, "y") end,
    function() return table.concat({}, "", 1, 1e15) end,
    function() return table.unpack({}, 1, 1e8) end,
    function() return table.unpack({}, "1", "1e8") end,
    function() return select("#", table.unpack({}, 1, 900000)) end,
    function() return string.pack("c1000000000", "") end,
    function() return string.packsize(string.rep("i16", 100000)) end,
    function() return string.unpack("c1000000000", "x") end,
    function() return string.byte(string.rep("x", 1e6), 1, -1) end,
    function() return utf8.char(table.unpack({}, 1, 100000)) end,
    function() return utf8.len(string.rep("\xff", 1e6)) end,
    function() return utf8.offset(string.rep("x", 1e6), 1e15) end,
    function() return utf8.codepoint(string.rep("x", 1e6), 1, -1) end,
    function() return string.format(string.rep("%99.99f", 10000), table.unpack({}, 1, 10000)) end,
    function() return string.sub(string.rep("x", 1e6), -1e15, 1e15) end,
    function() return tostring(1e308) .. string.rep("9", 1e6) + 0 end,
    function() return os.date(string.rep("%c", 100000)) end,
  }
  for i, f in ipairs(calls) do
    local started = os.clock()
    pcall(f)
    if os.clock() - started > 5 then escaped("call " .. i .. " ran for seconds") end
  end
"##,
        ),
        ..Case::default()
    })
    .await;
    // Whatever the calls did, the agent ended; a heap error is fine too.
    let errors = outcome.report["errors"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for e in errors.iter().filter(|e| e["agent"] == "hostile-1") {
        assert_ne!(e["kind"], "timeout", "{}", outcome.show());
    }
}

#[tokio::test]
async fn deep_recursion_fails_with_a_stack_overflow_or_out_of_heap() {
    let outcome = run(Case {
        hostile: &start("  local function f() return 1 + f() end\n  f()"),
        ..Case::default()
    })
    .await;
    // Which comes first depends on memory_limit: the Lua stack's million
    // slots, or the heap they take.
    let (kind, message) = outcome.fatal("hostile-1");
    assert_eq!(kind, "script", "{}", outcome.show());
    assert!(
        message.contains("stack overflow") || message.starts_with("memory:"),
        "{message}"
    );
}

#[tokio::test]
async fn nested_coroutines_fail_with_a_c_stack_overflow() {
    let outcome = run(Case {
        hostile: &start("  local function f() coroutine.wrap(f)() end\n  f()"),
        ..Case::default()
    })
    .await;
    outcome.failed("hostile-1", "script", "stack overflow");
}
