//! The live view in a real headless Chromium, during a run of the default
//! agents: the page is loaded while Alpha waits for its LLM answer (held by
//! the test), follows the run live to its end, and then shows a lane per
//! agent, an arrow per message and the final phases.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use orrery::coordination::journal::Event;
use orrery::error::exit;

use crate::common::{repo, spawn_orrery};
use crate::util::{PATIENCE, addr_in, chromium, http_get, phases, read_journal};

/// An OpenAI-compatible endpoint that holds its first request until
/// released, then answers every request at once with text that is no plan
/// (Alpha falls back to its rules; Gamma's second opinion records it).
struct HeldLlm {
    url: String,
    arrived: mpsc::Receiver<()>,
    release: mpsc::Sender<()>,
}

impl HeldLlm {
    fn start() -> HeldLlm {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/v1", listener.local_addr().unwrap());
        let (arrived_tx, arrived) = mpsc::channel();
        let (release, released) = mpsc::channel::<()>();
        std::thread::spawn(move || {
            let mut held = true;
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                if read_request(&mut stream).is_none() {
                    continue;
                }
                if held {
                    let _ = arrived_tx.send(());
                    if released.recv().is_err() {
                        return;
                    }
                    held = false;
                }
                let body = r#"{"id":"x","object":"chat.completion","model":"held-model","choices":[{"index":0,"message":{"role":"assistant","content":"not a plan"},"finish_reason":"stop"}],"usage":{"prompt_tokens":11,"completion_tokens":3,"total_tokens":14}}"#;
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        HeldLlm {
            url,
            arrived,
            release,
        }
    }
}

/// Reads one HTTP request (headers and a content-length body).
fn read_request(stream: &mut TcpStream) -> Option<()> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().ok()?;
        }
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(())
}

#[test]
fn the_live_view_in_chromium_follows_the_default_agents_to_their_final_phases() {
    let browser = chromium();
    let llm = HeldLlm::start();
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("run.jsonl");
    let mut run = spawn_orrery(
        &repo(),
        &[
            "run",
            "examples/deploy.toml",
            "--ui",
            "--ui-addr",
            "127.0.0.1:0",
            "--llm-url",
            &llm.url,
            "--model",
            "held-model",
            "--journal",
            journal.to_str().unwrap(),
        ],
        &[],
    );
    let addr = addr_in(&run.wait_for("live view: http://", PATIENCE));
    // Alpha asks for its plan: the run is under way, and waits.
    llm.arrived
        .recv_timeout(PATIENCE)
        .expect("Alpha asks the LLM for a plan");

    let profile = tempfile::tempdir().unwrap();
    let page = Command::new(&browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
            "--window-size=1400,1000",
            // Virtual time waits while the page's event stream is open: the
            // DOM is dumped once the run is over and the page closed it.
            "--virtual-time-budget=20000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(["--dump-dom", &format!("http://{addr}/")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("chromium starts");

    // The page follows the run before the rest of it happens.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (_, _, status) = http_get(&addr, "/api/status");
        let status: serde_json::Value = serde_json::from_str(&status).unwrap();
        if status["clients"].as_u64() >= Some(1) {
            assert_eq!(status["ended"], false, "the run waits for its LLM answer");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the page never connected: {status}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    llm.release.send(()).unwrap();

    let dom = wait_output(page, PATIENCE);
    let finished = run.interrupt(PATIENCE);
    assert_eq!(finished.code, Some(exit::OK), "{}", finished.show());
    assert!(
        finished.stdout.contains("task deploy-001: complete"),
        "{}",
        finished.show()
    );

    let entries = read_journal(&journal);
    let agents: Vec<String> = entries
        .iter()
        .filter_map(|e| match &e.event {
            Event::Spawned { .. } => e.agent.clone(),
            _ => None,
        })
        .collect();
    assert_eq!(agents, ["alpha-1", "beta-1", "gamma-1"]);
    for agent in &agents {
        let last = phases(&entries, agent).pop().unwrap();
        assert_eq!(last, "COMPLETE");
        let lane = format!(r#"class="lane" data-agent="{agent}""#);
        let at = dom
            .find(&lane)
            .unwrap_or_else(|| panic!("no lane of {agent} in:\n{dom}"));
        assert!(
            dom[at..].starts_with(&format!(
                r#"{lane} data-role="{}" data-phase="{last}""#,
                &agent[..agent.len() - 2]
            )),
            "lane of {agent}: {}",
            &dom[at..at + 120]
        );
    }
    let sent: Vec<String> = entries
        .iter()
        .filter_map(|e| match &e.event {
            Event::MessageSent { id, .. } => Some(id.clone()),
            _ => None,
        })
        .collect();
    assert!(sent.len() >= 10, "{sent:?}");
    assert_eq!(
        dom.matches(r#"class="arrow "#).count(),
        sent.len(),
        "an arrow per message"
    );
    for id in &sent {
        assert!(
            dom.contains(&format!(r#"data-msg="{id}""#)),
            "no arrow of {id}"
        );
    }
    let llm_calls = entries
        .iter()
        .filter(|e| matches!(e.event, Event::LlmCall { .. }))
        .count();
    assert_eq!(dom.matches(r#"class="llm-mark"#).count(), llm_calls);
    assert!(
        dom.contains(r#"class="status complete">complete<"#),
        "the header shows the end"
    );
    assert!(dom.contains(">run over<"), "the page saw the journal close");
}

/// Waits for a child's exit and returns its stdout.
fn wait_output(mut child: std::process::Child, within: Duration) -> String {
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + within;
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    reader.join().unwrap()
}

/// After the task, the live view stays until Ctrl-C or SIGTERM: the run had
/// taken SIGTERM's default action away, and the wait that followed heard
/// Ctrl-C only, so `kill`, `systemctl stop` or `docker stop` never ended it.
#[test]
fn sigterm_ends_a_live_view_that_outlived_its_task() {
    let mut run = spawn_orrery(
        &repo(),
        &[
            "run",
            "examples/deploy.toml",
            "--ui",
            "--ui-addr",
            "127.0.0.1:0",
        ],
        &[],
    );
    run.wait_for("the task ended; the live view stays at", PATIENCE);
    run.signal("TERM");
    let done = run.finish(PATIENCE);
    assert_eq!(done.code, Some(exit::OK), "{}", done.show());
}
