//! The flags that let a user see a run (`--journal`, `--ui`, `--ui-addr`,
//! `--metrics-addr`) and what they start: a journal file, the live view,
//! the metrics endpoint. Shared by `orrery run`, `orrery dev` and
//! `orrery run --join`.

use std::path::PathBuf;

use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use orrery::coordination::Coordination;
use orrery::coordination::journal::FileSink;
use orrery::observe::live::{self, LiveFeed};

/// Flags for seeing a run.
#[derive(Debug, Clone, Default, clap::Args)]
#[command(next_help_heading = "Observing")]
pub struct ObserveArgs {
    /// Write every event of the run to FILE as JSON Lines (see README: The run journal).
    #[arg(long, value_name = "FILE")]
    pub journal: Option<PathBuf>,
    /// Also journal LLM prompts and answers (they may hold anything the scripts read).
    #[arg(long)]
    pub journal_prompts: bool,
    /// Serve the live view in a browser while the task runs, and after it
    /// ends until Ctrl-C (`orrery dev` always does).
    #[arg(long)]
    pub ui: bool,
    /// Address of the live view (default 127.0.0.1:4780, or any free port
    /// when that one is taken); implies --ui.
    #[arg(long, value_name = "ADDR")]
    pub ui_addr: Option<String>,
    /// Serve Prometheus metrics of the run at http://ADDR/metrics.
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<String>,
}

/// What the observing flags started for a run.
pub struct Observers {
    ui: Option<String>,
}

impl ObserveArgs {
    /// Starts what the flags ask for on the run of `coord`. Prints where the
    /// live view and the metrics are served on stderr. Fails with BadInput
    /// naming the flag for a journal file that cannot be created or an
    /// address that cannot be listened on.
    pub async fn start(&self, coord: &Coordination) -> anyhow::Result<Observers> {
        let journal = &coord.journal;
        journal.set_prompts(self.journal_prompts);
        if let Some(path) = &self.journal {
            journal.attach(Box::new(FileSink::create(path, "flag --journal")?));
        }
        let mut url = None;
        if self.ui || self.ui_addr.is_some() {
            let listener = live::bind(self.ui_addr.as_deref(), "flag --ui-addr").await?;
            let feed = LiveFeed::default();
            journal.attach(feed.sink());
            let addr = live::serve(listener, feed)?;
            let shown = format!("http://{addr}/");
            super::print_err(&format!("live view: {shown}"));
            url = Some(shown);
        }
        if let Some(addr) = &self.metrics_addr {
            let addr =
                orrery::observe::prometheus::serve(addr, "flag --metrics-addr", coord).await?;
            super::print_err(&format!("metrics: http://{addr}/metrics"));
        }
        Ok(Observers { ui: url })
    }
}

impl Observers {
    /// After the run: a live view keeps serving until Ctrl-C or SIGTERM,
    /// unless the run itself was stopped by one (`interrupted`).
    pub async fn finish(self, interrupted: bool) {
        let Some(url) = self.ui else { return };
        if interrupted {
            return;
        }
        super::print_err(&format!(
            "the task ended; the live view stays at {url} until Ctrl-C"
        ));
        super::drive::stop_requested().await;
    }
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `LEVEL message fields`, for people.
    Text,
    /// One JSON object per line (`timestamp`, `level`, `fields`, `target`, `spans`), for machines.
    Json,
}

/// Set once `--log-format json` is in force: the host's own lines on
/// stderr are JSON objects too (`print_err`).
static JSON_STDERR: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether stderr takes JSON objects only (`--log-format json`).
pub fn json_stderr() -> bool {
    JSON_STDERR.load(std::sync::atomic::Ordering::Relaxed)
}

/// Logs to stderr at `filter` (see `Cli::log_filter`) in `format`, in colour
/// only on a terminal and when `NO_COLOR` is unset or empty (no-color.org).
/// With `OTEL_EXPORTER_OTLP_ENDPOINT` set, the run's
/// spans are exported too (the returned guard sends the last ones when
/// dropped). Fails on a bad OpenTelemetry variable.
pub fn init_tracing(
    filter: &str,
    format: LogFormat,
) -> orrery::Result<Option<orrery::observe::otel::Telemetry>> {
    JSON_STDERR.store(
        format == LogFormat::Json,
        std::sync::atomic::Ordering::Relaxed,
    );
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr()) && !no_color;
    // The run's spans are for trace export: log lines never carry them.
    let filter =
        tracing_subscriber::EnvFilter::new(format!("{filter},{}=off", orrery::trace::TARGET));
    let console = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        // A closed stderr must not turn every later log line into a panic.
        .log_internal_errors(false);
    let console = match format {
        LogFormat::Text => console
            .with_target(false)
            .with_ansi(colour)
            .without_time()
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => console.json().with_filter(filter).boxed(),
    };
    let (otel, telemetry) = match orrery::observe::otel::layer(|v| std::env::var(v).ok())? {
        Some((layer, telemetry)) => (Some(layer), Some(telemetry)),
        None => (None, None),
    };
    tracing_subscriber::registry()
        .with(console)
        .with(otel)
        .init();
    Ok(telemetry)
}
