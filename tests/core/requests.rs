//! Request/reply, every agent of a role, and waiting: `bus.request`,
//! `bus.reply`, `bus.replies`, `bus.broadcast(type, payload, role)`,
//! `state.agents(role)` and `spawn.wait`, on both stores.

use orrery::config::Config;
use serde_json::json;

use crate::common::Backend;
use crate::util::{assert_clean, output, run, task};

const COORDINATOR: &str = r#"
local t = require("testing")
local M = {}
function M.start(self)
  self.other = {}
  for _ = 1, 3 do assert(bus.receive(20000), "a worker never got ready") end
  -- A message for us arrives while we wait for a reply: it is kept for later.
  bus.send(agent.id, "note", { n = 1 })

  local answer = bus.request("worker", "square", { x = 7 })
  t.eq(answer.payload, { y = 49 }, "the reply's payload")
  t.eq(answer.type, "reply", "the default reply type")
  assert(answer.reply_to ~= nil, "a reply names what it answers")

  -- Every agent of a role, and all of their replies.
  local id, reached = bus.broadcast("whoami", {}, "worker")
  t.eq(reached, 3, "three workers reached, the watcher not")
  local names = {}
  for _, r in ipairs(bus.replies(id, reached)) do names[#names + 1] = r.payload.id end
  table.sort(names)
  t.eq(names, { "worker-1", "worker-2", "worker-3" })

  -- Many requests to the pool, one reply each, in the order sent.
  local ids = {}
  for i = 1, 12 do ids[i] = bus.send("worker", "square", { x = i }) end
  local squares = {}
  for i, r in ipairs(bus.replies(ids)) do squares[i] = r.payload.y end
  t.eq(squares, { 1, 4, 9, 16, 25, 36, 49, 64, 81, 100, 121, 144 })

  local workers = {}
  for _, a in ipairs(state.agents("worker")) do workers[#workers + 1] = a.id end
  t.eq(workers, { "worker-1", "worker-2", "worker-3" }, "state.agents(role)")
  t.eq(#state.agents(), 5, "state.agents() lists every agent")

  local ok, err = pcall(bus.request, "watcher", "ignored", {}, 50)
  t.eq(ok, false)
  assert(tostring(err):find("bus.request('watcher', 'ignored'): no reply within 50 ms", 1, true), tostring(err))
  bus.broadcast("done", {})
end
function M.on_message(self, msg)
  if msg.type == "note" then task.output("note_after_the_waits", msg.payload.n) end
end
return M
"#;

const WORKER: &str = r#"
local M = {}
function M.start(self) bus.send("coordinator", "ready", {}) end
function M.on_message(self, msg)
  if msg.type == "square" then bus.reply(msg, { y = msg.payload.x * msg.payload.x })
  elseif msg.type == "whoami" then bus.reply(msg, { id = agent.id }, "me")
  elseif msg.type == "done" then agent.finish() end
end
return M
"#;

const WATCHER: &str = r#"
local M = {}
function M.on_message(self, msg) if msg.type == "done" then agent.finish() end end
return M
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_replies_role_broadcasts_and_role_listings() {
    for backend in Backend::all() {
        let report = run(
            backend,
            &[
                ("coordinator.lua", COORDINATOR),
                ("worker.lua", WORKER),
                ("watcher.lua", WATCHER),
            ],
            task(
                "requests",
                r#"agents = ["coordinator", "worker", "worker", "worker", "watcher"]"#,
            ),
            Config::default(),
        )
        .await;
        assert_clean(backend, &report);
        assert_eq!(
            output(&report, "note_after_the_waits"),
            &json!(1),
            "{backend:?}"
        );
    }
}

const PARENT: &str = r#"
local t = require("testing")
local M = {}
function M.start(self)
  local a = spawn.agent("child")
  local b = spawn.agent("child")
  bus.send(a, "go", { fail = false })
  bus.send(b, "go", { fail = true })
  t.eq(spawn.wait({ a, b }), { "COMPLETE", "FAILED" }, "the final phases, in order")
  t.eq(spawn.wait(a), "COMPLETE", "an ended agent is waited for at once")
  local c = spawn.agent("child")
  local ok, err = pcall(spawn.wait, c, 50)
  t.eq(ok, false)
  assert(tostring(err):find("spawn.wait: agent " .. c .. " did not end within 50 ms", 1, true), tostring(err))
  bus.send(c, "go", { fail = false })
  t.eq(spawn.wait(c, 20000), "COMPLETE")
  task.output("joined", true)
end
return M
"#;

const CHILD: &str = r#"
local M = {}
function M.on_message(self, msg)
  if msg.payload.fail then state.set("FAILED", "asked to") end
  agent.finish()
end
return M
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawn_wait_joins_spawned_agents() {
    for backend in Backend::all() {
        let report = run(
            backend,
            &[("parent.lua", PARENT), ("child.lua", CHILD)],
            task(
                "join",
                "agents = [\"parent\"]\n[success]\nallow_failed_agents = true\n",
            ),
            Config::default(),
        )
        .await;
        assert_eq!(
            output(&report, "joined"),
            &json!(true),
            "{backend:?}: {report:#?}"
        );
        assert_eq!(
            report.status,
            orrery::report::TaskStatus::Complete,
            "{backend:?}"
        );
    }
}

const IMPATIENT: &str = r#"
local M = {}
function M.start(self)
  local ok = pcall(bus.request, "slow", "job", {}, 100)
  task.output("client", ok and "answered" or "gave up")
end
return M
"#;

const SLOW: &str = r#"
local M = {}
function M.on_message(self, msg)
  blackboard.update("jobs_done", function(n) return (n or 0) + 1 end)
  task.output("jobs_done", blackboard.get("jobs_done"))
  sleep(400)
  bus.reply(msg, { a = 42 })
end
return M
"#;

/// A reply to a requester that stopped waiting and ended is not the
/// worker's failure: it was, and the request was given back, done again
/// `max_attempts` times, dead-lettered, and the run failed. The reply is
/// left on the ended agent's queue, listed as undelivered (not fatal).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_reply_to_an_ended_requester_is_undelivered_not_a_failure() {
    for backend in Backend::all() {
        let report = run(
            backend,
            &[("impatient.lua", IMPATIENT), ("slow.lua", SLOW)],
            task("late-reply", r#"agents = ["impatient", "slow"]"#),
            Config::default(),
        )
        .await;
        let shown = crate::util::show_report(&report);
        assert_eq!(
            report.status,
            orrery::report::TaskStatus::Complete,
            "{backend:?}: {shown}"
        );
        assert_eq!(output(&report, "client"), "gave up", "{shown}");
        assert_eq!(output(&report, "jobs_done"), 1, "done once: {shown}");
        assert!(
            report
                .errors
                .iter()
                .all(|e| !e.fatal && e.kind == orrery::error::ErrorKind::Undelivered),
            "{backend:?}: {shown}"
        );
    }
}

const POLLER: &str = r#"
local M = {}
function M.start(self)
  -- The README's way to poll a role, with no agent of it live.
  local id, n = bus.broadcast("status", {}, "idle_worker")
  local replies = bus.replies(id, n)
  task.output("polled", n)
  task.output("replies", #replies)
  task.output("negative", tostring(select(2, pcall(bus.replies, id, -1))))
end
return M
"#;

const IDLE_WORKER: &str = r#"
local M = {}
function M.on_message(self, msg) bus.reply(msg, { busy = false }) end
return M
"#;

/// Broadcast-then-collect with an empty role: a broadcast that reached no
/// agent waits for no reply (it raised: `n` had to be 1 or more).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collecting_the_replies_of_a_broadcast_that_reached_nobody_is_empty() {
    let report = run(
        Backend::Memory,
        &[("poller.lua", POLLER), ("idle_worker.lua", IDLE_WORKER)],
        task("poll-empty", r#"agents = ["poller"]"#),
        Config::default(),
    )
    .await;
    assert_clean(Backend::Memory, &report);
    assert_eq!(output(&report, "polled"), 0);
    assert_eq!(output(&report, "replies"), 0);
    assert!(
        output(&report, "negative")
            .as_str()
            .unwrap()
            .contains("bus.replies: argument #2 'n' must be a whole number of 0 or more, got -1"),
        "{:?}",
        output(&report, "negative")
    );
}
