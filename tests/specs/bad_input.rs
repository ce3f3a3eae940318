//! Bad input to `orrery test`: each a clear message naming the place, and its exit code.

use crate::common::{Scratch, orrery, show};

#[test]
fn a_spec_file_that_does_not_exist_is_bad_input_naming_it() {
    let scratch = Scratch::new(&[("noop.lua", "return {}\n")]);
    let out = orrery(scratch.path(), &["test", "spec/nope_spec.lua"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("spec/nope_spec.lua: no such spec file or directory"),
        "{}",
        show(&out)
    );
}

#[test]
fn no_spec_found_says_where_it_looked() {
    let scratch = Scratch::new(&[("noop.lua", "return {}\n")]);
    let out = orrery(scratch.path(), &["test"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no spec files: no *_spec.lua under spec or tests"),
        "{}",
        show(&out)
    );
}

#[test]
fn a_spec_that_does_not_compile_names_its_file_and_line() {
    let scratch = Scratch::new(&[("noop.lua", "return {}\n")]);
    scratch.write(
        "spec/broken_spec.lua",
        "describe(\"x\", function()\n  it(\"y\", function()\n    local = 1\n  end)\nend)\n",
    );
    scratch.write("spec/fine_spec.lua", "it(\"runs\", function() end)\n");
    let out = orrery(scratch.path(), &["test"]);
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("  ERROR spec/broken_spec.lua:3: <name> expected near '='"),
        "{}",
        show(&out)
    );
    // The other files still run.
    assert!(stdout.contains("  ok      runs"), "{}", show(&out));
    assert!(
        stdout.contains("1 passed, 0 failed, 0 pending, 1 file that could not run"),
        "{}",
        show(&out)
    );
}

#[test]
fn a_spec_raising_at_its_top_level_names_its_line() {
    let scratch = Scratch::new(&[("noop.lua", "return {}\n")]);
    scratch.write("spec/top_spec.lua", "local x = nil\nlocal y = x.field\n");
    let out = orrery(scratch.path(), &["test"]);
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("ERROR spec/top_spec.lua:2: attempt to index a nil value (local 'x')"),
        "{}",
        show(&out)
    );
}

#[test]
fn a_spec_raising_a_table_at_its_top_level_names_its_line() {
    let scratch = Scratch::new(&[("noop.lua", "return {}\n")]);
    scratch.write("spec/top_spec.lua", "local x = 1\nerror({ code = x })\n");
    let out = orrery(scratch.path(), &["test"]);
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("ERROR spec/top_spec.lua:2: (error object is a table value)"),
        "{}",
        show(&out)
    );
}

#[test]
fn tests_declared_inside_a_test_and_bad_setups_are_errors_of_that_test() {
    let scratch = Scratch::new(&[("noop.lua", "return {}\n")]);
    scratch.write(
        "spec/misuse_spec.lua",
        r#"
it("nests", function() it("inner", function() end) end)
it("sets up a bad task", function() test.setup{ task = { timeout = "soon" } } end)
it("misspells an option", function() test.setup{ taks = {} } end)
it("gives a missing task file", function() test.setup{ task = "nope.toml" } end)
"#,
    );
    let out = orrery(scratch.path(), &["test"]);
    assert_eq!(out.status.code(), Some(10), "{}", show(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "spec/misuse_spec.lua:2: it: tests are declared at the top of the spec or inside describe, not inside a test",
        "test.setup task",
        "spec/misuse_spec.lua:4: test.setup: unknown option 'taks' (known: task, llm, settings, spies)",
        "nope.toml",
    ] {
        assert!(stdout.contains(needle), "{needle}\nin {}", show(&out));
    }
    assert!(stdout.contains("0 passed, 4 failed"), "{}", show(&out));
}

#[test]
fn an_unknown_flag_is_bad_input() {
    let scratch = Scratch::new(&[("noop.lua", "return {}\n")]);
    let out = orrery(scratch.path(), &["test", "--tapp"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--tapp"),
        "{}",
        show(&out)
    );
}

/// A test that raises a table fails with the same text every run, not
/// with the table's address (a new one each time).
#[test]
fn a_test_raising_a_table_fails_by_its_type_not_its_address() {
    let scratch = Scratch::new(&[("noop.lua", "return {}\n")]);
    scratch.write(
        "spec/t_spec.lua",
        "describe('t', function()\n  it('raises', function() error({ code = 1 }) end)\n  \
         it('raises a named one', function() error(setmetatable({}, { __name = 'X\\nok 9 forged' })) end)\nend)\n",
    );
    let out = orrery(scratch.path(), &["test"]);
    assert_eq!(out.status.code(), Some(10), "{}", show(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.matches("(error object is a table value)").count() == 2 && !stdout.contains("0x"),
        "{}",
        show(&out)
    );
}
