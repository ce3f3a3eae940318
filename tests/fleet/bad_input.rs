//! Bad input: unknown task ids for `status` and `cancel`, a bad task file
//! for `submit` (named with its line), a file that is not Lua in the
//! scripts directory (left out, with a warning), the embedded store
//! refused, a metrics address that cannot be listened on.

use crate::common::{Scratch, orrery, show};
use crate::util::server;

#[test]
fn an_unknown_task_id_is_bad_input_naming_it() {
    let server = server();
    let scratch = Scratch::new(&[]);
    for cmd in ["status", "cancel"] {
        let out = orrery(
            scratch.path(),
            &[cmd, "no-such-task", "--store", &server.url()],
        );
        assert_eq!(out.status.code(), Some(2), "{}", show(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("no-such-task") && err.contains("no submitted task"),
            "{err}"
        );
    }
}

#[test]
fn a_bad_task_file_is_named_with_its_line() {
    let server = server();
    let scratch = Scratch::new(&[("alpha.lua", "return {}")]);
    scratch.write(
        "bad.toml",
        "id = \"x\"\ntype = \"t\"\ndescription = \"d\"\ntimeout = \"soon\"\n",
    );
    let out = orrery(
        scratch.path(),
        &["submit", "bad.toml", "--store", &server.url()],
    );
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml:4"), "{err}");
}

/// A file of the scripts directory that is not Lua (an image, not UTF-8)
/// is left out of the bundle with a warning naming it; the submit goes on.
#[test]
fn a_file_that_is_not_lua_is_left_out_of_the_bundle_with_a_warning() {
    let server = server();
    let scratch = Scratch::new(&[("alpha.lua", "return {}")]);
    std::fs::write(
        scratch.path().join("scripts/logo.png"),
        b"\x89PNG\r\n\x1a\n\xff\xfe",
    )
    .unwrap();
    scratch.write("t.toml", "id = \"t\"\ntype = \"t\"\ndescription = \"d\"\n");
    let out = orrery(
        scratch.path(),
        &["submit", "t.toml", "--store", &server.url()],
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warning: ") && err.contains("scripts/logo.png: not sent to the workers"),
        "{err}"
    );
}

#[test]
fn the_fleet_needs_a_shared_store() {
    let scratch = Scratch::new(&[("alpha.lua", "return {}")]);
    let out = orrery(scratch.path(), &["worker"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--store"),
        "{}",
        show(&out)
    );
}

#[test]
fn a_queued_task_cancelled_never_starts() {
    let server = server();
    let scratch = Scratch::new(&[(
        "alpha.lua",
        "local M = {}\nfunction M.start() task.output('ran', true) end\nreturn M\n",
    )]);
    scratch.write("t.toml", "id = \"t\"\ntype = \"t\"\ndescription = \"d\"\n");
    let url = server.url();
    let out = orrery(scratch.path(), &["submit", "t.toml", "--store", &url]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let id = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let out = orrery(scratch.path(), &["cancel", &id, "--store", &url]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let out = orrery(scratch.path(), &["status", &id, "--json", "--store", &url]);
    let task: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(task["state"], "cancelled", "{task:#}");
    assert!(task["started_ms"].is_null(), "{task:#}");
}

#[test]
fn a_metrics_address_that_cannot_be_listened_on_is_bad_input_naming_the_flag() {
    let server = server();
    let scratch = Scratch::new(&[("alpha.lua", "return {}")]);
    let out = orrery(
        scratch.path(),
        &[
            "worker",
            "--store",
            &server.url(),
            "--metrics-addr",
            "not-an-address",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("flag --metrics-addr not-an-address"),
        "{}",
        show(&out)
    );
}
