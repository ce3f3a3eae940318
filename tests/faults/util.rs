//! Helpers of the fault tests: task files, `inspect`, servers with limits.

use std::time::Duration;

use serde_json::Value;

use crate::common::{RedisServer, Scratch, orrery, show};

/// Long enough for a debug build on a busy machine; never reached when it works.
pub const PATIENCE: Duration = Duration::from_secs(120);

/// Writes `ID.toml`, a task whose agents are `roles`, and returns its name.
pub fn task_file(scratch: &Scratch, id: &str, roles: &[&str]) -> String {
    let roles: Vec<String> = roles.iter().map(|r| format!("\"{r}\"")).collect();
    scratch.write(
        &format!("{id}.toml"),
        &format!(
            "id = \"{id}\"\ntype = \"test\"\ndescription = \"faults\"\ntimeout = 120000\nagents = [{}]\n",
            roles.join(", ")
        ),
    );
    format!("{id}.toml")
}

/// The task's state as `orrery inspect --json` shows it.
pub fn inspect(scratch: &Scratch, server: &RedisServer, id: &str) -> Value {
    let out = orrery(
        scratch.path(),
        &["inspect", id, "--json", "--store", &server.url()],
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    serde_json::from_slice(&out.stdout).expect("inspect --json prints JSON")
}

/// A server keeping nothing on disk, started with the extra `args`.
pub fn server_with(args: &[&str]) -> RedisServer {
    let mut all = vec!["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"];
    all.extend_from_slice(args);
    RedisServer::start_with("--port", &all, |_| {})
}

/// A plain (blocking) connection to `server`, for looking behind the host's back.
pub fn raw(server: &RedisServer) -> redis::Connection {
    redis::Client::open(server.url())
        .expect("a valid URL")
        .get_connection()
        .expect("the test's server answers")
}
