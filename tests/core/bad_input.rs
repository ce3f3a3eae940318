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
        &["bad.json:2: constraints: invalid type: string \"none\", expected a sequence"],
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
