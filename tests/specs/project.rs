//! The project's own specs (spec/), run through the binary as `cargo test` does.

use crate::common::{Scratch, orrery, repo, show};

#[test]
fn the_default_agents_and_the_stdlib_pass_their_specs() {
    let out = orrery(&repo(), &["test"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    for spec in ["alpha", "beta", "gamma", "run", "stdlib"] {
        assert!(
            stdout.contains(&format!("spec/{spec}_spec.lua")),
            "spec/{spec}_spec.lua ran: {}",
            show(&out)
        );
    }
    assert!(stdout.contains(" 0 failed, 0 pending"), "{}", show(&out));
}

/// A Beta that lost its sandbox-only check: it deploys wherever it is told.
fn broken_beta() -> String {
    let beta = std::fs::read_to_string(repo().join("scripts/beta.lua")).unwrap();
    let check =
        "  if validate.has_constraint(task, \"sandbox-only\") and target ~= \"sandbox\" then\n";
    assert!(beta.contains(check), "scripts/beta.lua still has its check");
    beta.replace(check, "  if false then\n")
}

#[test]
fn a_broken_beta_fails_its_spec_naming_the_test_the_line_and_what_was_found() {
    let scratch = Scratch::new(&[("beta.lua", &broken_beta())]);
    let scripts = scratch.scripts();
    let out = orrery(
        &repo(),
        &[
            "test",
            "--scripts",
            scripts.to_str().unwrap(),
            "spec/beta_spec.lua",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(10), "{}", show(&out));
    let spec = std::fs::read_to_string(repo().join("spec/beta_spec.lua")).unwrap();
    let line = |needle: &str| {
        spec.lines()
            .position(|l| l.contains(needle))
            .map(|i| i + 1)
            .unwrap_or_else(|| panic!("spec/beta_spec.lua has {needle:?}"))
    };
    let declared = line("it(\"refuses to deploy outside the sandbox");
    let asserted = line("assert.equals(\"step_failed\", report.type)");
    let expected = format!(
        "FAIL    beta > refuses to deploy outside the sandbox under sandbox-only \
         (spec/beta_spec.lua:{declared})\n          spec/beta_spec.lua:{asserted}: expected \
         \"step_failed\"\n            found    \"step_done\""
    );
    assert!(stdout.contains(&expected), "{expected}\nin {}", show(&out));
    assert!(stdout.contains("8 passed, 1 failed"), "{}", show(&out));
}

#[test]
fn the_same_specs_give_the_same_output_run_after_run() {
    // The project's specs, as TAP (no durations), and a spec whose failure
    // shows the clock, message ids, phase times and the order of messages.
    let scratch = Scratch::new(&[]);
    scratch.write(
        "spec/seen_spec.lua",
        r#"
it("shows what it saw", function()
  test.setup{ task = { inputs = { service = "web" } } }
  local ids = {}
  for i = 1, 3 do ids[i] = spawn.agent("beta") end
  for i = 1, 6 do
    ids[#ids + 1] = bus.send("beta", "step_ready", { step = { id = "s" .. i, action = "build" } })
  end
  local from = {}
  for i = 1, 6 do from[i] = bus.receive(1000).from end
  sleep(250)
  local history = state.history("beta-1")
  error(json.encode({ now = now(), ids = ids, from = from, at = history[1].at,
    os_time = os.time(), date = os.date("!%c"), dice = math.random(1000000),
    writers = blackboard.get("artifacts/s6").produced_by }))
end)
"#,
    );
    let scripts = repo().join("scripts");
    let scripts = scripts.to_str().unwrap();
    let run = || {
        let args = ["test", "--tap", "--scripts", scripts, "spec/seen_spec.lua"];
        let out = orrery(scratch.path(), &args);
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let first = run();
    assert!(first.contains("not ok 1"), "{first}");
    assert!(first.contains(r#"\"now\":1704067200250"#), "{first}");
    assert!(first.contains(r#"\"os_time\":1704067200"#), "{first}");
    for _ in 0..2 {
        assert_eq!(first, run());
    }
    let project = |_: ()| {
        let out = orrery(&repo(), &["test", "--tap"]);
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert_eq!(project(()), project(()));
}
