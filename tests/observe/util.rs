//! Reading journals, plain HTTP GETs, and the Chromium the browser test drives.

use std::path::{Path, PathBuf};
use std::time::Duration;

use orrery::coordination::journal::{Entry, Event};

pub use crate::common::{addr_in, http_get};

/// Long enough for a debug build on a busy machine; never reached when it works.
pub const PATIENCE: Duration = Duration::from_secs(120);

/// The entries of a journal file, every line parsed.
pub fn read_journal(path: &Path) -> Vec<Entry> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read the journal {}: {e}", path.display()));
    parse_lines(&text)
}

/// Every non-empty line of `text` as a journal entry.
pub fn parse_lines(text: &str) -> Vec<Entry> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| Entry::parse(l).unwrap_or_else(|e| panic!("not a journal entry ({e}): {l}")))
        .collect()
}

/// How many entries of `entries` satisfy `pick`.
pub fn count(entries: &[Entry], pick: impl Fn(&Entry) -> bool) -> u64 {
    entries.iter().filter(|e| pick(e)).count() as u64
}

/// True for entries of agent `id`.
pub fn of(e: &Entry, id: &str) -> bool {
    e.agent.as_deref() == Some(id)
}

/// The phases agent `id` entered, in journal order.
pub fn phases(entries: &[Entry], id: &str) -> Vec<String> {
    entries
        .iter()
        .filter(|e| of(e, id))
        .filter_map(|e| match &e.event {
            Event::Phase { to, .. } => Some(to.clone()),
            _ => None,
        })
        .collect()
}

/// Debian's `chromium`, or a failure saying how to install it: the browser
/// test never skips.
pub fn chromium() -> PathBuf {
    let candidates = [
        std::env::var_os("ORRERY_CHROMIUM").map(PathBuf::from),
        Some(PathBuf::from("/usr/bin/chromium")),
        Some(PathBuf::from("/usr/bin/chromium-browser")),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "the live view test drives a real headless Chromium and found none: install \
                 Debian's chromium (`apt-get install -y chromium`, as .ci/run does) or set \
                 ORRERY_CHROMIUM to a Chromium binary"
            )
        })
}
