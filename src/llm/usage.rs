//! Token accounting: the totals a client reports ([`UsageReport`]) and the
//! per-task ledger that enforces the token budget.
//!
//! Per-agent accounting is the caller's business (it sees each
//! [`ChatResponse::usage`](super::ChatResponse::usage), and can keep a
//! [`UsageReport`] per agent); this module keeps the totals of one client
//! (one task), split per model.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Serialize;

use super::{LlmError, Usage};

/// Calls and tokens of successful answers for one model (or for all).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ModelUsage {
    /// Successful calls.
    pub calls: u64,
    /// Sum of `prompt_tokens`.
    pub prompt_tokens: u64,
    /// Sum of `completion_tokens`.
    pub completion_tokens: u64,
    /// Sum of `total_tokens`; this is what the token budget counts.
    pub total_tokens: u64,
}

impl ModelUsage {
    /// Counts one successful call that used `usage`.
    pub fn add(&mut self, usage: &Usage) {
        self.calls += 1;
        self.prompt_tokens += usage.prompt_tokens;
        self.completion_tokens += usage.completion_tokens;
        self.total_tokens += usage.total_tokens;
    }
}

/// What a client has spent so far: see [`LlmClient::usage`](super::LlmClient::usage).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UsageReport {
    /// All successful calls, whatever the model or source.
    pub total: ModelUsage,
    /// Calls that returned an error (no tokens are counted for them).
    pub failed_calls: u64,
    /// Successful calls per requested model (the request's `model`, or the
    /// config's default), so keys match what scripts and config name.
    pub per_model: BTreeMap<String, ModelUsage>,
}

impl UsageReport {
    /// Counts a successful call to `model` that used `usage`.
    /// Past [`MAX_MODELS`] distinct models, further ones are counted
    /// together under [`OTHER_MODELS`] (a script names the model).
    pub fn record_success(&mut self, model: &str, usage: &Usage) {
        self.total.add(usage);
        let model = if self.per_model.contains_key(model) || self.per_model.len() < MAX_MODELS {
            model
        } else {
            OTHER_MODELS
        };
        self.per_model
            .entry(model.to_string())
            .or_default()
            .add(usage);
    }

    /// Counts a call that returned an error.
    pub fn record_failure(&mut self) {
        self.failed_calls += 1;
    }
}

/// Most models counted one by one in a [`UsageReport`].
pub const MAX_MODELS: usize = 64;

/// The name the models past [`MAX_MODELS`] are counted under.
pub const OTHER_MODELS: &str = "(other models)";

/// The running totals of one task and its optional token budget.
#[derive(Debug)]
pub(crate) struct Ledger {
    budget: Option<u64>,
    report: Mutex<UsageReport>,
}

impl Ledger {
    pub(crate) fn new(budget: Option<u64>) -> Ledger {
        Ledger {
            budget,
            report: Mutex::new(UsageReport::default()),
        }
    }

    /// Fails with [`LlmError::BudgetExhausted`] once the spent tokens have
    /// reached the budget. Calls running concurrently are all admitted while
    /// the budget is not yet reached, so a task can overshoot by the answers
    /// that were in flight.
    pub(crate) fn check_budget(&self) -> Result<(), LlmError> {
        let Some(budget) = self.budget else {
            return Ok(());
        };
        let used = self.lock().total.total_tokens;
        if used >= budget {
            return Err(LlmError::BudgetExhausted { used, budget });
        }
        Ok(())
    }

    pub(crate) fn record_success(&self, model: &str, usage: &Usage) {
        self.lock().record_success(model, usage);
    }

    pub(crate) fn record_failure(&self) {
        self.lock().record_failure();
    }

    pub(crate) fn report(&self) -> UsageReport {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, UsageReport> {
        // The report holds plain counters: a panic elsewhere cannot leave it
        // half-updated in a way that matters, so a poisoned lock is still used.
        self.report.lock().unwrap_or_else(|e| e.into_inner())
    }
}
