//! A task's agents spread over the workers serving its roles: the worker
//! that takes it runs the roles it serves and asks for the others, which a
//! worker serving them joins with an agent; when that worker dies or
//! drains, another serving the role (here: any role) adopts its agent, id
//! and queue included.

use std::process::Command;

use crate::adopt::{self, host_of};
use crate::common::Scratch;
use crate::util::{PATIENCE, server, submit, wait_running, wait_state, worker_with};

/// Sends five jobs to the consumers, then ends.
const PRODUCER: &str = r#"
local M = {}
function M.start(self)
  for i = 1, 5 do bus.send("consumer", "job", { n = i }) end
  agent.finish()
end
return M
"#;

/// Counts the jobs; after the fifth, records the count and ends.
const CONSUMER: &str = r#"
local M = {}
function M.on_message(self, msg)
  local n = blackboard.update("handled", function(c) return (c or 0) + 1 end)
  if n == 5 then
    task.output("handled", n)
    agent.finish()
  end
end
return M
"#;

#[test]
fn a_task_runs_its_roles_on_the_workers_that_serve_them() {
    let server = server();
    let scratch = Scratch::new(&[("producer.lua", PRODUCER), ("consumer.lua", CONSUMER)]);
    scratch.write(
        "pipe.toml",
        "id = \"pipe\"\ntype = \"test\"\ndescription = \"pipe\"\ntimeout = 60000\nagents = [\"producer\", \"consumer\"]\n",
    );
    let producers = worker_with(scratch.path(), &server, &["--roles", "producer"]);
    let consumers = worker_with(scratch.path(), &server, &["--roles", "consumer"]);
    let id = submit(scratch.path(), &server, "pipe.toml");
    let task = wait_state(scratch.path(), &server, &id, "finished");
    assert_eq!(task["status"], "complete", "{task:#}");
    assert_eq!(task["outputs"]["handled"], 5, "{task:#}");
    assert_eq!(task["ends"], 1, "{task:#}");
    let producer = host_of(&server, &id, "producer-1");
    let consumer = host_of(&server, &id, "consumer-1");
    assert!(
        producer.contains(&format!(":{}-", producers.pid())),
        "producer-1 ran on {producer}"
    );
    assert!(
        consumer.contains(&format!(":{}-", consumers.pid())),
        "consumer-1 ran on {consumer}"
    );
    for w in [producers, consumers] {
        let w = w.interrupt(PATIENCE);
        assert_eq!(w.code, Some(0), "{}", w.show());
    }
}

#[test]
fn a_killed_joiner_is_replaced_by_another_worker_serving_its_role() {
    replaced_after("-KILL");
}

#[test]
fn a_drained_joiner_is_replaced_by_another_worker_serving_its_role() {
    replaced_after("-TERM");
}

/// Runs the pipeline whose producer sends every job at once to the
/// consumer's own id and whose consumer takes its time over each, sends
/// `signal` to the consumers' worker mid-job, and checks that another
/// worker adopted the consumer (its id, so the jobs still queued for it)
/// and finished the work as an undisturbed run does.
fn replaced_after(signal: &str) {
    let server = server();
    let scratch = Scratch::new(&[
        ("producer.lua", adopt::PRODUCER),
        ("consumer.lua", adopt::CONSUMER),
    ]);
    let file = adopt::pipeline(&scratch, 0, 300);
    let expected = adopt::reference(&scratch, file);
    // The producers' worker takes the task (it is the only one), so the
    // consumers' worker only joins it.
    let producers = worker_with(scratch.path(), &server, &["--roles", "producer"]);
    let id = submit(scratch.path(), &server, file);
    wait_running(scratch.path(), &server, producers.pid());
    let flags = ["--roles", "consumer", "--drain", "200"];
    let mut first = worker_with(scratch.path(), &server, &flags);
    first.wait_for("handling job 2", PATIENCE);
    // Serves any role, so every role asked for.
    let second = worker_with(scratch.path(), &server, &[]);
    let sent = Command::new("kill")
        .args([signal, &first.pid().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let task = wait_state(scratch.path(), &server, &id, "finished");
    assert_eq!(task["status"], "complete", "{task:#}");
    assert_eq!(task["outputs"], expected, "{task:#}");
    assert_eq!(task["ends"], 1, "{task:#}");
    assert_eq!(
        adopt::agents_of(&server, &id),
        ["consumer-1", "producer-1"],
        "the consumer was replaced by a new agent"
    );
    let adopter = host_of(&server, &id, "consumer-1");
    assert!(
        adopter.contains(&format!(":{}-", second.pid())),
        "consumer-1 ended on {adopter}"
    );
    for w in [producers, second] {
        let w = w.interrupt(PATIENCE);
        assert_eq!(w.code, Some(0), "{}", w.show());
    }
}

/// A task whose owner died while its request for an agent of a role it does
/// not serve still waited: the worker that resumes the task starts that
/// agent, and the request, taken later, starts no second one.
#[test]
fn an_agent_asked_for_and_started_by_a_resume_starts_once() {
    let server = server();
    let scratch = Scratch::new(&[("producer.lua", PRODUCER), ("consumer.lua", CONSUMER)]);
    scratch.write(
        "pipe.toml",
        "id = \"pipe\"\ntype = \"test\"\ndescription = \"pipe\"\ntimeout = 60000\nagents = [\"producer\", \"consumer\"]\n",
    );
    let mut owner = worker_with(scratch.path(), &server, &["--roles", "producer"]);
    let id = submit(scratch.path(), &server, "pipe.toml");
    wait_running(scratch.path(), &server, owner.pid());
    // The owner asked for a consumer, which no worker serves yet.
    let mut c = redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let deadline = std::time::Instant::now() + PATIENCE;
    while redis::cmd("XLEN")
        .arg("fleet:joins:consumer")
        .query::<usize>(&mut c)
        .unwrap()
        == 0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no request for a consumer"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    owner.kill();
    // Past the owner's lease: the task is there to resume, with the request.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    // Serves every role: it resumes the task and may also take the request.
    let any = worker_with(scratch.path(), &server, &[]);
    let task = wait_state(scratch.path(), &server, &id, "finished");
    assert_eq!(task["status"], "complete", "{task:#}");
    assert_eq!(task["outputs"]["handled"], 5, "{task:#}");
    // A worker serving the role, started late, finds the request answered.
    let consumers = worker_with(scratch.path(), &server, &["--roles", "consumer"]);
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(
        adopt::agents_of(&server, &id),
        ["consumer-1", "producer-1"],
        "one consumer, started once"
    );
    for w in [any, consumers] {
        let w = w.interrupt(PATIENCE);
        assert_eq!(w.code, Some(0), "{}", w.show());
    }
}

/// Spawns a helper and waits for it.
const STARTER: &str = r#"
local M = {}
function M.start(self)
  local id = spawn.agent("helper")
  task.output("spawned", id)
  task.output("helper_ended", spawn.wait(id, 30000))
  agent.finish()
end
return M
"#;

/// Records that it ran.
const HELPER: &str = r#"
local M = {}
function M.start(self)
  task.output("helped", agent.id)
  agent.finish()
end
return M
"#;

/// A spawn by an agent whose worker does not serve the new agent's role is
/// handed over: recorded under its id where it was asked for, started by a
/// worker serving the role, waited for by the spawner as a local one.
#[test]
fn a_spawn_of_a_role_its_worker_does_not_serve_starts_on_one_that_does() {
    let server = server();
    let scratch = Scratch::new(&[("starter.lua", STARTER), ("helper.lua", HELPER)]);
    scratch.write(
        "spawns.toml",
        "id = \"spawns\"\ntype = \"test\"\ndescription = \"spawns\"\ntimeout = 60000\nagents = [\"starter\"]\n",
    );
    let starters = worker_with(scratch.path(), &server, &["--roles", "starter"]);
    let helpers = worker_with(scratch.path(), &server, &["--roles", "helper"]);
    let id = submit(scratch.path(), &server, "spawns.toml");
    let task = wait_state(scratch.path(), &server, &id, "finished");
    assert_eq!(task["status"], "complete", "{task:#}");
    assert_eq!(
        task["outputs"],
        serde_json::json!({"spawned": "helper-1", "helper_ended": "COMPLETE", "helped": "helper-1"}),
        "{task:#}"
    );
    let helper = host_of(&server, &id, "helper-1");
    assert!(
        helper.contains(&format!(":{}-", helpers.pid())),
        "helper-1 ran on {helper}"
    );
    for w in [starters, helpers] {
        let w = w.interrupt(PATIENCE);
        assert_eq!(w.code, Some(0), "{}", w.show());
    }
}
