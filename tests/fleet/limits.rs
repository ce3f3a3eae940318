//! A worker's limits: live agents across its tasks, resident memory.

use crate::common::Scratch;
use crate::util::{PATIENCE, SLOW, server, submit, wait_state, worker, worker_with};

fn slow_task(scratch: &Scratch) -> &'static str {
    scratch.write(
        "slow.toml",
        "id = \"slow\"\ntype = \"test\"\ndescription = \"sleeps\"\ntimeout = 60000\nagents = [\"slow\"]\n[inputs]\nms = 600\n",
    );
    "slow.toml"
}

#[test]
fn a_worker_at_its_agent_limit_takes_no_more_tasks() {
    let server = server();
    let scratch = Scratch::new(&[("slow.lua", SLOW)]);
    let a = submit(scratch.path(), &server, slow_task(&scratch));
    let b = submit(scratch.path(), &server, "slow.toml");
    let w = worker_with(
        scratch.path(),
        &server,
        &["--max-tasks", "4", "--max-agents-total", "1"],
    );
    let a = wait_state(scratch.path(), &server, &a, "finished");
    let b = wait_state(scratch.path(), &server, &b, "finished");
    let (first, second) = if a["started_ms"].as_u64() < b["started_ms"].as_u64() {
        (a, b)
    } else {
        (b, a)
    };
    assert!(
        second["started_ms"].as_u64().unwrap() >= first["finished_ms"].as_u64().unwrap(),
        "two tasks of one agent each ran at once under --max-agents-total 1: {first:#} {second:#}"
    );
    let w = w.interrupt(PATIENCE);
    assert_eq!(w.code, Some(0), "{}", w.show());
}

#[test]
fn a_worker_over_its_memory_limit_takes_no_task() {
    let server = server();
    let scratch = Scratch::new(&[("slow.lua", SLOW)]);
    let id = submit(scratch.path(), &server, slow_task(&scratch));
    let full = worker_with(scratch.path(), &server, &["--max-memory", "1"]);
    std::thread::sleep(std::time::Duration::from_millis(800));
    wait_state(scratch.path(), &server, &id, "queued");
    let other = worker(scratch.path(), &server, 1);
    let task = wait_state(scratch.path(), &server, &id, "finished");
    assert!(
        task["worker"]
            .as_str()
            .unwrap()
            .ends_with(&format!(":{}", other.pid())),
        "{task:#}"
    );
    for w in [full, other] {
        let end = w.interrupt(PATIENCE);
        assert_eq!(end.code, Some(0), "{}", end.show());
    }
}

#[test]
fn a_task_goes_to_a_worker_serving_its_roles() {
    let server = server();
    let scratch = Scratch::new(&[("slow.lua", SLOW)]);
    let id = submit(scratch.path(), &server, slow_task(&scratch));
    let other = worker_with(scratch.path(), &server, &["--roles", "alpha,beta"]);
    let serving = worker_with(scratch.path(), &server, &["--roles", "slow"]);
    let task = wait_state(scratch.path(), &server, &id, "finished");
    assert_eq!(task["status"], "complete", "{task:#}");
    let workers = task["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 1, "{task:#}");
    assert!(
        workers[0]
            .as_str()
            .unwrap()
            .ends_with(&format!(":{}", serving.pid())),
        "{task:#}"
    );
    for w in [other, serving] {
        let end = w.interrupt(PATIENCE);
        assert_eq!(end.code, Some(0), "{}", end.show());
    }
}

/// Once `other` is up, tries to start a third agent.
const LEAD: &str = r#"
local M = {}
function M.start(self)
  while not blackboard.get("other_up") do sleep(20) end
  local ok, err = pcall(spawn.agent, "extra")
  task.output("third", ok and "started" or tostring(err))
  blackboard.set("done", true)
  agent.finish()
end
return M
"#;

/// Stays until the lead is done.
const OTHER: &str = r#"
local M = {}
function M.start(self)
  blackboard.set("other_up", true)
  while not blackboard.get("done") do sleep(20) end
  agent.finish()
end
return M
"#;

const EXTRA: &str = "local M = {}\nfunction M.start(self) agent.finish() end\nreturn M\n";

/// `max_agents` bounds a task's live agents across the workers it is
/// spread over, not each worker's share: with one agent on each of two
/// workers and a limit of 2, a third is refused on either.
#[test]
fn max_agents_counts_a_spread_task_s_agents_on_every_worker() {
    let server = server();
    let scratch = Scratch::new(&[
        ("lead.lua", LEAD),
        ("other.lua", OTHER),
        ("extra.lua", EXTRA),
    ]);
    scratch.write(
        "two.toml",
        "id = \"two\"\ntype = \"test\"\ndescription = \"two\"\ntimeout = 60000\nagents = [\"lead\", \"other\"]\n",
    );
    let leads = worker_with(
        scratch.path(),
        &server,
        &["--roles", "lead,extra", "--max-agents", "2"],
    );
    let others = worker_with(
        scratch.path(),
        &server,
        &["--roles", "other", "--max-agents", "2"],
    );
    let id = submit(scratch.path(), &server, "two.toml");
    let task = wait_state(scratch.path(), &server, &id, "finished");
    assert_eq!(task["status"], "complete", "{task:#}");
    let third = task["outputs"]["third"].as_str().unwrap_or_default();
    assert!(
        third.contains("spawn limit") && third.contains("max_agents is 2"),
        "{task:#}"
    );
    for w in [leads, others] {
        let w = w.interrupt(PATIENCE);
        assert_eq!(w.code, Some(0), "{}", w.show());
    }
}
