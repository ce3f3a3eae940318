//! Role files appearing and disappearing while the task runs, and what the
//! watcher does not read.

use orrery::error::{Error, exit};
use orrery::reload::{Change, is_editor_artifact};
use orrery::scripts::ScriptKind;
use serde_json::json;

use super::session::{Session, echo};

/// Spawns the role it is asked for and answers `{ok, result}`.
const BOSS: &str = r#"return {
  on_message = function(self, msg)
    local ok, result = pcall(spawn.agent, msg.payload.role)
    blackboard.set("reply/" .. msg.payload.seq, { ok = ok, result = tostring(result) })
  end,
}
"#;

const HELPER: &str = r#"return {
  start = function(self) blackboard.set("helper/started", agent.id) end,
  on_message = function(self, msg)
    blackboard.set("reply/" .. msg.payload.seq, { text = "helper here" })
  end,
}
"#;

#[tokio::test]
async fn a_new_role_file_becomes_spawnable_and_addressable() {
    let mut s = Session::start(&[("scripts/boss.lua", BOSS)], true).await;
    let refused = s.ask("boss", "spawn", json!({"role": "helper"})).await;
    assert_eq!(refused["ok"], false);
    assert!(
        refused["result"]
            .as_str()
            .unwrap()
            .contains("unknown role 'helper'"),
        "{refused}"
    );

    std::fs::write(s.file("scripts/helper.lua"), HELPER).unwrap();
    let event = s.reload_of("scripts/helper.lua").await;
    assert!(
        matches!(&event.change, Change::Added { kind: ScriptKind::Role, name, .. } if name == "helper"),
        "{event:?}"
    );

    let spawned = s.ask("boss", "spawn", json!({"role": "helper"})).await;
    assert_eq!(spawned, json!({"ok": true, "result": "helper-1"}));
    assert_eq!(s.board_value("helper/started").await, "helper-1");
    assert_eq!(
        s.ask("helper", "ping", json!({})).await["text"],
        "helper here"
    );
    s.stop().await;
}

#[tokio::test]
async fn a_deleted_role_keeps_its_agents_and_refuses_new_spawns() {
    let mut s = Session::start(
        &[
            ("scripts/boss.lua", BOSS),
            ("scripts/echo.lua", &echo("v1")),
        ],
        true,
    )
    .await;
    assert_eq!(s.ask("echo", "ping", json!({})).await["version"], "v1");

    std::fs::remove_file(s.file("scripts/echo.lua")).unwrap();
    let event = s.reload_of("scripts/echo.lua").await;
    assert!(
        matches!(&event.change, Change::Removed { kind: ScriptKind::Role, name } if name == "echo"),
        "{event:?}"
    );
    assert_eq!(event.agents, ["echo-1"]);

    assert_eq!(
        s.ask("echo", "ping", json!({})).await["version"],
        "v1",
        "the running agent keeps its code"
    );
    let refused = s.ask("boss", "spawn", json!({"role": "echo"})).await;
    assert_eq!(refused["ok"], false);
    let message = refused["result"].as_str().unwrap();
    let path = s.file("scripts/echo.lua").display().to_string();
    assert!(
        message.contains(&format!(
            "role 'echo' cannot start: {path} was deleted while the task ran"
        )),
        "{message}"
    );
    let err = s.registry.role("echo").unwrap_err();
    assert!(matches!(err, Error::RoleDeleted { .. }), "{err:?}");
    assert_eq!(err.exit_code(), exit::BAD_INPUT);
    assert_eq!(err.kind(), "role_deleted");

    // Put back, it is spawnable again.
    std::fs::write(s.file("scripts/echo.lua"), echo("v2")).unwrap();
    s.reloaded("scripts/echo.lua").await;
    let spawned = s.ask("boss", "spawn", json!({"role": "echo"})).await;
    assert_eq!(spawned, json!({"ok": true, "result": "echo-2"}));
    s.stop().await;
}

#[tokio::test]
async fn a_role_file_with_a_bad_name_is_refused_with_its_path() {
    let mut s = Session::start(&[("scripts/boss.lua", BOSS)], true).await;
    std::fs::write(s.file("scripts/my-role.lua"), HELPER).unwrap();
    let event = s.reload_of("scripts/my-role.lua").await;
    let Change::Refused { error } = &event.change else {
        panic!("expected a refusal, got {event:?}");
    };
    assert!(
        error.contains("my-role.lua: a role file name must be letters, digits and '_'"),
        "{error}"
    );
    s.stop().await;
}

#[tokio::test]
async fn without_watch_nothing_is_watched() {
    // Without watch a quiet task ends: the ticker keeps this one busy.
    let ticker = r#"return {
  start = function(self) bus.send(agent.id, "tick", {}) end,
  on_message = function(self, msg) sleep(5); bus.send(agent.id, "tick", {}) end,
}
"#;
    let files = [
        ("scripts/echo.lua", echo("v1")),
        ("scripts/ticker.lua", ticker.to_string()),
    ];
    let files: Vec<(&str, &str)> = files.iter().map(|(p, t)| (*p, t.as_str())).collect();
    let mut unwatched = Session::start(&files, false).await;
    assert!(unwatched.reload_events_absent());
    // A second task on the same files, watching: it proves the edit was seen.
    let mut watched = Session::start_on(&unwatched.root.clone(), true).await;
    let version = unwatched.registry.version();
    assert_eq!(
        unwatched.ask("echo", "ping", json!({})).await["version"],
        "v1"
    );
    assert_eq!(
        watched.ask("echo", "ping", json!({})).await["version"],
        "v1"
    );

    watched.save("scripts/echo.lua", &echo("v2"));
    watched.reloaded("scripts/echo.lua").await;
    assert_eq!(
        watched.ask("echo", "ping", json!({})).await["version"],
        "v2"
    );
    assert_eq!(
        unwatched.ask("echo", "ping", json!({})).await["version"],
        "v1"
    );
    assert_eq!(unwatched.registry.version(), version);
    assert_eq!(unwatched.host_counter("reloads"), 0);
    watched.stop().await;
    unwatched.stop().await;
}

#[test]
fn editor_scratch_files_are_recognised() {
    for name in [
        ".beta.lua.swp",
        ".beta.lua.swo",
        "beta.lua~",
        ".#beta.lua",
        "#beta.lua#",
        "4913",
        "beta.lua.tmp",
        "beta.lua___jb_tmp___",
        "beta.lua___jb_old___",
        ".beta.lua.kate-swp",
        "beta.lua.bak",
        ".hidden.lua",
    ] {
        assert!(is_editor_artifact(name), "{name} should be ignored");
    }
    for name in ["beta.lua", "plan.lua", "my_role.lua", "tmp.lua", "swap.lua"] {
        assert!(!is_editor_artifact(name), "{name} is a script");
    }
}
