//! Modules changed while agents run: dropped from `package.loaded` with every
//! module that captured them, and the roles that captured them run again.

use orrery::reload::Change;
use serde_json::json;

use super::session::Session;

const GREET: &str = "stdlib/greet.lua";

fn greet(word: &str) -> String {
    format!("local M = {{}}\nfunction M.word() return \"{word}\" end\nreturn M\n")
}

/// `echo` captures `lib.fmt`, which captures `greet`; `lazy` requires `greet`
/// inside its handler; `plain` uses neither.
const FILES: &[(&str, &str)] = &[
    (
        "scripts/lib/fmt.lua",
        r#"local greet = require("greet")
local M = {}
function M.line(n) return greet.word() .. " " .. n end
return M
"#,
    ),
    (
        "scripts/echo.lua",
        r#"local fmt = require("lib.fmt")
local M = {}
function M.start(self) self.count = 0 end
function M.on_message(self, msg)
  self.count = self.count + 1
  blackboard.set("reply/" .. msg.payload.seq, { text = fmt.line(self.count) })
end
return M
"#,
    ),
    (
        "scripts/lazy.lua",
        r#"return {
  on_message = function(self, msg)
    blackboard.set("reply/" .. msg.payload.seq, { text = require("greet").word() })
  end,
}
"#,
    ),
    (
        "scripts/plain.lua",
        r#"return {
  on_message = function(self, msg)
    blackboard.set("reply/" .. msg.payload.seq, { text = "plain" })
  end,
}
"#,
    ),
];

async fn session() -> Session {
    let mut files = FILES.to_vec();
    let hello = greet("hello");
    files.push((GREET, &hello));
    Session::start(&files, true).await
}

#[tokio::test]
async fn a_changed_stdlib_module_reaches_every_agent_that_required_it() {
    let mut s = session().await;
    assert_eq!(s.ask("echo", "ping", json!({})).await["text"], "hello 1");
    assert_eq!(s.ask("lazy", "ping", json!({})).await["text"], "hello");
    assert_eq!(s.ask("plain", "ping", json!({})).await["text"], "plain");

    s.save(GREET, &greet("bonjour"));
    let event = s.reloaded(GREET).await;
    assert_eq!(
        event.agents,
        ["echo-1", "lazy-1"],
        "plain-1 never required greet"
    );

    let reply = s.ask("echo", "ping", json!({})).await;
    assert_eq!(
        reply["text"], "bonjour 2",
        "new module through lib.fmt, state kept"
    );
    assert_eq!(s.ask("lazy", "ping", json!({})).await["text"], "bonjour");
    s.stop().await;
}

#[tokio::test]
async fn a_module_that_fails_to_load_is_refused_with_its_line() {
    let mut s = session().await;
    assert_eq!(s.ask("echo", "ping", json!({})).await["text"], "hello 1");

    s.save(GREET, "local M = {}\nerror('greet is broken')\nreturn M\n");
    let event = s.reload_of(GREET).await;
    let Change::Refused { error } = &event.change else {
        panic!("expected a refusal, got {event:?}");
    };
    let expected = format!("{}:2: greet is broken", s.file(GREET).display());
    assert!(
        error.starts_with(&expected),
        "{error:?} should start with {expected:?}"
    );
    assert_eq!(event.agents, ["echo-1"]);
    assert_eq!(s.ask("echo", "ping", json!({})).await["text"], "hello 2");

    s.save(GREET, &greet("hallo"));
    s.reloaded(GREET).await;
    assert_eq!(s.ask("echo", "ping", json!({})).await["text"], "hallo 3");
    s.stop().await;
}

#[tokio::test]
async fn a_module_of_the_scripts_directory_is_reloaded_with_its_dependants() {
    let mut s = session().await;
    assert_eq!(s.ask("echo", "ping", json!({})).await["text"], "hello 1");

    s.save(
        "scripts/lib/fmt.lua",
        r#"local greet = require("greet")
local M = {}
function M.line(n) return "[" .. n .. "] " .. greet.word() end
return M
"#,
    );
    let event = s.reloaded("scripts/lib/fmt.lua").await;
    assert!(
        matches!(&event.change, Change::Updated { name, .. } if name == "lib.fmt"),
        "{event:?}"
    );
    assert_eq!(s.ask("echo", "ping", json!({})).await["text"], "[2] hello");
    s.stop().await;
}

/// `r` captures `lib.helper`, which captures `pretty`, overridden in the
/// stdlib directory; `lazy` requires `pretty` only when asked.
const OVERRIDE: &[(&str, &str)] = &[
    ("stdlib/pretty.lua", "return { VER = \"P1\" }\n"),
    (
        "scripts/lib/helper.lua",
        r#"local pretty = require("pretty")
return { v = function() return "H " .. tostring(pretty.VER) end }
"#,
    ),
    (
        "scripts/r.lua",
        r#"local helper = require("lib.helper")
return {
  on_message = function(self, msg)
    blackboard.set("reply/" .. msg.payload.seq, { text = helper.v() })
  end,
}
"#,
    ),
    (
        "scripts/lazy.lua",
        r#"return {
  on_message = function(self, msg)
    local pretty = require("pretty")
    local text = tostring(pretty.VER) .. " " .. type(pretty.format)
    blackboard.set("reply/" .. msg.payload.seq, { text = text })
  end,
}
"#,
    ),
];

#[tokio::test]
async fn a_deleted_stdlib_override_stays_loaded_and_new_requires_get_the_built_in() {
    let mut s = Session::start(OVERRIDE, true).await;
    assert_eq!(s.ask("r", "ping", json!({})).await["text"], "H P1");

    std::fs::remove_file(s.file("stdlib/pretty.lua")).unwrap();
    let event = s.reload_of("stdlib/pretty.lua").await;
    assert!(
        matches!(&event.change, Change::Removed { name, .. } if name == "pretty"),
        "{event:?}"
    );
    assert_eq!(event.agents, ["r-1"]);
    assert_eq!(
        s.ask("r", "ping", json!({})).await["text"],
        "H P1",
        "r-1 keeps the module it required"
    );
    assert_eq!(
        s.ask("lazy", "ping", json!({})).await["text"],
        "nil function",
        "a new require gets the built-in pretty"
    );

    // Put back, it is new code for everyone again.
    s.save("stdlib/pretty.lua", "return { VER = \"P2\" }\n");
    s.reloaded("stdlib/pretty.lua").await;
    assert_eq!(s.ask("r", "ping", json!({})).await["text"], "H P2");
    assert_eq!(s.ask("lazy", "ping", json!({})).await["text"], "P2 nil");
    s.stop().await;
}
