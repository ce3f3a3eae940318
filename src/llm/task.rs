//! What the agents of one task share for LLM calls: the task's client and
//! where a call refused for a spent token budget is reported.

use tokio::sync::mpsc;

use super::{LlmClient, LlmConfig};

/// An agent asked for more once the task's token budget was spent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetSpent {
    /// The agent whose call was refused.
    pub agent: String,
    /// Tokens used by the task when the call was refused.
    pub used: u64,
    /// The task's budget.
    pub budget: u64,
}

/// What the agents of one task share for LLM calls.
#[derive(Debug, Clone)]
pub struct TaskLlm {
    /// The task's client (its own usage totals and token budget).
    pub client: LlmClient,
    /// Where a call refused for a spent token budget is reported, so the
    /// orchestrator can end the task even when the script catches the error.
    pub budget_spent: mpsc::UnboundedSender<BudgetSpent>,
}

impl TaskLlm {
    /// The task's share of `client`, and the receiver of its spent-budget reports.
    pub fn new(client: LlmClient) -> (TaskLlm, mpsc::UnboundedReceiver<BudgetSpent>) {
        let (budget_spent, rx) = mpsc::unbounded_channel();
        (
            TaskLlm {
                client,
                budget_spent,
            },
            rx,
        )
    }

    /// The offline mock responder with no budget, for VMs that must never reach
    /// a real LLM (the reload check, tests).
    pub fn offline() -> TaskLlm {
        let config = LlmConfig {
            mock: true,
            ..Default::default()
        };
        let client = LlmClient::new(config).expect("the mock LLM needs no settings");
        TaskLlm::new(client).0
    }
}
