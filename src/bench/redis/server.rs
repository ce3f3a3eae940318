//! What the server and this process say about one measured run: the commands
//! the server executed (`INFO commandstats`), the CPU time each side spent
//! (`INFO cpu`, `getrusage`), and the connections open meanwhile (`INFO
//! clients`, sampled while the run goes on).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::MultiplexedConnection;

use crate::error::{Error, Result};

/// How often the connection count is sampled during a run.
const SAMPLE_EVERY: Duration = Duration::from_millis(5);

/// A connection of the benchmark's own for `INFO`.
#[derive(Clone)]
pub(super) struct Probe {
    conn: MultiplexedConnection,
}

/// The server's counters and this process's CPU time at one moment.
#[derive(Debug, Clone, Default)]
pub(super) struct Snapshot {
    /// Calls of each command (lower case), the probe's own `INFO` left out.
    pub calls: BTreeMap<String, u64>,
    /// Calls that failed, over all commands.
    pub failed: u64,
    /// CPU seconds the server has used (user + system, all its threads).
    pub server_cpu: f64,
    /// CPU seconds this process has used (user + system, all its threads).
    pub host_cpu: f64,
    /// Connections the server has accepted since it started.
    pub accepted: u64,
}

/// What happened between two snapshots.
#[derive(Debug, Clone, Default)]
pub(super) struct Delta {
    /// Commands executed, by name.
    pub calls: BTreeMap<String, u64>,
    /// Commands that failed.
    pub failed: u64,
    /// Server CPU seconds.
    pub server_cpu: f64,
    /// Host CPU seconds.
    pub host_cpu: f64,
    /// Connections accepted.
    pub accepted: u64,
}

impl Delta {
    /// Every command executed.
    pub fn commands(&self) -> u64 {
        self.calls.values().sum()
    }
}

impl Snapshot {
    /// The change from `before` to `self`.
    pub fn since(&self, before: &Snapshot) -> Delta {
        let mut calls = BTreeMap::new();
        for (name, n) in &self.calls {
            let d = n.saturating_sub(before.calls.get(name).copied().unwrap_or(0));
            if d > 0 {
                calls.insert(name.clone(), d);
            }
        }
        Delta {
            calls,
            failed: self.failed.saturating_sub(before.failed),
            server_cpu: (self.server_cpu - before.server_cpu).max(0.0),
            host_cpu: (self.host_cpu - before.host_cpu).max(0.0),
            accepted: self.accepted.saturating_sub(before.accepted),
        }
    }
}

fn failed(e: redis::RedisError) -> Error {
    Error::Coordination(format!("benchmark probe: {e}"))
}

impl Probe {
    /// A connection of its own to `url`.
    pub async fn connect(url: &str) -> Result<Probe> {
        let client = redis::Client::open(url).map_err(failed)?;
        let conn = client
            .get_multiplexed_async_connection()
            .await
            .map_err(failed)?;
        Ok(Probe { conn })
    }

    async fn info(&mut self, section: &str) -> Result<String> {
        redis::cmd("INFO")
            .arg(section)
            .query_async(&mut self.conn)
            .await
            .map_err(failed)
    }

    /// The counters now.
    pub async fn snapshot(&mut self) -> Result<Snapshot> {
        let stats = self.info("commandstats").await?;
        let cpu = self.info("cpu").await?;
        let general = self.info("stats").await?;
        let mut snap = Snapshot {
            host_cpu: crate::bench::cpu_seconds(),
            ..Snapshot::default()
        };
        for line in stats.lines() {
            let Some((name, fields)) = line
                .strip_prefix("cmdstat_")
                .and_then(|l| l.split_once(':'))
            else {
                continue;
            };
            let field = |key: &str| {
                fields
                    .split(',')
                    .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            snap.failed += field("failed_calls") + field("rejected_calls");
            if name != "info" {
                snap.calls.insert(name.to_string(), field("calls"));
            }
        }
        snap.server_cpu = ["used_cpu_sys", "used_cpu_user"]
            .iter()
            .filter_map(|k| info_field(&cpu, k)?.parse::<f64>().ok())
            .sum();
        snap.accepted = info_field(&general, "total_connections_received")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        Ok(snap)
    }

    /// Clients connected now, this probe included.
    pub async fn clients(&mut self) -> Result<u64> {
        let text = self.info("clients").await?;
        info_field(&text, "connected_clients")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| Error::Coordination("benchmark probe: no connected_clients".into()))
    }

    /// Clients connected once the count has stopped falling (connections of
    /// a store just dropped close a little later), within a second.
    pub async fn settled_clients(&mut self) -> Result<u64> {
        let mut last = self.clients().await?;
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let now = self.clients().await?;
            if now >= last {
                return Ok(now);
            }
            last = now;
        }
        Ok(last)
    }

    /// Samples the number of connected clients until the returned watch is
    /// stopped; its [`peak`](ClientWatch::stop) is the highest count seen.
    pub fn watch_clients(&self) -> ClientWatch {
        let peak = Arc::new(AtomicU64::new(0));
        let mut probe = self.clone();
        let seen = peak.clone();
        let sampler = tokio::spawn(async move {
            loop {
                if let Ok(n) = probe.clients().await {
                    seen.fetch_max(n, Ordering::Relaxed);
                }
                tokio::time::sleep(SAMPLE_EVERY).await;
            }
        });
        ClientWatch { peak, sampler }
    }
}

/// A running connection-count sampler.
pub(super) struct ClientWatch {
    peak: Arc<AtomicU64>,
    sampler: tokio::task::JoinHandle<()>,
}

impl ClientWatch {
    /// Stops sampling; the highest count seen.
    pub fn stop(self) -> u64 {
        self.sampler.abort();
        self.peak.load(Ordering::Relaxed)
    }
}

/// `value` of `name:value` in an INFO reply.
fn info_field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

/// The machine's load averages (1, 5, 15 minutes), where the OS tells.
pub(super) fn load_average() -> Option<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut it = text.split_whitespace().map(|v| v.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}
