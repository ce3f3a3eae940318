//! A role script rewritten while its agent runs: editors' ways of saving,
//! refused code, state across reloads, messages in flight, subscriptions.

use orrery::reload::Change;
use orrery::report::TaskStatus;
use serde_json::json;

use super::session::{Session, echo};

const ECHO: &str = "scripts/echo.lua";

#[tokio::test]
async fn a_rename_save_switches_the_next_message_to_the_new_code() {
    let mut s = Session::start(&[(ECHO, &echo("v1"))], true).await;
    assert_eq!(s.ask("echo", "ping", json!({})).await["version"], "v1");

    s.save(ECHO, &echo("v2"));
    let event = s.reloaded(ECHO).await;
    assert_eq!(event.agents, ["echo-1"]);
    assert!(event.since_change >= event.took);

    let reply = s.ask("echo", "ping", json!({})).await;
    assert_eq!(reply["version"], "v2");
    assert_eq!(reply["count"], 2, "the agent's state survives the reload");
    assert_eq!(s.host_counter("reloads"), 1);
    assert_eq!(s.host_counter("reload_errors"), 0);

    let report = s.stop().await;
    assert_eq!(report.status, TaskStatus::Interrupted);
    assert_eq!(report.metrics.host["reloads"], 1);
}

#[tokio::test]
async fn editor_saves_are_seen_and_their_scratch_files_ignored() {
    let mut s = Session::start(&[(ECHO, &echo("v1"))], true).await;
    assert_eq!(s.ask("echo", "ping", json!({})).await["version"], "v1");
    let dir = s.file("scripts");

    // vim: probe file 4913, original renamed to a backup, new file written, backup removed.
    std::fs::write(dir.join("4913"), "").unwrap();
    std::fs::remove_file(dir.join("4913")).unwrap();
    std::fs::rename(dir.join("echo.lua"), dir.join("echo.lua~")).unwrap();
    std::fs::write(dir.join("echo.lua"), echo("v2")).unwrap();
    std::fs::remove_file(dir.join("echo.lua~")).unwrap();
    let mut events = vec![s.next_reload().await];

    // Swap, lock, autosave and backup files, all broken Lua: none may be read.
    for name in [
        ".echo.lua.swp",
        ".#echo.lua",
        "#echo.lua#",
        "echo.lua~",
        "echo.lua.bak",
    ] {
        std::fs::write(dir.join(name), "this is not lua (").unwrap();
    }
    // JetBrains: write a temporary file, rename it over the original.
    std::fs::write(dir.join("echo.lua___jb_tmp___"), echo("v3")).unwrap();
    std::fs::rename(dir.join("echo.lua___jb_tmp___"), dir.join("echo.lua")).unwrap();
    events.push(s.next_reload().await);
    // VS Code: write in place. Every event of the files above came before this one's.
    std::fs::write(dir.join("echo.lua"), echo("v4")).unwrap();
    events.push(s.next_reload().await);

    for event in &events {
        assert_eq!(
            event.path,
            s.file(ECHO),
            "only echo.lua is reloaded: {events:#?}"
        );
        assert!(
            matches!(event.change, Change::Updated { .. }),
            "{events:#?}"
        );
    }
    assert_eq!(s.ask("echo", "ping", json!({})).await["version"], "v4");
    assert_eq!(s.host_counter("reload_errors"), 0);
    s.stop().await;
}

#[tokio::test]
async fn broken_code_is_refused_and_the_old_code_serves_until_a_fix() {
    let mut s = Session::start(&[(ECHO, &echo("v1"))], true).await;
    assert_eq!(s.ask("echo", "ping", json!({})).await["version"], "v1");
    let path = s.file(ECHO).display().to_string();
    let broken = [
        ("local M = {\n  x = \nreturn M\n", format!("{path}:3:")),
        (
            "local M = {}\nerror('not today')\nreturn M\n",
            format!("{path}:2: not today"),
        ),
        (
            "local M = {}\n",
            format!("{path}: a role script must return a table"),
        ),
        (
            "return { on_message = 5 }\n",
            format!(
                "{path}: field 'on_message' of the returned table must be a function, got integer"
            ),
        ),
        (
            "while true do end\nreturn {}\n",
            format!("{path}: loading took longer than 1000 ms"),
        ),
    ];
    for (source, expected) in &broken {
        s.save(ECHO, source);
        let event = s.reload_of(ECHO).await;
        let Change::Refused { error } = &event.change else {
            panic!("expected {source:?} to be refused, got {event:?}");
        };
        assert!(
            error.starts_with(expected.as_str()),
            "{error:?} should start with {expected:?}"
        );
        assert_eq!(event.agents, ["echo-1"]);
        assert_eq!(
            s.ask("echo", "ping", json!({})).await["version"],
            "v1",
            "old code keeps serving"
        );
    }

    // Undoing back to the running code is reported too, so the error is seen to be gone.
    s.save(ECHO, &echo("v1"));
    s.reloaded(ECHO).await;
    assert_eq!(s.ask("echo", "ping", json!({})).await["version"], "v1");

    s.save(ECHO, &echo("v2"));
    s.reloaded(ECHO).await;
    assert_eq!(s.ask("echo", "ping", json!({})).await["version"], "v2");
    assert_eq!(s.host_counter("reload_errors"), broken.len() as u64);
    assert_eq!(s.host_counter("reloads"), 2);
    s.stop().await;
}

/// A role counting messages in `self.total`, with the given `on_reload` body.
fn totalling(version: &str, on_reload: &str) -> String {
    format!(
        r#"local M = {{ VERSION = "{version}" }}
function M.on_reload(self, old)
  {on_reload}
end
function M.on_message(self, msg)
  self.total = self.total + 1
  blackboard.set("reply/" .. msg.payload.seq, {{ version = M.VERSION, total = self.total, from = self.from }})
end
return M
"#
    )
}

#[tokio::test]
async fn state_survives_and_on_reload_migrates_it() {
    let mut s = Session::start(&[(ECHO, &echo("v1"))], true).await;
    s.ask("echo", "ping", json!({})).await;
    assert_eq!(s.ask("echo", "ping", json!({})).await["count"], 2);

    // Migrates in place: `count` becomes `total`, and notes the old version.
    let in_place = "self.total, self.count, self.from = self.count, nil, old.VERSION";
    s.save(ECHO, &totalling("v2", in_place));
    s.reloaded(ECHO).await;
    assert_eq!(
        s.ask("echo", "ping", json!({})).await,
        json!({"version": "v2", "total": 3, "from": "v1"})
    );

    // Returns a new state table, as Erlang's code_change does.
    let new_table = "return { total = self.total * 10, from = old.VERSION }";
    s.save(ECHO, &totalling("v3", new_table));
    s.reloaded(ECHO).await;
    assert_eq!(
        s.ask("echo", "ping", json!({})).await,
        json!({"version": "v3", "total": 31, "from": "v2"})
    );

    // A hook that raises: the agent stays on v3 with its state.
    let raising = r#"error("cannot migrate from " .. old.VERSION)"#;
    s.save(ECHO, &totalling("v4", raising));
    s.reloaded(ECHO).await;
    assert_eq!(
        s.ask("echo", "ping", json!({})).await,
        json!({"version": "v3", "total": 32, "from": "v2"})
    );
    assert_eq!(
        s.host_counter("reload_errors"),
        1,
        "the agent's failed switch is counted"
    );

    // A hook returning something that is not a state: refused the same way.
    s.save(ECHO, &totalling("v5", "return 42"));
    s.reloaded(ECHO).await;
    assert_eq!(s.ask("echo", "ping", json!({})).await["version"], "v3");
    assert_eq!(s.host_counter("reload_errors"), 2);
    s.stop().await;
}

#[tokio::test]
async fn a_message_in_flight_finishes_on_the_old_code() {
    let slow = |version: &str| {
        format!(
            r#"local M = {{}}
function M.on_message(self, msg)
  if msg.type == "slow" then
    blackboard.set("slow/started", true)
    local go = bus.receive(10000)
    blackboard.set("reply/" .. msg.payload.seq, {{ version = "{version}", go = go and go.type }})
  else
    blackboard.set("reply/" .. msg.payload.seq, {{ version = "{version}" }})
  end
end
return M
"#
        )
    };
    let mut s = Session::start(&[(ECHO, &slow("v1"))], true).await;
    s.send("echo", "slow", json!({"seq": 100})).await;
    s.board_value("slow/started").await;

    s.save(ECHO, &slow("v2"));
    s.reloaded(ECHO).await;
    s.send("echo", "go", json!({})).await;
    assert_eq!(
        s.board_value("reply/100").await,
        json!({"version": "v1", "go": "go"})
    );
    assert_eq!(s.ask("echo", "ping", json!({})).await["version"], "v2");
    s.stop().await;
}

#[tokio::test]
async fn subscriptions_move_to_the_new_code_when_on_reload_registers_them() {
    let subscriber = |version: &str, on_reload: &str| {
        format!(
            r#"local M = {{}}
local function subscribe()
  bus.subscribe("ping", function(msg)
    blackboard.set("reply/" .. msg.payload.seq, {{ version = "{version}" }})
  end)
end
function M.start(self) subscribe() end
{on_reload}
return M
"#
        )
    };
    let mut s = Session::start(&[(ECHO, &subscriber("v1", ""))], true).await;
    assert_eq!(s.ask("echo", "ping", json!({})).await["version"], "v1");

    // Without on_reload the subscription made by the old code stays, closure and all.
    s.save(ECHO, &subscriber("v2", ""));
    s.reloaded(ECHO).await;
    assert_eq!(s.ask("echo", "ping", json!({})).await["version"], "v1");

    // With on_reload the old code's subscriptions are dropped and the hook subscribes anew.
    s.save(
        ECHO,
        &subscriber("v3", "function M.on_reload(self) subscribe() end"),
    );
    s.reloaded(ECHO).await;
    assert_eq!(s.ask("echo", "ping", json!({})).await["version"], "v3");
    let next = s.ask("echo", "ping", json!({})).await;
    assert_eq!(next["version"], "v3", "only the new handler answers");
    s.stop().await;
}
