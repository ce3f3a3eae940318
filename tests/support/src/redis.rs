//! Real `redis-server`s for the tests, each the test's own: a server is used
//! only once the test has checked that the listening socket on its port
//! belongs to the child it started (another test's server that won a race
//! for the port is never talked to), and is killed on drop.

use std::collections::HashSet;
use std::fs::OpenOptions;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to listen (a loaded machine runs two suites at once).
const START_PATIENCE: Duration = Duration::from_secs(30);

/// How many ports a fresh server tries when another process takes the one chosen.
const PORT_ATTEMPTS: usize = 8;

/// A `redis-server` (or the binary `ORRERY_REDIS_SERVER` names) on a port
/// of its own and in a temporary directory of its own, killed on drop.
pub struct RedisServer {
    child: Option<Child>,
    /// The TCP port it listens on (127.0.0.1).
    pub port: u16,
    dir: tempfile::TempDir,
    port_flag: String,
    args: Vec<String>,
}

/// Why a start failed.
enum Startup {
    /// Another process holds the port: a fresh server tries another.
    PortTaken(String),
    /// Anything else, described for the test's failure message.
    Failed(String),
}

impl RedisServer {
    /// Starts a server keeping nothing on disk; fails the test with an install
    /// hint when there is no binary.
    pub fn start() -> RedisServer {
        Self::start_with("--port", &plain_args(false), |_| {})
    }

    /// Starts a server that writes every change to its append-only file before
    /// answering, so a [`restart`](Self::restart) loses nothing acknowledged.
    pub fn start_persistent() -> RedisServer {
        Self::start_with("--port", &plain_args(true), |_| {})
    }

    /// Starts a server with the arguments `args`, listening on a free port
    /// passed as `port_flag PORT` (`--port`, or `--tls-port` for a TLS-only
    /// server given `--port 0` in `args`). `prepare` first fills the
    /// server's directory (certificates, say), which is its working directory.
    pub fn start_with(port_flag: &str, args: &[&str], prepare: impl FnOnce(&Path)) -> RedisServer {
        let dir = tempfile::tempdir().expect("a temporary directory for redis-server");
        prepare(dir.path());
        let mut server = RedisServer {
            child: None,
            port: 0,
            dir,
            port_flag: port_flag.to_string(),
            args: args.iter().map(|a| a.to_string()).collect(),
        };
        let mut taken = Vec::new();
        for _ in 0..PORT_ATTEMPTS {
            server.port = unused_port();
            match server.spawn() {
                Ok(()) => return server,
                Err(Startup::PortTaken(log)) => taken.push(log),
                Err(Startup::Failed(why)) => panic!("{why}"),
            }
        }
        panic!(
            "redis-server found every one of {PORT_ATTEMPTS} ports taken; last output:\n{}",
            taken.last().map_or("", String::as_str)
        );
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// The server's process id (`None` once killed).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The server's own directory (its working directory and data).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Kills the server (SIGKILL, as a crash would).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server and starts it again on the same port and data
    /// directory; fails the test, showing the server's output, when it
    /// cannot listen there again (another process took the port meanwhile).
    pub fn restart(&mut self) {
        self.kill();
        match self.spawn() {
            Ok(()) => {}
            Err(Startup::PortTaken(log)) => panic!(
                "redis-server could not listen on port {} again: another process took it\n{log}",
                self.port
            ),
            Err(Startup::Failed(why)) => panic!("{why}"),
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis-server.log")
    }

    /// Starts the child on `self.port` and waits until the listening socket
    /// on that port is provably its own.
    fn spawn(&mut self) -> Result<(), Startup> {
        let bin = std::env::var("ORRERY_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
        // Appended to, so a restart's output follows the first start's.
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("the server's log file opens");
        let child = Command::new(&bin)
            .arg(&self.port_flag)
            .arg(self.port.to_string())
            .args(&self.args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start '{bin}' ({e}). The Redis-store tests need a real server: \
                     install one with `apt-get install redis-server` (or set ORRERY_REDIS_SERVER \
                     to a redis-server or dragonfly binary)."
                )
            });
        let pid = child.id();
        self.child = Some(child);
        let deadline = Instant::now() + START_PATIENCE;
        loop {
            let child = self.child.as_mut().expect("just started");
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                let log = self.output();
                return Err(if log.contains("Address already in use") {
                    Startup::PortTaken(log)
                } else {
                    Startup::Failed(format!(
                        "'{bin}' exited ({status}) before listening on port {}; its output:\n{log}",
                        self.port
                    ))
                });
            }
            if listens_on(pid, self.port) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(Startup::Failed(format!(
                    "'{bin}' did not listen on port {} within {START_PATIENCE:?}; its output:\n{}",
                    self.port,
                    self.output()
                )));
            }
            // Nothing to await: a process starting to listen sends no event.
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// What the server printed so far.
    fn output(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn plain_args(persistent: bool) -> Vec<&'static str> {
    let mut args = vec!["--bind", "127.0.0.1", "--save", ""];
    if persistent {
        args.extend(["--appendonly", "yes", "--appendfsync", "always"]);
    } else {
        args.extend(["--appendonly", "no"]);
    }
    args
}

/// A port nobody listened on a moment ago (the server's check makes the race
/// with another process harmless).
fn unused_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a port on 127.0.0.1")
        .port()
}

/// True when process `pid` holds a socket listening on TCP `port`: the
/// listening sockets on the port (`/proc/net/tcp`, `tcp6`) against the
/// sockets among the process's open files (`/proc/PID/fd`).
fn listens_on(pid: u32, port: u16) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    let sockets: HashSet<String> = fds
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|target| {
            let target = target.to_str()?;
            Some(
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_string(),
            )
        })
        .collect();
    let suffix = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|table| {
        std::fs::read_to_string(table)
            .unwrap_or_default()
            .lines()
            .skip(1)
            .map(|line| line.split_whitespace().collect::<Vec<_>>())
            // local address, state 0A (LISTEN), inode
            .any(|f| {
                f.len() > 9 && f[1].ends_with(&suffix) && f[3] == "0A" && sockets.contains(f[9])
            })
    })
}

/// A port on 127.0.0.1 on which connections are refused, for as long as the
/// test process lives: it is bound and never listened on, so no other
/// process (another test's server) can take it meanwhile.
pub fn closed_port() -> u16 {
    let socket = tokio::net::TcpSocket::new_v4().expect("a TCP socket");
    socket.set_reuseaddr(false).expect("SO_REUSEADDR off");
    socket
        .bind("127.0.0.1:0".parse().expect("an address"))
        .expect("bind a port on 127.0.0.1");
    let port = socket.local_addr().expect("its address").port();
    // Kept open until the process ends: the port stays ours, and closed.
    std::mem::forget(socket);
    port
}
