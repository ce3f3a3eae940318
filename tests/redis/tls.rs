//! `rediss://`: the store over TLS, against a `redis-server` with a
//! certificate from a throw-away CA made with the `openssl` command.

use std::path::Path;
use std::process::Command;

use crate::common::{RedisServer, orrery, orrery_command, repo, show};

/// A TLS-only `redis-server` (its own child, killed on drop) with a
/// certificate from a CA made in its directory.
fn start_tls_server() -> RedisServer {
    RedisServer::start_with(
        "--tls-port",
        &[
            "--port",
            "0",
            "--bind",
            "127.0.0.1",
            "--tls-cert-file",
            "server.pem",
            "--tls-key-file",
            "server.key",
            "--tls-ca-cert-file",
            "ca.pem",
            "--tls-auth-clients",
            "no",
            "--save",
            "",
        ],
        make_certificates,
    )
}

/// `rediss://localhost:PORT/0` of a TLS-only server.
fn tls_url(server: &RedisServer) -> String {
    format!("rediss://localhost:{}/0", server.port)
}

/// The CA that signed the server's certificate.
fn ca(server: &RedisServer) -> String {
    server.dir().join("ca.pem").display().to_string()
}

/// A CA and a server certificate for localhost / 127.0.0.1, in `dir`.
fn make_certificates(dir: &Path) {
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    let steps: [&[&str]; 3] = [
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=orrery test CA",
        ],
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    ];
    for args in steps {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("the TLS test makes its certificates with the `openssl` command: install it with `apt-get install openssl`");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn a_task_runs_over_tls_and_the_certificate_is_checked() {
    let server = start_tls_server();
    let url = tls_url(&server);
    let trusted = orrery_command(
        &repo(),
        &["run", "examples/deploy.toml", "--store", &url, "-q"],
    )
    .env("SSL_CERT_FILE", ca(&server))
    .output()
    .unwrap();
    assert_eq!(trusted.status.code(), Some(0), "{}", show(&trusted));

    // Without the CA the server's certificate is refused: a Coordination error.
    let untrusted = orrery(&repo(), &["inspect", "deploy-001", "--store", &url]);
    assert_eq!(untrusted.status.code(), Some(5), "{}", show(&untrusted));
    assert!(
        String::from_utf8_lossy(&untrusted.stderr).contains("TLS certificate is not trusted"),
        "{}",
        show(&untrusted)
    );
    let inspected = orrery_command(&repo(), &["inspect", "deploy-001", "--store", &url])
        .env("SSL_CERT_FILE", ca(&server))
        .output()
        .unwrap();
    assert_eq!(inspected.status.code(), Some(0), "{}", show(&inspected));
    assert!(String::from_utf8_lossy(&inspected.stdout).contains("complete"));
}
