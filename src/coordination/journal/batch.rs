//! What the writer hands to the sinks: the entries taken in one round, typed
//! ([`Item`]) and as JSON Lines in one text, serialized once for every sink.

use std::io::Write;
use std::sync::Arc;

use super::Event;

/// One recorded entry as the sinks get it (the host is the batch's).
#[derive(Debug, Clone)]
pub struct Item {
    /// Sequence number.
    pub seq: u64,
    /// Microseconds since the Unix epoch.
    pub at_us: u64,
    /// The agent it is about, if any.
    pub agent: Option<Arc<str>>,
    /// What happened.
    pub event: Event,
    /// Where its line ends in [`Batch::text`] (past its newline).
    end: usize,
}

/// Entries of one writer round, in sequence order.
#[derive(Debug, Default)]
pub struct Batch {
    text: String,
    items: Vec<Item>,
}

impl Batch {
    /// An empty batch.
    pub(super) fn new() -> Batch {
        Batch::default()
    }

    /// Adds an entry of the process whose JSON-quoted id is `host_json`.
    pub(super) fn push(
        &mut self,
        host_json: &str,
        seq: u64,
        at_us: u64,
        agent: Option<Arc<str>>,
        event: Event,
    ) {
        // SAFETY of the text: only JSON, which is UTF-8, goes in.
        let buf = unsafe { self.text.as_mut_vec() };
        // itoa, not `write!`: formatting through core::fmt costs more than
        // the rest of the line.
        let mut digits = itoa::Buffer::new();
        buf.extend_from_slice(b"{\"seq\":");
        buf.extend_from_slice(digits.format(seq).as_bytes());
        buf.extend_from_slice(b",\"at_us\":");
        buf.extend_from_slice(digits.format(at_us).as_bytes());
        buf.extend_from_slice(b",\"host\":");
        buf.extend_from_slice(host_json.as_bytes());
        if let Some(agent) = &agent {
            buf.extend_from_slice(b",\"agent\":");
            let _ = serde_json::to_writer(&mut *buf, &**agent);
        }
        // The event is an object `{"kind":...}`: its opening brace becomes
        // the comma that joins its fields to the ones above.
        let start = buf.len();
        match serde_json::to_writer(&mut *buf, &event) {
            Ok(()) if buf.get(start) == Some(&b'{') => buf[start] = b',',
            _ => {
                buf.truncate(start);
                let _ = write!(buf, ",\"kind\":\"unserializable\"}}");
            }
        }
        buf.push(b'\n');
        self.items.push(Item {
            seq,
            at_us,
            agent,
            event,
            end: buf.len(),
        });
    }

    /// True when it holds no entry.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Every entry's JSON line, each ended by a newline.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The entries, typed.
    pub fn items(&self) -> &[Item] {
        &self.items
    }

    /// The JSON line of entry `i` (without its newline).
    pub fn line(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.items[i - 1].end };
        &self.text[start..self.items[i].end - 1]
    }

    /// Every entry's JSON line (without newlines), in order.
    pub fn lines(&self) -> impl Iterator<Item = &str> {
        (0..self.items.len()).map(|i| self.line(i))
    }

    /// Empties it, keeping its memory for the next round.
    pub(super) fn clear(&mut self) {
        self.text.clear();
        self.items.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::{Batch, Event};
    use crate::coordination::journal::Entry;

    #[test]
    fn lines_are_the_entries_as_json_with_the_event_flattened_in() {
        let mut b = Batch::new();
        b.push("\"h:1\"", 1, 10, None, Event::MessagesReleased { count: 2 });
        b.push(
            "\"h:1\"",
            2,
            11,
            Some("a\"1".into()),
            Event::BlackboardDelete {
                key: "k\n".into(),
                existed: true,
            },
        );
        let lines: Vec<&str> = b.lines().collect();
        assert_eq!(
            lines[0],
            r#"{"seq":1,"at_us":10,"host":"h:1","kind":"messages_released","count":2}"#
        );
        let e = Entry::parse(lines[1]).unwrap();
        assert_eq!(e.agent.as_deref(), Some("a\"1"));
        assert_eq!(e.host, "h:1");
        assert!(
            matches!(e.event, Event::BlackboardDelete { ref key, existed: true } if key == "k\n")
        );
        assert_eq!(b.text().lines().count(), 2);
    }
}
