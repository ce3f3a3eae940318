//! `orrery worker --metrics-addr` serves the worker's load and health
//! (tasks running, agents, memory, claims) and the `orrery_*` series of the
//! tasks it runs.

use std::time::{Duration, Instant};

use crate::common::{Scratch, addr_in, http_get};
use crate::util::{PATIENCE, SLOW, server, spawn_worker, submit, wait_state};

/// The value of the series `name{worker="..."}` in `body`.
fn worker_value(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(&format!("{name}{{worker=")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Scrapes `addr` until `done` holds for the body; returns it.
fn scrape_until(addr: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (status, _, body) = http_get(addr, "/metrics");
        assert!(status.contains("200"), "{status}");
        if done(&body) {
            return body;
        }
        assert!(Instant::now() < deadline, "never seen:\n{body}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_worker_serves_its_load_and_its_tasks_metrics() {
    let server = server();
    let scratch = Scratch::new(&[("slow.lua", SLOW)]);
    scratch.write(
        "slow.toml",
        "id = \"slow\"\ntype = \"nap\"\ndescription = \"sleeps\"\ntimeout = 60000\nagents = [\"slow\"]\n[inputs]\nms = 1500\n",
    );
    let mut w = spawn_worker(
        scratch.path(),
        &server,
        &["--max-tasks", "3", "--metrics-addr", "127.0.0.1:0"],
    );
    let addr = addr_in(&w.wait_for("metrics: http://", PATIENCE));
    w.wait_for("serving", PATIENCE);
    let id = submit(scratch.path(), &server, "slow.toml");
    // While it runs: one task, its agent, its claim.
    let body = scrape_until(&addr, |b| {
        worker_value(b, "orrery_worker_tasks_running") == Some(1.0)
    });
    assert_eq!(
        worker_value(&body, "orrery_worker_max_tasks"),
        Some(3.0),
        "{body}"
    );
    assert_eq!(
        worker_value(&body, "orrery_worker_agents"),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        worker_value(&body, "orrery_worker_claims"),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        worker_value(&body, "orrery_worker_draining"),
        Some(0.0),
        "{body}"
    );
    let memory = worker_value(&body, "orrery_worker_resident_memory_bytes").unwrap();
    assert!(memory > 1e6, "{body}");
    wait_state(scratch.path(), &server, &id, "finished");
    // After: the task's run counted, the worker idle.
    let body = scrape_until(&addr, |b| {
        worker_value(b, "orrery_worker_tasks_running") == Some(0.0)
            && worker_value(b, "orrery_worker_tasks_finished_total") == Some(1.0)
    });
    for line in [
        r#"orrery_runs_total{task_type="nap",status="complete"} 1"#,
        r#"orrery_agents_started_total{role="slow",task_type="nap"} 1"#,
        r#"orrery_agents_live{role="slow",task_type="nap"} 0"#,
    ] {
        assert!(body.contains(line), "no {line} in:\n{body}");
    }
    assert_eq!(
        worker_value(&body, "orrery_worker_claims"),
        Some(0.0),
        "{body}"
    );
    let w = w.interrupt(PATIENCE);
    assert_eq!(w.code, Some(0), "{}", w.show());
}
