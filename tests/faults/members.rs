//! Membership with fencing: a joined process paused past the point where it
//! is declared lost comes back fenced (its writes refused, exit 11), the
//! task goes on without it, and no message is lost; processes killed one
//! after another are each declared lost.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{RedisServer, Scratch, spawn_orrery};
use crate::util::{PATIENCE, inspect, server_with, task_file};

/// Messages the producer sends.
const N: u64 = 400;

/// Heartbeats every 100 ms: a process silent for 500 ms is lost.
const FAST: [(&str, &str); 1] = [("ORRERY_HEARTBEAT_INTERVAL", "100")];

const PRODUCER: &str = r#"
local M = {}
function M.start(self)
  local n = task.inputs.n
  blackboard.set("producing", true)
  for i = 1, n do
    bus.send("consumer", "item", { n = i })
    if i % 10 == 0 then sleep(10) end
    if i == 100 then
      -- A moment for the test to act on what was sent so far.
      log.info("sent 100")
      sleep(500)
    end
  end
  log.info("all sent")
end
return M
"#;

/// Counts each message it handles, and stamps what it wrote with the time,
/// so writes made after a fence would show.
const CONSUMER: &str = r#"
local M = {}
function M.on_message(self, msg)
  if not self.said then
    log.info("consuming")
    self.said = true
  end
  local n = msg.payload.n
  blackboard.update("count/" .. n, function(c) return (c or 0) + 1 end)
  blackboard.set("at/" .. agent.id .. "/" .. n, time.now())
  sleep(5)
end
return M
"#;

/// Keeps the first process's part of the task busy until the producer runs.
const KEEPER: &str = r#"
local M = {}
function M.start(self)
  while not blackboard.get("producing") do sleep(20) end
end
return M
"#;

fn scratch() -> Scratch {
    Scratch::new(&[
        ("producer.lua", PRODUCER),
        ("consumer.lua", CONSUMER),
        ("keeper.lua", KEEPER),
    ])
}

/// A task with the producer and one consumer in the first process, and `n` as input.
fn flow_task(scratch: &Scratch, id: &str) -> String {
    let file = task_file(scratch, id, &["producer", "consumer"]);
    let path = scratch.path().join(&file);
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("{text}\n[inputs]\nn = {N}\n")).unwrap();
    file
}

pub fn epoch_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

pub fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .expect("the kill command runs");
    assert!(status.success(), "kill -{sig} {pid} failed");
}

/// What became of every message, from the blackboard.
struct Tally {
    once: u64,
    twice: Vec<u64>,
    lost: Vec<u64>,
    more: Vec<u64>,
}

fn tally(state: &Value) -> Tally {
    let bb = state["blackboard"].as_object().unwrap();
    let mut t = Tally {
        once: 0,
        twice: Vec::new(),
        lost: Vec::new(),
        more: Vec::new(),
    };
    for n in 1..=N {
        match bb.get(&format!("count/{n}")).and_then(Value::as_u64) {
            None => t.lost.push(n),
            Some(1) => t.once += 1,
            Some(2) => t.twice.push(n),
            Some(_) => t.more.push(n),
        }
    }
    t
}

/// When the agents of the lost process were failed by the others: its fence.
pub fn fenced_at(state: &Value, host_of: &str) -> BTreeMap<String, u64> {
    state["agents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["host"] == host_of && a["phase"] == "FAILED")
        .map(|a| {
            let at = a["history"].as_array().unwrap().last().unwrap()["at_ms"]
                .as_u64()
                .unwrap();
            (a["id"].as_str().unwrap().to_string(), at)
        })
        .collect()
}

/// The writes each agent stamped, by agent: (message, time).
pub fn stamps(state: &Value) -> BTreeMap<String, Vec<(u64, f64)>> {
    let mut out: BTreeMap<String, Vec<(u64, f64)>> = BTreeMap::new();
    for (k, v) in state["blackboard"].as_object().unwrap() {
        if let Some(rest) = k.strip_prefix("at/") {
            let (agent, n) = rest.rsplit_once('/').unwrap();
            out.entry(agent.to_string())
                .or_default()
                .push((n.parse().unwrap(), v.as_f64().unwrap()));
        }
    }
    out
}

pub fn host_of(state: &Value, agent: &str) -> String {
    state["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == agent)
        .map(|a| a["host"].as_str().unwrap().to_string())
        .unwrap_or_default()
}

/// Stops a joined consumer with SIGSTOP for 2 s (4 times the loss limit),
/// then SIGCONT: it finds itself fenced and exits 11 without another write;
/// the others finish the task with every message handled.
fn a_paused_joiner_comes_back_fenced(joiners: usize) {
    let server = RedisServer::start();
    let scratch = scratch();
    let id = format!("pause{joiners}");
    let file = flow_task(&scratch, &id);
    let url = server.url();
    let mut owner = spawn_orrery(scratch.path(), &["run", &file, "--store", &url], &FAST);
    owner.wait_for("consumer-1 - -> INIT", PATIENCE);
    let join = ["run", "--join", &id, "--role", "consumer", "--store", &url];
    let mut others = Vec::new();
    for _ in 1..joiners {
        let mut other = spawn_orrery(scratch.path(), &join, &FAST);
        other.wait_for("-> INIT", PATIENCE);
        others.push(other);
    }
    let mut paused = spawn_orrery(scratch.path(), &join, &FAST);
    paused.wait_for("consuming", PATIENCE);
    let stopped_ms = epoch_ms();
    signal(paused.pid(), "STOP");
    std::thread::sleep(Duration::from_secs(2));
    signal(paused.pid(), "CONT");
    let came_back = Instant::now();
    let zombie = paused.finish(PATIENCE);
    let noticed = came_back.elapsed();
    assert_eq!(
        zombie.code,
        Some(11),
        "the paused process: {}",
        zombie.show()
    );
    assert!(zombie.stderr.contains("fenced"), "{}", zombie.show());
    for other in others {
        let done = other.finish(PATIENCE);
        assert_eq!(done.code, Some(0), "another joiner: {}", done.show());
    }
    let owned = owner.finish(PATIENCE);
    assert_eq!(owned.code, Some(0), "owner: {}", owned.show());

    let state = inspect(&scratch, &server, &id);
    let t = tally(&state);
    let zombie_agent = format!("consumer-{}", joiners + 1);
    let zombie_host = host_of(&state, &zombie_agent);
    let fences = fenced_at(&state, &zombie_host);
    let fence = *fences
        .get(&zombie_agent)
        .unwrap_or_else(|| panic!("{zombie_agent} was failed as lost: {state:#}"));
    let late: Vec<(u64, f64)> = stamps(&state)
        .get(&zombie_agent)
        .map(|w| {
            w.iter()
                .copied()
                .filter(|(_, at)| *at > fence as f64)
                .collect()
        })
        .unwrap_or_default();
    println!(
        "{} processes, paused joiner: handled once {}, twice {:?}, lost {:?}, more {:?}; \
         dead letters {}; writes after the fence {late:?}; declared lost {} ms after SIGSTOP; \
         noticed its fence {} ms after SIGCONT",
        joiners + 1,
        t.once,
        t.twice,
        t.lost,
        t.more,
        state["dead_letters"].as_array().unwrap().len(),
        fence.saturating_sub(stopped_ms),
        noticed.as_millis(),
    );
    assert!(t.lost.is_empty(), "lost: {:?}", t.lost);
    assert!(t.more.is_empty(), "handled 3+ times: {:?}", t.more);
    assert!(
        late.is_empty(),
        "the fenced process wrote after its fence at {fence}: {late:?}"
    );
    assert_eq!(state["dead_letters"], serde_json::json!([]), "{state:#}");
    assert_eq!(state["pending"], serde_json::json!([]), "{state:#}");
    assert_eq!(state["task"]["status"], "complete", "{state:#}");
}

#[test]
fn a_paused_joiner_of_two_processes_comes_back_fenced() {
    a_paused_joiner_comes_back_fenced(1);
}

#[test]
fn a_paused_joiner_of_three_processes_comes_back_fenced() {
    a_paused_joiner_comes_back_fenced(2);
}

/// Busy for 6 s, so the task runs while a slow joiner is fenced.
const SLEEPER: &str = r#"
local M = {}
function M.start(self) sleep(6000) end
return M
"#;

/// A joiner beating every 3 s, fenced by an owner that declares a process
/// lost after 500 ms of silence (5 of its 100 ms beats): the joiner's
/// fence names the owner's limit, the one it was fenced after, not its
/// own (15,000 ms, a silence that never happened).
#[test]
fn a_joiner_fenced_by_a_faster_owner_names_the_owners_loss_limit() {
    let server = RedisServer::start();
    let scratch = Scratch::new(&[("sleeper.lua", SLEEPER), ("consumer.lua", CONSUMER)]);
    let file = task_file(&scratch, "slowjoin", &["sleeper"]);
    let url = server.url();
    let mut owner = spawn_orrery(scratch.path(), &["run", &file, "--store", &url], &FAST);
    owner.wait_for("sleeper-1  INIT -> READY", PATIENCE);
    let join = [
        "run", "--join", "slowjoin", "--role", "consumer", "--store", &url,
    ];
    let slow = [("ORRERY_HEARTBEAT_INTERVAL", "3000")];
    let joiner = spawn_orrery(scratch.path(), &join, &slow).finish(PATIENCE);
    assert_eq!(joiner.code, Some(11), "the joiner: {}", joiner.show());
    assert!(
        joiner
            .stderr
            .contains("(silent for 500 ms or more, the loss limit of the process that fenced it)"),
        "{}",
        joiner.show()
    );
    assert!(!joiner.stderr.contains("15000"), "{}", joiner.show());
    let owned = owner.finish(PATIENCE);
    assert_eq!(owned.code, Some(0), "owner: {}", owned.show());
}

/// Joined consumers killed one after another (SIGKILL) are each declared
/// lost, their messages go to the next, and none is lost.
#[test]
fn joiners_killed_one_after_another_are_each_declared_lost() {
    let server = server_with(&[]);
    let scratch = scratch();
    let file = flow_task(&scratch, "kills");
    let url = server.url();
    let mut owner = spawn_orrery(scratch.path(), &["run", &file, "--store", &url], &FAST);
    owner.wait_for("consumer-1 - -> INIT", PATIENCE);
    let join = [
        "run", "--join", "kills", "--role", "consumer", "--store", &url,
    ];
    for _ in 0..3 {
        let mut doomed = spawn_orrery(scratch.path(), &join, &FAST);
        doomed.wait_for("consuming", PATIENCE);
        doomed.kill();
    }
    let owned = owner.finish(PATIENCE);
    assert_eq!(owned.code, Some(0), "owner: {}", owned.show());
    let state = inspect(&scratch, &server, "kills");
    let lost = state["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["state"] == "lost")
        .count();
    assert_eq!(lost, 3, "each killed process was declared lost: {state:#}");
    let t = tally(&state);
    println!(
        "3 joiners killed in turn: handled once {}, twice {:?}, lost {:?}",
        t.once, t.twice, t.lost
    );
    assert!(t.lost.is_empty(), "lost: {:?}", t.lost);
    assert!(t.more.is_empty(), "handled 3+ times: {:?}", t.more);
    assert_eq!(state["pending"], serde_json::json!([]), "{state:#}");
}

/// How the first process is taken away.
#[derive(Clone, Copy, Debug)]
enum Fault {
    Kill,
    Pause,
}

/// The first process (which started the task and held its lease) is killed
/// or paused mid-run: a joined process takes the lease over, reaps it, and
/// ends the task complete with every message handled; `inspect` shows the
/// new holder and the first process lost.
fn the_first_process_taken_away(fault: Fault) {
    let server = server_with(&[]);
    let scratch = scratch();
    let id = format!("first{fault:?}").to_lowercase();
    let file = task_file(&scratch, &id, &["consumer", "keeper"]);
    let path = scratch.path().join(&file);
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("{text}\n[inputs]\nn = {N}\n")).unwrap();
    let url = server.url();
    let mut first = spawn_orrery(scratch.path(), &["run", &file, "--store", &url], &FAST);
    first.wait_for("consumer-1 - -> INIT", PATIENCE);
    let join = |role: &str| {
        vec![
            "run".to_string(),
            "--join".to_string(),
            id.clone(),
            "--role".to_string(),
            role.to_string(),
            "--store".to_string(),
            url.clone(),
        ]
    };
    let consumer_args = join("consumer");
    let consumer_args: Vec<&str> = consumer_args.iter().map(String::as_str).collect();
    let mut consumer = spawn_orrery(scratch.path(), &consumer_args, &FAST);
    consumer.wait_for("-> INIT", PATIENCE);
    let producer_args = join("producer");
    let producer_args: Vec<&str> = producer_args.iter().map(String::as_str).collect();
    let mut producer = spawn_orrery(scratch.path(), &producer_args, &FAST);
    producer.wait_for("sent 100", PATIENCE);
    let taken_ms = epoch_ms();
    match fault {
        Fault::Kill => first.kill(),
        Fault::Pause => {
            signal(first.pid(), "STOP");
            std::thread::sleep(Duration::from_secs(2));
            signal(first.pid(), "CONT");
            let back = first.finish(PATIENCE);
            assert_eq!(back.code, Some(11), "the first process: {}", back.show());
        }
    }
    let produced = producer.finish(PATIENCE);
    let consumed = consumer.finish(PATIENCE);
    assert_eq!(produced.code, Some(0), "producer: {}", produced.show());
    assert_eq!(consumed.code, Some(0), "consumer: {}", consumed.show());
    let took_over = [&produced, &consumed]
        .iter()
        .any(|p| p.stderr.contains("took over the task's lease"));
    assert!(
        took_over,
        "a joiner took the lease over:\n{}\n{}",
        produced.show(),
        consumed.show()
    );

    let state = inspect(&scratch, &server, &id);
    let first_host = host_of(&state, "consumer-1");
    assert_eq!(state["task"]["status"], "complete", "{state:#}");
    assert_ne!(state["task"]["owner"], first_host.as_str(), "{state:#}");
    let fence = *fenced_at(&state, &first_host)
        .get("consumer-1")
        .unwrap_or_else(|| panic!("consumer-1 was failed as lost: {state:#}"));
    let hosts = state["hosts"].as_array().unwrap();
    let first_state = hosts
        .iter()
        .find(|h| h["id"] == first_host.as_str())
        .unwrap();
    assert_eq!(first_state["state"], "lost", "{state:#}");
    let t = tally(&state);
    let late: Vec<(u64, f64)> = stamps(&state)
        .get("consumer-1")
        .map(|w| {
            w.iter()
                .copied()
                .filter(|(_, at)| *at > fence as f64)
                .collect()
        })
        .unwrap_or_default();
    println!(
        "first process {fault:?}: handled once {}, twice {:?}, lost {:?}, more {:?}; dead letters {}; \
         declared lost and taken over {} ms after the fault; writes after the fence {late:?}",
        t.once,
        t.twice,
        t.lost,
        t.more,
        state["dead_letters"].as_array().unwrap().len(),
        fence.saturating_sub(taken_ms),
    );
    assert!(t.lost.is_empty(), "lost: {:?}", t.lost);
    assert!(t.more.is_empty(), "handled 3+ times: {:?}", t.more);
    assert!(
        late.is_empty(),
        "the fenced process wrote after its fence: {late:?}"
    );
    assert_eq!(state["dead_letters"], serde_json::json!([]), "{state:#}");
    assert_eq!(state["pending"], serde_json::json!([]), "{state:#}");
}

#[test]
fn the_first_process_killed_leaves_the_task_to_the_others() {
    the_first_process_taken_away(Fault::Kill);
}

#[test]
fn the_first_process_paused_comes_back_fenced_and_the_others_finish() {
    the_first_process_taken_away(Fault::Pause);
}

/// The server restarts without persistence mid-run: every process notices
/// that the server lost the task's data (its membership is gone, though
/// nobody fenced it), joins again and goes on; messages sent after the
/// restart are all handled (the lease holder, whose view of the other
/// processes went with the data, waits a loss limit before deciding the
/// end), and each report says what was lost (exit 5).
#[test]
fn a_server_that_lost_its_data_is_reported_and_the_task_goes_on() {
    let mut server = RedisServer::start();
    let scratch = scratch();
    let file = flow_task(&scratch, "amnesia");
    let url = server.url();
    let env = [
        ("ORRERY_HEARTBEAT_INTERVAL", "100"),
        ("ORRERY_CONNECT_TIMEOUT", "20000"),
    ];
    let mut first = spawn_orrery(scratch.path(), &["run", &file, "--store", &url], &env);
    first.wait_for("consumer-1 - -> INIT", PATIENCE);
    let join = [
        "run", "--join", "amnesia", "--role", "consumer", "--store", &url,
    ];
    let mut joiner = spawn_orrery(scratch.path(), &join, &env);
    // A member before the restart (one that joins after it lost nothing).
    joiner.wait_for("-> INIT", PATIENCE);
    first.wait_for("sent 100", PATIENCE);
    server.restart();
    let joined = joiner.finish(PATIENCE);
    let owned = first.finish(PATIENCE);
    // Both report the loss: each notices it at its first heartbeat after
    // the restart, and whichever holds the lease decides no end within a
    // loss limit of noticing it, so the other has beaten by then.
    for (who, p) in [("first", &owned), ("joiner", &joined)] {
        assert_eq!(p.code, Some(5), "{who}: {}", p.show());
        assert!(
            p.stdout.contains("lost this task's data"),
            "{who}: {}",
            p.show()
        );
    }
    let state = inspect(&scratch, &server, "amnesia");
    assert_eq!(state["task"]["status"], "failed", "{state:#}");
    let t = tally(&state);
    println!(
        "restart without persistence: handled once {} (after the restart), twice {:?}, more {:?}; \
         {} lost with the server's data",
        t.once,
        t.twice,
        t.more,
        t.lost.len()
    );
    assert!(t.more.is_empty(), "handled 3+ times: {:?}", t.more);
    // The server was killed while the producer paused after its 100th
    // message: every later one went to the new server and was handled.
    let missing: Vec<u64> = t.lost.iter().copied().filter(|n| *n > 100).collect();
    assert!(
        missing.is_empty(),
        "sent after the restart and lost: {missing:?}\nfirst: {}\njoiner: {}",
        owned.show(),
        joined.show()
    );
    assert_eq!(state["pending"], serde_json::json!([]), "{state:#}");
}
