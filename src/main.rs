//! The `orrery` command line: run a task, check scripts, benchmark the host.

mod cli;

use std::process::ExitCode;

/// mimalloc instead of the system allocator: the host's hot paths (a
/// message, a blackboard write) allocate and free small blocks, often on
/// another thread than the one that allocated them, where glibc's arenas
/// take a lock and mimalloc's thread-local pages do not. The Lua VMs
/// allocate through it too (mlua calls the global allocator).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // First, while this is the only thread: no later reader of the process
    // environment (a program the host starts, /proc/<pid>/environ) sees the key.
    orrery::secrets::take_from_environment();
    let code = match cli::Cli::parse_args() {
        Ok(cli) => match cli.init_tracing() {
            // Held to the end: dropping it sends the last spans.
            Ok(_telemetry) => cli.execute(),
            Err(code) => code,
        },
        Err(code) => code,
    };
    ExitCode::from(code as u8)
}
