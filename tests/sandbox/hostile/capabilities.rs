//! Capabilities: a granted capability reaches exactly what was granted.

use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::{Case, run, start};

#[tokio::test]
async fn ungranted_capabilities_fail_naming_the_setting() {
    let outcome = run(Case {
        hostile: &start(
            r#"
  for what, f in pairs({
    fs = function() return fs.read("x") end,
    exec = function() return exec.run("sh", { "-c", "touch " .. MARKER }) end,
    http = function() return http.get("http://127.0.0.1:1/") end,
  }) do
    local ok, err = pcall(f)
    if ok then escaped(what) end
    if not tostring(err):find("capability not granted") then escaped("wrong error " .. tostring(err)) end
  end
"#,
        ),
        ..Case::default()
    })
    .await;
    outcome.completed();
}

#[tokio::test]
async fn exec_runs_only_granted_program_names_without_a_shell() {
    let outcome = run(Case {
        hostile: &start(
            r#"
  for _, cmd in ipairs({ "sh", "/bin/sh", "echo; touch " .. MARKER, "../../bin/touch", "touch" }) do
    if pcall(exec.run, cmd, { MARKER }) then escaped("ran " .. cmd) end
  end
  local r = exec.run("echo", { "$(touch " .. MARKER .. ")", "; touch " .. MARKER })
  if not r.ok then escaped("echo failed") end
"#,
        ),
        grant: r#"commands = ["echo"]"#,
        ..Case::default()
    })
    .await;
    outcome.completed();
}

#[tokio::test]
async fn a_program_that_floods_or_hangs_is_stopped() {
    let outcome = run(Case {
        hostile: &start(
            r#"
  local ok1, e1 = pcall(exec.run, "yes", {})
  local ok2, e2 = pcall(exec.run, "sleep", { "60" }, { timeout = 200 })
  local ok3, e3 = pcall(exec.run, "cat", {}, { stdin = string.rep("x", 100), timeout = 2000 })
  task.output("flood", tostring(e1))
  task.output("hang", tostring(e2))
  if ok1 or ok2 then escaped("an endless program returned") end
"#,
        ),
        grant: r#"commands = ["yes", "sleep", "cat"]"#,
        ..Case::default()
    })
    .await;
    outcome.completed();
    let flood = outcome.output("flood").as_str().unwrap_or_default();
    assert!(flood.contains("max_value_bytes"), "{flood}");
    let hang = outcome.output("hang").as_str().unwrap_or_default();
    assert!(hang.contains("timed out"), "{hang}");
}

#[tokio::test]
async fn http_reaches_only_granted_hosts_and_follows_no_redirect() {
    let elsewhere = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_string("secret"))
        .mount(&elsewhere)
        .await;
    let granted = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(302).insert_header("location", elsewhere.uri().as_str()),
        )
        .mount(&granted)
        .await;
    let hostile = start(&format!(
        r#"
  if pcall(http.get, "{elsewhere}") then escaped("reached a host not granted") end
  local r = http.get("{granted}/")
  task.output("status", r.status)
  if r.body == "secret" then escaped("followed a redirect") end
"#,
        elsewhere = elsewhere.uri(),
        granted = granted.uri(),
    ));
    let grant = format!(
        "http = [\"{}\"]",
        granted.uri().trim_start_matches("http://")
    );
    let outcome = run(Case {
        hostile: &hostile,
        grant: &grant,
        ..Case::default()
    })
    .await;
    outcome.completed();
    assert_eq!(outcome.output("status"), 302);
    assert!(
        elsewhere
            .received_requests()
            .await
            .unwrap_or_default()
            .is_empty()
    );
}

#[tokio::test]
async fn fs_stays_below_its_directory() {
    let outcome = run(Case {
        hostile: &start(
            r#"
  for _, p in ipairs({ "../orrery.toml", "/etc/passwd", "out/passwd", "sub/../../orrery.toml", "" }) do
    if pcall(fs.read, p) then escaped("read " .. p) end
  end
  if pcall(fs.list, "..") then escaped("listed ..") end
  task.output("inside", fs.read("ok.txt"))
"#,
        ),
        files: &[("data/ok.txt", "fine"), ("data/sub/.keep", "")],
        grant: r#"read_files = "data""#,
        prepare: Some(|dir| std::os::unix::fs::symlink("/etc", dir.join("data/out")).unwrap()),
        ..Case::default()
    })
    .await;
    outcome.completed();
    assert_eq!(outcome.output("inside"), "fine");
}

#[tokio::test]
async fn fs_refuses_fifos_devices_and_oversized_files_without_waiting() {
    let scratch_files = [
        ("data/big.txt", &"x".repeat(70_000)[..]),
        ("data/ok.txt", "fine"),
    ];
    let outcome = run(Case {
        hostile: &start(
            r#"
  local errors = {}
  for _, p in ipairs({ "fifo", "zero", "big.txt", "sock" }) do
    local ok, err = pcall(fs.read, p)
    if ok then escaped("read " .. p) end
    errors[p] = tostring(err)
  end
  task.output("errors", errors)
"#,
        ),
        files: &scratch_files,
        grant: r#"read_files = "data""#,
        prepare: Some(|dir| {
            super::mkfifo(&dir.join("data/fifo"));
            std::os::unix::fs::symlink("/dev/zero", dir.join("data/zero")).unwrap();
        }),
        ..Case::default()
    })
    .await;
    outcome.completed();
    let errors = outcome.output("errors");
    for (file, expected) in [
        ("fifo", "not a regular file"),
        ("zero", "outside the granted directory"),
        ("big.txt", "larger than max_value_bytes"),
    ] {
        let error = errors[file].as_str().unwrap_or_default();
        assert!(
            error.contains(expected) || error.contains("cannot open"),
            "{file}: {error}"
        );
    }
}
