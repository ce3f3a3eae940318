//! Long-running agents under hot reload: a timer by name takes new code
//! each round, a handler broken by an edit backs off between redeliveries,
//! and the messages it dead-lettered come back when the fix is saved.

use orrery::report::TaskStatus;
use serde_json::json;

use super::session::{PATIENCE, Session};

const TICKER: &str = "scripts/ticker.lua";

/// Every 10 ms writes `tick/<n>` with its version, counting in its state.
fn ticker(version: &str) -> String {
    format!(
        r#"local M = {{}}
function M.start(self) self.n = 0; every(10, "tick") end
function M.tick(self)
  self.n = self.n + 1
  blackboard.set("tick/" .. self.n, "{version}")
  blackboard.set("latest", {{ version = "{version}", n = self.n }})
end
return M
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timer_by_name_runs_the_new_code_from_the_next_round_on() {
    let mut s = Session::start(&[(TICKER, &ticker("v1"))], true).await;
    assert_eq!(s.board_value("tick/2").await, json!("v1"));
    s.save(TICKER, &ticker("v2"));
    s.reloaded(TICKER).await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let latest = s.board_value("latest").await;
        if latest["version"] == "v2" {
            assert!(latest["n"].as_u64().unwrap() > 2, "state kept: {latest}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never switched");
    }
    let report = s.stop().await;
    assert_eq!(report.status, TaskStatus::Interrupted);
}

const WORKER: &str = "scripts/worker.lua";

/// Records each attempt's time; `broken` raises on every one.
fn worker(broken: bool) -> String {
    let body = if broken {
        "error(\"half-written handler\")"
    } else {
        "blackboard.set(\"reply/\" .. msg.payload.seq, { fixed = true, attempts = msg.attempts })"
    };
    format!(
        r#"local M = {{}}
function M.on_message(self, msg)
  blackboard.set("attempt/" .. msg.payload.seq .. "/" .. msg.attempts, now())
  {body}
end
return M
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_handler_backs_off_and_its_dead_letters_come_back_with_the_fix() {
    let mut s = Session::start(&[(WORKER, &worker(true))], true).await;
    s.send("worker", "job", json!({ "seq": 1 })).await;
    let mut at = Vec::new();
    for attempt in 1..=5 {
        let t = s.board_value(&format!("attempt/1/{attempt}")).await;
        at.push(t.as_f64().unwrap());
    }
    // 100 ms before the second delivery, doubling: not all within a millisecond.
    for (i, pair) in at.windows(2).enumerate() {
        let waited = pair[1] - pair[0];
        let backoff = 100.0 * f64::from(1 << i);
        assert!(
            waited >= backoff - 5.0,
            "attempt {}: waited {waited} ms, backoff {backoff}",
            i + 2
        );
    }
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while s.coord.bus.dead_letters().await.unwrap().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never dead-lettered"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }

    s.save(WORKER, &worker(false));
    s.reloaded(WORKER).await;
    let reply = s.board_value("reply/1").await;
    assert_eq!(
        reply,
        json!({ "fixed": true, "attempts": 1 }),
        "handled by the fix, afresh"
    );
    assert!(s.coord.bus.dead_letters().await.unwrap().is_empty());
    let report = s.stop().await;
    assert_eq!(report.status, TaskStatus::Interrupted);
    assert!(
        !report
            .errors
            .iter()
            .any(|e| e.fatal && e.message.contains("dead-lettered")),
        "the revived message is no dead letter: {:#?}",
        report.errors
    );
}
