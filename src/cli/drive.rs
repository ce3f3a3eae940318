//! Driving a run to its end, shared by `orrery run` and `orrery run --join`:
//! phase changes shown live, Ctrl-C and SIGTERM forwarded to the
//! orchestrator, and the report printed with the exit code it maps to.

use orrery::coordination::PhaseChange;
use orrery::orchestrator::{Orchestrator, Stopper};
use orrery::report::RunReport;

/// Runs `orchestrator`, showing phase changes unless `quiet` and forwarding Ctrl-C.
pub(super) async fn drive(orchestrator: Orchestrator, quiet: bool) -> orrery::Result<RunReport> {
    let interrupts = tokio::spawn(forward_interrupts(orchestrator.stopper()));
    let printer = (!quiet).then(|| {
        let mut changes = orchestrator.coordination().states.subscribe();
        let start = orchestrator.coordination().metrics.start_time();
        tokio::spawn(async move {
            while let Ok(change) = changes.recv().await {
                super::print_err_at(
                    "INFO",
                    &format_change(&change, start),
                    change_fields(&change, start),
                );
            }
        })
    });
    let report = orchestrator.run().await;
    interrupts.abort();
    // Every sender is gone once the run ended: let the printer finish its lines.
    if let Some(printer) = printer {
        let _ = tokio::time::timeout(std::time::Duration::from_millis(200), printer).await;
    }
    report
}

/// Prints a report as text or JSON; returns the exit code it maps to.
pub(super) fn print_report(report: &RunReport, json: bool) -> anyhow::Result<i32> {
    if json {
        super::print_out(&format!("{}\n", serde_json::to_string_pretty(report)?));
    } else {
        super::print_out(&report.summary());
    }
    Ok(report.exit_code())
}

/// How long after the first Ctrl-C the agents still running are aborted, as
/// by a second Ctrl-C: an agent looping in `start` never finishes on its own.
const ABORT_AFTER: std::time::Duration = std::time::Duration::from_secs(5);

/// Requests to stop: Ctrl-C (SIGINT), or SIGTERM, which is what `systemctl
/// stop`, `docker stop` and Kubernetes send. Without it a stopped service
/// died at once, with no report, no `run_ended` in the journal and, on a
/// shared store, its task left `running` with no expiry.
struct Interrupts {
    /// None where SIGTERM cannot be watched (Ctrl-C still is).
    term: Option<tokio::signal::unix::Signal>,
}

impl Interrupts {
    fn new() -> Interrupts {
        let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        Interrupts { term }
    }

    /// The next request; false once none can come any more.
    async fn next(&mut self) -> bool {
        match self.term.as_mut() {
            Some(term) => tokio::select! {
                c = tokio::signal::ctrl_c() => c.is_ok(),
                t = term.recv() => t.is_some(),
            },
            None => tokio::signal::ctrl_c().await.is_ok(),
        }
    }
}

/// Waits for Ctrl-C or SIGTERM. What waits after a run must ask for both:
/// once the run has watched SIGTERM, its default action (ending the
/// process) is gone for good, and a wait for Ctrl-C alone ignored it.
pub(super) async fn stop_requested() {
    Interrupts::new().next().await;
}

/// Ctrl-C or SIGTERM: the first stops the run gracefully, the next (or
/// [`ABORT_AFTER`]) aborts it, and one more quits at once, report or not:
/// the way out when the run cannot end (a store that stopped answering
/// holds its last writes). Nothing here can panic on a closed stderr, so
/// Ctrl-C keeps working whatever became of the terminal's pipes.
async fn forward_interrupts(stopper: Stopper) {
    let mut interrupts = Interrupts::new();
    if !interrupts.next().await {
        return;
    }
    super::print_err(&format!(
        "stopping: agents finish what they are doing (Ctrl-C again to abort; aborted in {} s)",
        ABORT_AFTER.as_secs()
    ));
    stopper.stop();
    tokio::select! {
        again = interrupts.next() => {
            if !again {
                return;
            }
            super::print_err("aborting the agents still running (Ctrl-C again to quit at once)");
        }
        _ = tokio::time::sleep(ABORT_AFTER) => {
            super::print_err(&format!(
                "agents still running {} s after Ctrl-C: aborting them (Ctrl-C again to quit at once)",
                ABORT_AFTER.as_secs()
            ));
        }
    }
    stopper.stop();
    if interrupts.next().await {
        super::print_err("quitting at once: what the run had not stored yet is lost");
        std::process::exit(orrery::error::exit::INTERRUPTED);
    }
}

/// A phase change's parts, for its line under `--log-format json`.
fn change_fields(c: &PhaseChange, start_ms: u64) -> serde_json::Map<String, serde_json::Value> {
    let mut f = serde_json::Map::new();
    f.insert("at_ms".into(), c.at_ms.saturating_sub(start_ms).into());
    f.insert("agent".into(), c.agent.to_string().into());
    f.insert("from".into(), c.from.map(|p| p.to_string()).into());
    f.insert("to".into(), c.to.to_string().into());
    if let Some(reason) = &c.reason {
        f.insert("reason".into(), reason.to_string().into());
    }
    f
}

fn format_change(c: &PhaseChange, start_ms: u64) -> String {
    let at = c.at_ms.saturating_sub(start_ms);
    let from = c.from.map_or("-".to_string(), |p| p.to_string());
    let reason = c
        .reason
        .as_deref()
        .map(|r| format!("  ({r})"))
        .unwrap_or_default();
    format!("[{at:>6} ms] {:<10} {from} -> {}{reason}", c.agent, c.to)
}
