//! `blackboard`: set/get/delete/keys, compare-and-set and update (also under
//! contention), watches of a key and of a prefix, and values Lua cannot store.

use orrery::config::Config;
use orrery::report::TaskStatus;
use serde_json::json;

use crate::common::Backend;
use crate::util::{assert_clean, error_messages, output, run, run_clean, show_report, task};

const SEMANTICS: &str = r#"
local t = require("testing")
local M = {}
function M.start(self)
  t.eq(blackboard.get("missing"), nil, "missing key")
  blackboard.set("a/1", 1)
  blackboard.set("a/2", { x = "y", list = { 1, 2, 3 }, nested = { deep = true } })
  blackboard.set("b/1", "text")
  blackboard.set("flag", false)
  blackboard.set("half", 0.5)
  t.eq(blackboard.get("a/1"), 1)
  t.eq(blackboard.get("a/2"), { x = "y", list = { 1, 2, 3 }, nested = { deep = true } })
  t.eq(blackboard.get("b/1"), "text")
  t.eq(blackboard.get("flag"), false, "false is a value, not a missing key")
  t.eq(blackboard.get("half"), 0.5)
  t.eq(math.type(blackboard.get("a/1")), "integer", "integers stay integers")

  blackboard.set("a/1", "replaced")
  t.eq(blackboard.get("a/1"), "replaced")
  t.eq(blackboard.keys("a/"), { "a/1", "a/2" }, "keys by prefix, sorted")
  t.eq(blackboard.keys("zzz"), {}, "no key with that prefix")
  t.eq(blackboard.keys(), { "a/1", "a/2", "b/1", "flag", "half" }, "every key")

  t.eq(blackboard.delete("a/1"), true, "delete of a key that exists")
  t.eq(blackboard.delete("a/1"), false, "delete of a key that does not")
  t.eq(blackboard.get("a/1"), nil)
  t.eq(blackboard.keys("a/"), { "a/2" })
  blackboard.set("b/1", nil)
  t.eq(blackboard.get("b/1"), nil, "setting nil deletes")

  t.eq(blackboard.cas("c", nil, 1), true, "cas from absent")
  t.eq(blackboard.cas("c", nil, 2), false, "cas from absent when present")
  t.eq(blackboard.cas("c", 5, 2), false, "cas with the wrong expected value")
  t.eq(blackboard.get("c"), 1)
  t.eq(blackboard.cas("c", 1, { n = 2, tags = { "x" } }), true, "cas with the right value")
  t.eq(blackboard.cas("c", { n = 2, tags = { "x" } }, nil), true, "cas to nil deletes")
  t.eq(blackboard.get("c"), nil)

  t.eq(blackboard.update("u", function(v) return (v or 0) + 5 end), 5)
  t.eq(blackboard.update("u", function(v) return v * 2 end), 10)
  t.eq(blackboard.update("u", function(v) return { was = v } end), { was = 10 })
  t.eq(blackboard.update("u", function() return nil end), nil, "update to nil deletes")
  t.eq(blackboard.get("u"), nil)

  -- The read-only task tables are stored by their contents.
  blackboard.set("from_task", { constraints = task.constraints, inputs = task.inputs })
  t.eq(blackboard.get("from_task"), { constraints = { "x", "y" }, inputs = { n = 1 } })
  -- A table mixing list items and named keys is stored as an object.
  blackboard.set("mixed", { "a", "b", name = "c" })
  t.eq(blackboard.get("mixed"), { ["1"] = "a", ["2"] = "b", name = "c" })
  -- Holes in a list are kept as json.null.
  blackboard.set("holes", { 1, nil, 3 })
  t.eq(blackboard.get("holes"), { 1, json.null, 3 })
  -- An output set to nil is removed, like a blackboard key.
  task.output("scratch", "draft")
  t.eq(task.outputs().scratch, "draft")
  task.output("scratch", nil)
  t.eq(task.outputs().scratch, nil, "task.output(name, nil) removes it")
  task.output("checked", true)
end
return M
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_get_delete_keys_cas_and_update_behave_as_documented() {
    for backend in Backend::all() {
        let report = run_clean(
            backend,
            &[("bb.lua", SEMANTICS)],
            task(
                "bb-semantics",
                "constraints = [\"x\", \"y\"]\n[inputs]\nn = 1\n",
            ),
        )
        .await;
        assert_eq!(output(&report, "checked"), &json!(true));
        // set x7 (nil counts as a delete), delete x3, cas x3 swapped, update x4 (a cas each).
        assert!(
            report.metrics.blackboard_writes >= 14,
            "{}",
            show_report(&report)
        );
    }
}

const ADDER: &str = r#"
local M = {}
function M.start(self)
  for _ = 1, 25 do
    -- By returning a new value.
    blackboard.update("counter", function(v)
      metrics.incr("update_calls")
      sleep(1) -- yield between the read and the write, so the agents interleave
      return (v or 0) + 1
    end)
    -- By changing the table in place, the natural Lua idiom.
    blackboard.update("record", function(r)
      metrics.incr("in_place_calls")
      if r == nil then return { n = 1, by = { [agent.id] = 1 } } end
      sleep(1)
      r.n = r.n + 1
      r.by[agent.id] = (r.by[agent.id] or 0) + 1
      return r
    end)
    -- In place without yielding in the function: the store's own round trips interleave.
    blackboard.update("tight", function(r)
      r = r or { n = 0 }
      r.n = r.n + 1
      return r
    end)
  end
  bus.send("checker", "done", {})
end
return M
"#;

const CHECKER: &str = r#"
local M = {}
function M.start(self)
  for _ = 1, 4 do assert(bus.receive(20000), "an adder never reported") end
  task.output("counter", blackboard.get("counter"))
  local record = blackboard.get("record")
  local sum = 0
  for _, n in pairs(record.by) do sum = sum + n end
  task.output("record", { n = record.n, sum = sum })
  task.output("tight", blackboard.get("tight").n)
end
return M
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_updates_from_several_agents_sum_exactly() {
    for backend in Backend::all() {
        let report = run_clean(
            backend,
            &[("adder.lua", ADDER), ("checker.lua", CHECKER)],
            task(
                "bb-update",
                r#"agents = ["adder", "adder", "adder", "adder", "checker"]"#,
            ),
        )
        .await;
        assert_eq!(output(&report, "counter"), &json!(100), "{backend:?}");
        assert_eq!(
            output(&report, "record"),
            &json!({"n": 100, "sum": 100}),
            "{backend:?}: updates that change the table in place"
        );
        assert_eq!(output(&report, "tight"), &json!(100), "{backend:?}");
        // More calls than updates: some updates lost a race and retried.
        for counter in ["update_calls", "in_place_calls"] {
            let calls = report.metrics.custom[counter];
            assert!(
                calls > 100,
                "{backend:?}: the updates never contended ({counter} = {calls})"
            );
        }
    }
}

const WATCHER: &str = r#"
local M = {}
function M.start(self)
  self.seen = {}
  local function record(tag)
    return function(key, value)
      if value == nil then value = "<deleted>" end
      self.seen[#self.seen + 1] = tag .. " " .. key .. " " .. json.encode(value)
    end
  end
  blackboard.watch("cfg/port", record("exact"))
  blackboard.watch("cfg/*", record("prefix"))
  blackboard.watch("cfg/end", function()
    task.output("seen", self.seen)
    agent.finish()
  end)
  bus.send("writer", "ready", {})
end
return M
"#;

const WRITER: &str = r#"
local M = {}
function M.start(self)
  assert(bus.receive(20000), "the watcher never got ready")
  blackboard.set("cfg/port", 8080)
  blackboard.set("cfg/host", "web")
  blackboard.set("other", 1)
  blackboard.set("cfg/port", 8081)
  blackboard.cas("cfg/host", "web", "api")
  blackboard.cas("cfg/host", "web", "never") -- fails: no change, no event
  blackboard.update("cfg/port", function(p) return p + 1 end)
  blackboard.delete("cfg/port")
  blackboard.delete("cfg/never-set") -- changes nothing: no event
  blackboard.set("cfg/end", true)
end
return M
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_see_changes_of_a_key_and_of_a_prefix_in_order_including_deletes() {
    for backend in Backend::all() {
        let report = run_clean(
            backend,
            &[("watcher.lua", WATCHER), ("writer.lua", WRITER)],
            task("bb-watch", ""),
        )
        .await;
        assert_eq!(
            output(&report, "seen"),
            &json!([
                "exact cfg/port 8080",
                "prefix cfg/port 8080",
                "prefix cfg/host \"web\"",
                "exact cfg/port 8081",
                "prefix cfg/port 8081",
                "prefix cfg/host \"api\"",
                "exact cfg/port 8082",
                "prefix cfg/port 8082",
                "exact cfg/port \"<deleted>\"",
                "prefix cfg/port \"<deleted>\"",
                "prefix cfg/end true",
            ]),
            "{backend:?}"
        );
    }
}

const UNSTORABLE: &str = r#"
local M = {}
local function try(f, ...)
  local ok, err = pcall(f, ...)
  if ok then return "no error" end
  return tostring(err)
end
function M.start(self)
  local cycle = { name = "loop" }
  cycle.self = cycle
  task.output("errors", {
    fn = try(blackboard.set, "k", function() end),
    co = try(blackboard.set, "k", coroutine.create(function() end)),
    cycle = try(blackboard.set, "k", cycle),
    nested = try(blackboard.set, "k", { deep = { handler = print } }),
    cas = try(blackboard.cas, "k", nil, print),
    send = try(bus.send, "keeper", "t", { f = print }),
    broadcast = try(bus.broadcast, "t", cycle),
    output = try(task.output, "x", coroutine.create(print)),
    encode = try(json.encode, { print }),
    nan = try(blackboard.set, "k", { ratio = 0 / 0 }),
  })
  task.output("nothing_stored", blackboard.get("k") == nil)
end
return M
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_lua_cannot_store_are_an_error_at_the_call_naming_it() {
    for backend in Backend::all() {
        let report = run_clean(
            backend,
            &[("keeper.lua", UNSTORABLE)],
            task("bb-unstorable", ""),
        )
        .await;
        assert_eq!(output(&report, "nothing_stored"), &json!(true));
        let errors = output(&report, "errors");
        let expect = [
            ("fn", "blackboard.set('k'): a function cannot be stored"),
            ("co", "blackboard.set('k'): a coroutine cannot be stored"),
            (
                "cycle",
                "blackboard.set('k'): a table that contains itself (a cycle) at self cannot be stored",
            ),
            (
                "nested",
                "blackboard.set('k'): a function at deep.handler cannot be stored",
            ),
            (
                "cas",
                "blackboard.cas('k') new: a function cannot be stored",
            ),
            (
                "send",
                "bus.send('keeper', 't'): a function at f cannot be stored",
            ),
            (
                "broadcast",
                "bus.broadcast('t'): a table that contains itself",
            ),
            ("output", "task.output('x'): a coroutine cannot be stored"),
            ("encode", "json.encode: a function at [1] cannot be stored"),
            (
                "nan",
                "blackboard.set('k'): the number NaN at ratio cannot be stored (JSON has no NaN",
            ),
        ];
        for (case, fragment) in expect {
            let message = errors[case].as_str().unwrap();
            // `path:line: ` of the pcall, then the call and what is wrong.
            assert!(
                message.contains("keeper.lua:4: ") && message.contains(fragment),
                "{backend:?} {case}: expected '{fragment}…', got '{message}'"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uncaught_unstorable_value_fails_the_agent_at_the_line_of_the_call() {
    let script = "local M = {}\nfunction M.start(self)\n  blackboard.set('handler', function() end)\nend\nreturn M\n";
    for backend in Backend::all() {
        let scratch = crate::common::Scratch::new(&[("keeper.lua", script)]);
        let report = crate::common::run_in_process(
            backend,
            &scratch.scripts(),
            task("bb-uncaught", ""),
            Config::default(),
        )
        .await;
        assert_eq!(report.status, TaskStatus::Failed);
        let expected = format!(
            "{}:3: blackboard.set('handler'): a function cannot be stored",
            scratch.scripts().join("keeper.lua").display()
        );
        let errors = error_messages(&report);
        assert!(errors[0].starts_with(&expected), "{errors:#?}");
        assert_eq!(report.exit_code(), orrery::error::exit::SCRIPT);
    }
}

const OUTPUT_THEN_WAIT: &str = r#"
local M = {}
function M.start(self)
  task.output("result", 42)
  blackboard.set("scratch", 1)
  sleep(1600)
  task.output("scratch_seen", blackboard.get("scratch") ~= nil)
end
return M
"#;

/// `blackboard_ttl` expires scratch keys, never the run's outputs: an
/// output recorded longer than that before the end was missing from a
/// report that said `complete`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_outlive_the_blackboard_ttl() {
    for backend in Backend::all() {
        let config = Config {
            blackboard_ttl: 1,
            ..Config::default()
        };
        let report = run(
            backend,
            &[("keeper.lua", OUTPUT_THEN_WAIT)],
            task("outputs-ttl", ""),
            config,
        )
        .await;
        assert_clean(backend, &report);
        assert_eq!(output(&report, "result"), 42, "{backend:?}");
        // The scratch key did expire: the TTL is in force.
        assert_eq!(output(&report, "scratch_seen"), false, "{backend:?}");
    }
}
