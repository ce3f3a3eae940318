//! Sends through a `CLIENT PAUSE` and killed connections: none is lost and
//! none is applied twice. A send whose connection broke after the server
//! applied it is sent again under the same number, and the send script
//! applies a number once (see docs/design.md).

use std::time::Duration;

use crate::common::{Scratch, spawn_orrery};
use crate::util::{Handlings, PATIENCE, RECORD_HANDLING, inspect, raw, server_with, task_file};

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
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(3000)
        .arg("ALL")
        .query(&mut conn)
        .unwrap();
    std::thread::sleep(Duration::from_millis(3000));
    for _ in 0..20 {
        let _: redis::Value = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("normal")
            .arg("SKIPME")
            .arg("yes")
            .query(&mut conn)
            .unwrap();
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
