//! `orrery worker --store URL [--max-tasks N] [--roles R,...] [--scripts DIR]`:
//! run the fleet's submitted tasks until SIGTERM or Ctrl-C, which drain it
//! (see `orrery::fleet::worker`).

use std::path::PathBuf;
use std::time::Duration;

use orrery::error::exit;
use orrery::fleet::Fleet;
use orrery::fleet::worker::{self, WorkerOptions};

use super::ConfigArgs;

/// Arguments of `orrery worker`.
#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    /// Most tasks run at once by this worker.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub max_tasks: usize,
    /// Serve only tasks whose roles are all among these (comma-separated).
    #[arg(long, value_name = "R,...", value_delimiter = ',')]
    pub roles: Vec<String>,
    /// A worker silent for this long has its tasks taken over (ms).
    #[arg(long, value_name = "MS", default_value_t = 10_000)]
    pub lease: u64,
    /// On SIGTERM, how long running tasks may go on before they are handed over (ms).
    #[arg(long, value_name = "MS", default_value_t = 30_000)]
    pub drain: u64,
    /// Take no new task while the running tasks' live agents number N.
    #[arg(long, value_name = "N")]
    pub max_agents_total: Option<usize>,
    /// Take no new task while this process's resident memory is above MB.
    #[arg(long, value_name = "MB")]
    pub max_memory: Option<u64>,
    /// Serve Prometheus metrics of the worker (its load and health) and of
    /// every task it runs at http://ADDR/metrics.
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<String>,
    /// Where submitted code is written out (default: the system's temp dir).
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
    #[command(flatten)]
    pub config: ConfigArgs,
}

pub fn execute(args: WorkerArgs) -> anyhow::Result<i32> {
    let config = args.config.resolve()?;
    super::require_shared_store(&config, "orrery worker")?;
    if args.max_tasks == 0 {
        return Err(orrery::Error::bad_input("flag --max-tasks", "must be at least 1").into());
    }
    if args.lease < 300 {
        return Err(orrery::Error::bad_input("flag --lease", "must be at least 300 ms").into());
    }
    if args.max_agents_total == Some(0) || args.max_memory == Some(0) {
        return Err(orrery::Error::bad_input(
            "flag --max-agents-total / --max-memory",
            "must be at least 1",
        )
        .into());
    }
    for role in &args.roles {
        if !orrery::task::is_role_name(role) {
            return Err(orrery::Error::bad_input(
                "flag --roles",
                format!("'{role}' is not a role name"),
            )
            .into());
        }
    }
    let scripts = config.origin("scripts").map(|_| config.scripts.clone());
    let id = worker::worker_id();
    let mut opts = WorkerOptions {
        id: id.clone(),
        max_tasks: args.max_tasks,
        roles: args.roles,
        scripts,
        cache: args
            .cache
            .unwrap_or_else(|| std::env::temp_dir().join("orrery-bundles")),
        lease: Duration::from_millis(args.lease),
        drain: Duration::from_millis(args.drain),
        max_agents: args.max_agents_total,
        max_memory: args.max_memory.map(|mb| mb << 20),
        config: config.clone(),
        metrics: None,
        gauges: None,
    };
    std::fs::create_dir_all(&opts.cache)?;
    super::runtime()?.block_on(async {
        let timeout = Duration::from_millis(config.connect_timeout);
        let fleet = Fleet::connect(&config.store, timeout).await?;
        let store = super::open_store(&config).await?;
        if let Some(addr) = &args.metrics_addr {
            let (exporter, bound) =
                orrery::observe::prometheus::Exporter::serve(addr, "flag --metrics-addr").await?;
            super::print_err(&format!("metrics: http://{bound}/metrics"));
            opts.gauges = Some(exporter.worker(&id));
            opts.metrics = Some(exporter);
        }
        let (drain_tx, drain_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM can be watched");
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            super::print_err("draining: no more tasks taken; running tasks go on to their end");
            let _ = drain_tx.send(true);
            // Keep the sender so the worker does not read its end as a drain.
            std::future::pending::<()>().await;
        });
        super::print_err(&format!(
            "worker {id} serving {} (up to {} tasks)",
            fleet.describe(),
            opts.max_tasks
        ));
        let summary = worker::run(fleet, store, opts, drain_rx).await?;
        super::print_err(&format!(
            "worker {id} stopped: {} tasks finished, {} handed over",
            summary.finished, summary.handed_over
        ));
        Ok(exit::OK)
    })
}
