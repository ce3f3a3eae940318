//! `orrery report JOURNAL.jsonl [-o run.html]`: the live view of a finished
//! run as one self-contained HTML file (its CSS, JavaScript and the journal
//! inline), for CI artifacts and bug reports.

use std::path::PathBuf;

use orrery::coordination::journal::{Entry, Event};
use orrery::error::exit;

/// Arguments of `orrery report`.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// A journal written by `--journal FILE` (or `orrery tail --json`).
    pub journal: PathBuf,
    /// Where to write the page (default: the journal's name with .html).
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

pub fn execute(args: ReportArgs) -> anyhow::Result<i32> {
    let shown = args.journal.display().to_string();
    let text = std::fs::read_to_string(&args.journal)
        .map_err(|e| orrery::Error::bad_input(&shown, format!("cannot read the journal: {e}")))?;
    let mut lines = Vec::new();
    let mut title = None;
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let entry = Entry::parse(line).map_err(|e| {
            orrery::Error::bad_input(
                format!("{shown}:{}", n + 1),
                format!("not a journal entry: {e}"),
            )
        })?;
        if let Event::RunStarted { task, owner, .. } = &entry.event
            && (*owner || title.is_none())
        {
            title = Some(task.clone());
        }
        lines.push(line);
    }
    if lines.is_empty() {
        return Err(orrery::Error::bad_input(&shown, "the journal holds no entry").into());
    }
    let output = args
        .output
        .unwrap_or_else(|| args.journal.with_extension("html"));
    let page = orrery::observe::page::report(title.as_deref().unwrap_or("run"), &lines);
    std::fs::write(&output, page).map_err(|e| {
        orrery::Error::bad_input(
            format!("flag --output {}", output.display()),
            format!("cannot write the page: {e}"),
        )
    })?;
    super::print_err(&format!(
        "wrote {} ({} journal entries)",
        output.display(),
        lines.len()
    ));
    Ok(exit::OK)
}
