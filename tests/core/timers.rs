//! `every` and `after`: timer callbacks between the agent's other callbacks,
//! cancelled by id, keeping the task running while one is set, under the
//! callback budget, and their errors.

use orrery::config::Config;
use orrery::report::TaskStatus;
use serde_json::json;

use crate::common::Backend;
use crate::util::{
    assert_clean, config, error_messages, output, run, run_clean, show_report, task,
};

const TICKER: &str = r#"
local M = {}
function M.start(self)
  self.ticks, self.order = 0, {}
  self.every = every(5, "tick")                   -- by name: M.tick(self)
  after(30, function() self.order[#self.order + 1] = "after" end)
  local never = after(1, function() error("a cancelled timer ran") end)
  assert(time.cancel(never) == true, "cancel of a set timer")
  assert(time.cancel(never) == false, "cancel of a cancelled timer")
  bus.send(agent.id, "hello", {})
end
function M.on_message(self, msg) self.order[#self.order + 1] = "message" end
function M.tick(self)
  self.ticks = self.ticks + 1
  if self.ticks == 10 then
    time.cancel(self.every)
    self.order[#self.order + 1] = "ticked 10"
    task.output("order", self.order)
  end
end
return M
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_after_and_cancel_run_callbacks_between_the_others() {
    for backend in Backend::all() {
        let report = run_clean(backend, &[("ticker.lua", TICKER)], task("timers", "")).await;
        let order = output(&report, "order").as_array().unwrap().clone();
        assert_eq!(
            order.first(),
            Some(&json!("message")),
            "{backend:?}: {order:?}"
        );
        assert!(order.contains(&json!("after")), "{backend:?}: {order:?}");
        assert_eq!(
            order.last(),
            Some(&json!("ticked 10")),
            "{backend:?}: {order:?}"
        );
    }
}

const LATE: &str = r#"
local M = {}
function M.start(self)
  after(300, function() task.output("late", "written") end)
end
return M
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_timer_keeps_the_task_from_going_quiet() {
    let report = run(
        Backend::Memory,
        &[("late.lua", LATE)],
        task("timers-late", ""),
        Config::default(),
    )
    .await;
    assert_clean(Backend::Memory, &report);
    assert_eq!(output(&report, "late"), &json!("written"));
}

const FAILING: &str = r#"
local M = {}
function M.start(self)
  self.rounds = 0
  every(2, function()
    self.rounds = self.rounds + 1
    if self.rounds == 3 then error("round three broke") end
    if self.rounds == 5 then task.output("rounds", self.rounds); agent.finish() end
  end)
end
return M
"#;

/// A round of `every` that raised is lost work, as a watch callback that
/// raised and a one-shot timer that raised: the run fails with the error's
/// code (unless `[success] allow_dead_letters`), and the next round runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_of_every_that_raises_is_lost_work_and_the_next_one_runs() {
    for (extra, allowed) in [
        ("", false),
        ("[success]\nallow_dead_letters = true\n", true),
    ] {
        let report = run(
            Backend::Memory,
            &[("failing.lua", FAILING)],
            task("timers-fail", extra),
            Config::default(),
        )
        .await;
        let (status, code) = if allowed {
            (TaskStatus::Complete, 0)
        } else {
            (TaskStatus::Failed, orrery::error::exit::SCRIPT)
        };
        assert_eq!(report.status, status, "{}", show_report(&report));
        assert_eq!(report.exit_code(), code, "{}", show_report(&report));
        assert_eq!(output(&report, "rounds"), &json!(5));
        let errors = error_messages(&report);
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert!(
            errors[0].starts_with("timer 1: ") && errors[0].contains("round three broke"),
            "{errors:#?}"
        );
        assert_eq!(report.errors[0].fatal, !allowed, "{}", show_report(&report));
        assert_eq!(
            report.errors[0].allowed,
            allowed,
            "{}",
            show_report(&report)
        );
    }
}

const AFTER_FAILS: &str = r#"
local M = {}
function M.start(self) after(1, "boom") end
function M.boom(self) error("late boom") end
return M
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_shot_timer_that_raises_is_lost_work() {
    let report = run(
        Backend::Memory,
        &[("oneshot.lua", AFTER_FAILS)],
        task("timers-lost", ""),
        Config::default(),
    )
    .await;
    assert_eq!(
        report.status,
        TaskStatus::Failed,
        "{}",
        show_report(&report)
    );
    assert_eq!(report.exit_code(), orrery::error::exit::SCRIPT);
    let errors = error_messages(&report);
    assert!(
        errors[0].starts_with("timer 'boom': ") && errors[0].contains("late boom"),
        "{errors:#?}"
    );
}

const SPIN: &str = r#"
local M = {}
function M.start(self) every(1, function() while true do end end) end
return M
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timer_callback_runs_under_the_callback_budget() {
    let report = run(
        Backend::Memory,
        &[("spin.lua", SPIN)],
        task("timers-budget", ""),
        config(|c| c.callback_timeout = 200),
    )
    .await;
    assert_eq!(
        report.exit_code(),
        orrery::error::exit::TIMEOUT,
        "{}",
        show_report(&report)
    );
    assert!(
        error_messages(&report)[0].contains("callback 'timer 1' of agent spin-1"),
        "{}",
        show_report(&report)
    );
}

const BAD_ARGS: &str = r#"
local M = { limit = 3 }
-- At the top level the module is not returned yet: checked at each round.
time.cancel(every(60000, "tick"))
local function try(f, ...)
  local ok, err = pcall(f, ...)
  return ok and "no error" or tostring(err)
end
function M.start(self)
  local ids, too_many = {}, "no error"
  for i = 1, 1001 do
    local ok, id = pcall(after, 60000, "nothing")   -- M.nothing
    if ok then ids[#ids + 1] = id else too_many = tostring(id) end
  end
  for _, id in ipairs(ids) do time.cancel(id) end
  task.output("errors", {
    too_many = too_many,
    zero = try(every, 0, function() end),
    nan_every = try(every, 0/0, function() end),
    nan_after = try(after, 0/0, function() end),
    nan_sleep = try(sleep, 0/0),
    text = try(every, "soon", function() end),
    target = try(after, 10, 5),
    cancel = try(time.cancel, "x"),
    unknown = try(every, 100, "tik"),
    not_function = try(after, 100, "limit"),
  })
end
function M.nothing(self) end
return M
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_timer_arguments_say_which_and_what_was_expected() {
    let report = run(
        Backend::Memory,
        &[("bad.lua", BAD_ARGS)],
        task("timers-args", ""),
        Config::default(),
    )
    .await;
    assert_clean(Backend::Memory, &report);
    let errors = output(&report, "errors");
    for (case, fragment) in [
        ("zero", "time.every: argument #1 'ms' must be at least 1"),
        // Not a number of milliseconds: `every` would fire without pause.
        (
            "nan_every",
            "time.every: argument #1 'ms' must be a number of milliseconds, got nan",
        ),
        (
            "nan_after",
            "time.after: argument #1 'ms' must be a number of milliseconds, got nan",
        ),
        (
            "nan_sleep",
            "sleep: argument #1 'ms' must be a number of milliseconds, got nan",
        ),
        (
            "text",
            "time.every: argument #1 'ms' must be a number of milliseconds, got string",
        ),
        (
            "target",
            "time.after: argument #2 'fn' must be a function or the name of a function",
        ),
        ("cancel", "time.cancel: argument #1 'id' must be a timer id"),
        // A name the module does not define: at the call, not at each round.
        (
            "unknown",
            "time.every: argument #2 'fn' names 'tik', which the role's module does not \
             define as a function (found nil)",
        ),
        (
            "not_function",
            "time.after: argument #2 'fn' names 'limit', which the role's module does not \
             define as a function (found integer)",
        ),
        (
            "too_many",
            "time.after: agent bad-1 already has 1000 timers set; cancel some",
        ),
    ] {
        let message = errors[case].as_str().unwrap();
        assert!(
            message.contains(fragment),
            "{case}: expected '{fragment}' in '{message}'"
        );
    }
}

const TYPO: &str = r#"
local M = {}
function M.start(self)
  every(100, "tik")
end
function M.tick(self) end
return M
"#;

/// A timer naming a function the module lacks fails where it is set, with
/// the script's line, not at its first round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timer_naming_a_missing_function_fails_at_the_call() {
    let report = run(
        Backend::Memory,
        &[("typo.lua", TYPO)],
        task("timers-typo", ""),
        Config::default(),
    )
    .await;
    assert_eq!(report.exit_code(), orrery::error::exit::SCRIPT);
    let first = error_messages(&report)[0]
        .lines()
        .next()
        .unwrap()
        .to_string();
    let line = crate::util::line_of(TYPO, "every(");
    assert!(
        first.ends_with(&format!(
            "typo.lua:{line}: time.every: argument #2 'fn' names 'tik', which the role's \
             module does not define as a function (found nil)"
        )),
        "{}",
        show_report(&report)
    );
}
