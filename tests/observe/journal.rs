//! The journal says what the report says: every count of the report
//! recounted from the journal's entries, on the default agents, on an LLM
//! run, and on a hostile run with failing handlers, dead letters, locks and
//! a failing agent, on both stores. Plus `orrery report` and bad input.

use std::path::Path;

use orrery::coordination::journal::{Entry, Event};
use orrery::error::exit;
use serde_json::Value;

use crate::common::{RedisServer, Scratch, orrery, orrery_env, repo, show};
use crate::util::{count, of, parse_lines, phases, read_journal};

/// Checks every figure of `report` against `entries`, the journal of the
/// same run (one process).
pub fn assert_journal_matches_report(report: &Value, entries: &[Entry]) {
    // Numbered from 1 without a gap, in order, one run from start to end.
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(e.seq, i as u64 + 1, "entry {i} is out of sequence: {e:?}");
    }
    assert!(
        matches!(
            entries.first().map(|e| &e.event),
            Some(Event::RunStarted { .. })
        ),
        "the journal starts with run_started: {:?}",
        entries.first()
    );
    let Some(Event::RunEnded {
        status,
        errors,
        metrics,
        ..
    }) = entries.last().map(|e| &e.event)
    else {
        panic!("the journal ends with run_ended: {:?}", entries.last());
    };
    assert_eq!(report["status"], Value::from(status.as_str()));
    assert_eq!(report["metrics"], metrics.clone().unwrap_or_default());
    assert_eq!(report["errors"].as_array().unwrap().len(), *errors);

    let m = &report["metrics"];
    for (id, a) in m["agent_metrics"].as_object().unwrap() {
        let sent = count(entries, |e| {
            of(e, id) && matches!(e.event, Event::MessageSent { .. })
        });
        assert_eq!(a["messages_sent"], sent, "messages sent by {id}");
        // Every delivery ends handled, given back, dead-lettered, or released with its agent.
        let settled = count(entries, |e| {
            of(e, id)
                && matches!(
                    e.event,
                    Event::MessageHandled { .. }
                        | Event::MessageGivenBack { .. }
                        | Event::MessageDeadLettered { .. }
                )
        });
        let released: u64 = entries
            .iter()
            .filter(|e| of(e, id))
            .map(|e| match e.event {
                Event::MessagesReleased { count } => count as u64,
                _ => 0,
            })
            .sum();
        assert_eq!(
            a["messages_received"],
            settled + released,
            "messages received by {id}"
        );
        let expected: Vec<String> = serde_json::from_value(a["phases"].clone()).unwrap();
        assert_eq!(phases(entries, id), expected, "phases of {id}");
    }
    let writes = count(entries, |e| {
        matches!(
            e.event,
            Event::BlackboardWrite { .. } | Event::BlackboardDelete { .. }
        )
    });
    // A write a server refused is journaled as sent, then as failed.
    let failed = count(entries, |e| {
        matches!(e.event, Event::BlackboardWriteFailed { .. })
    });
    assert_eq!(m["blackboard_writes"], writes - failed, "blackboard writes");
    let spawns = count(entries, |e| {
        matches!(
            e.event,
            Event::Spawned {
                parent: Some(_),
                ..
            }
        )
    });
    assert_eq!(m["spawn_events"], spawns, "spawn events");
    let error_entries = count(entries, |e| matches!(e.event, Event::Error { .. }));
    assert_eq!(
        report["errors"].as_array().unwrap().len() as u64,
        error_entries,
        "errors: {}",
        report["errors"]
    );
    let host = &m["host"];
    let llm_calls = count(entries, |e| matches!(e.event, Event::LlmCall { .. }));
    assert_eq!(host["llm_calls"], llm_calls, "LLM calls");
    let tokens: u64 = entries
        .iter()
        .map(|e| match e.event {
            Event::LlmCall {
                input_tokens,
                output_tokens,
                ..
            } => input_tokens + output_tokens,
            _ => 0,
        })
        .sum();
    assert_eq!(host["llm_tokens"], tokens, "LLM tokens");
    let reloads = count(
        entries,
        |e| matches!(&e.event, Event::Reload { change, .. } if change != "removed"),
    );
    assert_eq!(host["reloads"], reloads, "reloads");
    let refused = count(entries, |e| matches!(e.event, Event::ReloadRefused { .. }));
    assert_eq!(host["reload_errors"], refused, "refused reloads");
}

/// Runs `orrery run args... --json --journal J` in `dir`; the report and the journal.
fn run_with_journal(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (Value, Vec<Entry>) {
    let journal = tempfile::NamedTempFile::new().unwrap();
    let path = journal.path().to_str().unwrap();
    let mut all = vec!["run"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--json", "--journal", path]);
    let out = orrery_env(dir, &all, env);
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON report ({e}):\n{}", show(&out)));
    (report, read_journal(journal.path()))
}

#[test]
fn the_journal_of_the_default_agents_counts_what_the_report_counts() {
    let (report, entries) = run_with_journal(&repo(), &["examples/deploy.toml"], &[]);
    assert_eq!(report["status"], "complete", "{report}");
    assert_journal_matches_report(&report, &entries);
    // The values are there for the live view, and the host of every entry.
    assert!(entries.iter().any(|e| matches!(
        &e.event,
        Event::BlackboardWrite { key, value: Some(_), .. } if key == "plan"
    )));
    assert!(entries.iter().all(|e| e.host == entries[0].host));
}

#[test]
fn the_journal_counts_llm_calls_and_tokens_without_prompts_unless_asked() {
    let args = [
        "examples/release-notes.toml",
        "--llm-replay",
        "examples/release-notes.jsonl",
    ];
    let (report, entries) = run_with_journal(&repo(), &args, &[]);
    assert_journal_matches_report(&report, &entries);
    let calls: Vec<&Event> = entries
        .iter()
        .map(|e| &e.event)
        .filter(|e| matches!(e, Event::LlmCall { .. }))
        .collect();
    assert!(calls.len() >= 2, "{calls:?}");
    for call in &calls {
        let Event::LlmCall {
            source,
            input_tokens,
            prompt,
            answer,
            ..
        } = call
        else {
            unreachable!()
        };
        assert_eq!(source.as_deref(), Some("replay"));
        assert!(*input_tokens > 0);
        assert!(prompt.is_none() && answer.is_none(), "{call:?}");
    }
    let mut with_prompts = args.to_vec();
    with_prompts.push("--journal-prompts");
    let (_, entries) = run_with_journal(&repo(), &with_prompts, &[]);
    assert!(entries.iter().any(|e| matches!(
        &e.event,
        Event::LlmCall { prompt: Some(p), answer: Some(_), .. } if !p.is_empty()
    )));
}

const BOSS: &str = r#"
local M = {}
function M.start(self)
  blackboard.set("a", 1)
  blackboard.set("big", string.rep("x", 5000))
  blackboard.delete("a")
  blackboard.delete("never-there")
  assert(blackboard.cas("c", nil, { n = 1 }))
  lock.with("l", function(g) blackboard.set("locked", g.fence) end)
  local g = lock.acquire("m", { ttl = 10000 })
  lock.release(g)
  assert(lock.acquire("m", { ttl = 10000, wait = 0 }))
  assert(lock.acquire("m", { wait = 0 }) == nil)
  spawn.agent("worker")
  spawn.agent("failer")
  bus.send("worker", "job", { n = 1 })
  bus.send("worker", "flaky", { n = 2 })
  bus.send("worker", "poison", {})
  bus.send("worker", "done", {})
end
return M
"#;

/// Ends once "flaky" went through on its second delivery, "poison" failed
/// its last, and "done" came, whatever the order of the redeliveries.
const WORKER: &str = r#"
local M = {}
function M.start(self) self.flaky, self.poison = 0, 0 end
local function maybe_finish(self)
  if self.done and self.flaky == 2 and self.poison == 2 then agent.finish() end
end
function M.on_message(self, msg)
  if msg.type == "flaky" then
    self.flaky = self.flaky + 1
    if self.flaky < 2 then error("flaky fails once") end
    maybe_finish(self)
  elseif msg.type == "poison" then
    self.poison = self.poison + 1
    maybe_finish(self)
    error("poison always fails")
  elseif msg.type == "done" then
    self.done = true
    maybe_finish(self)
  end
end
return M
"#;

const FAILER: &str = r#"
local M = {}
function M.start(self) error("failer fails at once") end
return M
"#;

const HOSTILE_TASK: &str = "id = \"hostile\"\ntype = \"test\"\ndescription = \"failures\"\ntimeout = 60000\nagents = [\"boss\"]\n";

fn hostile_run(store: &str) {
    let scratch = Scratch::new(&[
        ("boss.lua", BOSS),
        ("worker.lua", WORKER),
        ("failer.lua", FAILER),
    ]);
    scratch.write("task.toml", HOSTILE_TASK);
    let env = [("ORRERY_MAX_ATTEMPTS", "2"), ("ORRERY_STORE", store)];
    let (report, entries) = run_with_journal(scratch.path(), &["task.toml"], &env);
    assert_journal_matches_report(&report, &entries);
    let kinds = |k: &str| count(&entries, |e| e.event.kind() == k);
    assert_eq!(kinds("message_given_back"), 2, "flaky once, poison once");
    assert_eq!(kinds("message_dead_lettered"), 1);
    assert_eq!(kinds("lock_acquired"), 3);
    // The third is the host's: the boss ends holding "m".
    assert_eq!(kinds("lock_released"), 3);
    assert_eq!(kinds("lock_timed_out"), 1);
    assert_eq!(kinds("blackboard_delete"), 2);
    assert!(entries.iter().any(|e| matches!(
        &e.event,
        Event::BlackboardWrite { key, bytes, value: None } if key == "big" && *bytes > 5000
    )));
    assert!(entries.iter().any(|e| matches!(
        &e.event,
        Event::Error { fatal: true, message, .. } if message.contains("failer fails at once")
    )));
    // On a shared store the same entries are in the task's stream.
    if store != "memory" {
        let out = orrery(
            scratch.path(),
            &["tail", "hostile", "--store", store, "--json", "--no-follow"],
        );
        assert_eq!(out.status.code(), Some(exit::OK), "{}", show(&out));
        let streamed = parse_lines(&String::from_utf8_lossy(&out.stdout));
        assert_eq!(streamed, entries);
    }
}

#[test]
fn the_journal_of_failures_redeliveries_locks_and_a_failed_agent_matches_the_report() {
    hostile_run("memory");
}

#[test]
fn on_redis_the_journal_file_and_the_task_stream_hold_the_same_entries() {
    let server = RedisServer::start();
    hostile_run(&server.url());
}

const GIVER: &str = r#"
local M = {}
function M.start(self)
  spawn.agent("quitter")
  bus.send("quitter", "bad", {})
  bus.send("quitter", "bye", {})
end
return M
"#;

const QUITTER: &str = r#"
local M = {}
function M.on_message(self, msg)
  if msg.type == "bad" then error("bad fails") end
  agent.finish()
end
return M
"#;

/// A message whose handler failed waits out its redelivery backoff held by
/// its agent; when the agent ends meanwhile, releasing it gives it back at
/// once. The journal counts it given back once, not released as well.
fn backoff_run(store: &str) {
    let scratch = Scratch::new(&[("giver.lua", GIVER), ("quitter.lua", QUITTER)]);
    scratch.write(
        "task.toml",
        "id = \"backoff\"\ntype = \"test\"\ndescription = \"d\"\ntimeout = 60000\nagents = [\"giver\"]\n",
    );
    // Long enough that the quitter surely ends first.
    let env = [
        ("ORRERY_REDELIVERY_BACKOFF", "30000"),
        ("ORRERY_STORE", store),
    ];
    let (report, entries) = run_with_journal(scratch.path(), &["task.toml"], &env);
    assert_journal_matches_report(&report, &entries);
    let kinds = |k: &str| count(&entries, |e| e.event.kind() == k);
    assert_eq!(kinds("message_given_back"), 1);
    assert_eq!(kinds("message_handled"), 1);
    assert_eq!(kinds("messages_released"), 0);
    assert_eq!(
        report["metrics"]["agent_metrics"]["quitter-1"]["messages_received"], 2,
        "{report:#}"
    );
}

#[test]
fn a_message_given_back_with_a_backoff_is_counted_once_when_its_agent_ends() {
    backoff_run("memory");
}

#[test]
fn on_redis_a_message_given_back_with_a_backoff_is_counted_once_when_its_agent_ends() {
    let server = RedisServer::start();
    backoff_run(&server.url());
}

const PUSHER: &str = r#"
local M = {}
function M.start(self)
  assert(bus.receive(60000), "the puller never got ready")
  for i = 1, 50 do bus.send("puller", "m", i) end
end
return M
"#;

const PULLER: &str = r#"
local M = {}
function M.start(self)
  bus.send("pusher", "ready", {})
  for i = 1, 50 do assert(bus.receive(60000), "message " .. i .. " never came") end
end
return M
"#;

/// Messages taken with `bus.receive` (the pull path, which on the embedded
/// store acknowledges without waiting) are journaled as handled, each once:
/// the fast path used to acknowledge them unjournaled.
fn pull_run(store: &str) {
    let scratch = Scratch::new(&[("pusher.lua", PUSHER), ("puller.lua", PULLER)]);
    scratch.write(
        "task.toml",
        "id = \"pull\"\ntype = \"test\"\ndescription = \"d\"\ntimeout = 60000\nagents = [\"puller\", \"pusher\"]\n",
    );
    let env = [("ORRERY_STORE", store)];
    let (report, entries) = run_with_journal(scratch.path(), &["task.toml"], &env);
    assert_eq!(report["status"], "complete", "{report:#}");
    assert_journal_matches_report(&report, &entries);
    let handled = count(&entries, |e| {
        of(e, "puller-1")
            && matches!(&e.event, Event::MessageHandled { message_type, .. } if message_type == "m")
    });
    assert_eq!(handled, 50, "{entries:#?}");
}

#[test]
fn messages_taken_with_receive_are_journaled_as_handled() {
    pull_run("memory");
}

#[test]
fn on_redis_messages_taken_with_receive_are_journaled_as_handled() {
    let server = RedisServer::start();
    pull_run(&server.url());
}

const SELF_SENDER: &str = r#"
local M = {}
function M.start(self)
  bus.send(agent.id, "lost", {})
end
return M
"#;

/// A send the server refuses (here: a server whose user may not XADD) fails
/// the callback when the write is settled; it is neither journaled nor
/// counted as sent.
#[test]
fn a_send_the_server_refuses_is_not_journaled_as_sent() {
    let server = RedisServer::start_with(
        "--port",
        &[
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--user",
            "default",
            "on",
            "nopass",
            "~*",
            "&*",
            "+@all",
            "-xadd",
        ],
        |_| {},
    );
    let scratch = Scratch::new(&[("sender.lua", SELF_SENDER)]);
    scratch.write(
        "task.toml",
        "id = \"refused\"\ntype = \"test\"\ndescription = \"d\"\ntimeout = 60000\nagents = [\"sender\"]\n",
    );
    let url = server.url();
    let env = [("ORRERY_STORE", url.as_str())];
    let (report, entries) = run_with_journal(scratch.path(), &["task.toml"], &env);
    assert!(
        // A send is a script since issue 13 (fenced): the ACL refuses the
        // XADD inside it, in words that do not name the command.
        report["errors"].to_string().contains("xadd")
            || report["errors"]
                .to_string()
                .contains("can't run this command"),
        "the refused send fails the callback: {report:#}"
    );
    assert_journal_matches_report(&report, &entries);
    assert_eq!(
        count(&entries, |e| e.event.kind() == "message_sent"),
        0,
        "{entries:#?}"
    );
}

#[test]
fn orrery_report_renders_a_journal_as_one_page_with_the_journal_inline() {
    let (_, entries) = run_with_journal(&repo(), &["examples/deploy.toml"], &[]);
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> = entries
        .iter()
        .map(|e| serde_json::to_string(e).unwrap())
        .collect();
    std::fs::write(dir.path().join("run.jsonl"), lines.join("\n")).unwrap();
    let out = orrery(dir.path(), &["report", "run.jsonl", "-o", "page.html"]);
    assert_eq!(out.status.code(), Some(exit::OK), "{}", show(&out));
    let page = std::fs::read_to_string(dir.path().join("page.html")).unwrap();
    assert!(page.contains("<title>orrery: deploy-001</title>"));
    assert!(page.contains(r#"data-mode="report""#));
    assert!(page.contains(r#""kind":"run_ended""#));
    // Nothing is fetched: no script or style comes from elsewhere.
    assert!(!page.contains("src=\"http") && !page.contains("href=\"http"));
    // Without -o, the page goes beside the journal.
    let out = orrery(dir.path(), &["report", "run.jsonl"]);
    assert_eq!(out.status.code(), Some(exit::OK), "{}", show(&out));
    assert!(dir.path().join("run.html").is_file());
}

#[test]
fn bad_journals_and_journal_paths_are_bad_input_naming_the_place() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.jsonl"),
        "{\"seq\":1,\"at_us\":1,\"host\":\"h\",\"kind\":\"run_started\",\"task\":\"t\",\"task_type\":\"x\",\"description\":\"d\",\"owner\":true}\nnot json\n",
    )
    .unwrap();
    let out = orrery(dir.path(), &["report", "bad.jsonl"]);
    assert_eq!(out.status.code(), Some(exit::BAD_INPUT), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("bad.jsonl:2: not a journal entry"),
        "{}",
        show(&out)
    );
    let out = orrery(dir.path(), &["report", "missing.jsonl"]);
    assert_eq!(out.status.code(), Some(exit::BAD_INPUT), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.jsonl"));
    // No line ends: refused at its cap, not read until the memory is gone.
    let out = orrery(dir.path(), &["report", "/dev/zero", "-o", "zero.html"]);
    assert_eq!(out.status.code(), Some(exit::BAD_INPUT), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("/dev/zero:1: not a journal entry: a line longer than 256 MiB"),
        "{}",
        show(&out)
    );

    let target = dir.path().to_str().unwrap().to_string();
    let out = orrery(
        &repo(),
        &["run", "examples/deploy.toml", "--journal", &target],
    );
    assert_eq!(out.status.code(), Some(exit::BAD_INPUT), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("flag --journal"),
        "{}",
        show(&out)
    );
}

/// A journal file the disk cannot take loses entries as surely as a journal
/// whose sinks fell behind: the report counts them in `journal_dropped` and
/// says why, without failing the task (its work is done).
#[test]
fn a_journal_the_disk_cannot_take_is_counted_and_reported() {
    let out = orrery(
        &repo(),
        &[
            "run",
            "examples/deploy.toml",
            "--journal",
            "/dev/full",
            "--json",
        ],
    );
    assert_eq!(out.status.code(), Some(exit::OK), "{}", show(&out));
    let report: Value = serde_json::from_slice(&out.stdout).expect("a JSON report");
    assert_eq!(report["status"], "complete", "{report:#}");
    let dropped = report["metrics"]["host"]["journal_dropped"]
        .as_u64()
        .unwrap();
    assert!(dropped > 10, "every entry is missing: {report:#}");
    let errors = report["errors"].as_array().unwrap();
    let journal: Vec<&Value> = errors.iter().filter(|e| e["kind"] == "journal").collect();
    assert_eq!(journal.len(), 1, "{report:#}");
    let message = journal[0]["message"].as_str().unwrap();
    assert!(
        message.contains("journal file /dev/full: cannot write")
            && message.contains(&format!("{dropped} journal entries missing")),
        "{message}"
    );
    assert_eq!(journal[0]["fatal"], false);
}

/// A journal whose last line was cut off (a run killed while writing it, a
/// full disk) still makes a page, of the whole lines, with a warning.
#[test]
fn orrery_report_leaves_out_a_cut_off_last_line_and_says_so() {
    let (_, entries) = run_with_journal(&repo(), &["examples/deploy.toml"], &[]);
    let dir = tempfile::tempdir().unwrap();
    let mut text: String = entries
        .iter()
        .map(|e| serde_json::to_string(e).unwrap() + "\n")
        .collect();
    let last = serde_json::to_string(entries.last().unwrap()).unwrap();
    text.push_str(&last[..last.len() / 2]);
    std::fs::write(dir.path().join("cut.jsonl"), text).unwrap();
    let out = orrery(dir.path(), &["report", "cut.jsonl"]);
    assert_eq!(out.status.code(), Some(exit::OK), "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "cut.jsonl:{}: the last line is cut off",
            entries.len() + 1
        )) && stderr.contains(&format!("({} journal entries)", entries.len())),
        "{}",
        show(&out)
    );
    // A bad line that ends is still refused, also the last one.
    std::fs::write(dir.path().join("bad.jsonl"), "not json\n").unwrap();
    let out = orrery(dir.path(), &["report", "bad.jsonl"]);
    assert_eq!(out.status.code(), Some(exit::BAD_INPUT), "{}", show(&out));
}

const MANY_WRITES: &str = r#"
local M = {}
function M.start(self)
  for i = 1, 3000 do blackboard.set("k" .. (i % 50), string.rep("x", 200)) end
end
return M
"#;

/// A journal pipe whose reader stops reading is given up after a while,
/// counted and reported: the writer was stuck in a blocking write, and the
/// run could not end (nor be stopped) until the reader went away.
#[test]
fn a_journal_pipe_nobody_reads_does_not_hold_the_run() {
    use std::time::Duration;

    let scratch = Scratch::new(&[("w.lua", MANY_WRITES)]);
    scratch.write(
        "task.toml",
        "id = \"stuck\"\ntype = \"t\"\ndescription = \"d\"\nagents = [\"w\"]\n",
    );
    let fifo = scratch.path().join("pipe");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    // A reader that opens the pipe and never reads, for longer than the test may take.
    let mut reader = std::process::Command::new("sh")
        .args(["-c", "exec 3<pipe; sleep 120"])
        .current_dir(scratch.path())
        .spawn()
        .unwrap();
    let run = crate::common::spawn_orrery(
        scratch.path(),
        &["run", "task.toml", "--journal", "pipe", "--json"],
        &[],
    );
    let done = run.finish(Duration::from_secs(60));
    let _ = reader.kill();
    let _ = reader.wait();
    assert_eq!(done.code, Some(exit::OK), "{}", done.show());
    assert!(
        done.stderr
            .contains("journal file pipe: cannot write (its reader took nothing for 5 s)"),
        "{}",
        done.show()
    );
}
