//! Bad input through the real binary: each case exits with its own code, names
//! the file, line, field or flag at fault on stderr, and loses nothing (a bad
//! task or flag fails before any agent starts).

use std::process::Output;

use crate::common::{Scratch, orrery, orrery_env, show};

const OK_AGENT: (&str, &str) = (
    "worker.lua",
    "return { start = function() task.output('ran', true) end }",
);

const TASK: &str = "id = \"t\"\ntype = \"test\"\ndescription = \"a task\"\ntimeout = 30000\n";

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts the exit code, that stderr names every `needle`, and that no agent started.
fn assert_refused(out: &Output, code: i32, needles: &[&str]) {
    assert_eq!(out.status.code(), Some(code), "{}", show(out));
    let err = stderr(out);
    for needle in needles {
        assert!(
            err.contains(needle),
            "stderr lacks {needle:?}\n{}",
            show(out)
        );
    }
    assert!(!err.contains("-> INIT"), "an agent started:\n{}", show(out));
    assert!(out.stdout.is_empty(), "{}", show(out));
}

fn run_task(file: &str, text: &str) -> Output {
    let s = Scratch::new(&[OK_AGENT]);
    s.write(file, text);
    orrery(s.path(), &["run", file])
}

#[test]
fn malformed_task_files_name_the_file_and_line() {
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "task.toml",
            "id = \"t\"\ntype = \"test\"\ndescription = \"unclosed\n",
            &["task.toml:3"],
        ),
        (
            "task.json",
            "{\n  \"id\": \"t\",\n  \"type\": \n}",
            &["task.json:4"],
        ),
        (
            "task.toml",
            &TASK.replace("30000", "\"soon\""),
            &["task.toml:4", "invalid type"],
        ),
        (
            "task.toml",
            &TASK.replace("30000", "-5"),
            &["task.toml:4", "-5"],
        ),
        (
            "task.toml",
            &TASK.replace("30000", "0"),
            &["task.toml: timeout", "greater than 0"],
        ),
        (
            "task.toml",
            "id = \"t\"\ntype = \"test\"\n",
            &["task.toml", "missing field `description`"],
        ),
        (
            "task.json",
            "{\"id\": \"t\", \"type\": \"x\", \"description\": 5}",
            &["task.json:1", "invalid type"],
        ),
        (
            "task.toml",
            &format!("{TASK}colour = \"red\"\n"),
            &["task.toml:5", "unknown field `colour`"],
        ),
        (
            "task.toml",
            &format!("{TASK}agents = [\"nobody\"]\n"),
            &["unknown role 'nobody'", "scripts/nobody.lua"],
        ),
        (
            "task.toml",
            &format!("{TASK}[[spawn]]\ntrigger = \"x\"\nthreshold = 1\nagent = \"ghost\"\n"),
            &["unknown role 'ghost'"],
        ),
        (
            "task.toml",
            &TASK.replace("\"t\"", "\"../escape\""),
            &["task.toml: id", "'../escape'"],
        ),
    ];
    for (file, text, needles) in cases {
        let out = run_task(file, text);
        assert_refused(&out, 2, needles);
    }
    let s = Scratch::new(&[OK_AGENT]);
    assert_refused(
        &orrery(s.path(), &["run", "missing.toml"]),
        2,
        &["missing.toml", "cannot read task file"],
    );
}

#[test]
fn bad_scripts_directories_name_the_directory() {
    let s = Scratch::new(&[]);
    s.write("task.toml", TASK);
    assert_refused(
        &orrery(s.path(), &["run", "task.toml"]),
        2,
        &["scripts: scripts directory has no <role>.lua"],
    );
    assert_refused(
        &orrery(s.path(), &["run", "task.toml", "--scripts", "nowhere"]),
        2,
        &["nowhere: scripts directory does not exist"],
    );
}

#[test]
fn unknown_flags_and_bad_store_urls_name_the_flag() {
    let s = Scratch::new(&[OK_AGENT]);
    s.write("task.toml", TASK);
    let run = |args: &[&str]| orrery(s.path(), &[&["run", "task.toml"], args].concat());
    assert_refused(&run(&["--frobnicate"]), 2, &["--frobnicate"]);
    assert_refused(
        &run(&["--max-agents", "many"]),
        2,
        &["--max-agents", "many"],
    );
    assert_refused(
        &run(&["--timeout", "0"]),
        2,
        &["flag --timeout", "greater than 0"],
    );
    assert_refused(
        &run(&["--store", "foo://x"]),
        2,
        &["flag --store", "'foo://x'", "neither 'memory' nor"],
    );
    assert_refused(
        &run(&["--store", "redis://"]),
        2,
        &["flag --store", "'redis://'"],
    );
    assert_refused(
        &run(&["--store", "redis://:99999999"]),
        2,
        &["flag --store"],
    );
    // A URL the client refuses only when it connects is refused up front,
    // naming the flag like the others.
    assert_refused(
        &run(&["--store", "redis://127.0.0.1:6379/zero"]),
        2,
        &[
            "flag --store",
            "'redis://127.0.0.1:6379/zero'",
            "database number",
        ],
    );

    let out = orrery_env(
        s.path(),
        &["run", "task.toml"],
        &[("ORRERY_STORE", "postgres://db")],
    );
    assert_refused(
        &out,
        2,
        &["environment variable ORRERY_STORE", "'postgres://db'"],
    );
}

#[test]
fn bad_config_files_name_the_file_line_and_setting() {
    let s = Scratch::new(&[OK_AGENT]);
    s.write("task.toml", TASK);
    let cases: &[(&str, &[&str])] = &[
        (
            "callback_timeout = 100\nmemry_limit = 5\n",
            &["orrery.toml:2", "unknown field `memry_limit`"],
        ),
        (
            "agent_timeout = 0\n",
            &["orrery.toml:1: setting agent_timeout", "greater than 0"],
        ),
        (
            "max_agents = 3\nstore = \"mysql://x\"\n",
            &["orrery.toml:2: setting store", "'mysql://x'"],
        ),
        (
            // Another role's grant first, and an array over lines: the
            // line is the faulty entry's, not the first `http =`.
            "[roles.other.capabilities]\nhttp = [\"a.example\"]\n\n\
             [roles.worker.capabilities]\nhttp = [\n  \"a.example\",\n  \"http://example.com/x\",\n]\n",
            &[
                "orrery.toml:7: setting roles.worker.capabilities.http[1]",
                "no scheme, no path",
            ],
        ),
        (
            "[roles.worker.capabilities]\nread_files = \"no-such-dir\"\n",
            &[
                "orrery.toml:2: setting roles.worker.capabilities.read_files",
                "is not a directory",
            ],
        ),
        (
            "roles.worker.capabilities.commands = [\"rm -rf /\"]\n",
            &[
                "orrery.toml:1: setting roles.worker.capabilities.commands[0]",
                "without spaces or arguments",
            ],
        ),
        (
            "[roles.worker.capabilities]\nshell = true\n",
            &["orrery.toml:2", "unknown field `shell`"],
        ),
    ];
    for (config, needles) in cases {
        s.write("orrery.toml", config);
        assert_refused(&orrery(s.path(), &["run", "task.toml"]), 2, needles);
    }
}

/// A grant to a role the scripts do not define is a warning naming the line,
/// the role and the roles there are, not an error: one config file may serve
/// tasks whose scripts directories hold different roles.
#[test]
fn a_grant_to_a_role_no_script_defines_is_a_warning_naming_the_line() {
    let s = Scratch::new(&[OK_AGENT]);
    s.write("task.toml", TASK);
    s.write(
        "orrery.toml",
        "max_agents = 3\n\n[roles.nobody.capabilities]\ncommands = [\"echo\"]\n",
    );
    let warning = "warning: orrery.toml:3: setting roles.nobody: no role 'nobody' in scripts \
                   (roles: worker), so its capabilities are granted to no agent";
    for args in [&["run", "task.toml"][..], &["check"][..]] {
        let out = orrery(s.path(), args);
        assert_eq!(out.status.code(), Some(0), "{args:?}\n{}", show(&out));
        assert!(stderr(&out).contains(warning), "{args:?}\n{}", show(&out));
    }
    s.write(
        "orrery.toml",
        "[roles.worker.capabilities]\ncommands = [\"echo\"]\n",
    );
    let out = orrery(s.path(), &["run", "task.toml"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(!stderr(&out).contains("warning:"), "{}", show(&out));
}

#[test]
fn a_script_that_does_not_return_a_table_fails_with_its_path() {
    let s = Scratch::new(&[("loner.lua", "return 42"), OK_AGENT]);
    s.write("task.toml", TASK);
    let out = orrery(s.path(), &["run", "task.toml", "--json"]);
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("stdout is the JSON report");
    let message = report["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("scripts/loner.lua: a role script must return a table"),
        "{message}"
    );
    assert_eq!(
        report["outputs"]["ran"],
        serde_json::json!(true),
        "the other agent ran"
    );
}

#[test]
fn each_failure_kind_has_its_own_exit_code() {
    let cases: &[(&str, &str, &[&str], i32)] = &[
        ("ok.lua", "return { start = function() end }", &[], 0),
        (
            "raise.lua",
            "return { start = function() error('boom') end }",
            &[],
            3,
        ),
        (
            "spin.lua",
            "return { start = function() while true do end end }",
            &[],
            4,
        ),
        (
            "idle.lua",
            "return { start = function() sleep(60000) end }",
            &["--timeout", "300"],
            4,
        ),
        (
            "giveup.lua",
            "return { start = function() state.set('FAILED', 'no') end }",
            &[],
            7,
        ),
    ];
    for (file, source, extra, code) in cases {
        let s = Scratch::new(&[(file, source)]);
        s.write("task.toml", TASK);
        s.write("orrery.toml", "callback_timeout = 300\n");
        let out = orrery(s.path(), &[&["run", "task.toml"], *extra].concat());
        assert_eq!(out.status.code(), Some(*code), "{file}: {}", show(&out));
    }
    // A spawn past max_agents (more agents up front than it is bad input,
    // exit 2, before anything runs).
    let s = Scratch::new(&[
        (
            "a.lua",
            "return { start = function() spawn.agent('b') end }",
        ),
        ("b.lua", "return { start = function() sleep(1000) end }"),
    ]);
    s.write(
        "task.toml",
        "id = \"limit\"\ntype = \"t\"\ndescription = \"d\"\nagents = [\"a\"]\n",
    );
    let out = orrery(s.path(), &["run", "task.toml", "--max-agents", "1"]);
    assert_eq!(out.status.code(), Some(6), "{}", show(&out));
    assert!(stderr(&out).contains("spawn limit"), "{}", show(&out));
}

#[test]
fn print_goes_to_the_log_not_to_stdout() {
    let s = Scratch::new(&[(
        "talker.lua",
        "return { start = function() print('hello', 42) end }",
    )]);
    s.write("task.toml", TASK);
    let out = orrery(s.path(), &["run", "task.toml", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .expect("stdout is only the JSON report");
    assert!(stderr(&out).contains("hello\t42"), "{}", show(&out));
}

/// A top level that runs out of Lua heap names its file and the setting in
/// `orrery check` (Lua's own "not enough memory" named neither).
#[test]
fn a_top_level_out_of_heap_names_its_file_and_the_setting() {
    let s = Scratch::new(&[(
        "hog.lua",
        "local t = {} for i = 1, 1e8 do t[i] = i end\nreturn { start = function() end }",
    )]);
    s.write("orrery.toml", "memory_limit = 4194304\n");
    let out = orrery(s.path(), &["check", "scripts"]);
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    assert!(
        stderr(&out)
            .contains("scripts/hog.lua: its top level ran out of Lua heap (setting memory_limit)")
            || String::from_utf8_lossy(&out.stdout).contains(
                "scripts/hog.lua: its top level ran out of Lua heap (setting memory_limit)"
            ),
        "{}",
        show(&out)
    );
}
