//! `lock`: mutual exclusion between agents, release on error, fencing
//! numbers, and an acquire whose wait runs out.

use serde_json::json;

use crate::common::Backend;
use crate::util::{output, run_clean, task};

/// A read-then-write increment that loses updates unless the lock serialises it.
const WORKER: &str = r#"
local M = {}
function M.start(self)
  local fences = {}
  for _ = 1, 25 do
    lock.with("counter", function(grant)
      fences[#fences + 1] = grant.fence
      local n = blackboard.get("n") or 0
      sleep(1) -- yield inside the critical section: other agents run meanwhile
      blackboard.set("n", n + 1)
    end)
  end
  for i = 2, #fences do
    assert(fences[i] > fences[i - 1], "fencing numbers must grow")
  end
  bus.send("tally", "done", {})
end
return M
"#;

const TALLY: &str = r#"
local M = {}
function M.start(self)
  for _ = 1, 4 do assert(bus.receive(30000), "a worker never finished") end
  task.output("n", blackboard.get("n"))
end
return M
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_with_excludes_other_agents_from_a_read_then_write() {
    for backend in Backend::all() {
        let report = run_clean(
            backend,
            &[("worker.lua", WORKER), ("tally.lua", TALLY)],
            task(
                "lock-exclusion",
                r#"agents = ["worker", "worker", "worker", "worker", "tally"]"#,
            ),
        )
        .await;
        assert_eq!(
            output(&report, "n"),
            &json!(100),
            "{backend:?}: updates were lost"
        );
        assert!(
            report.metrics.host["lock_waits"] > 0,
            "{backend:?}: the workers never contended"
        );
    }
}

const HOLDER: &str = r#"
local M = {}
function M.start(self)
  local r = {}
  local ok, err = pcall(lock.with, "L", function(grant)
    r.fence_in_with = grant.fence
    error("boom inside the lock")
  end)
  r.with_error = tostring(err)

  local g1 = lock.acquire("F", { wait = 0 })
  r.released = lock.release(g1)
  r.released_again = lock.release(g1)
  local g2 = lock.acquire("F", { wait = 0, ttl = 5000 })
  r.extended = lock.extend(g2, 10000)
  -- Not a length of time: refused, and the lock keeps its expiry.
  r.extend_nan = tostring(select(2, pcall(lock.extend, g2, 0/0)))
  r.extend_negative = tostring(select(2, pcall(lock.extend, g2, -1)))
  -- 0 would leave the lock free at once, its holder going on.
  r.extend_zero = tostring(select(2, pcall(lock.extend, g2, 0)))
  r.acquire_zero = tostring(select(2, pcall(lock.acquire, "Z", { wait = 0, ttl = 0 })))
  r.with_zero = tostring(select(2, pcall(lock.with, "Z", function() end, { ttl = 0 })))
  r.held_after_bad_extends = lock.acquire("F", { wait = 0 }) == nil
  lock.release(g2)
  r.fences = { g1.fence, g2.fence }
  r.with_returns = { lock.with("R", function() return "value", 2 end) }

  bus.send("contender", "go", {})
  local held = lock.acquire("H")
  bus.send("contender", "held", {})
  assert(bus.receive(20000), "the contender never tried")
  lock.release(held)
  task.output("holder", r)
end
return M
"#;

const CONTENDER: &str = r#"
local M = {}
function M.start(self)
  local r = {}
  assert(bus.receive(20000), "no go")
  -- lock.with released L although its function raised.
  local g = lock.acquire("L", { wait = 0 })
  r.got_l = g ~= nil
  r.l_fence = g and g.fence
  lock.release(g)
  assert(bus.receive(20000), "no held")
  r.h_while_held = lock.acquire("H", { wait = 20 }) == nil
  local ok, err = pcall(lock.with, "H", function() end, { wait = 0 })
  r.with_timeout = tostring(err)
  bus.send("holder", "tried", {})
  task.output("contender", r)
end
return M
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_releases_on_error_fences_grow_and_a_wait_can_run_out() {
    for backend in Backend::all() {
        let report = run_clean(
            backend,
            &[("holder.lua", HOLDER), ("contender.lua", CONTENDER)],
            task("lock-release", ""),
        )
        .await;
        let h = output(&report, "holder");
        assert!(
            h["with_error"]
                .as_str()
                .unwrap()
                .contains("boom inside the lock"),
            "{h:#}"
        );
        assert_eq!(h["released"], true);
        assert_eq!(h["released_again"], false);
        assert_eq!(h["extended"], true);
        for case in ["extend_nan", "extend_negative", "extend_zero"] {
            let text = h[case].as_str().unwrap_or_default();
            assert!(
                text.contains(
                    "lock.extend: argument #2 'ttl_ms' must be a number of milliseconds > 0, got "
                ),
                "{case}: {h:#}"
            );
        }
        assert!(
            h["extend_zero"].as_str().unwrap().ends_with("got 0"),
            "{h:#}"
        );
        for case in ["acquire_zero", "with_zero"] {
            let text = h[case].as_str().unwrap_or_default();
            assert!(
                text.contains(".lua:")
                    && text.ends_with(": option 'ttl' must be a number of milliseconds > 0, got 0"),
                "{case}: {h:#}"
            );
        }
        assert!(
            h["acquire_zero"]
                .as_str()
                .unwrap()
                .contains("lock.acquire: option 'ttl'"),
            "{h:#}"
        );
        assert_eq!(h["held_after_bad_extends"], true, "{h:#}");
        let fences = h["fences"].as_array().unwrap();
        assert!(fences[1].as_u64() > fences[0].as_u64(), "{h:#}");
        assert_eq!(h["with_returns"], json!(["value", 2]));

        let c = output(&report, "contender");
        assert_eq!(c["got_l"], true);
        assert!(
            c["l_fence"].as_u64() > h["fence_in_with"].as_u64(),
            "{c:#} {h:#}"
        );
        assert_eq!(c["h_while_held"], true);
        assert!(
            c["with_timeout"]
                .as_str()
                .unwrap()
                .contains("lock.with: timed out waiting for lock 'H'"),
            "{c:#}"
        );
    }
}

/// Takes a lock with `lock.with` in a coroutine it leaves suspended inside
/// the function, so `lock.with` never reaches its release, and ends.
const SUSPENDER: &str = r#"
local M = {}
function M.start(self)
  local co = coroutine.create(function()
    lock.with("L", function() coroutine.yield() end, { ttl = 600000 })
  end)
  assert(coroutine.resume(co))
  assert(coroutine.status(co) == "suspended")
  bus.send("taker", "held", {})
end
return M
"#;

const TAKER: &str = r#"
local M = {}
function M.start(self)
  assert(bus.receive(30000), "the suspender never held the lock")
  local grant = lock.acquire("L", { wait = 10000 })
  task.output("got", grant ~= nil)
end
return M
"#;

/// The locks an agent still holds when it ends are released by the host,
/// even one whose `lock.with` never returned (its TTL, ten minutes, would
/// otherwise keep every other agent out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_an_agent_holds_when_it_ends_is_released() {
    for backend in Backend::all() {
        let report = run_clean(
            backend,
            &[("suspender.lua", SUSPENDER), ("taker.lua", TAKER)],
            task("lock-left", r#"agents = ["suspender", "taker"]"#),
        )
        .await;
        assert_eq!(
            output(&report, "got"),
            &json!(true),
            "{backend:?}: the lock stayed held: {:?}",
            report.errors
        );
    }
}
