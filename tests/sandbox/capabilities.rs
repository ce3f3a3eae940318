//! Capabilities beyond the sandbox, granted per role in the config: each is
//! shown granted (it works, within its fence) and refused (absent by default,
//! and outside the fence).

use std::collections::BTreeMap;

use orrery::capabilities::{Capabilities, RoleConfig};
use orrery::config::Config;
use orrery::report::TaskStatus;
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::common::{Scratch, closed_port, run_in_process, task};
use crate::util::config;

/// Runs role `user` (granted `caps`) and role `other` (granted nothing), both
/// running `body`; returns their outputs `user` and `other`.
async fn run_with(
    caps: Capabilities,
    body: &str,
    scratch: Option<&Scratch>,
) -> BTreeMap<String, Value> {
    let script = |name: &str| {
        format!(
            "local M = {{}}\nfunction M.start(self)\n  local function try(code) \
             local ok, v = pcall(assert(load('return ' .. code))) \
             if ok then return v end return (tostring(v):match('^[^\\n]*')) end\n  local out = {{}}\n{body}\n  \
             task.output('{name}', out)\nend\nreturn M\n"
        )
    };
    let (user, other) = (script("user"), script("other"));
    let own;
    let scratch = match scratch {
        Some(s) => {
            s.write("scripts/user.lua", &user);
            s.write("scripts/other.lua", &other);
            s
        }
        None => {
            own = Scratch::new(&[("user.lua", &user), ("other.lua", &other)]);
            &own
        }
    };
    let cfg = Config {
        roles: BTreeMap::from([("user".to_string(), RoleConfig { capabilities: caps })]),
        ..config()
    };
    let report = run_in_process(
        crate::common::Backend::Memory,
        &scratch.scripts(),
        task("caps", 60_000),
        cfg,
    )
    .await;
    assert_eq!(report.status, TaskStatus::Complete, "{report:#?}");
    report.outputs.into_iter().collect()
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_files_reads_below_its_directory_only() {
    let scratch = Scratch::new(&[]);
    scratch.write("data/a.txt", "alpha");
    scratch.write("data/sub/b.txt", "beta");
    scratch.write("secret.txt", "top secret");
    std::os::unix::fs::symlink(
        scratch.path().join("secret.txt"),
        scratch.path().join("data/link"),
    )
    .unwrap();
    let caps = Capabilities {
        read_files: Some(scratch.path().join("data")),
        ..Capabilities::default()
    };
    let body = r#"
  out.a = try[[fs.read("a.txt")]]
  out.b = try[[fs.read("sub/b.txt")]]
  out.list = try[[fs.list()]]
  out.up = try[[fs.read("../secret.txt")]]
  out.around = try[[fs.read("sub/../../secret.txt")]]
  out.absolute = try[[fs.read("/etc/passwd")]]
  out.symlink = try[[fs.read("link")]]
  out.missing = try[[fs.read("nope.txt")]]"#;
    let out = run_with(caps, body, Some(&scratch)).await;
    let user = &out["user"];
    assert_eq!(user["a"], json!("alpha"));
    assert_eq!(user["b"], json!("beta"));
    assert_eq!(user["list"], json!(["a.txt", "link", "sub"]));
    for refused in ["up", "around", "symlink"] {
        assert!(
            text(&user[refused]).contains("leads outside the granted directory"),
            "{refused}: {}",
            user[refused]
        );
    }
    assert!(text(&user["absolute"]).contains("expected a path relative to the granted directory"));
    assert!(text(&user["missing"]).contains("fs.read('nope.txt'): cannot open"));
    assert!(
        text(&out["other"]["a"]).contains(
            "fs.read: capability not granted to role 'other' (grant it in orrery.toml: [roles.other.capabilities] read_files = \"DIR\")"
        ),
        "{}",
        out["other"]["a"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_run_only_the_granted_programs_without_a_shell_or_secrets() {
    let caps = Capabilities {
        commands: vec![
            "echo".into(),
            "cat".into(),
            "env".into(),
            "sleep".into(),
            "yes".into(),
        ],
        ..Capabilities::default()
    };
    // SAFETY: set before any agent starts; read only by the child's environment.
    unsafe { std::env::set_var("ORRERY_TEST_SECRET", "hunter2") };
    let body = r#"
  local r = try[[exec.run("echo", { "hello", "$HOME;", "rm -rf /" })]]
  out.echo = type(r) == "table" and { r.status, r.ok, r.stdout } or r
  out.stdin = try[[exec.run("cat", {}, { stdin = "piped in" }).stdout]]
  out.env = try[[exec.run("env").stdout]]
  out.not_granted = try[[exec.run("ls", { "/" })]]
  out.shell = try[[exec.run("echo hi; ls")]]
  out.timeout = try[[exec.run("sleep", { "5" }, { timeout = 100 })]]
  out.bad_timeout = try[[exec.run("echo", {}, { timeout = "soon" })]]
  out.unknown_option = try[[exec.run("echo", {}, { timout = 5 })]]
  out.flood = try[[exec.run("yes")]]"#;
    let out = run_with(caps, body, None).await;
    let user = &out["user"];
    assert_eq!(user["echo"], json!([0, true, "hello $HOME; rm -rf /\n"]));
    assert_eq!(user["stdin"], json!("piped in"));
    let env = text(&user["env"]);
    assert!(
        !env.contains("hunter2") && env.starts_with("PATH="),
        "{env}"
    );
    assert!(
        text(&user["not_granted"])
            .contains("'ls' is not among the commands granted to role 'user'")
    );
    assert!(text(&user["shell"]).contains("is not among the commands granted"));
    assert!(text(&user["timeout"]).contains("exec.run('sleep'): timed out after 100 ms"));
    assert!(
        text(&user["bad_timeout"])
            .contains("exec.run('echo'): option 'timeout' must be a number of milliseconds >= 0"),
        "{user}"
    );
    assert!(
        text(&user["unknown_option"])
            .contains("exec.run('echo'): unknown option 'timout' (options: timeout, stdin)"),
        "{user}"
    );
    assert!(text(&user["flood"]).contains("output is larger than max_value_bytes (4096 bytes)"));
    assert!(
        text(&out["other"]["echo"]).contains("exec.run: capability not granted to role 'other'")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_reaches_only_the_granted_hosts() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/hello"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_string("hi")
                .insert_header("x-served-by", "mock"),
        )
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/echo"))
        .respond_with(|req: &wiremock::Request| {
            ResponseTemplate::new(201).set_body_bytes(req.body.clone())
        })
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/slow"))
        .respond_with(ResponseTemplate::new(200).set_delay(std::time::Duration::from_secs(3)))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/ctype"))
        .respond_with(|req: &wiremock::Request| {
            let ctype = req
                .headers
                .get_all("content-type")
                .iter()
                .map(|v| v.to_str().unwrap_or("?").to_string())
                .collect::<Vec<_>>()
                .join(" | ");
            ResponseTemplate::new(200).set_body_string(ctype)
        })
        .mount(&server)
        .await;
    let refused_port = closed_port();
    Mock::given(method("GET"))
        .and(path("/away"))
        .respond_with(ResponseTemplate::new(302).insert_header(
            "location",
            format!("http://127.0.0.1:{refused_port}/x").as_str(),
        ))
        .mount(&server)
        .await;
    let port = server.address().port();
    let caps = Capabilities {
        http: vec![format!("127.0.0.1:{port}")],
        ..Capabilities::default()
    };
    let body = format!(
        r#"
  base = "http://127.0.0.1:{port}"
  out.get = try[[(function() local r = http.get(base .. "/hello") return {{ r.status, r.body, r.headers["x-served-by"] }} end)()]]
  out.post = try[[(function() local r = http.post(base .. "/echo", {{ n = 1 }}) return {{ r.status, r.body }} end)()]]
  out.redirect = try[[http.get(base .. "/away").status]]
  out.big_text = try[[http.post(base .. "/echo", string.rep("x", 5000))]]
  out.other_port = try[[http.get("http://127.0.0.1:{refused_port}/")]]
  out.other_name = try[[http.get("http://localhost:{port}/hello")]]
  out.scheme = try[[http.get("file:///etc/passwd")]]
  out.unknown_option = try[[http.get(base .. "/hello", {{ header = {{}} }})]]
  out.slow = try[[http.get(base .. "/slow", {{ timeout = 100 }})]]
  out.crlf = try[[http.get(base .. "/hello", {{ headers = {{ ["x-a"] = "b\r\nHost: evil" }} }})]]
  out.ctype = try[[http.post(base .. "/ctype", {{ n = 1 }}, {{ headers = {{ ["Content-Type"] = "application/vnd.x+json" }} }}).body]]"#
    );
    let out = run_with(caps, &body, None).await;
    let user = &out["user"];
    assert_eq!(user["get"], json!([200, "hi", "mock"]));
    assert_eq!(user["post"], json!([201, "{\"n\":1}"]));
    assert_eq!(user["redirect"], json!(302), "redirects are not followed");
    assert!(
        text(&user["big_text"]).contains("body is larger than max_value_bytes (4096 bytes)"),
        "{user}"
    );
    assert!(
        text(&user["other_port"]).contains(&format!(
            "127.0.0.1:{refused_port} is not among the hosts granted to role 'user'"
        )),
        "{}",
        user["other_port"]
    );
    assert!(text(&user["other_name"]).contains("is not among the hosts granted"));
    assert!(text(&user["scheme"]).contains("scheme 'file' is not http or https"));
    assert!(
        text(&user["unknown_option"])
            .contains("http.get: unknown option 'header' (options: headers, timeout)"),
        "{user}"
    );
    assert!(
        text(&out["other"]["get"]).contains("http.get: capability not granted to role 'other'")
    );
    // A request that timed out says so (not "error sending request").
    assert!(
        text(&user["slow"]).contains("timed out after 100 ms (option 'timeout')"),
        "{user}"
    );
    assert!(
        text(&user["crlf"]).contains("header 'x-a': its value holds a character no header may"),
        "{user}"
    );
    // The caller's content-type is the one sent, alone.
    assert_eq!(user["ctype"], json!("application/vnd.x+json"), "{user}");
    assert_eq!(server.received_requests().await.unwrap().len(), 5);
}
