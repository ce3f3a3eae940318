//! The hostile-script suite: each case runs the real `orrery` binary on a
//! task with one hostile agent beside a witness, and checks what must hold
//! whatever a script does:
//!
//! - the run ends by itself, within the task's timeout plus a margin;
//! - the process exits with a code below 128 (no crash, no signal);
//! - the marker file every hostile script tries to create does not exist;
//! - the LLM API key (given to the process, and echoed back by the test's LLM
//!   endpoint) shows nowhere: stdout, stderr, the report, any file;
//! - nothing the hostile script writes forges a line of the host's log, and
//!   no script ever reports `ESCAPED`;
//! - the witness agent ran to its end and its stored value is intact.
//!
//! Each case then checks its own outcome (the error kind and message).
//! Cases are grouped by class in the modules beside this file.

mod budget;
mod capabilities;
mod confinement;
mod escapes;
mod files;
mod memory;
mod secrets;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::common::Scratch;

/// The API key every case gives the process.
pub const KEY: &str = "sk-hostile-5c1d0e8f2a7b4e96";

/// The task's timeout (ms); a case must end well before it plus [`MARGIN`].
pub const TASK_TIMEOUT_MS: u64 = 10_000;

/// How much later than the task's timeout a run may end.
pub const MARGIN: Duration = Duration::from_secs(5);

/// Starts after the hostile agent, writes a value, and checks it is intact
/// at its end; outputs `witness = "done"` when it is.
const WITNESS: &str = r#"
local M = {}
function M.start(self)
  blackboard.set("witness/seed", "v1")
  sleep(150)
  local ok = blackboard.get("witness/seed") == "v1"
  task.output("witness", ok and "done" or "seed changed")
end
return M
"#;

/// One hostile case.
#[derive(Default)]
pub struct Case<'a> {
    /// `scripts/hostile.lua`.
    pub hostile: &'a str,
    /// More files, relative to the case's directory (`scripts/x.lua`, `data/f`).
    pub files: &'a [(&'a str, &'a str)],
    /// Lines added to `orrery.toml` (settings at its top).
    pub config: &'a str,
    /// The body of `[roles.hostile.capabilities]`, when granted anything.
    pub grant: &'a str,
    /// Extra command-line arguments.
    pub args: &'a [&'a str],
    /// Extra environment variables.
    pub env: &'a [(&'a str, String)],
    /// Agents to start (default: hostile and witness).
    pub agents: &'a [&'a str],
    /// Does this case expect the witness to run (false for bad input: nothing runs).
    pub no_witness: bool,
    /// Makes what files cannot say (FIFOs, links) in the case's directory.
    pub prepare: Option<fn(&Path)>,
}

/// What a run produced.
pub struct Outcome {
    /// The exit code.
    pub code: i32,
    /// The `--json` report (Null when the run printed none).
    pub report: Value,
    /// Standard output and error.
    pub stdout: String,
    pub stderr: String,
    /// The case's directory (kept until the outcome is dropped).
    pub scratch: Scratch,
}

impl Outcome {
    /// The fatal error of `agent`: (kind, message).
    pub fn fatal(&self, agent: &str) -> (String, String) {
        let errors = self.report["errors"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        errors
            .iter()
            .find(|e| e["agent"] == agent && e["fatal"] == true)
            .map(|e| {
                (
                    e["kind"].as_str().unwrap_or_default().to_string(),
                    e["message"].as_str().unwrap_or_default().to_string(),
                )
            })
            .unwrap_or_else(|| panic!("no fatal error of {agent}\n{}", self.show()))
    }

    /// Asserts that `agent` failed with `kind` and a message containing `text`.
    pub fn failed(&self, agent: &str, kind: &str, text: &str) {
        let (k, message) = self.fatal(agent);
        assert_eq!(k, kind, "{}", self.show());
        assert!(message.contains(text), "expected {text:?} in {message:?}");
    }

    /// The output `name` of the run.
    pub fn output(&self, name: &str) -> &Value {
        &self.report["outputs"][name]
    }

    /// Asserts that the hostile agent ran to its end without an error.
    pub fn completed(&self) {
        let errors = self.report["errors"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(
            !errors.iter().any(|e| e["agent"] == "hostile-1"),
            "{}",
            self.show()
        );
    }

    /// The run for assertion messages.
    pub fn show(&self) -> String {
        format!(
            "exit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// The LLM endpoint every case talks to: it answers every chat call with a
/// completion that echoes the request's Authorization header.
pub async fn echo_endpoint() -> MockServer {
    struct Echo;
    impl Respond for Echo {
        fn respond(&self, request: &Request) -> ResponseTemplate {
            let auth = request
                .headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("<none>");
            ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "model": format!("echo {auth}"),
                "choices": [{ "message": { "content": format!("you sent {auth}") } }],
                "usage": { "prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2 }
            }))
        }
    }
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(Echo)
        .mount(&server)
        .await;
    server
}

/// Writes the case's files, runs the binary, and checks everything that
/// must hold for every case (see the module docs).
pub async fn run(case: Case<'_>) -> Outcome {
    let llm = echo_endpoint().await;
    run_with_llm(case, &format!("{}/v1", llm.uri())).await
}

/// [`run`] with the LLM endpoint at `llm_url`.
pub async fn run_with_llm(case: Case<'_>, llm_url: &str) -> Outcome {
    let scratch = Scratch::new(&[("hostile.lua", case.hostile), ("witness.lua", WITNESS)]);
    for (name, text) in case.files {
        scratch.write(name, text);
    }
    if let Some(prepare) = case.prepare {
        prepare(scratch.path());
    }
    let marker = scratch.path().join("MARKER");
    let agents = if case.agents.is_empty() {
        vec!["hostile", "witness"]
    } else {
        case.agents.to_vec()
    };
    let agents = agents
        .iter()
        .map(|a| format!("{a:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    scratch.write(
        "task.toml",
        &format!(
            "id = \"hostile\"\ntype = \"test\"\ndescription = \"a hostile case\"\n\
             timeout = {TASK_TIMEOUT_MS}\nagents = [{agents}]\n\n[inputs]\nmarker = {:?}\n\
             dir = {:?}\n",
            marker.display().to_string(),
            scratch.path().display().to_string()
        ),
    );
    let mut config = format!(
        "callback_timeout = 300\nmemory_limit = 16777216\nmax_value_bytes = 65536\n{}\n",
        case.config
    );
    if !case.grant.is_empty() {
        config.push_str(&format!("\n[roles.hostile.capabilities]\n{}\n", case.grant));
    }
    scratch.write("orrery.toml", &config);

    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_orrery"));
    command
        .args(["run", "task.toml", "--json", "--scripts", "scripts"])
        .args(case.args)
        .current_dir(scratch.path())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("ORRERY_LOG", "warn,orrery::script=info")
        .env("ORRERY_LLM_KEY", KEY)
        .env("ORRERY_LLM_URL", llm_url)
        .envs(case.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let started = Instant::now();
    let limit = Duration::from_millis(TASK_TIMEOUT_MS) + MARGIN;
    let output = tokio::time::timeout(limit, command.output())
        .await
        .unwrap_or_else(|_| panic!("the run did not end within {limit:?}"))
        .expect("the orrery binary starts");
    let elapsed = started.elapsed();
    let outcome = Outcome {
        code: output.status.code().unwrap_or(-1),
        report: serde_json::from_slice(&output.stdout).unwrap_or(Value::Null),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        scratch,
    };
    assert!(elapsed < limit, "took {elapsed:?}\n{}", outcome.show());
    assert!(
        (0..128).contains(&outcome.code),
        "exit code {} (a crash or a signal)\n{}",
        outcome.code,
        outcome.show()
    );
    assert!(
        !marker.exists(),
        "the marker file exists\n{}",
        outcome.show()
    );
    for (what, text) in [("stdout", &outcome.stdout), ("stderr", &outcome.stderr)] {
        assert_no_key(what, text);
        assert!(
            !text.contains("ESCAPED"),
            "{what} reports an escape\n{}",
            outcome.show()
        );
        for line in text.lines() {
            assert!(
                !line.starts_with("FORGED"),
                "{what} has a forged host line {line:?}\n{}",
                outcome.show()
            );
        }
    }
    let given: Vec<PathBuf> = case
        .files
        .iter()
        .map(|(f, _)| outcome.scratch.path().join(f))
        .collect();
    for file in files_below(outcome.scratch.path()) {
        if given.contains(&file) {
            continue; // a file the case itself wrote (a key file)
        }
        if let Ok(text) = std::fs::read(&file) {
            assert_no_key(&file.display().to_string(), &String::from_utf8_lossy(&text));
        }
    }
    if !case.no_witness {
        assert_eq!(
            outcome.output("witness"),
            &Value::String("done".into()),
            "the witness did not finish with its value intact\n{}",
            outcome.show()
        );
        assert_ne!(outcome.report["status"], "timeout", "{}", outcome.show());
    }
    outcome
}

/// Fails when `text` holds the key or a recognisable part of it.
pub fn assert_no_key(what: &str, text: &str) {
    for fragment in [KEY, &KEY[3..], &KEY[KEY.len() - 12..]] {
        assert!(!text.contains(fragment), "{what} shows the key:\n{text}");
    }
}

fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            out.extend(files_below(&path));
        } else if kind.is_file() {
            out.push(path);
        }
    }
    out
}

/// Makes a FIFO at `path`.
pub fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(
        unsafe { libc::mkfifo(c.as_ptr(), 0o600) },
        0,
        "mkfifo {}",
        path.display()
    );
}

/// A role script whose `start` runs `body` (with `MARKER` and `escaped(what)` at hand).
pub fn start(body: &str) -> String {
    format!(
        "local MARKER = task.inputs.marker\n\
         local function escaped(what) task.output('escaped', 'ESCAPED ' .. what) end\n\
         local M = {{}}\nfunction M.start(self)\n{body}\nend\nreturn M\n"
    )
}
