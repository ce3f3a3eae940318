//! Bad input through the binary: malformed task files, an unknown role, bad
//! flags, a bad config file line, a bad `ORRERY_*` value. Each exits 2 with a
//! message naming the file and line, field, flag or variable at fault.

use crate::common::{Scratch, orrery, orrery_env, show};

const GOOD_TASK: &str = "id = \"t\"\ntype = \"test\"\ndescription = \"d\"\n";

fn scratch() -> Scratch {
    let s = Scratch::new(&[("solo.lua", "return {}\n")]);
    s.write("task.toml", GOOD_TASK);
    s
}

/// Runs `orrery args…` in `s`, asserts exit 2 and that stderr holds every fragment.
fn assert_bad_input(s: &Scratch, args: &[&str], env: &[(&str, &str)], fragments: &[&str]) {
    let out = orrery_env(s.path(), args, env);
    assert_eq!(out.status.code(), Some(2), "{args:?}\n{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for fragment in fragments {
        assert!(
            stderr.contains(fragment),
            "{args:?}: no '{fragment}' in\n{}",
            show(&out)
        );
    }
    assert!(
        out.stdout.is_empty(),
        "nothing runs on bad input\n{}",
        show(&out)
    );
}

#[test]
fn a_task_file_with_a_toml_syntax_error_names_file_and_line() {
    let s = scratch();
    s.write("bad.toml", "id = \"t\"\ntype = \"test\"\n[inputs\n");
    assert_bad_input(
        &s,
        &["run", "bad.toml"],
        &[],
        &["bad.toml:3:", "expected `]`"],
    );
}

#[test]
fn a_task_file_with_a_json_syntax_error_names_file_and_line() {
    let s = scratch();
    s.write(
        "bad.json",
        "{\"id\": \"t\",\n\"type\": \"test\",,\n\"description\": \"d\"}",
    );
    assert_bad_input(&s, &["run", "bad.json"], &[], &["bad.json:2:"]);
}

#[test]
fn a_task_value_of_the_wrong_type_names_file_line_and_field() {
    let s = scratch();
    s.write("bad.toml", &format!("{GOOD_TASK}timeout = \"soon\"\n"));
    assert_bad_input(
        &s,
        &["run", "bad.toml"],
        &[],
        &["bad.toml:4: timeout: invalid type: string \"soon\""],
    );
    s.write(
        "bad.json",
        "{\"id\": \"t\", \"type\": \"test\", \"description\": \"d\",\n \"constraints\": \"none\"}",
    );
    assert_bad_input(
        &s,
        &["run", "bad.json"],
        &[],
        &["bad.json:2: constraints: invalid type: string \"none\", expected a list"],
    );
}

#[test]
fn a_task_missing_a_field_names_it() {
    let s = scratch();
    s.write("bad.toml", "id = \"t\"\ndescription = \"d\"\n");
    assert_bad_input(
        &s,
        &["run", "bad.toml"],
        &[],
        &["bad.toml", "missing field `type`"],
    );
    s.write("bad.json", "{\"id\": \"t\", \"type\": \"test\"}");
    assert_bad_input(
        &s,
        &["run", "bad.json"],
        &[],
        &["bad.json:1:", "missing field `description`"],
    );
}

#[test]
fn a_task_naming_an_unknown_role_names_file_field_and_role() {
    let s = scratch();
    s.write(
        "bad.toml",
        &format!("{GOOD_TASK}agents = [\"solo\", \"zeta\"]\n"),
    );
    assert_bad_input(
        &s,
        &["run", "bad.toml"],
        &[],
        &["bad.toml: agents[1]: unknown role 'zeta': no scripts/zeta.lua"],
    );
    s.write(
        "cond.toml",
        &format!("{GOOD_TASK}[[spawn]]\ntrigger = \"GO\"\nthreshold = 1\nagent = \"zeta\"\n"),
    );
    assert_bad_input(
        &s,
        &["run", "cond.toml"],
        &[],
        &["cond.toml: spawn[0].agent: unknown role 'zeta'"],
    );
}

#[test]
fn a_bad_flag_is_named() {
    let s = scratch();
    assert_bad_input(&s, &["run", "task.toml", "--bogus"], &[], &["'--bogus'"]);
    assert_bad_input(
        &s,
        &["run", "task.toml", "--max-agents", "many"],
        &[],
        &["invalid value 'many' for '--max-agents <N>'"],
    );
    assert_bad_input(
        &s,
        &["run", "task.toml", "--timeout", "0"],
        &[],
        &["flag --timeout: must be greater than 0 ms"],
    );
    assert_bad_input(
        &s,
        &["run", "task.toml", "--max-agents", "0"],
        &[],
        &["max_agents: must be greater than 0"],
    );
}

#[test]
fn a_bad_config_file_line_names_file_and_line() {
    let s = scratch();
    s.write("orrery.toml", "max_agents = 3\nspawn_timeout = \"slow\"\n");
    assert_bad_input(
        &s,
        &["run", "task.toml"],
        &[],
        &["orrery.toml:2: spawn_timeout: invalid type: string \"slow\""],
    );
    s.write("other.toml", "max_agents = 3\n\nmax_agnets = 4\n");
    assert_bad_input(
        &s,
        &["run", "task.toml", "--config", "other.toml"],
        &[],
        &["other.toml:3: unknown field `max_agnets`"],
    );
}

#[test]
fn a_bad_environment_value_names_the_variable() {
    let s = scratch();
    assert_bad_input(
        &s,
        &["run", "task.toml"],
        &[("ORRERY_MAX_AGENTS", "lots")],
        &["environment variable ORRERY_MAX_AGENTS: 'lots'"],
    );
    assert_bad_input(
        &s,
        &["run", "task.toml"],
        &[("ORRERY_MESSAGE_TIMEOUT", "-5")],
        &["environment variable ORRERY_MESSAGE_TIMEOUT: '-5'"],
    );
}

#[test]
fn a_missing_task_file_or_scripts_directory_is_named() {
    let s = scratch();
    assert_bad_input(
        &s,
        &["run", "nowhere.toml"],
        &[],
        &["nowhere.toml: cannot read task file"],
    );
    assert_bad_input(
        &s,
        &["run", "task.toml", "--scripts", "no-such-dir"],
        &[],
        &["no-such-dir: scripts directory does not exist"],
    );
}

#[test]
fn a_good_task_in_the_same_setup_runs() {
    // The control for the cases above: the same scratch setup succeeds.
    let s = scratch();
    let out = orrery(s.path(), &["run", "task.toml"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
}

#[test]
fn an_out_of_range_setting_names_where_its_value_came_from_in_words() {
    let s = scratch();
    s.write(
        "orrery.toml",
        "# limits\nmessage_timeout = 100\nmax_agents = 0\n",
    );
    assert_bad_input(
        &s,
        &["run", "task.toml"],
        &[],
        &["error: orrery.toml:3: setting max_agents: must be greater than 0"],
    );
    std::fs::remove_file(s.path().join("orrery.toml")).unwrap();
    assert_bad_input(
        &s,
        &["run", "task.toml"],
        &[("ORRERY_MEMORY_LIMIT", "1000")],
        &[
            "error: environment variable ORRERY_MEMORY_LIMIT: setting memory_limit: must be at least",
        ],
    );
    assert_bad_input(
        &s,
        &["run", "task.toml", "--max-agents", "0"],
        &[],
        &["error: flag --max-agents: setting max_agents: must be greater than 0"],
    );
    // Values of the wrong kind are said in words, never as Rust types.
    s.write("orrery.toml", "callback_timeout = -5\n");
    let out = crate::common::orrery(s.path(), &["run", "task.toml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("orrery.toml:1: callback_timeout: invalid value: integer `-5`, expected a whole number of 0 or more"),
        "{}",
        show(&out)
    );
    std::fs::remove_file(s.path().join("orrery.toml")).unwrap();
    let out = orrery_env(
        s.path(),
        &["run", "task.toml"],
        &[("ORRERY_MAX_AGENTS", "-1")],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "environment variable ORRERY_MAX_AGENTS: '-1' is not a whole number of 0 or more"
        ),
        "{}",
        show(&out)
    );
    for rust in ["u64", "usize", "u32", "f64", "ParseIntError"] {
        assert!(!stderr.contains(rust), "{}", show(&out));
    }
}

#[test]
fn the_scripts_directory_beside_the_task_file_comes_before_the_current_one() {
    let s = scratch(); // ./scripts has the role `solo`
    s.write("job/task.toml", GOOD_TASK);
    s.write(
        "job/scripts/beside.lua",
        "local M = {}\nfunction M.start(self) task.output('ran', agent.role) end\nreturn M\n",
    );
    let out = orrery(s.path(), &["run", "job/task.toml", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["outputs"]["ran"], "beside", "{report:#}");

    // --scripts still wins.
    let out = orrery(
        s.path(),
        &["run", "job/task.toml", "--json", "--scripts", "scripts"],
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["agents_used"][0], "solo-1", "{report:#}");
}

#[test]
fn no_scripts_directory_anywhere_is_named_with_absolute_paths_and_a_hint() {
    let s = Scratch::new(&[]);
    std::fs::remove_dir(s.scripts()).unwrap();
    s.write("job/task.toml", GOOD_TASK);
    let root = s.path().canonicalize().unwrap();
    assert_bad_input(
        &s,
        &["run", "job/task.toml"],
        &[],
        &[
            &format!("{}", root.join("job/scripts").display()),
            "(beside the task file)",
            &format!("{}", root.join("scripts").display()),
            "pass --scripts DIR",
        ],
    );
}

#[test]
fn json_reports_bad_input_as_an_error_object() {
    let s = scratch();
    for args in [
        &["run", "nowhere.toml", "--json"][..],
        &["run", "task.toml", "--json", "--max-agents", "lots"],
        &["check", "no-such-dir", "--json"],
    ] {
        let out = orrery(s.path(), args);
        assert_eq!(out.status.code(), Some(2), "{args:?}\n{}", show(&out));
        let object: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: no JSON on stdout ({e})\n{}", show(&out)));
        assert_eq!(object["error"]["kind"], "bad_input", "{object:#}");
        assert_eq!(object["error"]["exit_code"], 2, "{object:#}");
        assert!(!object["error"]["message"].as_str().unwrap().is_empty());
    }
    let out = orrery(s.path(), &["check", "no-such-dir", "--json"]);
    let object: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let message = object["error"]["message"].as_str().unwrap();
    let absolute = s.path().canonicalize().unwrap().join("no-such-dir");
    assert!(
        message.contains(&absolute.display().to_string()) && message.contains("pass --scripts DIR"),
        "{message}"
    );
}

/// With `--json`, a parse error's object names what is wrong, as the text
/// does: a missing argument, and the values a flag takes.
#[test]
fn json_parse_errors_name_the_missing_argument_and_the_values_allowed() {
    let s = scratch();
    for (args, named) in [
        (&["run", "--json"][..], "not provided: <TASK>"),
        (
            &["run", "task.toml", "--json", "--log-format", "xml"],
            "[possible values: text, json]",
        ),
    ] {
        let out = orrery(s.path(), args);
        assert_eq!(out.status.code(), Some(2), "{args:?}\n{}", show(&out));
        let object: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: no JSON on stdout ({e})\n{}", show(&out)));
        let message = object["error"]["message"].as_str().unwrap();
        assert!(message.contains(named), "{args:?}: {message}");
        assert!(!message.contains("Usage:"), "{args:?}: {message}");
    }
}

/// More agents up front than `max_agents` lets live is known before anything
/// runs: bad input naming the task file's `agents` (it started some, then
/// ended with no report). `max_value_bytes = 0` is refused like every other
/// size (every write then failed as a script error).
#[test]
fn settings_that_cannot_work_are_refused_before_anything_runs() {
    let s = scratch();
    s.write(
        "six.toml",
        "id = \"six\"\ntype = \"t\"\ndescription = \"d\"\nagents = [\"solo\", \"solo\", \"solo\"]\n",
    );
    assert_bad_input(
        &s,
        &["run", "six.toml", "--max-agents", "2"],
        &[],
        &["six.toml: agents: 3 agents start up front (its agents list) but max_agents is 2"],
    );
    assert_bad_input(
        &s,
        &["run", "task.toml"],
        &[("ORRERY_MAX_VALUE_BYTES", "0")],
        &["max_value_bytes: must be greater than 0"],
    );
    s.write(
        "empty.toml",
        "id = \"empty\"\ntype = \"t\"\ndescription = \"d\"\nagents = []\n",
    );
    assert_bad_input(
        &s,
        &["run", "empty.toml"],
        &[],
        &["empty.toml: agents: an empty list starts no agent"],
    );
    assert_bad_input(
        &s,
        &["run", "task.toml"],
        &[("ORRERY_MAX_ATTEMPTS", "18446744073709551615")],
        &["environment variable ORRERY_MAX_ATTEMPTS: '18446744073709551615' is too large"],
    );
    // A stdlib directory asked for by name must exist (the default may not).
    assert_bad_input(
        &s,
        &["run", "task.toml", "--stdlib", "nowhere"],
        &[],
        &["flag --stdlib: setting stdlib: nowhere is not a directory"],
    );
}
