//! Where the LLM settings come from (config file < environment < flags; the
//! key from the environment only) and the errors for unusable ones.

use orrery::error::exit;
use orrery::llm::{ApiKey, LlmConfig};
use wiremock::MockServer;

use crate::util::*;

const ASKS_MODEL: &str = r#"
return { start = function()
  local r = llm.chat{ prompt = "which model?" }
  task.output("answer", { model = r.model, source = r.source, mode = llm.mode() })
end }
"#;

#[tokio::test]
async fn flags_beat_the_environment_which_beats_the_config_file() {
    let server = MockServer::start().await;
    chat_endpoint().respond_with(EchoModel).mount(&server).await;
    let scripts = one_agent(ASKS_MODEL);
    scripts.write(
        "task.toml",
        "id = \"s\"\ntype = \"t\"\ndescription = \"d\"\n",
    );
    scripts.write(
        "orrery.toml",
        &format!(
            "[llm]\nurl = \"{}/v1\"\nmodel = \"file/model\"\n",
            server.uri()
        ),
    );
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let out = orrery_env(
            scripts.path(),
            &[&["run", "task.toml", "--json", "-q"], args].concat(),
            env,
        );
        assert_eq!(out.status.code(), Some(0), "{}", show(&out));
        json_report(&out)["outputs"]["answer"].clone()
    };
    let from_file = run(&[], &[]);
    assert_eq!(
        (
            from_file["model"].as_str(),
            from_file["source"].as_str(),
            from_file["mode"].as_str()
        ),
        (Some("file/model"), Some("api"), Some("live"))
    );
    let env = [("ORRERY_LLM_MODEL", "env/model")];
    assert_eq!(run(&[], &env)["model"], "env/model");
    assert_eq!(run(&["--model", "flag/model"], &env)["model"], "flag/model");
    assert_eq!(
        run(&["--mock"], &env)["source"],
        "mock",
        "--mock wins over a url"
    );
    assert_eq!(run(&[], &[("ORRERY_LLM_MOCK", "yes")])["source"], "mock");
}

#[test]
fn a_service_key_alone_picks_its_endpoint() {
    let vars = |pairs: &'static [(&'static str, &'static str)]| {
        move |name: &str| {
            pairs
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        }
    };
    let router = LlmConfig::default().with_key_from_vars(vars(&[("OPENROUTER_API_KEY", "r-key")]));
    assert_eq!(router.url.as_deref(), Some("https://openrouter.ai/api/v1"));
    assert_eq!(router.api_key, Some(ApiKey::new("r-key")));
    let openai = LlmConfig::default().with_key_from_vars(vars(&[("OPENAI_API_KEY", "o-key")]));
    assert_eq!(openai.url.as_deref(), Some("https://api.openai.com/v1"));
    let own = LlmConfig::default().with_key_from_vars(vars(&[("ORRERY_LLM_KEY", "k")]));
    assert_eq!(
        (own.url, own.api_key),
        (None, Some(ApiKey::new("k"))),
        "ORRERY_LLM_KEY names no service"
    );
    let local = LlmConfig {
        url: Some("http://127.0.0.1:11434/v1".into()),
        ..LlmConfig::default()
    }
    .with_key_from_vars(vars(&[("OPENAI_API_KEY", "o-key")]));
    assert_eq!(
        local.url.as_deref(),
        Some("http://127.0.0.1:11434/v1"),
        "a configured url stays"
    );
    let none = LlmConfig::default().with_key_from_vars(vars(&[]));
    assert_eq!((none.url, none.api_key), (None, None));
}

/// Flags, environment variables, and what stderr must say.
type Case = (
    &'static [&'static str],
    &'static [(&'static str, &'static str)],
    &'static str,
);

#[test]
fn unusable_llm_settings_are_bad_input_naming_the_culprit() {
    let scripts = one_agent("return { start = function() end }");
    scripts.write(
        "task.toml",
        "id = \"s\"\ntype = \"t\"\ndescription = \"d\"\n",
    );
    scripts.write(
        "bad.jsonl",
        "{\"request\": {\"messages\": []}, \"response\": {\"content\": \"x\"}}\n{\"request\": 1}\n",
    );
    scripts.write("key.toml", "[llm]\napi_key = \"sk-in-a-file\"\n");
    scripts.write("typo.toml", "[llm]\nmodle = \"x\"\n");
    let cases: [Case; 12] = [
        (
            &["--llm-url", "ftp://example.com"],
            &[],
            "LLM settings: LLM url \"ftp://example.com\" is not an http:// or https:// URL",
        ),
        // Credentials in a URL would be shown wherever the URL is: refused,
        // and not repeated in the refusal.
        (
            &["--llm-url", "http://user:s3cret@127.0.0.1:1/v1"],
            &[],
            "LLM settings: LLM url http://127.0.0.1:1/v1 carries credentials (user:password@)",
        ),
        (
            &["--llm-url", "http://127.0.0.1:99999/v1"],
            &[],
            "LLM settings: LLM url \"http://127.0.0.1:99999/v1\" is not a URL: invalid port number",
        ),
        (
            &["--llm-url", "http://"],
            &[],
            "LLM settings: LLM url \"http://\" is not a URL: empty host",
        ),
        (
            &["--llm-replay", "missing.jsonl"],
            &[],
            "LLM settings: replay file missing.jsonl: cannot read it",
        ),
        (
            &["--llm-replay", "bad.jsonl"],
            &[],
            "LLM settings: replay file bad.jsonl:2: not a replay entry",
        ),
        (
            &["--llm-record", "no/such/dir/run.jsonl"],
            &[],
            "LLM settings: cannot open the record file no/such/dir/run.jsonl",
        ),
        (
            &["--config", "key.toml"],
            &[],
            "error: key.toml:2: the LLM API key is not read from files; set ORRERY_LLM_KEY, OPENAI_API_KEY, OPENROUTER_API_KEY in the environment",
        ),
        (
            &["--config", "typo.toml"],
            &[],
            "error: typo.toml:2: unknown field `modle`",
        ),
        (
            &[],
            &[("ORRERY_LLM_TIMEOUT_MS", "soon")],
            "error: environment: ORRERY_LLM_TIMEOUT_MS=\"soon\" is not a valid non-negative whole number",
        ),
        (
            &["--token-budget", "0"],
            &[],
            "error: flag --token-budget: setting llm.token_budget: must be greater than 0",
        ),
        (
            &["--mock", "--llm-replay", "bad.jsonl"],
            &[],
            "cannot be used with",
        ),
    ];
    for (args, env, expected) in cases {
        let out = orrery_env(scripts.path(), &[&["run", "task.toml"], args].concat(), env);
        assert_eq!(
            out.status.code(),
            Some(exit::BAD_INPUT),
            "{args:?}\n{}",
            show(&out)
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(expected),
            "{args:?}: {expected:?} not in\n{stderr}"
        );
        assert!(!stderr.contains("sk-in-a-file"), "{stderr}");
        assert!(!stderr.contains("s3cret"), "{stderr}");
    }
}
