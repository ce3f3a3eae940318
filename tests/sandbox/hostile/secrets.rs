//! Secrets: the LLM API key, given to the process, never reaches a script,
//! a program a script starts, a file it can open, or the output; the LLM
//! client sends it nowhere but the configured endpoint. (The harness checks
//! every run's output and files for the key; these cases try hardest.)

use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::{Case, KEY, assert_no_key, run, run_with_llm, start};

/// A shell may run: the strongest program a role could be granted.
const SHELL: &str = r#"commands = ["sh"]"#;

#[tokio::test]
async fn an_echoing_endpoint_is_redacted() {
    let outcome = run(Case {
        hostile: &start(
            r#"
  local answer = llm.chat{ prompt = "hello" }
  task.output("content", answer.content)
  task.output("model", answer.model)
  log.info(answer.content, answer.model)
"#,
        ),
        ..Case::default()
    })
    .await;
    outcome.completed();
    assert_eq!(outcome.output("content"), "you sent Bearer ***");
}

#[tokio::test]
async fn a_granted_program_cannot_read_the_hosts_environment() {
    let outcome = run(Case {
        hostile: &start(
            r#"
  local r = exec.run("sh", { "-c", "cat /proc/$PPID/environ /proc/$PPID/task/*/environ; env; cat /proc/self/environ" })
  task.output("seen", r.stdout .. r.stderr)
"#,
        ),
        grant: SHELL,
        ..Case::default()
    })
    .await;
    outcome.completed();
    let seen = outcome
        .output("seen")
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_no_key("the program's output", &seen);
    assert!(seen.contains("Permission denied"), "{seen}");
}

#[tokio::test]
async fn a_granted_program_cannot_read_the_hosts_memory() {
    // It runs without capabilities (root included) beside a non-dumpable host.
    let outcome = run(Case {
        hostile: &start(
            r#"
  local r = exec.run("sh", { "-c", [[
    grep Cap /proc/self/status
    head -c 200 /proc/$PPID/maps
    dd if=/proc/$PPID/mem bs=4096 count=1 skip=1 2>&1 | head -c 200
    grep -a -o 'sk-[a-z0-9-]*' /proc/$PPID/mem 2>&1 | head -c 200
  ]] })
  task.output("seen", r.stdout .. r.stderr)
"#,
        ),
        grant: SHELL,
        ..Case::default()
    })
    .await;
    outcome.completed();
    let seen = outcome
        .output("seen")
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_no_key("the program's output", &seen);
    assert!(seen.contains("CapEff:\t0000000000000000"), "{seen}");
    assert!(seen.contains("Permission denied"), "{seen}");
}

#[tokio::test]
async fn a_granted_program_gets_an_empty_environment() {
    let outcome = run(Case {
        hostile: &start(
            r#"
  local r = exec.run("sh", { "-c", "env" })
  task.output("env", r.stdout)
"#,
        ),
        grant: SHELL,
        ..Case::default()
    })
    .await;
    outcome.completed();
    let env = outcome.output("env").as_str().unwrap_or_default();
    for line in env.lines() {
        assert!(
            ["PATH=", "PWD=", "SHLVL=", "_="]
                .iter()
                .any(|p| line.starts_with(p)),
            "{line}"
        );
    }
}

#[tokio::test]
async fn fs_cannot_read_proc_sys_or_dev_even_granted_the_root() {
    let outcome = run(Case {
        hostile: &start(
            r#"
  for _, p in ipairs({ "proc/self/environ", "proc/self/mem", "proc/1/environ",
                       "sys/kernel/notes", "dev/zero", "dev/urandom", "proc/self/fd/0" }) do
    local ok, got = pcall(fs.read, p)
    if ok then escaped("read /" .. p) end
  end
  if pcall(fs.list, "proc") then escaped("listed /proc") end
"#,
        ),
        grant: r#"read_files = "/""#,
        ..Case::default()
    })
    .await;
    outcome.completed();
}

#[tokio::test]
async fn fs_cannot_read_the_key_file() {
    let outcome = run(Case {
        hostile: &start(
            r#"
  local ok, got = pcall(fs.read, "secret/key")
  if ok then escaped("read the key file") end
  task.output("error", tostring(got))
"#,
        ),
        files: &[("data/secret/key", KEY)],
        grant: r#"read_files = "data""#,
        env: &[
            ("ORRERY_LLM_KEY_FILE", "data/secret/key".into()),
            ("ORRERY_LLM_KEY", String::new()),
        ],
        ..Case::default()
    })
    .await;
    outcome.completed();
    let error = outcome.output("error").as_str().unwrap_or_default();
    assert!(error.contains("holds the LLM API key"), "{error}");
}

#[tokio::test]
async fn a_redirecting_endpoint_never_gets_the_key_sent_on() {
    // The endpoint redirects to another server; the client follows no
    // redirect, so the other server sees no request at all.
    let elsewhere = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&elsewhere)
        .await;
    let redirector = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(
            ResponseTemplate::new(307)
                .insert_header("location", format!("{}/steal", elsewhere.uri())),
        )
        .mount(&redirector)
        .await;
    let outcome = run_with_llm(
        Case {
            hostile: &start(
                r#"
  local ok, err = pcall(llm.chat, { prompt = "hello" })
  task.output("error", tostring(err))
"#,
            ),
            ..Case::default()
        },
        &format!("{}/v1", redirector.uri()),
    )
    .await;
    outcome.completed();
    assert!(
        elsewhere
            .received_requests()
            .await
            .unwrap_or_default()
            .is_empty(),
        "a request followed the redirect"
    );
    let error = outcome.output("error").as_str().unwrap_or_default();
    assert!(error.contains("redirects are not followed"), "{error}");
}

#[tokio::test]
async fn a_key_given_twice_is_refused_at_start() {
    let outcome = run(Case {
        hostile: &start(""),
        files: &[("keyfile", "sk-other-0123456789\n")],
        env: &[("ORRERY_LLM_KEY_FILE", "keyfile".into())],
        no_witness: true,
        ..Case::default()
    })
    .await;
    assert_eq!(outcome.code, 2, "{}", outcome.show());
    assert!(
        outcome
            .stderr
            .contains("ORRERY_LLM_KEY_FILE and ORRERY_LLM_KEY: both are set"),
        "{}",
        outcome.show()
    );
}

#[tokio::test]
async fn an_unreadable_key_file_is_refused_at_start() {
    let outcome = run(Case {
        hostile: &start(""),
        env: &[
            ("ORRERY_LLM_KEY_FILE", "missing".into()),
            ("ORRERY_LLM_KEY", String::new()),
        ],
        no_witness: true,
        ..Case::default()
    })
    .await;
    assert_eq!(outcome.code, 2, "{}", outcome.show());
    assert!(
        outcome
            .stderr
            .contains("environment variable ORRERY_LLM_KEY_FILE: missing: cannot read"),
        "{}",
        outcome.show()
    );
}

#[tokio::test]
async fn a_key_file_replaces_the_environment_variable() {
    // The key from ORRERY_LLM_KEY_FILE is the one sent; the endpoint echoes
    // it, redacted.
    let outcome = run(Case {
        hostile: &start(
            r#"
  task.output("content", llm.chat{ prompt = "hello" }.content)
"#,
        ),
        files: &[("keyfile", "sk-from-the-file-0123456789\n")],
        env: &[
            ("ORRERY_LLM_KEY_FILE", "keyfile".into()),
            // The harness sets ORRERY_LLM_KEY too; both at once is an error,
            // so this case clears it through an empty value.
            ("ORRERY_LLM_KEY", String::new()),
        ],
        ..Case::default()
    })
    .await;
    outcome.completed();
    assert_eq!(outcome.output("content"), "you sent Bearer ***");
    assert!(
        !outcome.stdout.contains("sk-from-the-file"),
        "{}",
        outcome.show()
    );
}

/// A key pipe no program writes into (fed once, for an earlier command) is
/// refused after a short wait, naming the variable; it held every command,
/// even `orrery check`, for ever. A pipe written a moment later is read.
#[test]
fn a_key_pipe_without_a_writer_is_refused_and_one_fed_late_is_read() {
    use std::time::Duration;

    use crate::common::{Scratch, spawn_orrery};

    let scratch = Scratch::new(&[("a.lua", "return { start = function() end }")]);
    let fifo = scratch.path().join("keypipe");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let env = [("ORRERY_LLM_KEY_FILE", "keypipe"), ("ORRERY_LLM_KEY", "")];
    let done =
        spawn_orrery(scratch.path(), &["check", "scripts"], &env).finish(Duration::from_secs(60));
    assert_eq!(done.code, Some(2), "{}", done.show());
    assert!(
        done.stderr.contains(
            "environment variable ORRERY_LLM_KEY_FILE: keypipe: a pipe no program wrote a key into"
        ),
        "{}",
        done.show()
    );

    let writer = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(500));
            std::fs::write(&fifo, "sk-through-a-pipe-0123456789\n").unwrap();
        })
    };
    let done =
        spawn_orrery(scratch.path(), &["check", "scripts"], &env).finish(Duration::from_secs(60));
    writer.join().unwrap();
    assert_eq!(done.code, Some(0), "{}", done.show());
}
