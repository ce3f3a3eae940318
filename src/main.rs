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

/// No transparent huge pages for this process. mimalloc asks for them on
/// its regions (`MADV_HUGEPAGE`), so a region's first touch makes the
/// kernel zero 2 MiB at once: a third of the CPU of `orrery bench
/// --messages-only 400000` went to `clear_page_erms` (perf), most on a
/// machine freshly started, and an idle agent cost ~97 KB resident instead
/// of ~87 KB. The agents' heaps are many and small, where huge pages buy
/// little. Inherited by programs the host starts, as the kernel does.
#[cfg(all(feature = "mimalloc", target_os = "linux"))]
fn no_huge_pages() {
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and touches no memory
    // of ours; a kernel without it fails the call, which changes nothing.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

fn main() -> ExitCode {
    #[cfg(all(feature = "mimalloc", target_os = "linux"))]
    no_huge_pages();
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
