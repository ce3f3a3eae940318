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

/// Longest journal line read: far above any entry (a value the host
/// takes is at most `max_value_bytes`, escaped), so a file that is no
/// journal (`/dev/zero`) is refused before it fills the memory.
const MAX_LINE: u64 = 256 << 20;

pub fn execute(args: ReportArgs) -> anyhow::Result<i32> {
    let shown = args.journal.display().to_string();
    let (read, cut_off) = read_lines(&args.journal, &shown)?;
    let mut lines = Vec::new();
    let mut title = None;
    for (n, line) in read.iter().enumerate() {
        let line = line.as_str();
        if line.trim().is_empty() {
            continue;
        }
        let entry = match Entry::parse(line) {
            Ok(entry) => entry,
            // The journal ends every line it writes: a last line without its
            // end was cut off (the run killed while writing it, a full disk).
            Err(e) if cut_off && n + 1 == read.len() => {
                super::print_err(&format!(
                    "warning: {shown}:{}: the last line is cut off ({e}); left out",
                    n + 1
                ));
                continue;
            }
            Err(e) => {
                return Err(orrery::Error::bad_input(
                    format!("{shown}:{}", n + 1),
                    format!("not a journal entry: {e}"),
                )
                .into());
            }
        };
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

/// The lines of the journal at `path`, each at most [`MAX_LINE`] bytes,
/// and whether the last one has no end of line.
fn read_lines(path: &std::path::Path, shown: &str) -> orrery::Result<(Vec<String>, bool)> {
    use std::io::{BufRead, Read};
    let cannot = |e: std::io::Error| {
        orrery::Error::bad_input(shown, format!("cannot read the journal: {e}"))
    };
    let mut reader = std::io::BufReader::new(std::fs::File::open(path).map_err(cannot)?);
    let mut lines = Vec::new();
    loop {
        let mut line = Vec::new();
        let read = (&mut reader)
            .take(MAX_LINE + 1)
            .read_until(b'\n', &mut line)
            .map_err(cannot)?;
        if read == 0 {
            return Ok((lines, false));
        }
        let at = format!("{shown}:{}", lines.len() + 1);
        if line.len() as u64 > MAX_LINE {
            return Err(orrery::Error::bad_input(
                at,
                format!(
                    "not a journal entry: a line longer than {} MiB",
                    MAX_LINE >> 20
                ),
            ));
        }
        let ended = line.ends_with(b"\n");
        // A cut-off line may end inside a character.
        let text = match String::from_utf8(line) {
            Ok(text) => text,
            Err(e) if !ended => String::from_utf8_lossy(e.as_bytes()).into_owned(),
            Err(e) => {
                return Err(orrery::Error::bad_input(
                    &at,
                    format!("not a journal entry: {e}"),
                ));
            }
        };
        lines.push(text.trim_end_matches(['\n', '\r']).to_string());
        if !ended {
            return Ok((lines, true));
        }
    }
}
