//! With `OTEL_EXPORTER_OTLP_ENDPOINT` set, the run's spans reach a local
//! OTLP/HTTP endpoint as JSON, as one tree: task, agents, callbacks, waiting
//! host calls, and LLM calls named and attributed by the GenAI conventions.

use std::collections::HashMap;

use orrery::error::exit;
use serde_json::Value;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::common::{RedisServer, Scratch, orrery_env, repo, show};

/// A span as the test reads it.
#[derive(Debug)]
struct Span {
    trace: String,
    parent: Option<String>,
    name: String,
    kind: i64,
    attributes: HashMap<String, Value>,
}

fn spans(bodies: &[Value]) -> HashMap<String, Span> {
    let mut out = HashMap::new();
    for body in bodies {
        for rs in body["resourceSpans"].as_array().unwrap() {
            let service = rs["resource"]["attributes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["key"] == "service.name")
                .map(|a| a["value"]["stringValue"].clone());
            assert_eq!(service, Some(Value::from("orrery")));
            for ss in rs["scopeSpans"].as_array().unwrap() {
                for s in ss["spans"].as_array().unwrap() {
                    let attributes = s["attributes"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|a| {
                            let v = a["value"]
                                .as_object()
                                .unwrap()
                                .values()
                                .next()
                                .unwrap()
                                .clone();
                            (a["key"].as_str().unwrap().to_string(), v)
                        })
                        .collect();
                    let parent = s["parentSpanId"].as_str().filter(|p| !p.is_empty());
                    out.insert(
                        s["spanId"].as_str().unwrap().to_string(),
                        Span {
                            trace: s["traceId"].as_str().unwrap().to_string(),
                            parent: parent.map(str::to_string),
                            name: s["name"].as_str().unwrap().to_string(),
                            kind: s["kind"].as_i64().unwrap_or(0),
                            attributes,
                        },
                    );
                }
            }
        }
    }
    out
}

/// A local OTLP/HTTP endpoint that takes every trace export.
async fn collector() -> MockServer {
    let collector = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/traces"))
        .respond_with(ResponseTemplate::new(200).set_body_string("{}"))
        .mount(&collector)
        .await;
    collector
}

#[tokio::test(flavor = "multi_thread")]
async fn spans_of_a_run_reach_a_local_otlp_endpoint_as_one_tree() {
    let collector = collector().await;
    let endpoint = collector.uri();
    let out = tokio::task::spawn_blocking(move || {
        orrery_env(
            &repo(),
            &[
                "run",
                "examples/release-notes.toml",
                "--llm-replay",
                "examples/release-notes.jsonl",
            ],
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)],
        )
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(exit::OK), "{}", show(&out));
    let bodies: Vec<Value> = collector
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(
                r.headers.get("content-type").map(|v| v.to_str().unwrap()),
                Some("application/json")
            );
            serde_json::from_slice(&r.body).expect("OTLP JSON")
        })
        .collect();
    let spans = spans(&bodies);
    let name_of = |id: &Option<String>| {
        id.as_ref()
            .and_then(|p| spans.get(p))
            .map(|s| s.name.clone())
    };

    let roots: Vec<&Span> = spans.values().filter(|s| s.parent.is_none()).collect();
    assert_eq!(roots.len(), 1, "one task span: {roots:?}");
    assert_eq!(roots[0].name, "task release-notes-001");
    assert!(
        spans.values().all(|s| s.trace == roots[0].trace),
        "one trace"
    );

    let agents: Vec<&Span> = spans
        .values()
        .filter(|s| s.name.starts_with("agent "))
        .collect();
    assert_eq!(agents.len(), 3, "{agents:?}");
    for a in &agents {
        assert_eq!(
            name_of(&a.parent).as_deref(),
            Some("task release-notes-001")
        );
    }
    let callbacks: Vec<&Span> = spans
        .values()
        .filter(|s| s.name.starts_with("callback "))
        .collect();
    assert!(callbacks.iter().any(|c| c.name == "callback start"));
    assert!(callbacks.iter().any(|c| c.name == "callback on_message"));
    for c in &callbacks {
        assert!(name_of(&c.parent).unwrap().starts_with("agent "), "{c:?}");
    }
    let chats: Vec<&Span> = spans
        .values()
        .filter(|s| s.name.starts_with("chat "))
        .collect();
    assert!(chats.len() >= 2, "{chats:?}");
    for chat in &chats {
        assert_eq!(chat.kind, 3, "SPAN_KIND_CLIENT");
        let model = chat.attributes["gen_ai.request.model"].as_str().unwrap();
        assert_eq!(chat.name, format!("chat {model}"));
        assert_eq!(chat.attributes["gen_ai.operation.name"], "chat");
        for tokens in ["gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens"] {
            // OTLP JSON writes 64-bit integers as strings.
            let n: u64 = chat.attributes[tokens].as_str().unwrap().parse().unwrap();
            assert!(n > 0, "{tokens} of {chat:?}");
        }
        assert!(
            name_of(&chat.parent).unwrap().starts_with("callback "),
            "{chat:?}"
        );
    }
    let waits: Vec<&Span> = spans
        .values()
        .filter(|s| s.name == "spawn.signal")
        .collect();
    assert_eq!(waits.len(), 1);
    assert_eq!(
        name_of(&waits[0].parent).as_deref(),
        Some("callback on_message")
    );
}

const WAITER: &str = r#"
local M = {}
function M.start(self)
  assert(fs.read("note.txt") == "hi")
  assert(exec.run("true").ok)
  blackboard.set("k", 1)
  assert(blackboard.get("k") == 1)
end
return M
"#;

/// Host calls that wait on files, programs and a Redis store are spans of
/// the callback that made them: `fs.read`, `exec.run`, and `redis` for each
/// store call that waited (the host's own ones sit under the task or agent).
#[tokio::test(flavor = "multi_thread")]
async fn waits_on_files_programs_and_the_redis_store_are_spans_of_their_callback() {
    let collector = collector().await;
    let endpoint = collector.uri();
    let out = tokio::task::spawn_blocking(move || {
        let server = RedisServer::start();
        let scratch = Scratch::new(&[("waiter.lua", WAITER)]);
        scratch.write("files/note.txt", "hi");
        scratch.write(
            "task.toml",
            "id = \"waits\"\ntype = \"test\"\ndescription = \"d\"\nagents = [\"waiter\"]\n",
        );
        scratch.write(
            "orrery.toml",
            "[roles.waiter.capabilities]\nread_files = \"files\"\ncommands = [\"true\"]\n",
        );
        let url = server.url();
        orrery_env(
            scratch.path(),
            &["run", "task.toml", "--config", "orrery.toml"],
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
                ("ORRERY_STORE", url.as_str()),
            ],
        )
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(exit::OK), "{}", show(&out));
    let bodies: Vec<Value> = collector
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| serde_json::from_slice(&r.body).expect("OTLP JSON"))
        .collect();
    let spans = spans(&bodies);
    let parent_name = |s: &Span| {
        s.parent
            .as_ref()
            .and_then(|p| spans.get(p))
            .map(|p| p.name.clone())
    };
    for name in ["fs.read", "exec.run"] {
        let found: Vec<&Span> = spans.values().filter(|s| s.name == name).collect();
        assert_eq!(found.len(), 1, "{name}: {found:?}");
        assert_eq!(
            parent_name(found[0]).as_deref(),
            Some("callback start"),
            "{name}"
        );
    }
    let redis: Vec<&Span> = spans.values().filter(|s| s.name == "redis").collect();
    assert!(!redis.is_empty(), "no redis spans");
    for r in &redis {
        assert_eq!(r.kind, 3, "SPAN_KIND_CLIENT: {r:?}");
        assert_eq!(r.attributes["db.system"], "redis", "{r:?}");
        assert!(r.parent.is_some(), "a redis span outside the task: {r:?}");
    }
    assert!(
        redis.iter().any(|r| {
            parent_name(r).as_deref() == Some("callback start")
                && r.attributes["orrery.store.call"]
                    .as_str()
                    .is_some_and(|c| c.contains("blackboard"))
        }),
        "the blackboard read is a span of its callback: {redis:?}"
    );
}

#[test]
fn an_otlp_protocol_other_than_http_json_is_bad_input_naming_the_variable() {
    let out = orrery_env(
        &repo(),
        &["run", "examples/deploy.toml"],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ],
    );
    assert_eq!(out.status.code(), Some(exit::BAD_INPUT), "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("environment variable OTEL_EXPORTER_OTLP_PROTOCOL"),
        "{stderr}"
    );
}

/// An endpoint that refuses the connection or answers an error is said once
/// on stderr (the exporter dropped the spans without a word), and the run
/// itself is not failed by it.
#[test]
fn spans_an_endpoint_refuses_are_reported_once() {
    let port = crate::common::closed_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let out = orrery_env(
        &repo(),
        &["run", "examples/deploy.toml"],
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str())],
    );
    assert_eq!(out.status.code(), Some(exit::OK), "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr
            .matches("warning: OpenTelemetry: spans were not sent")
            .count(),
        1,
        "{stderr}"
    );
}
