//! A worker's load against its limits: tasks, live agents, resident memory.

use std::collections::HashMap;

use super::{Running, WorkerOptions};

/// Live agents of the running tasks; a task counts one at least (its
/// agents may not have started yet), so a limit holds from its take.
pub(super) fn live_agents(running: &HashMap<String, Running>) -> usize {
    running
        .values()
        .map(|r| {
            r.coord
                .lock()
                .as_ref()
                .map_or(1, |c| c.spawner.live().max(1))
        })
        .sum()
}

/// The process's resident memory (bytes), from `/proc/self/statm`; 0 where
/// there is none.
pub fn resident_memory() -> u64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
        })
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * page.max(0) as u64
}

/// Why the worker takes no task now, if it is full.
pub(super) fn full(opts: &WorkerOptions, running: &HashMap<String, Running>) -> Option<String> {
    if running.len() >= opts.max_tasks {
        return Some(format!("{} tasks", running.len()));
    }
    if let Some(max) = opts.max_agents {
        let live = live_agents(running);
        if live >= max {
            return Some(format!("{live} agents (--max-agents-total {max})"));
        }
    }
    if let Some(max) = opts.max_memory {
        let rss = resident_memory();
        if rss >= max {
            return Some(format!(
                "{} MB resident (--max-memory {} MB)",
                rss >> 20,
                max >> 20
            ));
        }
    }
    None
}
