//! How agents and tasks end: quiescence of handler-only agents (also while a
//! blackboard change is on its way to a watcher), `agent.finish()`, `stop`.

use orrery::config::Config;
use orrery::report::TaskStatus;
use serde_json::json;

use crate::common::Backend;
use crate::util::{output, phases, run, run_clean, show_report, task};

const PING: &str = r#"
local M = {}
function M.start(self)
  assert(bus.receive(20000), "the watcher never got ready")
  bus.send("pong", "ball", { n = 0 })
end
function M.on_message(self, msg)
  if msg.payload.n < 20 then bus.send(msg.from, "ball", { n = msg.payload.n + 1 }) end
end
function M.stop(self)
  task.output("ping_stopped", true)
end
return M
"#;

const PONG: &str = r#"
local M = {}
function M.on_message(self, msg)
  if msg.type == "thanks" then
    task.output("thanked", true)
    return
  end
  blackboard.set("last", msg.payload.n)
  if msg.payload.n < 20 then bus.send(msg.from, "ball", { n = msg.payload.n + 1 }) end
end
return M
"#;

/// Reacts to blackboard changes only. Its reaction to the last one wakes pong
/// again, which it cannot do if the task was ended while the change was on
/// its way to the watcher.
const WATCHER: &str = r#"
local M = {}
function M.start(self)
  blackboard.watch("last", function(_, n)
    metrics.incr("seen")
    task.output("last_seen", n)
    if n == 20 then bus.send("pong", "thanks", {}) end
  end)
  bus.send("ping", "ready", {})
end
return M
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_whose_agents_only_have_handlers_ends_when_it_goes_quiet() {
    for backend in Backend::all() {
        // Repeated: ending too early (a watch event still unhandled) is a race.
        for round in 0..10 {
            let report = run_clean(
                backend,
                &[
                    ("ping.lua", PING),
                    ("pong.lua", PONG),
                    ("watcher.lua", WATCHER),
                ],
                task("quiet", ""),
            )
            .await;
            assert_eq!(output(&report, "last_seen"), &json!(20), "round {round}");
            // pong handled n = 0, 2, …, 20; the watcher saw every write.
            assert_eq!(report.metrics.custom["seen"], 11, "round {round}");
            assert_eq!(output(&report, "thanked"), &json!(true), "round {round}");
            assert_eq!(output(&report, "ping_stopped"), &json!(true));
            for id in ["ping-1", "pong-1", "watcher-1"] {
                assert_eq!(phases(&report, id).last().unwrap(), "COMPLETE");
            }
        }
    }
}

/// Queues three messages to itself, then finishes while handling the second.
const FINISHER: &str = r#"
local M = {}
function M.start(self)
  self.handled = 0
  bus.send(agent.id, "work", { last = false })
  bus.send(agent.id, "work", { last = true })
  bus.send(agent.id, "work", { last = false })
end
function M.on_message(self, msg)
  self.handled = self.handled + 1
  task.output("handled", self.handled)
  if msg.payload.last then agent.finish() end
end
return M
"#;

/// Has a handler but finishes in `start`: it never waits for messages.
const QUITTER: &str = r#"
local M = {}
function M.start(self)
  bus.subscribe(function() error("never called") end)
  agent.finish()
end
function M.on_message(self, msg) error("never called") end
return M
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_finish_ends_an_agent_that_still_has_handlers() {
    for backend in Backend::all() {
        let report = run(
            backend,
            &[("finisher.lua", FINISHER), ("quitter.lua", QUITTER)],
            task("finish", ""),
            Config::default(),
        )
        .await;
        assert_eq!(
            report.status,
            TaskStatus::Complete,
            "{}",
            show_report(&report)
        );
        assert_eq!(output(&report, "handled"), &json!(2));
        assert_eq!(phases(&report, "quitter-1"), ["INIT", "READY", "COMPLETE"]);
        // The third message was never taken: the report says so, without failing the run.
        let undelivered: Vec<_> = report
            .errors
            .iter()
            .filter(|e| e.kind == "undelivered")
            .collect();
        assert_eq!(undelivered.len(), 1, "{}", show_report(&report));
        assert!(
            undelivered[0]
                .message
                .starts_with("1 message to 'finisher-1' never taken")
        );
        assert!(report.errors.iter().all(|e| !e.fatal));
    }
}

/// Waits in each host call that waits while `other` must act for the wait to
/// end well. On a one-thread runtime a call that blocked its thread would
/// starve `other`, and every answer below would come back wrong.
const WAITER: &str = r#"
local M = {}
function M.start(self)
  local r = {}
  bus.send("other", "write", {})
  sleep(50)
  r.saw_write_during_sleep = blackboard.get("written") == true

  bus.send("other", "reply", {})
  local msg = bus.receive(10000)
  r.got_reply_during_receive = msg ~= nil and msg.type == "reply"

  local held = assert(lock.acquire("L", { wait = 0 }))
  bus.send("other", "take_lock", {})
  sleep(50) -- other now waits in lock.acquire
  lock.release(held)
  local done = bus.receive(10000)
  r.other_got_lock = done ~= nil and done.payload.got == true
  task.output("waits", r)
end
return M
"#;

const OTHER: &str = r#"
local M = {}
function M.on_message(self, msg)
  if msg.type == "write" then
    blackboard.set("written", true)
  elseif msg.type == "reply" then
    bus.send(msg.from, "reply", {})
  elseif msg.type == "take_lock" then
    local grant = lock.acquire("L", { wait = 10000 })
    bus.send(msg.from, "lock_taken", { got = grant ~= nil })
    if grant then lock.release(grant) end
  end
end
return M
"#;

#[tokio::test(flavor = "current_thread")]
async fn host_calls_that_wait_block_only_the_calling_agent() {
    for backend in Backend::all() {
        let report = run_clean(
            backend,
            &[("waiter.lua", WAITER), ("other.lua", OTHER)],
            task("waits", ""),
        )
        .await;
        assert_eq!(
            output(&report, "waits"),
            &json!({
                "saw_write_during_sleep": true,
                "got_reply_during_receive": true,
                "other_got_lock": true,
            })
        );
    }
}
