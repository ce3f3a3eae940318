//! The flags that let a user see a run (`--journal`, `--ui`, `--ui-addr`,
//! `--metrics-addr`) and what they start: a journal file, the live view,
//! the metrics endpoint. Shared by `orrery run`, `orrery dev` and
//! `orrery run --join`.

use std::path::PathBuf;

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
            eprintln!("live view: {shown}");
            url = Some(shown);
        }
        Ok(Observers { ui: url })
    }
}

impl Observers {
    /// After the run: a live view keeps serving until Ctrl-C, unless the run
    /// itself was stopped by one (`interrupted`).
    pub async fn finish(self, interrupted: bool) {
        let Some(url) = self.ui else { return };
        if interrupted {
            return;
        }
        eprintln!("the task ended; the live view stays at {url} until Ctrl-C");
        let _ = tokio::signal::ctrl_c().await;
    }
}
