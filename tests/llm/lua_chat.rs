//! `llm.chat` from Lua against a real local HTTP server: answers, the request
//! on the wire, usage in the run's metrics, and each failure kind as a
//! catchable error.

use std::time::Duration;

use orrery::llm::LlmConfig;
use orrery::report::TaskStatus;
use serde_json::json;
use wiremock::matchers::body_partial_json;
use wiremock::{MockServer, ResponseTemplate};

use crate::util::*;

#[tokio::test]
async fn chat_returns_content_usage_and_decoded_json() {
    let server = MockServer::start().await;
    chat_endpoint()
        .and(body_partial_json(json!({
            "model": "test/model-a",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Give me JSON"}
            ],
            "temperature": 0.5,
            "max_tokens": 64,
            "response_format": {"type": "json_object"}
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion(
            "```json\n{\"answer\": 42, \"tags\": [\"a\", \"b\"]}\n```",
            "test/model-a-2025",
            11,
            7,
        )))
        .expect(1)
        .mount(&server)
        .await;
    let scripts = one_agent(
        r#"
        return { start = function()
          local r = llm.chat{ system = "Be brief.", prompt = "Give me JSON", model = "test/model-a",
                              temperature = 0.5, max_tokens = 64, json = true }
          task.output("result", r)
          task.output("mode", { mode = llm.mode(), available = llm.available() })
        end }
        "#,
    );
    let report = run_with_llm(
        &scripts.scripts(),
        task("chat", 10_000),
        live_config(&server),
    )
    .await;
    assert_eq!(report.status, TaskStatus::Complete, "{:#?}", report.errors);
    let result = output(&report, "result");
    assert_eq!(result["model"], "test/model-a-2025");
    assert_eq!(result["source"], "api");
    assert_eq!(
        result["usage"],
        json!({"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18})
    );
    assert_eq!(result["json"], json!({"answer": 42, "tags": ["a", "b"]}));
    assert!(result["content"].as_str().unwrap().starts_with("```json"));
    assert_eq!(
        output(&report, "mode"),
        &json!({"mode": "live", "available": true})
    );
    server.verify().await;
}

#[tokio::test]
async fn usage_is_counted_per_agent_and_per_model() {
    let server = MockServer::start().await;
    chat_endpoint()
        .and(body_partial_json(json!({"model": "model/a"})))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("a", "model/a", 10, 5)))
        .mount(&server)
        .await;
    chat_endpoint()
        .and(body_partial_json(json!({"model": "model/b"})))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("b", "model/b", 3, 1)))
        .mount(&server)
        .await;
    chat_endpoint()
        .and(body_partial_json(json!({"model": "model/broken"})))
        .respond_with(ResponseTemplate::new(400).set_body_string("no such model"))
        .mount(&server)
        .await;
    let scripts = Scratch::new(&[
        (
            "one.lua",
            r#"return { start = function()
                 llm.chat{ prompt = "x", model = "model/a" }
                 llm.chat{ prompt = "y", model = "model/a" }
                 pcall(llm.chat, { prompt = "z", model = "model/broken" })
               end }"#,
        ),
        (
            "two.lua",
            r#"return { start = function()
                 llm.chat{ prompt = "x", model = "model/a" }
                 llm.chat{ prompt = "y", model = "model/b" }
               end }"#,
        ),
    ]);
    let report = run_with_llm(
        &scripts.scripts(),
        task("usage", 10_000),
        live_config(&server),
    )
    .await;
    assert_eq!(report.status, TaskStatus::Complete, "{:#?}", report.errors);
    let metrics = serde_json::to_value(&report.metrics).unwrap();
    let llm = &metrics["llm"];
    assert_eq!(
        llm["total"],
        json!({"calls": 4, "prompt_tokens": 33, "completion_tokens": 16, "total_tokens": 49})
    );
    assert_eq!(llm["failed_calls"], 1);
    assert_eq!(llm["per_model"]["model/a"]["calls"], 3);
    assert_eq!(llm["per_model"]["model/a"]["total_tokens"], 45);
    assert_eq!(llm["per_model"]["model/b"]["total_tokens"], 4);
    assert!(
        llm["per_model"].get("model/broken").is_none(),
        "failed calls count no tokens"
    );
    let one = &llm["per_agent"]["one-1"];
    assert_eq!(
        (one["total"]["calls"].as_u64(), one["failed_calls"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(one["total"]["total_tokens"], 30);
    let two = &llm["per_agent"]["two-1"];
    assert_eq!(two["total"]["total_tokens"], 19);
    assert_eq!(two["per_model"]["model/b"]["calls"], 1);
    assert_eq!(
        metrics["host"]["llm_calls"], 5,
        "every call made, failed ones too"
    );
    assert_eq!(metrics["host"]["llm_tokens"], 49);
    // The original per-agent shape is unchanged.
    let alpha = metrics["agent_metrics"]["one-1"].as_object().unwrap();
    let mut keys: Vec<&str> = alpha.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(
        keys,
        ["errors", "messages_received", "messages_sent", "phases"]
    );
    assert!(
        report
            .summary()
            .contains("llm: 4 calls, 1 failed, 49 tokens"),
        "{}",
        report.summary()
    );
}

#[tokio::test]
async fn rate_limited_then_success() {
    let server = MockServer::start().await;
    chat_endpoint()
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "0"))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    chat_endpoint()
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("finally", "m", 2, 2)))
        .expect(1)
        .mount(&server)
        .await;
    let scripts = one_agent(
        r#"return { start = function() task.output("answer", llm.chat{ prompt = "go" }.content) end }"#,
    );
    let report = run_with_llm(
        &scripts.scripts(),
        task("retry", 10_000),
        live_config(&server),
    )
    .await;
    assert_eq!(report.status, TaskStatus::Complete, "{:#?}", report.errors);
    assert_eq!(output(&report, "answer"), "finally");
    server.verify().await;
}

/// A script that catches the failure of one call and records the error's fields.
const CATCHES: &str = r#"
return { start = function()
  local ok, err = pcall(llm.chat, { prompt = "go", timeout = 300 })
  task.output("caught", {
    ok = ok, type = type(err), kind = err.kind, message = err.message,
    status = err.status, where = err.where, text = tostring(err),
  })
end }
"#;

#[tokio::test]
async fn failures_reach_lua_as_catchable_errors_with_a_kind() {
    let cases = [
        (
            ResponseTemplate::new(500).set_body_string("upstream exploded"),
            "http",
            "HTTP 500",
        ),
        (ResponseTemplate::new(429), "rate_limited", "HTTP 429"),
        (
            ResponseTemplate::new(200)
                .set_body_json(completion("late", "m", 1, 1))
                .set_delay(Duration::from_secs(5)),
            "timeout",
            "timed out after 300 ms",
        ),
        (
            ResponseTemplate::new(200).set_body_string("<html>gateway</html>"),
            "malformed",
            "not JSON",
        ),
    ];
    for (template, kind, says) in cases {
        let server = MockServer::start().await;
        chat_endpoint().respond_with(template).mount(&server).await;
        let scripts = one_agent(CATCHES);
        let report = run_with_llm(
            &scripts.scripts(),
            task("fail", 10_000),
            live_config(&server),
        )
        .await;
        assert_eq!(
            report.status,
            TaskStatus::Complete,
            "{kind}: {:#?}",
            report.errors
        );
        let caught = output(&report, "caught");
        assert_eq!(caught["ok"], false);
        assert_eq!(caught["type"], "table");
        assert_eq!(caught["kind"], kind);
        let message = caught["message"].as_str().unwrap();
        assert!(message.contains(says), "{kind}: {message}");
        let location = format!("{}:3", scripts.scripts().join("agent.lua").display());
        assert_eq!(caught["where"], location.as_str());
        assert_eq!(
            caught["text"],
            format!("{location}: llm.chat failed ({kind}): {message}").as_str()
        );
        if kind == "http" {
            assert_eq!(caught["status"], 500);
            assert_eq!(
                server.received_requests().await.unwrap().len(),
                3,
                "500 is retried (max_retries 2) before it reaches Lua"
            );
        }
    }
}

#[tokio::test]
async fn an_uncaught_failure_fails_the_agent_at_the_calling_line() {
    let server = MockServer::start().await;
    chat_endpoint()
        .respond_with(ResponseTemplate::new(503).set_body_string("down for maintenance"))
        .mount(&server)
        .await;
    let scripts = one_agent("return { start = function()\n  llm.chat{ prompt = 'go' }\nend }\n");
    let report = run_with_llm(
        &scripts.scripts(),
        task("uncaught", 10_000),
        live_config(&server),
    )
    .await;
    assert_eq!(report.status, TaskStatus::Failed);
    let error = &report.errors[0];
    assert_eq!(error.kind, "script");
    let at = format!(
        "{}:2: llm.chat failed (http):",
        scripts.scripts().join("agent.lua").display()
    );
    assert!(
        error.message.starts_with(&at),
        "{at:?} does not start {}",
        error.message
    );
    assert!(error.message.contains("HTTP 503"), "{}", error.message);
    assert!(
        error.message.contains("down for maintenance"),
        "{}",
        error.message
    );
}

#[tokio::test]
async fn argument_errors_name_the_option() {
    let cases = [
        ("nil", "llm.chat: expected a table of options, got nil"),
        (
            "'hello'",
            "llm.chat: expected a table of options, got string",
        ),
        (
            "{}",
            "llm.chat: expected string 'prompt' or table 'messages', got nil",
        ),
        (
            "{ prompt = 3 }",
            "llm.chat: expected string 'prompt', got integer",
        ),
        (
            "{ prompt = 'x', messages = {} }",
            "llm.chat: give 'prompt' or 'messages', not both",
        ),
        ("{ messages = {} }", "llm.chat: 'messages' is empty"),
        (
            "{ messages = { 'hi' } }",
            "llm.chat: expected table messages[1]",
        ),
        (
            "{ messages = { { role = 'user' } } }",
            "llm.chat: expected string 'messages[1].content', got nil",
        ),
        (
            "{ prompt = 'x', temperture = 1 }",
            "llm.chat: unknown option 'temperture'",
        ),
        (
            "{ prompt = 'x', temperature = 'hot' }",
            "llm.chat: expected number 'temperature', got string",
        ),
        (
            "{ prompt = 'x', max_tokens = 0 }",
            "llm.chat: 'max_tokens' must be a whole number >= 1, got 0",
        ),
        (
            "{ prompt = 'x', timeout = 1.5 }",
            "llm.chat: 'timeout' must be a whole number >= 1, got 1.5",
        ),
        (
            "{ prompt = 'x', json = 'yes' }",
            "llm.chat: expected boolean 'json', got string",
        ),
        (
            "{ prompt = 'x', model = false }",
            "llm.chat: expected string 'model', got boolean",
        ),
    ];
    let mut lines = String::from("return { start = function()\n  local errors = {}\n");
    for (opts, _) in &cases {
        lines.push_str(&format!(
            "  errors[#errors + 1] = select(2, pcall(llm.chat, {opts}))\n"
        ));
    }
    lines.push_str("  task.output('errors', errors)\nend }\n");
    let scripts = one_agent(&lines);
    let report = run_with_llm(
        &scripts.scripts(),
        task("args", 10_000),
        LlmConfig::default(),
    )
    .await;
    let errors = output(&report, "errors").as_array().unwrap().clone();
    let path = scripts.scripts().join("agent.lua").display().to_string();
    for (i, (opts, expected)) in cases.iter().enumerate() {
        let got = errors[i]
            .as_str()
            .unwrap_or_else(|| panic!("{opts}: {:?}", errors[i]));
        // The position is the script line that called llm.chat.
        let at = format!("{path}:{}: ", i + 3);
        assert!(got.starts_with(&at), "{opts}: {got:?} should start {at:?}");
        assert!(got[at.len()..].starts_with(expected), "{opts}: {got:?}");
    }
}

#[tokio::test]
async fn mock_mode_answers_offline() {
    let scripts = one_agent(
        r#"return { start = function()
             local r = llm.chat{ messages = { { role = "user", content = "Make a plan to deploy" } }, json = true }
             task.output("r", { mode = llm.mode(), available = llm.available(), source = r.source,
                                first = r.json.steps[1].action })
           end }"#,
    );
    let report = run_with_llm(
        &scripts.scripts(),
        task("mock", 10_000),
        LlmConfig::default(),
    )
    .await;
    assert_eq!(
        output(&report, "r"),
        &json!({"mode": "mock", "available": false, "source": "mock", "first": "analyze"})
    );
}

#[tokio::test]
async fn a_call_blocks_only_the_calling_agent() {
    // The test runs on a single-threaded runtime: had `llm.chat` blocked the
    // thread, `other` could not run before `caller`'s answer arrived.
    let server = MockServer::start().await;
    chat_endpoint()
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(completion("slow", "m", 1, 1))
                .set_delay(Duration::from_millis(500)),
        )
        .mount(&server)
        .await;
    let scripts = Scratch::new(&[
        (
            "caller.lua",
            r#"return { start = function()
                 llm.chat{ prompt = "take your time" }
                 task.output("other_ran_during_the_call", blackboard.get("other") == true)
               end }"#,
        ),
        (
            "other.lua",
            r#"return { start = function() blackboard.set("other", true) end }"#,
        ),
    ]);
    let report = run_with_llm(
        &scripts.scripts(),
        task("blocking", 10_000),
        live_config(&server),
    )
    .await;
    assert_eq!(report.status, TaskStatus::Complete, "{:#?}", report.errors);
    assert_eq!(output(&report, "other_ran_during_the_call"), true);
}
