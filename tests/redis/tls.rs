//! `rediss://`: the store over TLS, against a `redis-server` with a
//! certificate from a throw-away CA made with the `openssl` command.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{free_port, orrery, repo, show};

/// A TLS-only `redis-server`, killed on drop, and the CA that signed its certificate.
struct TlsServer {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl TlsServer {
    fn start() -> TlsServer {
        let dir = tempfile::tempdir().unwrap();
        make_certificates(dir.path());
        let port = free_port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .args([
                "--tls-cert-file",
                "server.pem",
                "--tls-key-file",
                "server.key",
            ])
            .args([
                "--tls-ca-cert-file",
                "ca.pem",
                "--tls-auth-clients",
                "no",
                "--save",
                "",
            ])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start redis-server: install it with `apt-get install redis-server`");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the TLS redis-server did not start (built without TLS?)"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        TlsServer { child, port, dir }
    }

    fn url(&self) -> String {
        format!("rediss://localhost:{}/0", self.port)
    }

    fn ca(&self) -> String {
        self.dir.path().join("ca.pem").display().to_string()
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
    let server = TlsServer::start();
    let url = server.url();
    let trusted = Command::new(env!("CARGO_BIN_EXE_orrery"))
        .args(["run", "examples/deploy.toml", "--store", &url, "-q"])
        .current_dir(repo())
        .env("SSL_CERT_FILE", server.ca())
        .output()
        .unwrap();
    assert_eq!(trusted.status.code(), Some(0), "{}", show(&trusted));

    // Without the CA the server's certificate is refused: a Coordination error.
    let untrusted = orrery(&repo(), &["inspect", "deploy-001", "--store", &url]);
    assert_eq!(untrusted.status.code(), Some(5), "{}", show(&untrusted));
    assert!(
        String::from_utf8_lossy(&untrusted.stderr).contains("certificate verify failed"),
        "{}",
        show(&untrusted)
    );
    let inspected = Command::new(env!("CARGO_BIN_EXE_orrery"))
        .args(["inspect", "deploy-001", "--store", &url])
        .current_dir(repo())
        .env("SSL_CERT_FILE", server.ca())
        .output()
        .unwrap();
    assert_eq!(inspected.status.code(), Some(0), "{}", show(&inspected));
    assert!(String::from_utf8_lossy(&inspected.stdout).contains("complete"));
}
