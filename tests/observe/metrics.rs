//! `--metrics-addr` serves Prometheus text while the task runs: `orrery_*`
//! names in base units, labelled by role and task type, never by ids.

use std::time::{Duration, Instant};

use orrery::error::exit;

use crate::common::{Scratch, orrery, show, spawn_orrery};
use crate::util::{PATIENCE, addr_in, http_get};

const PRODUCER: &str = r#"
local M = {}
function M.start(self)
  for i = 1, 3 do bus.send("consumer", "job", { i = i }) end
  blackboard.set("k", string.rep("v", 10))
  llm.chat({ prompt = "hello" })
end
return M
"#;

const CONSUMER: &str = r#"
local M = {}
function M.start(self) self.n = 0 end
function M.on_message(self, msg)
  self.n = self.n + 1
  if self.n == 3 then log.info("consumed 3") end
end
return M
"#;

#[test]
fn the_metrics_endpoint_is_scraped_while_the_task_runs() {
    let scratch = Scratch::new(&[("producer.lua", PRODUCER), ("consumer.lua", CONSUMER)]);
    scratch.write(
        "task.toml",
        "id = \"metered\"\ntype = \"pipeline\"\ndescription = \"d\"\ntimeout = 120000\nagents = [\"consumer\", \"producer\"]\n",
    );
    // Watch mode keeps the task running after its work, until Ctrl-C.
    let mut run = spawn_orrery(
        scratch.path(),
        &[
            "dev",
            "task.toml",
            "--metrics-addr",
            "127.0.0.1:0",
            "--ui-addr",
            "127.0.0.1:0",
        ],
        &[],
    );
    let addr = addr_in(&run.wait_for("metrics: http://", PATIENCE));
    run.wait_for("consumed 3", PATIENCE);
    let handled = r#"orrery_messages_handled_total{role="consumer",task_type="pipeline"} 3"#;
    let deadline = Instant::now() + PATIENCE;
    let (head, body) = loop {
        let (status, head, body) = http_get(&addr, "/metrics");
        assert!(status.contains("200"), "{status}");
        if body.contains(handled) {
            break (head, body);
        }
        assert!(Instant::now() < deadline, "never counted:\n{body}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text"),
        "{head}"
    );
    for line in [
        r#"orrery_messages_sent_total{role="producer",task_type="pipeline"} 3"#,
        r#"orrery_agents_live{role="consumer",task_type="pipeline"} 1"#,
        r#"orrery_agents_live{role="producer",task_type="pipeline"} 0"#,
        r#"orrery_agents_started_total{role="producer",task_type="pipeline"} 1"#,
        r#"orrery_phase_changes_total{role="producer",task_type="pipeline",phase="COMPLETE"} 1"#,
        r#"orrery_blackboard_writes_total{role="producer",task_type="pipeline"} 1"#,
        r#"orrery_blackboard_written_bytes_total{role="producer",task_type="pipeline"} 12"#,
        "# TYPE orrery_llm_call_duration_seconds histogram",
        "# UNIT orrery_llm_call_duration_seconds seconds",
        r#"orrery_llm_call_duration_seconds_count{role="producer",task_type="pipeline",model="anthropic/claude-sonnet-4"} 1"#,
        r#"orrery_llm_calls_total{role="producer",task_type="pipeline",model="anthropic/claude-sonnet-4",outcome="ok"} 1"#,
        r#"orrery_llm_tokens_total{role="producer",task_type="pipeline",model="anthropic/claude-sonnet-4",type="input"}"#,
    ] {
        assert!(body.contains(line), "no {line} in:\n{body}");
    }
    for line in body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        assert!(line.starts_with("orrery_"), "{line}");
        assert!(
            !line.contains("-1") && !line.contains("metered"),
            "an id in a label: {line}"
        );
    }
    let done = run.interrupt(PATIENCE);
    assert_eq!(done.code, Some(exit::INTERRUPTED), "{}", done.show());
}

#[test]
fn addresses_that_cannot_be_listened_on_are_bad_input_naming_the_flag() {
    let scratch = Scratch::new(&[("consumer.lua", CONSUMER)]);
    scratch.write(
        "task.toml",
        "id = \"t\"\ntype = \"x\"\ndescription = \"d\"\ntimeout = 60000\nagents = [\"consumer\"]\n",
    );
    for (flag, value) in [
        ("--metrics-addr", "not-an-address"),
        ("--ui-addr", "256.1.1.1:80"),
    ] {
        let out = orrery(scratch.path(), &["run", "task.toml", flag, value]);
        assert_eq!(out.status.code(), Some(exit::BAD_INPUT), "{}", show(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(&format!("flag {flag} {value}")), "{stderr}");
    }
}
