//! Sends through a `CLIENT PAUSE` and killed connections: none is lost and
//! none is applied twice. A send whose connection broke after the server
//! applied it is sent again under the same number, and the send script
//! applies a number once (see docs/design.md).

use std::time::Duration;

use crate::common::{Scratch, spawn_orrery};
use crate::util::{
    Handlings, PATIENCE, RECORD_HANDLING, inspect, kill_other_clients, pause_clients, raw,
    server_with, task_file,
};

const SENDER: &str = r#"
local M = {}
function M.start(self)
  for i = 1, 3000 do
    bus.send("receiver", "item", { n = i })
    if i == 50 then log.info("sent 50") end
    if i % 50 == 0 then sleep(10) end
  end
end
return M
"#;

fn receiver() -> String {
    format!("local M = {{}}\nfunction M.on_message(self, msg)\n{RECORD_HANDLING}end\nreturn M\n")
}

/// The server stops answering for 3 s, then the host's connections are
/// killed again and again while sends are in flight (a command applied whose
/// answer was lost is sent again on a new connection): every message is
/// handled once.
#[test]
fn sends_through_a_pause_and_killed_connections_lose_nothing() {
    let server = server_with(&[]);
    let receiver = receiver();
    let scratch = Scratch::new(&[("sender.lua", SENDER), ("receiver.lua", &receiver)]);
    let file = task_file(&scratch, "paused", &["receiver", "sender"]);
    let mut run = spawn_orrery(
        scratch.path(),
        &["run", &file, "--store", &server.url()],
        &[("ORRERY_CONNECT_TIMEOUT", "8000")],
    );
    run.wait_for("sent 50", PATIENCE);
    let mut conn = raw(&server);
    pause_clients(&mut conn, 3000, "ALL");
    std::thread::sleep(Duration::from_millis(3000));
    for _ in 0..20 {
        kill_other_clients(&mut conn);
        std::thread::sleep(Duration::from_millis(30));
    }
    let done = run.finish(PATIENCE);
    assert_eq!(done.code, Some(0), "{}", done.show());
    let state = inspect(&scratch, &server, "paused");
    let h = Handlings::of(&state, 3000);
    println!(
        "CLIENT PAUSE 3 s, then 20 CLIENT KILLs: handled once {}, lost {:?}, sent twice {:?}, \
         handled again {:?}",
        h.once, h.lost, h.sent_twice, h.again
    );
    assert!(h.lost.is_empty(), "lost: {:?}", h.lost);
    assert!(h.sent_twice.is_empty(), "sent twice: {:?}", h.sent_twice);
    // No handler was cut off (the process lives on): none runs twice.
    assert!(h.again.is_empty(), "handled again: {:?}", h.again);
}

/// Sends each message and settles it at once (a store call settles the
/// sends before it), so a failure belongs to that message: the numbers
/// whose send was reported failed are written at the end, with the first
/// error's text.
const SETTLING_SENDER: &str = r#"
local M = {}
function M.start(self)
  local failed, first_error = {}, nil
  for i = 1, 1500 do
    local ok, err = pcall(bus.send, "receiver", "item", { n = i })
    if ok then ok, err = pcall(blackboard.get, "nothing") end
    if not ok then
      failed[#failed + 1] = i
      first_error = first_error or tostring(err)
    end
    if i == 50 then log.info("sent 50") end
    if i % 50 == 0 then sleep(10) end
  end
  blackboard.set("failed", failed)
  if first_error then blackboard.set("first_error", first_error) end
end
return M
"#;

/// The server holds writes for 2.5 s, more than twice `connect_timeout`
/// (1 s), and the host's connections are killed meanwhile: a send the host
/// gave up on is
/// reported with a clear error and never delivered later; every other
/// message is handled once, or, when the receiver gave up on the server
/// too (the run then fails naming `connect_timeout`), still in its queue;
/// none is lost.
#[test]
fn a_pause_longer_than_connect_timeout_raises_no_send_that_was_delivered() {
    let server = server_with(&[]);
    let receiver = receiver();
    let scratch = Scratch::new(&[("sender.lua", SETTLING_SENDER), ("receiver.lua", &receiver)]);
    let file = task_file(&scratch, "longpause", &["receiver", "sender"]);
    let mut run = spawn_orrery(
        scratch.path(),
        &["run", &file, "--store", &server.url()],
        &[("ORRERY_CONNECT_TIMEOUT", "1000")],
    );
    run.wait_for("sent 50", PATIENCE);
    let mut conn = raw(&server);
    // Writes are held (the sender's next send among them); reads and new
    // connections go through. Then the held send's connection is killed:
    // its retries go out on new connections, are held too, and the host
    // gives up on them after connect_timeout; the server runs them when
    // the pause ends.
    pause_clients(&mut conn, 2500, "WRITE");
    std::thread::sleep(Duration::from_millis(300));
    kill_other_clients(&mut conn);
    let done = run.finish(PATIENCE);
    let state = inspect(&scratch, &server, "longpause");
    let bb = &state["blackboard"];
    let failed: Vec<u64> = bb["failed"]
        .as_array()
        .unwrap_or_else(|| panic!("the sender finished: {}\n{state:#}", done.show()))
        .iter()
        .filter_map(serde_json::Value::as_u64)
        .collect();
    let queued: Vec<u64> = state["pending"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["envelope"]["payload"]["n"].as_u64())
        .collect();
    let h = Handlings::of(&state, 1500);
    let raised_but_delivered: Vec<u64> = failed
        .iter()
        .copied()
        .filter(|n| !h.lost.contains(n) || queued.contains(n))
        .collect();
    let lost: Vec<u64> = h
        .lost
        .iter()
        .copied()
        .filter(|n| !failed.contains(n) && !queued.contains(n))
        .collect();
    println!(
        "CLIENT PAUSE WRITE 2.5 s, connections killed, connect_timeout 1 s: exit {:?}; handled once {}; \
         reported failed {failed:?} ({}); raised but delivered {raised_but_delivered:?}; \
         still queued {}; lost {lost:?}; sent twice {:?}; handled again {:?}",
        done.code,
        h.once,
        bb["first_error"],
        queued.len(),
        h.sent_twice,
        h.again
    );
    assert!(raised_but_delivered.is_empty(), "{raised_but_delivered:?}");
    assert!(lost.is_empty(), "lost: {lost:?}");
    assert!(h.sent_twice.is_empty(), "sent twice: {:?}", h.sent_twice);
    assert!(h.again.is_empty(), "handled again: {:?}", h.again);
    if let Some(text) = bb["first_error"].as_str() {
        assert!(text.contains("connect_timeout"), "a clear error: {text}");
    }
    match done.code {
        Some(0) => assert!(queued.is_empty(), "{state:#}"),
        // An agent that could not reach the server within connect_timeout
        // failed the run: a Coordination error that says so.
        Some(5) => assert!(
            done.stdout
                .contains("gave up after 1000 ms; setting connect_timeout"),
            "{}",
            done.show()
        ),
        _ => panic!("{}", done.show()),
    }
}
