//! The watched directories themselves deleted, moved away or replaced while
//! the task runs: the reloader follows the path, never the old directory.

use std::path::Path;

use orrery::reload::{Change, ReloadEvent};
use orrery::scripts::ScriptKind;
use serde_json::json;

use super::session::{Session, echo};

/// Copies the directory `from` to `to`, recursively (`cp -r`).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A role whose agents never get a message: it only marks a point in the
/// stream of reload events (its file is created after what is tested).
const MARKER: &str = "return {}\n";

/// Creates `rel` as a new role and returns every reload event up to its
/// own: whatever the reloader did before it saw the marker.
async fn events_before_marker(s: &mut Session, rel: &str) -> Vec<ReloadEvent> {
    std::fs::write(s.file(rel), MARKER).unwrap();
    let marker = s.file(rel);
    let mut before = Vec::new();
    loop {
        let event = s.next_reload().await;
        if event.path == marker {
            assert!(matches!(event.change, Change::Added { .. }), "{event:?}");
            return before;
        }
        before.push(event);
    }
}

#[tokio::test]
async fn a_scripts_directory_deleted_and_put_back_is_watched_again() {
    let mut s = Session::start(&[("scripts/echo.lua", &echo("v1"))], true).await;
    assert_eq!(s.ask("echo", "ping", json!({})).await["version"], "v1");
    let backup = s.file("backup");
    copy_dir(&s.file("scripts"), &backup);

    std::fs::remove_dir_all(s.file("scripts")).unwrap();
    let event = s.reload_of("scripts/echo.lua").await;
    assert!(
        matches!(&event.change, Change::Removed { kind: ScriptKind::Role, name } if name == "echo"),
        "{event:?}"
    );
    assert_eq!(event.agents, ["echo-1"]);
    assert_eq!(
        s.ask("echo", "ping", json!({})).await,
        json!({"version": "v1", "count": 2}),
        "the running agent keeps its code and its state"
    );

    // Put back (whole: a copy made in place could be read half-written),
    // its files are read again, and watched.
    std::fs::rename(&backup, s.file("scripts")).unwrap();
    let event = s.reloaded("scripts/echo.lua").await;
    assert!(
        matches!(&event.change, Change::Added { kind: ScriptKind::Role, name, .. } if name == "echo"),
        "{event:?}"
    );
    s.save("scripts/echo.lua", &echo("v2"));
    s.reloaded("scripts/echo.lua").await;
    assert_eq!(
        s.ask("echo", "ping", json!({})).await,
        json!({"version": "v2", "count": 3})
    );
    s.stop().await;
}

#[tokio::test]
async fn a_scripts_directory_moved_away_is_not_followed() {
    let mut s = Session::start(&[("scripts/echo.lua", &echo("v1"))], true).await;
    assert_eq!(s.ask("echo", "ping", json!({})).await["version"], "v1");

    // As `mv scripts scripts.old; cp -r scripts.old scripts`, with the copy
    // made first so the reloader never finds the path empty or half-copied.
    copy_dir(&s.file("scripts"), &s.file("copy"));
    std::fs::rename(s.file("scripts"), s.file("scripts.old")).unwrap();
    std::fs::rename(s.file("copy"), s.file("scripts")).unwrap();
    s.save("scripts/echo.lua", &echo("v2"));
    s.reloaded("scripts/echo.lua").await;
    assert_eq!(s.ask("echo", "ping", json!({})).await["version"], "v2");

    // Edits of the moved directory are not edits of the scripts.
    s.save("scripts.old/echo.lua", &echo("old"));
    std::fs::remove_file(s.file("scripts.old/echo.lua")).unwrap();
    let before = events_before_marker(&mut s, "scripts/marker.lua").await;
    assert!(before.is_empty(), "{before:?}");
    assert_eq!(s.ask("echo", "ping", json!({})).await["version"], "v2");
    s.stop().await;
}

#[tokio::test]
async fn a_scripts_link_pointed_elsewhere_is_followed() {
    let files = [("v1/echo.lua", echo("v1")), ("v2/echo.lua", echo("v2"))];
    let files: Vec<(&str, &str)> = files.iter().map(|(p, t)| (*p, t.as_str())).collect();
    let mut s = Session::start_after(&files, true, |root| {
        std::fs::remove_dir(root.join("scripts")).unwrap();
        std::os::unix::fs::symlink("v1", root.join("scripts")).unwrap();
    })
    .await;
    assert_eq!(s.ask("echo", "ping", json!({})).await["version"], "v1");

    // ln -sfn v2 scripts.tmp && mv -T scripts.tmp scripts
    std::os::unix::fs::symlink("v2", s.file("scripts.tmp")).unwrap();
    std::fs::rename(s.file("scripts.tmp"), s.file("scripts")).unwrap();
    let event = s.reloaded("scripts/echo.lua").await;
    assert_eq!(event.agents, ["echo-1"]);
    assert_eq!(
        s.ask("echo", "ping", json!({})).await,
        json!({"version": "v2", "count": 2})
    );

    // The directory the link left is no longer watched.
    std::fs::write(s.file("v1/echo.lua"), echo("gone")).unwrap();
    let before = events_before_marker(&mut s, "scripts/marker.lua").await;
    assert!(before.is_empty(), "{before:?}");
    s.save("scripts/echo.lua", &echo("v3"));
    s.reloaded("scripts/echo.lua").await;
    assert_eq!(s.ask("echo", "ping", json!({})).await["version"], "v3");
    s.stop().await;
}

/// `echo` answers with the word of `greet`, a module of the stdlib directory.
const GREETER: &str = r#"local greet = require("greet")
return {
  on_message = function(self, msg)
    blackboard.set("reply/" .. msg.payload.seq, { text = greet.word() })
  end,
}
"#;

fn greet(word: &str) -> String {
    format!("return {{ word = function() return \"{word}\" end }}\n")
}

#[tokio::test]
async fn a_stdlib_directory_replaced_is_watched_again() {
    let hello = greet("hello");
    let mut s = Session::start(
        &[("scripts/echo.lua", GREETER), ("stdlib/greet.lua", &hello)],
        true,
    )
    .await;
    assert_eq!(s.ask("echo", "ping", json!({})).await["text"], "hello");

    std::fs::remove_dir_all(s.file("stdlib")).unwrap();
    let event = s.reload_of("stdlib/greet.lua").await;
    assert!(
        matches!(&event.change, Change::Removed { kind: ScriptKind::Module, name } if name == "greet"),
        "{event:?}"
    );
    assert_eq!(s.ask("echo", "ping", json!({})).await["text"], "hello");

    // A new stdlib directory, with other code: the agents take it.
    std::fs::create_dir(s.file("stdlib.new")).unwrap();
    std::fs::write(s.file("stdlib.new/greet.lua"), greet("bonjour")).unwrap();
    std::fs::rename(s.file("stdlib.new"), s.file("stdlib")).unwrap();
    s.reloaded("stdlib/greet.lua").await;
    assert_eq!(s.ask("echo", "ping", json!({})).await["text"], "bonjour");
    s.save("stdlib/greet.lua", &greet("hallo"));
    s.reloaded("stdlib/greet.lua").await;
    assert_eq!(s.ask("echo", "ping", json!({})).await["text"], "hallo");
    s.stop().await;
}
