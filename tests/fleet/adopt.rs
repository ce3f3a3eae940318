//! Spread tasks that lose a worker: the agents of a dead (SIGKILL) or
//! paused (SIGSTOP) worker come back, under their own ids, on a live
//! worker serving their roles, while the other workers' agents go on; the
//! task completes once with the outputs of an undisturbed run.

use redis::Commands;
use serde_json::Value;

use std::process::Command;

use crate::common::{RedisServer, Scratch, orrery, show};
use crate::util::{PATIENCE, server, submit, wait_running, wait_state, worker_with};

/// Waits for a consumer to name itself, then sends it (at its own id) five
/// jobs `pace` ms apart, keeping the next job's number as its checkpoint, so
/// an adopted producer goes on where it was.
pub const PRODUCER: &str = r#"
local M = {}
local function produce(from)
  local to = blackboard.get("consumer")
  while not to do
    sleep(20)
    to = blackboard.get("consumer")
  end
  for i = from, 5 do
    bus.send(to, "job", { n = i })
    agent.checkpoint({ next = i + 1 })
    log.info("sent job " .. i)
    sleep(task.inputs.pace)
  end
  task.output("sent", 5)
  agent.finish()
end
function M.start(self) produce(1) end
function M.on_resume(self, checkpoint) produce(checkpoint and checkpoint.next or 1) end
return M
"#;

/// Names itself on the blackboard; takes `work` ms over each job; counts
/// the distinct jobs (a job redelivered after a kill counts once) and ends
/// after the fifth.
pub const CONSUMER: &str = r#"
local M = {}
function M.start(self) blackboard.set("consumer", agent.id) end
function M.on_message(self, msg)
  log.info("handling job " .. msg.payload.n)
  sleep(task.inputs.work)
  local seen = blackboard.update("seen", function(s)
    s = s or {}
    s["job" .. msg.payload.n] = true
    return s
  end)
  local n = 0
  for _ in pairs(seen) do n = n + 1 end
  if n == 5 then
    task.output("handled", n)
    agent.finish()
  end
end
return M
"#;

/// The pipeline's task file, `pace` and `work` ms per job, in `scratch`.
pub fn pipeline(scratch: &Scratch, pace: u64, work: u64) -> &'static str {
    scratch.write(
        "pipe.toml",
        &format!(
            "id = \"pipe\"\ntype = \"test\"\ndescription = \"pipe\"\ntimeout = 60000\n\
             agents = [\"producer\", \"consumer\"]\n[inputs]\npace = {pace}\nwork = {work}\n"
        ),
    );
    "pipe.toml"
}

/// The outputs of an undisturbed run of `file` on the embedded store.
pub fn reference(scratch: &Scratch, file: &str) -> Value {
    let scripts = scratch.scripts();
    let out = orrery(
        scratch.path(),
        &[
            "run",
            file,
            "--json",
            "--scripts",
            scripts.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    report["outputs"].clone()
}

/// The ids of the agents task `id` ever had.
pub fn agents_of(server: &RedisServer, id: &str) -> Vec<String> {
    let mut c = redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let prefix = format!("task:{id}:state:");
    let mut agents: Vec<String> = c
        .keys::<_, Vec<String>>(format!("{prefix}*"))
        .unwrap()
        .into_iter()
        .map(|k| k[prefix.len()..].to_string())
        .collect();
    agents.sort();
    agents
}

/// The host (`hostname:pid-...`) agent `agent` of task `id` ran on last.
pub fn host_of(server: &RedisServer, id: &str, agent: &str) -> String {
    let mut c = redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let record: String = c
        .hget(format!("task:{id}:state:{agent}"), "record")
        .unwrap();
    let record: Value = serde_json::from_str(&record).unwrap();
    record["host"].as_str().unwrap().to_string()
}

/// Sends `signal` (`-KILL`, `-STOP`, `-CONT`) to process `pid`.
pub fn signal(signal: &str, pid: u32) {
    let sent = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
}

#[test]
fn a_killed_owner_s_agents_are_adopted_by_a_live_worker_serving_their_roles() {
    owner_lost("-KILL");
}

#[test]
fn a_paused_owner_s_agents_are_adopted_and_it_is_fenced() {
    owner_lost("-STOP");
}

/// The producer's worker owns the task and the consumer's joined it; the
/// owner gets `sig` mid-run while a second producer worker waits. The
/// producer comes back there (same id, from its checkpoint), the consumer
/// never stops, and the task completes once as undisturbed.
fn owner_lost(sig: &str) {
    let server = server();
    let scratch = Scratch::new(&[("producer.lua", PRODUCER), ("consumer.lua", CONSUMER)]);
    let file = pipeline(&scratch, 300, 0);
    let expected = reference(&scratch, file);
    let mut owner = worker_with(scratch.path(), &server, &["--roles", "producer"]);
    let id = submit(scratch.path(), &server, file);
    wait_running(scratch.path(), &server, owner.pid());
    let consumers = worker_with(scratch.path(), &server, &["--roles", "consumer"]);
    owner.wait_for("sent job 2", PATIENCE);
    let spare = worker_with(scratch.path(), &server, &["--roles", "producer"]);
    signal(sig, owner.pid());

    let task = wait_state(scratch.path(), &server, &id, "finished");
    if task["status"] != "complete" {
        let (s, c) = (spare.interrupt(PATIENCE), consumers.interrupt(PATIENCE));
        panic!("{task:#}\nspare: {}\nconsumers: {}", s.show(), c.show());
    }
    assert_eq!(task["exit_code"], 0, "{task:#}");
    assert_eq!(task["ends"], 1, "{task:#}");
    assert_eq!(task["outputs"], expected, "{task:#}");
    assert_eq!(
        agents_of(&server, &id),
        ["consumer-1", "producer-1"],
        "no agent was replaced by a new one"
    );
    let producer = host_of(&server, &id, "producer-1");
    assert!(
        producer.contains(&format!(":{}-", spare.pid())),
        "producer-1 ended on {producer}"
    );
    let consumer = host_of(&server, &id, "consumer-1");
    assert!(
        consumer.contains(&format!(":{}-", consumers.pid())),
        "consumer-1 moved to {consumer}"
    );
    if sig == "-STOP" {
        // Woken, the paused worker finds itself fenced and records nothing.
        signal("-CONT", owner.pid());
        let task = wait_state(scratch.path(), &server, &id, "finished");
        let woken = owner.interrupt(PATIENCE);
        assert_eq!(woken.code, Some(0), "{}", woken.show());
        let again = wait_state(scratch.path(), &server, &id, "finished");
        assert_eq!(again, task, "the woken worker changed the task's record");
    } else {
        owner.kill();
    }
    for w in [consumers, spare] {
        let w = w.interrupt(PATIENCE);
        assert_eq!(w.code, Some(0), "{}", w.show());
    }
}

#[test]
fn a_task_is_resumed_only_by_a_worker_serving_all_its_unended_roles() {
    let server = server();
    let scratch = Scratch::new(&[("producer.lua", PRODUCER), ("consumer.lua", CONSUMER)]);
    let file = pipeline(&scratch, 300, 0);
    let expected = reference(&scratch, file);
    let both = ["--roles", "producer,consumer"];
    let mut first = worker_with(scratch.path(), &server, &both);
    let id = submit(scratch.path(), &server, file);
    first.wait_for("sent job 2", PATIENCE);
    // Serves the producer only: it must leave the task (whose consumer has
    // not ended) to a worker serving both.
    let mut partial = worker_with(scratch.path(), &server, &["--roles", "producer"]);
    let first_pid = first.pid();
    first.kill();
    // Gives the partial worker a lease and a beat or two to look at it first.
    partial.wait_for("does not serve role consumer", PATIENCE);
    let full = worker_with(scratch.path(), &server, &both);

    let task = wait_state(scratch.path(), &server, &id, "finished");
    assert_eq!(task["status"], "complete", "{task:#}");
    assert_eq!(task["ends"], 1, "{task:#}");
    assert_eq!(task["outputs"], expected, "{task:#}");
    let workers: Vec<&str> = task["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    // Started by the first worker, then by the full one only.
    assert_eq!(workers.len(), 2, "{task:#}");
    assert!(workers[0].ends_with(&format!(":{first_pid}")), "{task:#}");
    assert!(
        workers[1].ends_with(&format!(":{}", full.pid())),
        "{task:#}"
    );
    for agent in ["consumer-1", "producer-1"] {
        let host = host_of(&server, &id, agent);
        assert!(
            host.contains(&format!(":{}-", full.pid())),
            "{agent} ended on {host}"
        );
    }
    for w in [partial, full] {
        let w = w.interrupt(PATIENCE);
        assert_eq!(w.code, Some(0), "{}", w.show());
    }
}
