//! Helpers shared by the LLM tests: a live config pointing at a wiremock
//! server, request and completion builders, custom responders, and runs of
//! Lua agents (in-process or through the binary) with LLM settings.

pub use crate::common::{Backend, Scratch, closed_port, orrery_env, repo, show, task};

use std::path::{Path, PathBuf};
use std::process::Output;

use orrery::config::Config;
use orrery::llm::{ApiKey, ChatMessage, ChatRequest, LlmClient, LlmConfig, LlmError};
use orrery::report::RunReport;
use orrery::task::Task;
use serde_json::{Value, json};
use wiremock::matchers::{body_string_contains, method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// A distinctive key, so any leak is unmistakable.
pub const KEY: &str = "sk-orrery-TEST-7f3a9c1e5b2d-SECRET";

pub fn live_config(server: &MockServer) -> LlmConfig {
    LlmConfig {
        url: Some(format!("{}/v1", server.uri())),
        api_key: Some(ApiKey::new(KEY)),
        timeout_ms: 10_000,
        max_retries: 2,
        backoff_base_ms: 1,
        ..LlmConfig::default()
    }
}

pub fn client(cfg: LlmConfig) -> LlmClient {
    LlmClient::new(cfg).expect("client builds")
}

pub fn ask(text: &str) -> ChatRequest {
    ChatRequest::new(vec![
        ChatMessage::system("You are a test."),
        ChatMessage::user(text),
    ])
}

pub fn completion(content: &str, model: &str, prompt: u64, completion: u64) -> Value {
    json!({
        "id": "cmpl-1",
        "object": "chat.completion",
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    })
}

pub fn chat_endpoint() -> wiremock::MockBuilder {
    Mock::given(method("POST")).and(path("/v1/chat/completions"))
}

/// Asserts that no rendering of `err` shows the key.
pub fn assert_redacted(err: &LlmError) {
    for text in [err.to_string(), format!("{err:?}"), format!("{err:#?}")] {
        assert!(!text.contains(KEY), "key leaked: {text}");
        assert!(
            !text.contains("7f3a9c1e5b2d"),
            "part of the key leaked: {text}"
        );
    }
}

/// Answers with a template and reports each arrival on a channel, so tests
/// can wait for "the request reached the server" instead of sleeping.
pub struct Arrivals {
    pub tx: tokio::sync::mpsc::UnboundedSender<()>,
    pub template: ResponseTemplate,
}

impl Respond for Arrivals {
    fn respond(&self, _request: &Request) -> ResponseTemplate {
        let _ = self.tx.send(());
        self.template.clone()
    }
}

/// The request's Authorization header, or `<none>`.
fn authorization(request: &Request) -> &str {
    request
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("<none>")
}

/// Echoes the request's Authorization header back in the body.
pub struct EchoAuth(pub u16);

impl Respond for EchoAuth {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let auth = authorization(request);
        ResponseTemplate::new(self.0).set_body_string(format!("denied: you sent {{{auth}}}"))
    }
}

/// Answers with a completion whose content is `content` with `{auth}`
/// replaced by the request's Authorization header: a server that echoes the
/// key back in a successful answer.
pub struct EchoAuthCompletion(pub &'static str);

impl Respond for EchoAuthCompletion {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let content = self.0.replace("{auth}", authorization(request));
        ResponseTemplate::new(200).set_body_json(completion(&content, "echo/model", 5, 5))
    }
}

/// Answers with a completion naming the model the request asked for.
pub struct EchoModel;

impl Respond for EchoModel {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let body: Value = request.body_json().unwrap_or_default();
        let model = body["model"].as_str().unwrap_or("<none>").to_string();
        ResponseTemplate::new(200).set_body_json(completion("ok", &model, 1, 1))
    }
}

/// Runs `task` in-process with the scripts of `dir` and `llm` as the LLM settings.
pub async fn run_with_llm(dir: &Path, task: Task, llm: LlmConfig) -> RunReport {
    let config = Config {
        llm,
        ..Config::default()
    };
    crate::common::run_in_process(Backend::Memory, dir, task, config).await
}

/// A scratch scripts directory holding one role, `agent`, whose module is `source`.
pub fn one_agent(source: &str) -> Scratch {
    Scratch::new(&[("agent.lua", source)])
}

/// The default agents (`scripts/`) of the repository.
pub fn default_scripts() -> PathBuf {
    repo().join("scripts")
}

/// The example deployment task.
pub fn deploy_task() -> Task {
    Task::load(&repo().join("examples/deploy.toml")).expect("examples/deploy.toml loads")
}

/// An output of a run, or a panic naming the outputs there are.
pub fn output<'a>(report: &'a RunReport, name: &str) -> &'a Value {
    report.outputs.get(name).unwrap_or_else(|| {
        panic!(
            "no output '{name}'; outputs: {:?}; errors: {:#?}",
            report.outputs.keys().collect::<Vec<_>>(),
            report.errors
        )
    })
}

/// The JSON report a `--json` run printed.
pub fn json_report(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not a JSON report ({e})\n{}", show(out)))
}

/// Routes by the agents' system prompts: the planner's, the executor's and
/// the reviewer's questions each get their own answer.
pub async fn agents_server(plan: ResponseTemplate, executor: &str, review: Value) -> MockServer {
    let server = MockServer::start().await;
    chat_endpoint()
        .and(body_string_contains("You are the planner"))
        .respond_with(plan)
        .mount(&server)
        .await;
    chat_endpoint()
        .and(body_string_contains("You are the executor"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(completion(executor, "m/exec", 40, 20)),
        )
        .mount(&server)
        .await;
    chat_endpoint()
        .and(body_string_contains("You review"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion(
            &review.to_string(),
            "m/review",
            30,
            5,
        )))
        .mount(&server)
        .await;
    server
}

/// A planner's answer: `plan` as the completion's content.
pub fn plan_answer(plan: Value) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(completion(&plan.to_string(), "m/planner", 100, 50))
}
