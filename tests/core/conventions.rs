//! Command-line conventions through the binary: shell completions, `-v` and
//! `-q` on every command, `NO_COLOR`, plurals, and `dev --help` showing only
//! flags that mean something there.

use std::process::Command;

use crate::common::{Scratch, orrery, orrery_env, show};

const TALKER: &str = r#"
local M = {}
function M.start(self)
  log.info("an info line")
  log.warn("a warning")
  log.error("an error")
  spawn.agent("helper")
end
return M
"#;

fn scratch() -> Scratch {
    let s = Scratch::new(&[("talker.lua", TALKER), ("helper.lua", "return {}\n")]);
    s.write(
        "task.toml",
        "id = \"talk\"\ntype = \"test\"\ndescription = \"d\"\nagents = [\"talker\"]\n",
    );
    s
}

#[test]
fn completions_are_printed_for_bash_zsh_and_fish() {
    let s = scratch();
    for (shell, marker) in [
        ("bash", "_orrery()"),
        ("zsh", "#compdef orrery"),
        ("fish", "complete -c orrery"),
    ] {
        let out = orrery(s.path(), &["completions", shell]);
        assert_eq!(out.status.code(), Some(0), "{}", show(&out));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(marker), "{shell}: no {marker:?}");
        assert!(text.contains("check") && text.contains("json"), "{shell}");
    }
    let out = orrery(s.path(), &["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
}

#[test]
fn quiet_and_verbose_set_the_log_level_on_every_command() {
    let s = scratch();
    // Each command takes both flags.
    for args in [
        &["check", "-q"][..],
        &["check", "-v"],
        &["completions", "bash", "-q"],
        &["bench", "--help", "-v"],
        &["inspect", "--help", "-q"],
        &["clean", "--help", "-q"],
    ] {
        let out = orrery(s.path(), args);
        assert_eq!(out.status.code(), Some(0), "{args:?}\n{}", show(&out));
    }
    let normal = orrery(s.path(), &["run", "task.toml"]);
    let stderr = String::from_utf8_lossy(&normal.stderr);
    assert!(
        stderr.contains("an info line") && stderr.contains("-> INIT"),
        "{}",
        show(&normal)
    );
    assert!(!stderr.contains("spawned"), "{}", show(&normal));

    let quiet = orrery(s.path(), &["run", "task.toml", "-q"]);
    assert_eq!(quiet.status.code(), Some(0), "{}", show(&quiet));
    let stderr = String::from_utf8_lossy(&quiet.stderr);
    assert!(stderr.contains("an error"), "{}", show(&quiet));
    for hidden in ["an info line", "a warning", "-> INIT"] {
        assert!(
            !stderr.contains(hidden),
            "-q shows {hidden:?}\n{}",
            show(&quiet)
        );
    }

    // -v wins over ORRERY_LOG and shows the host's own info lines.
    let verbose = orrery_env(
        s.path(),
        &["run", "task.toml", "-v"],
        &[("ORRERY_LOG", "error")],
    );
    let stderr = String::from_utf8_lossy(&verbose.stderr);
    assert!(
        stderr.contains("spawned") && stderr.contains("a warning"),
        "{}",
        show(&verbose)
    );
}

#[test]
fn no_color_turns_colour_off_on_a_terminal() {
    let s = scratch();
    let binary = env!("CARGO_BIN_EXE_orrery");
    let on_a_terminal = |no_color: Option<&str>| {
        // `script` gives the program a pseudo-terminal, as a user's shell would.
        let mut cmd = Command::new("script");
        cmd.args(["-qec", &format!("{binary} run task.toml"), "/dev/null"])
            .current_dir(s.path())
            .env_remove("ORRERY_LOG")
            .env_remove("NO_COLOR");
        if let Some(v) = no_color {
            cmd.env("NO_COLOR", v);
        }
        let out = cmd.output().expect("script runs");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert!(
        on_a_terminal(None).contains("\u{1b}["),
        "colour on a terminal"
    );
    let plain = on_a_terminal(Some("1"));
    assert!(plain.contains("a warning"), "{plain}");
    assert!(
        !plain.contains("\u{1b}["),
        "NO_COLOR=1 still coloured:\n{plain}"
    );
}

#[test]
fn dev_help_shows_only_flags_that_mean_something_there() {
    let s = scratch();
    let out = orrery(s.path(), &["dev", "--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    for absent in ["--join", "--role", "--watch"] {
        assert!(!help.contains(absent), "dev --help shows {absent}:\n{help}");
    }
    for present in ["--json", "--timeout", "--scripts", "--quiet", "--verbose"] {
        assert!(
            help.contains(present),
            "dev --help lacks {present}:\n{help}"
        );
    }
    let out = orrery(s.path(), &["dev", "task.toml", "--join", "x"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
}

#[test]
fn counts_read_in_the_singular_for_one() {
    let s = Scratch::new(&[(
        "greedy.lua",
        "local M = {}\nfunction M.start(self) spawn.agent('greedy') end\nreturn M\n",
    )]);
    s.write(
        "task.toml",
        "id = \"one\"\ntype = \"test\"\ndescription = \"d\"\n",
    );
    let out = orrery(s.path(), &["run", "task.toml", "--max-agents", "1"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("1 agent live and max_agents is 1"),
        "{}",
        show(&out)
    );
    let out = orrery(s.path(), &["check", "-q"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("(1 role)"),
        "{}",
        show(&out)
    );
}
