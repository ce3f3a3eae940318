//! The test support itself (`tests/support`): a developer's environment
//! changes no test, a test's redis-server is its own, and what a test starts
//! ends with it, also when the test fails.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::{RedisServer, Scratch, closed_port, orrery_command, repo, show, spawn_orrery};

/// Set by [`a_developers_environment_changes_no_test`] for the probe it runs.
const PROBE: &str = "ORRERY_TEST_PROBE";

/// Runs this test binary's probe under a hostile environment: an API key
/// (which would take the LLM live), a store that refuses connections, a bad
/// setting and the most verbose logging. The probe's runs of the binary see
/// none of it.
#[test]
fn a_developers_environment_changes_no_test() {
    let exe = std::env::current_exe().unwrap();
    let store = format!("redis://127.0.0.1:{}/0", closed_port());
    let out = Command::new(exe)
        .args(["--exact", "harness::probe_under_a_developers_environment"])
        .args(["--ignored", "--nocapture", "--test-threads=1"])
        .env(PROBE, "1")
        .env("OPENAI_API_KEY", "sk-a-developers-own-key")
        .env("OPENROUTER_API_KEY", "sk-or-a-developers-own-key")
        .env("ORRERY_LLM_KEY", "a-developers-own-key")
        .env("ORRERY_LLM_URL", "http://127.0.0.1:9/v1")
        .env("ORRERY_STORE", store)
        .env("ORRERY_MAX_AGENTS", "0")
        .env("ORRERY_LOG", "trace")
        .env("RUST_LOG", "trace")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 passed"),
        "the probe ran: {}",
        show(&out)
    );
}

#[test]
#[ignore = "a probe: a_developers_environment_changes_no_test runs it in an environment it sets"]
fn probe_under_a_developers_environment() {
    if std::env::var_os(PROBE).is_none() {
        return;
    }
    assert!(std::env::var_os("OPENAI_API_KEY").is_some());
    let out = orrery_command(&repo(), &["run", "examples/deploy.toml", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    // A live LLM announces itself; the mock does not.
    assert!(!stderr.contains("llm: "), "{}", show(&out));
    assert!(
        !stderr.contains("TRACE") && !stderr.contains("DEBUG"),
        "{}",
        show(&out)
    );
}

/// True while process `pid` exists (it has not been reaped).
fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// A server that cannot listen on its port (another process took it) fails
/// the test, naming the cause, instead of letting the test talk to whatever
/// listens there.
#[test]
fn a_server_whose_port_was_taken_is_never_talked_to() {
    let mut server = RedisServer::start();
    server.kill();
    // Another test's server, say, now listens where this one did.
    let _other = std::net::TcpListener::bind(("127.0.0.1", server.port)).unwrap();
    let failed = catch_unwind(AssertUnwindSafe(|| server.restart()));
    let message = failed.expect_err("the restart must fail");
    let message = message.downcast_ref::<String>().expect("a panic message");
    assert!(message.contains("another process took it"), "{message}");
    assert!(message.contains("Address already in use"), "{message}");
}

/// A server that fails to start shows what it printed.
#[test]
fn a_server_that_fails_to_start_shows_its_output() {
    let failed =
        catch_unwind(|| RedisServer::start_with("--port", &["--no-such-directive", "x"], |_| {}));
    let message = failed.err().expect("the start must fail");
    let message = message.downcast_ref::<String>().expect("a panic message");
    assert!(message.contains("before listening"), "{message}");
    assert!(message.contains("no-such-directive"), "{message}");
}

/// What a test starts ends when the test fails.
#[test]
fn a_failing_test_leaves_no_process_behind() {
    let server = RedisServer::start();
    let scratch = Scratch::new(&[(
        "waiter.lua",
        "return { start = function() log.info('waiting') bus.receive(60000) end }",
    )]);
    scratch.write(
        "task.toml",
        "id = \"w\"\ntype = \"test\"\ndescription = \"waits\"\ntimeout = 60000\n",
    );
    let mut run = spawn_orrery(scratch.path(), &["run", "task.toml"], &[]);
    run.wait_for("waiting", Duration::from_secs(30));
    let (orrery, redis) = (run.pid(), server.pid().expect("running"));
    assert!(alive(orrery) && alive(redis));
    let failed = catch_unwind(AssertUnwindSafe(move || {
        let (_run, _server) = (run, server);
        panic!("a failing test");
    }));
    assert!(failed.is_err());
    assert!(!alive(orrery), "orrery {orrery} outlived its test");
    assert!(!alive(redis), "redis-server {redis} outlived its test");
}
