//! `redis-benchmark` against the same server, for the figures to be compared
//! with what the server does for a plain client in the same run.

use std::process::Command;

use crate::error::{Error, Result};

/// Where `redis-benchmark` connects, from the store URL.
pub(super) struct Baseline {
    args: Vec<String>,
    /// The same, password hidden, for the report.
    shown: Vec<String>,
}

/// What one `redis-benchmark` run got (requests per second).
pub(super) struct Measured {
    /// The command line, password hidden.
    pub command: String,
    /// SET requests per second.
    pub set: f64,
    /// GET requests per second, when GET was run.
    pub get: Option<f64>,
}

impl Baseline {
    /// The connection arguments for `url`; BadInput when `redis-benchmark`
    /// cannot reach what it names (a Unix socket).
    pub fn from_url(url: &str) -> Result<Baseline> {
        use ::redis::{ConnectionAddr, IntoConnectionInfo};
        let info = url
            .into_connection_info()
            .map_err(|e| Error::bad_input("benchmark store URL", e.to_string()))?;
        let (host, port, tls) = match info.addr() {
            ConnectionAddr::Tcp(host, port) => (host.clone(), *port, false),
            ConnectionAddr::TcpTls { host, port, .. } => (host.clone(), *port, true),
            other => {
                return Err(Error::bad_input(
                    "benchmark store URL",
                    format!("redis-benchmark cannot reach {other:?}"),
                ));
            }
        };
        let mut args = vec!["-h".into(), host, "-p".into(), port.to_string()];
        let settings = info.redis_settings();
        args.extend(["--dbnum".into(), settings.db().to_string()]);
        if let Some(user) = settings.username() {
            args.extend(["--user".into(), user.to_string()]);
        }
        if tls {
            args.push("--tls".into());
        }
        let mut shown = args.clone();
        if let Some(password) = settings.password() {
            args.extend(["-a".into(), password.to_string()]);
            shown.extend(["-a".into(), "***".into()]);
        }
        Ok(Baseline { args, shown })
    }

    /// Runs `redis-benchmark -c clients -n requests -t tests` (no pipelining).
    /// BadInput when it is not installed.
    pub fn run(&self, clients: usize, requests: u64, tests: &str) -> Result<Measured> {
        let extra = [
            "-c".to_string(),
            clients.to_string(),
            "-n".into(),
            requests.to_string(),
            "-t".into(),
            tests.into(),
            "-q".into(),
        ];
        let out = Command::new("redis-benchmark")
            .args(self.args.iter().chain(&extra))
            .output()
            .map_err(|e| {
                Error::bad_input(
                    "redis-benchmark",
                    format!("cannot run it ({e}); install it with `apt-get install redis-tools`"),
                )
            })?;
        let text = String::from_utf8_lossy(&out.stdout);
        let rate = |name: &str| {
            text.split(['\r', '\n'])
                .filter_map(|line| line.strip_prefix(&format!("{name}: ")))
                .filter_map(|rest| rest.split_whitespace().next()?.parse::<f64>().ok())
                .next_back()
        };
        let set = rate("SET").ok_or_else(|| {
            Error::Coordination(format!(
                "redis-benchmark printed no SET figure: {}{}",
                text,
                String::from_utf8_lossy(&out.stderr)
            ))
        })?;
        let shown: Vec<&str> = self
            .shown
            .iter()
            .chain(&extra)
            .map(String::as_str)
            .collect();
        Ok(Measured {
            command: format!("redis-benchmark {}", shown.join(" ")),
            set,
            get: rate("GET"),
        })
    }
}
