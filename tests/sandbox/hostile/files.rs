//! Hostile files in the scripts directory: FIFOs, devices, symbolic link
//! loops and oversized scripts are refused at start-up with an error naming
//! the file (exit 2), non-text scripts as bad scripts (exit 3), and nothing
//! blocks; a FIFO saved while a
//! watched task runs is refused too, and the task goes on.

use std::os::unix::fs::symlink;
use std::path::Path;

use super::{Case, Outcome, mkfifo, run, start};

/// The hostile agent's `start` in a watched run: says it has started (the
/// file `started`), then waits while the test saves a file.
const STARTED: &str = r#"  exec.run("touch", { task.inputs.dir .. "/started" })
  sleep(2000)"#;

/// Waits until the run's agents have started (see [`STARTED`]).
fn once_started(dir: &Path) {
    for _ in 0..400 {
        if dir.join("started").exists() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Runs a case whose scripts directory is broken by `prepare`; expects exit 2
/// and `text` in the error.
async fn refused_at_start(prepare: fn(&Path), text: &str) -> Outcome {
    refused_at_start_with(2, prepare, text).await
}

/// As [`refused_at_start`], with exit `code`.
async fn refused_at_start_with(code: i32, prepare: fn(&Path), text: &str) -> Outcome {
    let outcome = run(Case {
        hostile: &start(""),
        prepare: Some(prepare),
        no_witness: true,
        ..Case::default()
    })
    .await;
    assert_eq!(outcome.code, code, "{}", outcome.show());
    assert!(outcome.stderr.contains(text), "{}", outcome.show());
    outcome
}

#[tokio::test]
async fn a_fifo_named_like_a_script() {
    refused_at_start(
        |dir| mkfifo(&dir.join("scripts/trap.lua")),
        "scripts/trap.lua: not a regular file (a FIFO)",
    )
    .await;
}

#[tokio::test]
async fn a_fifo_named_like_a_module() {
    refused_at_start(
        |dir| {
            std::fs::create_dir_all(dir.join("scripts/lib")).unwrap();
            mkfifo(&dir.join("scripts/lib/trap.lua"));
        },
        "scripts/lib/trap.lua: not a regular file (a FIFO)",
    )
    .await;
}

#[tokio::test]
async fn a_link_to_dev_zero_named_like_a_script() {
    refused_at_start(
        |dir| symlink("/dev/zero", dir.join("scripts/zero.lua")).unwrap(),
        "scripts/zero.lua: not a regular file (a device)",
    )
    .await;
}

#[tokio::test]
async fn two_links_to_the_directory_itself() {
    // Walking them naively is exponential; they are a loop, and refused.
    refused_at_start(
        |dir| {
            symlink(".", dir.join("scripts/a")).unwrap();
            symlink(".", dir.join("scripts/b")).unwrap();
        },
        "symbolic link loop",
    )
    .await;
}

#[tokio::test]
async fn a_link_back_to_a_parent_directory() {
    refused_at_start(
        |dir| {
            std::fs::create_dir_all(dir.join("scripts/lib/deep")).unwrap();
            symlink("../..", dir.join("scripts/lib/deep/up")).unwrap();
        },
        "symbolic link loop",
    )
    .await;
}

#[tokio::test]
async fn an_oversized_script() {
    refused_at_start(
        |dir| {
            let big = "-- x\n".repeat(4 * 1024 * 1024);
            std::fs::write(dir.join("scripts/huge.lua"), big).unwrap();
        },
        "scripts/huge.lua: larger than",
    )
    .await;
}

#[tokio::test]
async fn a_script_that_is_not_text() {
    // A bad script (exit 3), as one that does not compile.
    refused_at_start_with(
        3,
        |dir| std::fs::write(dir.join("scripts/binary.lua"), [0xff, 0xfe, 0x00, 0x80]).unwrap(),
        "scripts/binary.lua:1: not UTF-8 text: byte 0xff at offset 0",
    )
    .await;
}

#[tokio::test]
async fn a_fifo_saved_while_a_watched_task_runs() {
    // The hostile agent waits a second; meanwhile a FIFO appears where a
    // module would be. The reloader refuses it without blocking, and the
    // task ends as usual.
    let outcome = run(Case {
        hostile: &start(STARTED),
        args: &["--watch"],
        grant: r#"commands = ["touch"]"#,
        prepare: Some(|dir| {
            let dir = dir.to_path_buf();
            std::thread::spawn(move || {
                once_started(&dir);
                mkfifo(&dir.join("scripts/late.lua"));
            });
        }),
        env: &[("ORRERY_LOG", "warn,orrery::reload=info".into())],
        ..Case::default()
    })
    .await;
    outcome.completed();
    assert!(
        outcome
            .stderr
            .contains("late.lua: not a regular file (a FIFO)"),
        "{}",
        outcome.show()
    );
}

#[tokio::test]
async fn a_saved_script_whose_check_hangs_in_a_close_handler_is_refused() {
    // The reload check builds its VM like an agent's, under the same budget:
    // a top level that loops in a close handler (which once wedged the
    // checker with hooks off) is refused, and the task goes on.
    let outcome = run(Case {
        hostile: &start(STARTED),
        args: &["--watch"],
        grant: r#"commands = ["touch"]"#,
        prepare: Some(|dir| {
            let dir = dir.to_path_buf();
            std::thread::spawn(move || {
                once_started(&dir);
                let late = dir.join("scripts/late.lua");
                let hang = "local spin = setmetatable({}, { __close = function() while true do end end })\n\
                            for _ in function() return 1 end, nil, nil, spin do while true do end end\n\
                            return {}\n";
                std::fs::write(late, hang).unwrap();
            });
        }),
        env: &[("ORRERY_LOG", "warn,orrery::reload=info".into())],
        ..Case::default()
    })
    .await;
    outcome.completed();
    assert!(
        outcome
            .stderr
            .contains("late.lua: loading took longer than 300 ms (callback_timeout)"),
        "{}",
        outcome.show()
    );
}
