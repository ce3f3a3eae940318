//! Long C calls the count hook cannot reach: backtracking patterns, shifting
//! huge tables, repeating empty strings. Each is bounded.

use orrery::report::TaskStatus;
use serde_json::json;

use crate::util::{assert_rest_intact, config, fatal, run, start};

/// A subject and pattern the stock matcher would chew on for hours.
const EVIL: &str = "local s, p = ('a'):rep(5000), ('a*'):rep(40) .. 'b'";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backtracking_patterns_cannot_stall_past_the_budget() {
    for call in [
        "string.find(s, p)",
        "s:match(p)",
        "s:gsub(p, '')",
        "(function() for m in s:gmatch(p) do end end)()",
        // Caught and retried: the budget still ends it.
        "while true do pcall(string.find, s, p) end",
    ] {
        let script = start(&format!("  {EVIL}\n  {call}"));
        let report = run(&[("matcher.lua", &script)], config()).await;
        let e = fatal(&report, "matcher-1");
        assert_eq!(e.kind, "timeout", "{call}: {report:#?}");
        assert!(
            e.message.contains("callback 'start' of agent matcher-1"),
            "{}",
            e.message
        );
        assert_rest_intact(&report);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patterns_still_work_within_the_budget() {
    let script = start(
        r#"
  local out = {}
  out.find = { ("hello world"):find("o w") }
  out.match = { ("key = value"):match("(%w+)%s*=%s*(%w+)") }
  out.gsub = { ("hello world"):gsub("o", "0") }
  out.gsub_fn = ("a,b,c"):gsub("%a", function(c) return c:upper() end)
  out.gsub_tbl = ("$x and $y"):gsub("%$(%w+)", { x = "1", y = 2 })
  out.gmatch = {}
  for k, v in ("a=1, b=2"):gmatch("(%w+)=(%w+)") do out.gmatch[#out.gmatch + 1] = k .. v end
  out.position = { ("abc"):find("()b()") }
  out.balanced = ("f(a(b)c) g"):match("%b()")
  out.frontier = ("THE (quick) fox"):find("%f[%a]%a+", 5)
  out.plain = { ("a.b"):find(".", 1, true) }
  out.bad = tostring(select(2, pcall(string.find, "x", "[a"))):match("malformed pattern[^\n]*")
  task.output("patterns", out)"#,
    );
    let report = run(&[("matcher.lua", &script)], config()).await;
    assert_eq!(report.status, TaskStatus::Complete, "{report:#?}");
    assert_eq!(
        report.outputs["patterns"],
        json!({
            "find": [5, 7],
            "match": ["key", "value"],
            "gsub": ["hell0 w0rld", 2],
            "gsub_fn": "A,B,C",
            "gsub_tbl": "1 and 2",
            "gmatch": ["a1", "b2"],
            "position": [2, 2, 2, 3],
            "balanced": "(a(b)c)",
            "frontier": 6,
            "plain": [2, 2],
            "bad": "malformed pattern (missing ']')"
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeating_an_empty_string_returns_at_once() {
    let script =
        start("  task.output('rep', { #(''):rep(1e15), #(''):rep(1e15, ''), ('ab'):rep(3, ',') })");
    let report = run(&[("rep.lua", &script)], config()).await;
    assert_eq!(report.status, TaskStatus::Complete, "{report:#?}");
    assert_eq!(report.outputs["rep"], json!([0, 0, "ab,ab,ab"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shifting_a_table_with_a_lying_length_is_interrupted() {
    for (call, name) in [
        ("table.insert(t, 1, 'x')", "insert"),
        ("table.remove(t, 1)", "remove"),
        ("table.move({}, 1, 1e15, 2)", "move"),
    ] {
        let script = start(&format!(
            "  local t = setmetatable({{}}, {{ __len = function() return 1e15 end }})\n  {call}"
        ));
        let report = run(&[("shifter.lua", &script)], config()).await;
        let e = fatal(&report, "shifter-1");
        // Written in Lua, the shift is interrupted like any loop, at the script's line.
        assert_eq!(e.kind, "timeout", "{name}: {report:#?}");
        assert!(
            e.message.contains("scripts/shifter.lua:4)"),
            "{name}: {}",
            e.message
        );
        assert_rest_intact(&report);
    }
}
