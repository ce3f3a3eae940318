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

/// `CLIENT PAUSE ms mode` (`ALL` or `WRITE`) on `conn`.
pub fn pause_clients(conn: &mut redis::Connection, ms: u64, mode: &str) {
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(ms)
        .arg(mode)
        .query(conn)
        .expect("CLIENT PAUSE");
}

/// Kills every ordinary client connection but `conn`'s own.
pub fn kill_other_clients(conn: &mut redis::Connection) {
    let _: redis::Value = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .arg("SKIPME")
        .arg("yes")
        .query(conn)
        .expect("CLIENT KILL");
}

/// A receiver's `on_message` lines that record each handling of message
/// `payload.n` with its delivery count: `handled/{n}` is the list of the
/// `attempts` it was handled with.
pub const RECORD_HANDLING: &str = r#"
  blackboard.update("handled/" .. msg.payload.n, function(a)
    a = a or {}
    a[#a + 1] = msg.attempts .. " " .. agent.id
    return a
  end)
"#;

/// What became of messages `1..=n`, from the `handled/{n}` lists
/// [`RECORD_HANDLING`] keeps.
#[derive(Debug, Default)]
pub struct Handlings {
    /// Handled exactly once.
    pub once: u64,
    /// Never handled.
    pub lost: Vec<u64>,
    /// First-delivered more than once: in the queue twice, sent twice.
    pub sent_twice: Vec<u64>,
    /// Handled more than once (delivered again after a handler was cut
    /// off), with the delivery count and agent of each handling.
    pub again: Vec<(u64, Vec<(u64, String)>)>,
}

impl Handlings {
    /// Reads the lists of messages `1..=n` from `state` (`inspect --json`).
    pub fn of(state: &Value, n: u64) -> Handlings {
        let bb = state["blackboard"].as_object().expect("a blackboard");
        let mut h = Handlings::default();
        for i in 1..=n {
            let Some(list) = bb.get(&format!("handled/{i}")).and_then(Value::as_array) else {
                h.lost.push(i);
                continue;
            };
            let handlings: Vec<(u64, String)> = list
                .iter()
                .filter_map(Value::as_str)
                .filter_map(|e| {
                    let (a, agent) = e.split_once(' ')?;
                    Some((a.parse().ok()?, agent.to_string()))
                })
                .collect();
            if handlings.iter().filter(|(a, _)| *a == 1).count() > 1 {
                h.sent_twice.push(i);
            }
            match handlings.len() {
                1 => h.once += 1,
                _ => h.again.push((i, handlings)),
            }
        }
        h
    }
}
