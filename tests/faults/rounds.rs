//! Rounds of faults in one run: each of three consumer processes, the
//! first (which started the task and held its lease) included, is killed
//! (SIGKILL) or stopped past the loss limit (SIGSTOP, then SIGCONT), and
//! replaced by a new joiner, round after round, while a fourth process
//! produces. Every message is counted: handled once, handled again (only
//! where a handler of a process taken away was cut off, listed),
//! dead-lettered, lost (none); a stopped process comes back fenced and
//! wrote nothing after its fence.

use std::time::Duration;

use serde_json::Value;

use crate::common::{RedisServer, Scratch, spawn_orrery};
use crate::members::{fenced_at, host_of, signal, stamps};
use crate::util::{Handlings, PATIENCE, RECORD_HANDLING, inspect, server_with, task_file};

/// Messages the producer sends, one every 15 ms or so.
const N: u64 = 600;

/// Fault rounds: each takes every one of the three consumer processes away once.
const ROUNDS: usize = 2;

/// Heartbeats every 100 ms: a process silent for 500 ms is lost.
/// Fast heartbeats; room for the replacements: `max_agents` counts the
/// task's agents across processes, and a killed one's agent counts until
/// its process is declared lost.
const FAST: [(&str, &str); 2] = [
    ("ORRERY_HEARTBEAT_INTERVAL", "100"),
    ("ORRERY_MAX_AGENTS", "16"),
];

const PRODUCER: &str = r#"
local M = {}
function M.start(self)
  for i = 1, task.inputs.n do
    bus.send("consumer", "item", { n = i })
    if i == 20 then log.info("producing") end
    sleep(15)
  end
  log.info("all sent")
end
return M
"#;

/// Keeps the first process's part of the task open until the producer is done.
const KEEPER: &str = r#"
local M = {}
function M.start(self)
  while not blackboard.get("go") do sleep(20) end
end
return M
"#;

fn consumer() -> String {
    format!(
        "local M = {{}}\nfunction M.on_message(self, msg)\n{RECORD_HANDLING}\
         blackboard.set(\"at/\" .. agent.id .. \"/\" .. msg.payload.n, time.now())\n\
         if msg.payload.n == {N} then blackboard.set(\"go\", true) end\nend\nreturn M\n"
    )
}

#[test]
fn each_of_three_processes_killed_and_stopped_round_after_round_loses_nothing() {
    let server = server_with(&[]);
    let consumer = consumer();
    let scratch = Scratch::new(&[
        ("producer.lua", PRODUCER),
        ("consumer.lua", &consumer),
        ("keeper.lua", KEEPER),
    ]);
    let file = task_file(&scratch, "rounds", &["consumer", "keeper"]);
    let path = scratch.path().join(&file);
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("{text}\n[inputs]\nn = {N}\n")).unwrap();
    let url = server.url();
    let join = |role: &'static str| -> Vec<String> {
        ["run", "--join", "rounds", "--role", role, "--store", &url]
            .iter()
            .map(|s| s.to_string())
            .collect()
    };
    let spawn_joiner = |role: &'static str| {
        let args = join(role);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut p = spawn_orrery(scratch.path(), &args, &FAST);
        p.wait_for("-> INIT", PATIENCE);
        p
    };
    let mut first = spawn_orrery(scratch.path(), &["run", &file, "--store", &url], &FAST);
    first.wait_for("consumer-1 - -> INIT", PATIENCE);
    let mut live = vec![first, spawn_joiner("consumer"), spawn_joiner("consumer")];
    let mut producer = spawn_joiner("producer");
    producer.wait_for("producing", PATIENCE);

    // Each fault: which process, and how.
    let mut taken: Vec<(String, &str)> = Vec::new();
    let mut fence_notice_ms = Vec::new();
    for round in 0..ROUNDS {
        for slot in 0..live.len() {
            let victim = live.remove(slot);
            let fault = if (round + slot) % 2 == 0 {
                "KILL"
            } else {
                "STOP"
            };
            let pid = victim.pid();
            let label = format!("round {round}, process {slot} (pid {pid})");
            if fault == "KILL" {
                let mut victim = victim;
                victim.kill();
            } else {
                signal(pid, "STOP");
                std::thread::sleep(Duration::from_millis(900));
                // Stopped until the others have declared it lost (500 ms of
                // silence): on a loaded machine their look can come after
                // the 900 ms, and a process woken before it is not fenced.
                wait_until_lost(&scratch, &server, pid, &label);
                signal(pid, "CONT");
                let back = std::time::Instant::now();
                let done = victim.finish(PATIENCE);
                fence_notice_ms.push(back.elapsed().as_millis());
                assert_eq!(done.code, Some(11), "{label}: {}", done.show());
                assert!(done.stderr.contains("fenced"), "{}", done.show());
            }
            taken.push((label, fault));
            live.insert(slot, spawn_joiner("consumer"));
        }
    }
    let produced = producer.finish(PATIENCE);
    assert_eq!(produced.code, Some(0), "producer: {}", produced.show());
    for p in live {
        let done = p.finish(PATIENCE);
        assert_eq!(done.code, Some(0), "a consumer: {}", done.show());
    }

    let state = inspect(&scratch, &server, "rounds");
    assert_eq!(state["task"]["status"], "complete", "{state:#}");
    let h = Handlings::of(&state, N);
    let dead: Vec<u64> = state["dead_letters"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["envelope"]["payload"]["n"].as_u64())
        .collect();
    let lost: Vec<u64> = h
        .lost
        .iter()
        .copied()
        .filter(|n| !dead.contains(n))
        .collect();
    let lost_hosts: Vec<String> = state["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["state"] == "lost")
        .map(|p| p["id"].as_str().unwrap().to_string())
        .collect();
    // A message handled again was first handled by an agent of a process
    // taken away (its handler cut off), and delivered again with a higher count.
    let not_cut_off: Vec<&(u64, Vec<(u64, String)>)> = h
        .again
        .iter()
        .filter(|(_, hs)| {
            let (_, first_by) = &hs[0];
            !lost_hosts.contains(&host_of(&state, first_by)) || hs[1..].iter().any(|(a, _)| *a < 2)
        })
        .collect();
    // Writes of a fenced process after its fence.
    let all_stamps = stamps(&state);
    let mut late = Vec::new();
    for host in &lost_hosts {
        for (agent, at) in fenced_at(&state, host) {
            for (n, t) in all_stamps.get(&agent).into_iter().flatten() {
                if *t > at as f64 {
                    late.push((agent.clone(), *n));
                }
            }
        }
    }
    println!(
        "{} faults over {ROUNDS} rounds ({}): handled once {}, handled again {:?}, \
         dead-lettered {dead:?}, lost {lost:?}; {} processes declared lost; writes after a \
         fence {late:?}; stopped processes noticed their fence {fence_notice_ms:?} ms after SIGCONT",
        taken.len(),
        taken
            .iter()
            .map(|(l, f)| format!("{l}: {f}"))
            .collect::<Vec<_>>()
            .join("; "),
        h.once,
        h.again,
        lost_hosts.len(),
    );
    assert!(lost.is_empty(), "lost: {lost:?}");
    assert!(h.sent_twice.is_empty(), "sent twice: {:?}", h.sent_twice);
    assert!(
        not_cut_off.is_empty(),
        "handled again, not cut off: {not_cut_off:?}"
    );
    assert!(late.is_empty(), "written after the fence: {late:?}");
    assert_eq!(lost_hosts.len(), ROUNDS * 3, "{state:#}");
    assert_eq!(state["pending"], Value::Array(vec![]), "{state:#}");
}

/// Waits (up to `PATIENCE`) until the store shows the process `pid` lost.
fn wait_until_lost(scratch: &Scratch, server: &RedisServer, pid: u32, label: &str) {
    let mark = format!(":{pid}-");
    let started = std::time::Instant::now();
    loop {
        let state = inspect(scratch, server, "rounds");
        let lost =
            state["hosts"].as_array().into_iter().flatten().any(|h| {
                h["state"] == "lost" && h["id"].as_str().is_some_and(|id| id.contains(&mark))
            });
        if lost {
            return;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "{label}: never declared lost while stopped: {state:#}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
