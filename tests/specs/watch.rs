//! `orrery test --watch`: the authoring loop, save → result.

use std::time::Duration;

use crate::common::{Scratch, repo, spawn_orrery};

#[test]
fn a_saved_spec_runs_again_and_a_saved_script_runs_every_spec() {
    let scratch = Scratch::new(&[(
        "beta.lua",
        &std::fs::read_to_string(repo().join("scripts/beta.lua")).unwrap(),
    )]);
    scratch.write(
        "spec/a_spec.lua",
        "it(\"a\", function() assert.equals(1, 1) end)\n",
    );
    scratch.write(
        "spec/b_spec.lua",
        "it(\"b\", function() assert.equals(1, 1) end)\n",
    );
    let mut running = spawn_orrery(scratch.path(), &["test", "--watch"], &[]);
    running.wait_for("watching for changes", Duration::from_secs(30));
    scratch.write(
        "spec/a_spec.lua",
        "it(\"a\", function() assert.equals(1, 2) end)\n",
    );
    running.wait_for("watched run: 0 passed, 1 failed", Duration::from_secs(30));
    scratch.write("scripts/beta.lua", "return {}\n");
    running.wait_for("watched run: 1 passed, 1 failed", Duration::from_secs(30));
    running.kill();
}
