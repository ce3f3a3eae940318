//! What a run tells the outside while it goes: its journal entries for the
//! start, the end and the errors of the report, and the task's trace span.
//! On a shared store the journal also goes to the task's stream, where
//! `orrery tail` follows it from any host.

use std::time::Instant;

use tracing::Instrument;

use super::Orchestrator;
use crate::coordination::Coordination;
use crate::coordination::journal::{Event, SinkLoss, StoreSink};
use crate::error::{ErrorKind, Result};
use crate::report::{ReportedError, RunReport};

impl Orchestrator {
    /// Runs the task to its end. Errors only when the run could not start
    /// (SpawnLimit, store failure, a live run of the same task in a shared
    /// store); failures of agents are in the report.
    ///
    /// Every event of the run goes to the journal's sinks (attach them to
    /// [`coordination().journal`](Self::coordination) before), and on a shared
    /// store to the task's journal stream; the journal is flushed and closed
    /// when this returns.
    pub async fn run(self) -> Result<RunReport> {
        let coord = self.coord.clone();
        let max_len = coord.config.journal_max_len;
        if !coord.store.is_embedded() && max_len > 0 {
            let sink = StoreSink::new(coord.store.clone(), &coord.task.id, max_len);
            coord.journal.attach(Box::new(sink));
        }
        let owner = self.mode.is_owner();
        let span = crate::trace::task(&coord.task.id, &coord.task.kind);
        let started = Instant::now();
        let mut report = self.run_to_end().instrument(span.clone()).await;
        if let Ok(r) = &mut report {
            // Entries dropped because the journal's sinks fell behind (those
            // of the last moments are counted only when it closes: they are
            // in its own `journal_dropped` entry and warning).
            r.metrics
                .host
                .insert("journal_dropped".into(), coord.journal.dropped());
        }
        let (status, errors, metrics) = match &report {
            Ok(r) => {
                for e in &r.errors {
                    coord.journal_error(e);
                }
                (
                    serde_json::to_value(r.status)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default(),
                    r.errors.len(),
                    serde_json::to_value(&r.metrics).ok(),
                )
            }
            Err(e) => {
                coord
                    .journal
                    .record_host(|| error_event(&e.kind().to_string(), e, true));
                ("error".to_string(), 1, None)
            }
        };
        span.record("orrery.task.status", status.as_str());
        coord.journal.record_host(|| Event::RunEnded {
            task: coord.task.id.clone(),
            status,
            duration_ms: started.elapsed().as_millis() as u64,
            owner,
            errors,
            metrics,
        });
        coord.journal.close().await;
        if let Ok(r) = &mut report {
            add_journal_losses(r, &coord.journal.losses());
        }
        // The journal's last lines land after the run's own retention pass:
        // a second pass covers the journal stream, made or grown since.
        if let Ok(r) = &report
            && !coord.store.is_embedded()
            && !r
                .errors
                .iter()
                .any(|e| e.kind == crate::error::ErrorKind::Fenced)
            && matches!(coord.store.task_get(&coord.task.id).await, Ok(Some(t)) if !t.is_running())
        {
            let retention = std::time::Duration::from_secs(coord.config.retention);
            if let Err(e) = coord.store.retain_journal(&coord.task.id, retention).await {
                tracing::warn!("cannot set the retention of the task's journal: {e}");
            }
        }
        report
    }

    /// Records that this process's part of the run started (after the run
    /// was claimed in the store, which clears what a previous run left).
    pub(super) fn journal_started(&self) {
        let task = &self.coord.task;
        self.coord.journal.record_host(|| Event::RunStarted {
            task: task.id.clone(),
            task_type: task.kind.clone(),
            description: task.description.clone(),
            owner: self.mode.is_owner(),
        });
    }
}

fn error_event(kind: &str, e: &impl std::fmt::Display, fatal: bool) -> Event {
    Event::Error {
        error_kind: kind.to_string(),
        message: e.to_string(),
        fatal,
    }
}

/// Records an error the report lists.
trait JournalError {
    fn journal_error(&self, e: &ReportedError);
}

impl JournalError for Coordination {
    fn journal_error(&self, e: &ReportedError) {
        let event = || Event::Error {
            error_kind: e.kind.to_string(),
            message: e.message.clone(),
            fatal: e.fatal,
        };
        if e.agent == "host" {
            self.journal.record_host(event);
        } else {
            self.journal.record_for(&e.agent, event);
        }
    }
}

/// Entries a journal sink could not take (a full disk under `--journal`)
/// are missing from it as surely as dropped ones: counted in the report's
/// `journal_dropped`, and each sink's failure is an error of the report
/// (not fatal: the task's own work is done and stored).
fn add_journal_losses(report: &mut RunReport, losses: &[SinkLoss]) {
    for loss in losses {
        *report
            .metrics
            .host
            .entry("journal_dropped".into())
            .or_insert(0) += loss.entries;
        report.errors.push(ReportedError {
            agent: "host".into(),
            kind: ErrorKind::Journal,
            message: format!(
                "{}: {} journal entries missing from it",
                loss.why, loss.entries
            ),
            fatal: false,
            allowed: false,
            count: 1,
            exit_code: crate::error::exit::OK,
        });
    }
}
