//! The per-task token budget: a call beyond it is refused, and the task
//! fails with kind `llm_budget` and exit code 8 even when the script catches
//! the refusal.

use orrery::error::exit;
use orrery::llm::LlmConfig;
use orrery::report::TaskStatus;

use crate::util::*;

/// Asks the (mock) LLM until a call is refused, catching the refusal.
const SPENDER: &str = r#"
return { start = function()
  local calls = 0
  for _ = 1, 50 do
    local ok, err = pcall(llm.chat, { prompt = "Count the stars in the sky, one by one" })
    if not ok then
      task.output("refused", { kind = err.kind, message = err.message, after = calls })
      return
    end
    calls = calls + 1
  end
  task.output("refused", false)
end }
"#;

fn budget(tokens: u64) -> LlmConfig {
    LlmConfig {
        token_budget: Some(tokens),
        ..LlmConfig::default()
    }
}

#[tokio::test]
async fn a_call_beyond_the_budget_fails_the_task_even_when_caught() {
    let scripts = one_agent(SPENDER);
    let report = run_with_llm(&scripts.scripts(), task("budget", 10_000), budget(40)).await;
    let refused = output(&report, "refused");
    assert_eq!(refused["kind"], "budget", "{refused}");
    assert!(refused["after"].as_u64().unwrap() >= 1, "{refused}");
    assert_eq!(report.status, TaskStatus::Failed);
    let first = &report.errors[0];
    assert_eq!(
        (first.kind.as_str(), first.agent.as_str(), first.fatal),
        ("llm_budget", "agent-1", true)
    );
    assert!(
        first
            .message
            .starts_with("LLM token budget exhausted: agent-1 asked for more after"),
        "{}",
        first.message
    );
    assert!(first.message.contains("of 40 tokens"), "{}", first.message);
    assert_eq!(report.exit_code(), exit::LLM_BUDGET);
    assert_eq!(
        report.metrics.llm.task.failed_calls, 1,
        "the refused call is counted as failed"
    );
}

#[tokio::test]
async fn a_task_within_its_budget_completes() {
    let scripts =
        one_agent(r#"return { start = function() llm.chat{ prompt = "one question" } end }"#);
    let report = run_with_llm(&scripts.scripts(), task("within", 10_000), budget(1_000)).await;
    assert_eq!(report.status, TaskStatus::Complete, "{:#?}", report.errors);
    assert_eq!(report.exit_code(), exit::OK);
}

#[test]
fn the_binary_exits_8_with_the_budget_error_first() {
    // The refusal is not caught here: the agent's own script error follows
    // the budget error, which still sets the exit code.
    let scripts = one_agent(
        r#"return { start = function() for _ = 1, 50 do llm.chat{ prompt = "tell me more, at length" } end end }"#,
    );
    std::fs::write(
        scripts.path().join("task.toml"),
        "id = \"b\"\ntype = \"t\"\ndescription = \"d\"\n",
    )
    .unwrap();
    let out = orrery_env(
        scripts.path(),
        &[
            "run",
            "task.toml",
            "--json",
            "--mock",
            "--token-budget",
            "30",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(exit::LLM_BUDGET), "{}", show(&out));
    let report = json_report(&out);
    assert_eq!(report["status"], "failed");
    assert_eq!(report["errors"][0]["kind"], "llm_budget");
    assert_eq!(report["errors"][1]["kind"], "script");
    assert!(
        report["errors"][1]["message"]
            .as_str()
            .unwrap()
            .contains("llm.chat failed (budget)"),
        "{}",
        report["errors"][1]
    );

    let summary = orrery_env(
        scripts.path(),
        &["run", "task.toml", "-q", "--mock"],
        &[("ORRERY_LLM_TOKEN_BUDGET", "30")],
    );
    assert_eq!(
        summary.status.code(),
        Some(exit::LLM_BUDGET),
        "{}",
        show(&summary)
    );
    let text = String::from_utf8_lossy(&summary.stdout);
    assert!(
        text.contains("[llm_budget] agent-1 (fatal): LLM token budget exhausted"),
        "{text}"
    );
}
