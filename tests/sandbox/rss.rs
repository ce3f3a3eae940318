//! The host's resident memory under hostile agents: with every agent doing
//! its worst to make the host keep memory (its heap, the blackboard, the
//! queues, watch events, huge names and logs), the peak RSS of the `orrery`
//! process stays within the bound README.md documents:
//!
//! base + max_agents × memory_limit + 2 × (max_blackboard_bytes +
//! max_queued_bytes) + (64 + 4 × max_agents) × max_value_bytes
//!
//! where base is the peak of the same run with idle agents (measured here,
//! so the bound holds for the build under test).

use std::path::Path;
use std::process::{Command, Stdio};

use crate::common::Scratch;

const MIB: u64 = 1024 * 1024;
const AGENTS: u64 = 5;
const MEMORY_LIMIT: u64 = 16 * MIB;
const BLACKBOARD: u64 = 8 * MIB;
const QUEUED: u64 = 8 * MIB;
const VALUE: u64 = 64 * 1024;

/// Fills the agent's own heap to its limit, then holds everything until the
/// others had time to do their worst.
const HOLD: &str = "local t = {}\npcall(function() while true do t[#t + 1] = string.rep('h', 65536) .. #t end end)\nsleep(1500)";

/// Hostile roles, each making the host keep as much as it can.
fn roles() -> Vec<(&'static str, String)> {
    let body = |b: &str| format!("local M = {{}}\nfunction M.start(self)\n{b}\nend\nreturn M\n");
    vec![
        // Its own heap to the limit (as every role does last), in a callback
        // that also logs from a full heap.
        ("heap.lua", body(&format!("{HOLD}\nlog.info(#t)"))),
        // The blackboard to its byte quota, in big values.
        (
            "board.lua",
            body(&format!(
                "pcall(function() for i = 1, 1e6 do blackboard.set('b' .. i, string.rep('v', 60000)) end end)\n{HOLD}"
            )),
        ),
        // The queues to their byte quota, messages to itself nobody takes.
        (
            "flood.lua",
            body(&format!(
                "pcall(function() for i = 1, 1e6 do bus.send(agent.id, 'm', string.rep('q', 60000)) end end)\n{HOLD}"
            )),
        ),
        // Watches everything and never reads: writes pin the event buffer.
        (
            "pinner.lua",
            body(&format!(
                "blackboard.watch('*', function() end)\nfor i = 1, 500 do pcall(blackboard.set, 'p', string.rep('e', 60000)) end\n{HOLD}"
            )),
        ),
        // Huge names and log lines, over and over: copies the host must drop.
        (
            "names.lua",
            body(&format!(
                "local long = string.rep('n', 12e6)\nfor i = 1, 20 do\n  pcall(bus.send, long, 't', {{}})\n  pcall(blackboard.set, long, 1)\n  pcall(metrics.incr, long)\n  log.info(long)\nend\n{HOLD}"
            )),
        ),
    ]
}

/// Runs the task with `roles` and returns the peak RSS of the orrery process (bytes).
fn peak_rss(dir: &Path) -> u64 {
    let child = Command::new(env!("CARGO_BIN_EXE_orrery"))
        .args(["run", "task.toml", "--scripts", "scripts", "--json"])
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("ORRERY_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the orrery binary starts");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: waits for our own child; `usage` is written by the kernel.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::wait4(pid, &mut status, 0, &mut usage), pid);
        usage
    };
    std::mem::forget(child); // already reaped
    assert!(libc::WIFEXITED(status), "the run was killed: {status}");
    assert!(
        libc::WEXITSTATUS(status) < 128,
        "exit {}",
        libc::WEXITSTATUS(status)
    );
    usage.ru_maxrss as u64 * 1024
}

fn case(hostile: bool) -> Scratch {
    let roles = roles();
    let files: Vec<(&str, String)> = if hostile {
        roles
    } else {
        roles
            .iter()
            .map(|(name, _)| {
                (
                    *name,
                    "local M = {}\nfunction M.start(self) sleep(1500) end\nreturn M\n".to_string(),
                )
            })
            .collect()
    };
    let borrowed: Vec<(&str, &str)> = files.iter().map(|(n, s)| (*n, s.as_str())).collect();
    let scratch = Scratch::new(&borrowed);
    scratch.write(
        "task.toml",
        "id = \"rss\"\ntype = \"t\"\ndescription = \"d\"\ntimeout = 30000\n",
    );
    scratch.write(
        "orrery.toml",
        &format!(
            "max_agents = {AGENTS}\nmemory_limit = {MEMORY_LIMIT}\nmax_value_bytes = {VALUE}\n\
             max_blackboard_bytes = {BLACKBOARD}\nmax_queued_bytes = {QUEUED}\ncallback_timeout = 20000\n"
        ),
    );
    scratch
}

#[test]
fn hostile_agents_keep_the_hosts_memory_within_the_documented_bound() {
    let base = peak_rss(case(false).path());
    let peak = peak_rss(case(true).path());
    let bound =
        base + AGENTS * MEMORY_LIMIT + 2 * (BLACKBOARD + QUEUED) + (64 + 4 * AGENTS) * VALUE;
    eprintln!(
        "peak RSS {} MiB with hostile agents, {} MiB idle, bound {} MiB",
        peak / MIB,
        base / MIB,
        bound / MIB
    );
    assert!(
        peak <= bound,
        "peak RSS {} MiB is past the bound {} MiB (idle run: {} MiB)",
        peak / MIB,
        bound / MIB,
        base / MIB
    );
}
