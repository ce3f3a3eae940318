//! The API key never reaches what scripts, the blackboard, the report or the
//! logs can show, even when the endpoint echoes it back.

use orrery::llm::{ApiKey, LlmConfig};
use orrery::report::TaskStatus;
use serde_json::Value;
use wiremock::MockServer;
use wiremock::matchers::{body_string_contains, header};

use crate::util::*;

/// Every fragment of the key long enough to identify it.
fn assert_no_key(what: &str, text: &str) {
    for fragment in [KEY, "7f3a9c1e5b2d", "TEST-7f3a"] {
        assert!(
            !text.contains(fragment),
            "{what} shows the key ({fragment}):\n{text}"
        );
    }
}

/// An endpoint that echoes the Authorization header back: in a successful
/// answer, in 500 and 401 bodies, and in a 200 body that is not JSON.
async fn echoing_server() -> MockServer {
    let server = MockServer::start().await;
    let route = |marker: &str| {
        chat_endpoint()
            .and(header("authorization", format!("Bearer {KEY}").as_str()))
            .and(body_string_contains(marker))
    };
    route("echo-ok")
        .respond_with(EchoAuthCompletion("you sent {auth}"))
        .mount(&server)
        .await;
    route("echo-500")
        .respond_with(EchoAuth(500))
        .mount(&server)
        .await;
    route("echo-401")
        .respond_with(EchoAuth(401))
        .mount(&server)
        .await;
    route("echo-malformed")
        .respond_with(EchoAuth(200))
        .mount(&server)
        .await;
    server
}

/// Calls every echoing route, then gathers every string it can reach: the
/// answers and errors (raw, `tostring`, `json.encode`), all globals and
/// loaded modules, the blackboard and the metrics, into the output `seen`.
const SCAN: &str = r#"
local seen, visited = {}, {}
local function collect(v, depth)
  if type(v) == "string" then
    -- (a few library strings, such as utf8.charpattern, are not UTF-8)
    seen[#seen + 1] = utf8.len(v) and v or "<bytes>"
  elseif type(v) == "table" and not visited[v] and depth < 16 then
    visited[v] = true
    for k, x in pairs(v) do collect(k, depth + 1); collect(x, depth + 1) end
    local mt = getmetatable(v)
    if type(mt) == "table" then collect(mt, depth + 1) end
  end
end

return { start = function()
  local answer = llm.chat{ prompt = "echo-ok" }
  collect(answer, 0)
  seen[#seen + 1] = json.encode(answer)
  blackboard.set("answer", answer)
  task.output("answer", answer.content)
  for _, route in ipairs({ "echo-500", "echo-401", "echo-malformed" }) do
    local ok, err = pcall(llm.chat, { prompt = route })
    collect(err, 0)
    seen[#seen + 1] = tostring(err)
    seen[#seen + 1] = json.encode(err)
    blackboard.set("errors/" .. route, { text = tostring(err), kind = err.kind })
    log.warn("caught: " .. tostring(err))
  end
  collect(_G, 0)
  collect(package.loaded, 0)
  for _, key in ipairs(blackboard.keys("")) do collect(blackboard.get(key), 0) end
  collect(metrics.snapshot(), 0)
  task.output("seen", seen)
  llm.chat{ prompt = "echo-500 uncaught" }
end }
"#;

#[tokio::test]
async fn key_never_reaches_lua_the_blackboard_or_the_report() {
    let server = echoing_server().await;
    let scripts = one_agent(SCAN);
    let report = run_with_llm(
        &scripts.scripts(),
        task("secrets", 10_000),
        live_config(&server),
    )
    .await;

    // The key was sent, and the echoes came back redacted rather than dropped.
    assert!(!server.received_requests().await.unwrap().is_empty());
    assert_eq!(output(&report, "answer"), "you sent Bearer ***");
    let seen = output(&report, "seen").as_array().unwrap();
    assert!(
        seen.len() > 200,
        "the scan reached the globals: {} strings",
        seen.len()
    );
    let seen_text = serde_json::to_string(seen).unwrap();
    assert!(seen_text.contains("chat"), "the llm table was scanned");
    assert!(
        seen_text.contains("Bearer ***"),
        "an echo in an error was scanned"
    );
    assert_no_key("what Lua could see", &seen_text);

    // The uncaught echo failed the agent; its error is in the report.
    assert_eq!(report.status, TaskStatus::Failed);
    assert!(
        report.errors[0].message.contains("Bearer ***"),
        "{:#?}",
        report.errors
    );
    assert_no_key("the report", &serde_json::to_string(&report).unwrap());
    assert_no_key("the summary", &report.summary());
}

#[tokio::test]
async fn key_never_reaches_the_binarys_output_or_logs() {
    let server = echoing_server().await;
    let scripts = one_agent(SCAN);
    let dir = scripts.path();
    std::fs::write(
        dir.join("task.toml"),
        "id = \"secrets\"\ntype = \"t\"\ndescription = \"d\"\n",
    )
    .unwrap();
    let url = format!("{}/v1", server.uri());
    for extra in [&["--json"][..], &[]] {
        let mut args = vec!["run", "task.toml", "--llm-url", &url];
        args.extend_from_slice(extra);
        // Debug logging: the client's own log lines about each call are on too.
        let out = orrery_env(
            dir,
            &args,
            &[
                ("OPENAI_API_KEY", KEY),
                ("ORRERY_LOG", "debug"),
                ("ORRERY_LLM_BACKOFF_MS", "1"),
            ],
        );
        assert_eq!(out.status.code(), Some(3), "{}", show(&out));
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            all.contains("Bearer ***"),
            "the echoes are shown redacted:\n{all}"
        );
        assert!(
            all.contains("LLM call failed"),
            "debug log lines are on:\n{all}"
        );
        assert_no_key("the binary's stdout and stderr", &all);
    }
}

#[tokio::test]
async fn default_agents_never_show_the_key() {
    // Every answer is an error body quoting the key: Alpha's fallback
    // reason, Gamma's second opinion and the logs all quote it redacted.
    let server = MockServer::start().await;
    chat_endpoint()
        .respond_with(EchoAuth(500))
        .mount(&server)
        .await;
    let out = orrery_env(
        &repo(),
        &[
            "run",
            "examples/deploy.toml",
            "--json",
            "--llm-url",
            &format!("{}/v1", server.uri()),
        ],
        &[("OPENROUTER_API_KEY", KEY), ("ORRERY_LLM_MAX_RETRIES", "0")],
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let report = json_report(&out);
    assert_eq!(report["outputs"]["plan"]["source"], "fallback");
    let reason = report["outputs"]["plan"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("HTTP 500") && reason.contains("Bearer ***"),
        "{reason}"
    );
    let opinion = &report["outputs"]["validation"]["second_opinion"];
    assert!(
        opinion["error"].as_str().unwrap().contains("Bearer ***"),
        "{opinion}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "LLM plan unusable, using the rule-based planner: the LLM call failed (http)"
        ),
        "Alpha logs why it fell back:\n{stderr}"
    );
    assert_no_key("stdout", &String::from_utf8_lossy(&out.stdout));
    assert_no_key("stderr", &stderr);
}

#[test]
fn resolved_config_serializes_without_the_key() {
    let config = orrery::config::Config {
        llm: LlmConfig {
            api_key: Some(ApiKey::new(KEY)),
            ..LlmConfig::default()
        },
        ..orrery::config::Config::default()
    };
    let shown: Value = serde_json::to_value(&config).unwrap();
    assert_eq!(shown["llm"]["model"], "anthropic/claude-sonnet-4");
    assert_no_key("the serialized config", &shown.to_string());
    assert_no_key("the config's Debug", &format!("{config:?}"));
}
