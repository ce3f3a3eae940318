//! What the writer hands to the sinks: the entries taken in one round as
//! JSON Lines in one text, serialized once for every sink, and typed
//! ([`Item`]) for a sink that asks (parsed back from the lines then, once).

use std::io::Write;
use std::sync::{Arc, OnceLock};

use super::Event;
use super::bytes::{needs_escape, put, put_quoted};
use super::digits::{Counter, Micros};
use super::event::Entry;
use super::record::{FastBody, Val};

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
}

/// Entries of one writer round, in sequence order.
#[derive(Debug, Default)]
pub struct Batch {
    text: String,
    /// Where each line ends in `text` (past its newline).
    ends: Vec<usize>,
    items: OnceLock<Vec<Item>>,
    /// The digits of the last line's sequence number and time.
    seq: Counter,
    at: Micros,
}

impl Batch {
    /// An empty batch.
    pub(super) fn new() -> Batch {
        Batch::default()
    }

    /// Starts the line of an entry: everything before its `kind`, `head`
    /// being its host and agent (see [`head`]).
    #[inline(always)]
    fn start(&mut self, head: &[u8], seq: u64, at_us: u64) -> &mut Vec<u8> {
        // SAFETY of the text: only JSON, which is UTF-8, goes in.
        let buf = unsafe { self.text.as_mut_vec() };
        // Not `write!`: formatting through core::fmt costs more than the
        // rest of the line (see `digits`).
        buf.extend_from_slice(b"{\"seq\":");
        put(buf, self.seq.digits(seq));
        buf.extend_from_slice(b",\"at_us\":");
        self.at.write(buf, at_us);
        put(buf, head);
        buf
    }

    fn end(&mut self) {
        self.text.push('\n');
        self.ends.push(self.text.len());
    }

    /// Adds an entry whose host and agent are `head` (see [`head`]).
    pub(super) fn push(&mut self, head: &[u8], seq: u64, at_us: u64, event: &Event) {
        let buf = self.start(head, seq, at_us);
        // The event is an object `{"kind":...}`: its opening brace becomes
        // the comma that joins its fields to the ones above.
        let start = buf.len();
        match serde_json::to_writer(&mut *buf, event) {
            Ok(()) if buf.get(start) == Some(&b'{') => buf[start] = b',',
            _ => {
                buf.truncate(start);
                let _ = write!(buf, ",\"kind\":\"unserializable\"}}");
            }
        }
        self.end();
    }

    /// Adds an entry of one of the frequent events, written field by field
    /// as serde would write its [`Event`]; `plain` when none of the event's
    /// own strings needs escaping (they are copied as they are then).
    pub(super) fn push_fast(
        &mut self,
        head: &[u8],
        seq: u64,
        at_us: u64,
        event: &FastBody<'_>,
        plain: bool,
    ) {
        let buf = self.start(head, seq, at_us);
        let mut digits = itoa::Buffer::new();
        let json_str = |buf: &mut Vec<u8>, s: &[u8]| string(buf, s, plain);
        match *event {
            FastBody::BlackboardWrite { key, bytes, value } => {
                buf.extend_from_slice(b",\"kind\":\"blackboard_write\",\"key\":");
                json_str(buf, key);
                buf.extend_from_slice(b",\"bytes\":");
                put(buf, digits.format(bytes).as_bytes());
                if let Some(v) = value {
                    buf.extend_from_slice(b",\"value\":");
                    json_value(buf, v);
                }
            }
            FastBody::BlackboardDelete { key, existed } => {
                buf.extend_from_slice(b",\"kind\":\"blackboard_delete\",\"key\":");
                json_str(buf, key);
                buf.extend_from_slice(if existed {
                    b",\"existed\":true"
                } else {
                    b",\"existed\":false"
                });
            }
            FastBody::MessageSent {
                id,
                to,
                message_type,
                bytes,
                payload,
            } => {
                buf.extend_from_slice(b",\"kind\":\"message_sent\",\"id\":");
                json_str(buf, id);
                buf.extend_from_slice(b",\"to\":");
                json_str(buf, to);
                buf.extend_from_slice(b",\"type\":");
                json_str(buf, message_type);
                buf.extend_from_slice(b",\"bytes\":");
                put(buf, digits.format(bytes).as_bytes());
                if let Some(v) = payload {
                    buf.extend_from_slice(b",\"payload\":");
                    json_value(buf, v);
                }
            }
            FastBody::Settled {
                kind_and_id,
                attempt_key,
                id,
                from,
                message_type,
                attempt,
            } => {
                put(buf, kind_and_id);
                json_str(buf, id);
                buf.extend_from_slice(b",\"from\":");
                json_str(buf, from);
                buf.extend_from_slice(b",\"type\":");
                json_str(buf, message_type);
                put(buf, attempt_key);
                put(buf, digits.format(attempt).as_bytes());
            }
        }
        buf.extend_from_slice(b"}\n");
        self.ends.push(self.text.len());
    }

    /// True when it holds no entry.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// How many entries it holds.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Every entry's JSON line, each ended by a newline.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The entries, typed (parsed from their lines on the first call).
    pub fn items(&self) -> &[Item] {
        self.items.get_or_init(|| {
            self.lines()
                .filter_map(|line| Entry::parse(line).ok())
                .map(|e| Item {
                    seq: e.seq,
                    at_us: e.at_us,
                    agent: e.agent.map(Arc::from),
                    event: e.event,
                })
                .collect()
        })
    }

    /// The JSON line of entry `i` (without its newline).
    pub fn line(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.text[start..self.ends[i] - 1]
    }

    /// Every entry's JSON line (without newlines), in order.
    pub fn lines(&self) -> impl Iterator<Item = &str> {
        (0..self.ends.len()).map(|i| self.line(i))
    }

    /// Empties it, keeping its memory for the next round.
    pub(super) fn clear(&mut self) {
        self.text.clear();
        self.ends.clear();
        self.items.take();
    }
}

/// The fields of a line between its time and its `kind`: the host whose
/// JSON-quoted id is `host_json` and the agent whose JSON-quoted id is
/// `agent_json`. The writer keeps one per agent, so a line copies them once.
pub(super) fn head(host_json: &str, agent_json: Option<&str>) -> Vec<u8> {
    let mut head = Vec::with_capacity(20 + host_json.len() + agent_json.map_or(0, str::len));
    head.extend_from_slice(b",\"host\":");
    head.extend_from_slice(host_json.as_bytes());
    if let Some(agent) = agent_json {
        head.extend_from_slice(b",\"agent\":");
        head.extend_from_slice(agent.as_bytes());
    }
    head
}

/// A decoded value as JSON, as serde_json writes it.
fn json_value(buf: &mut Vec<u8>, v: Val<'_>) {
    let mut digits = itoa::Buffer::new();
    match v {
        Val::Null => buf.extend_from_slice(b"null"),
        Val::Bool(true) => buf.extend_from_slice(b"true"),
        Val::Bool(false) => buf.extend_from_slice(b"false"),
        Val::U64(u) => put(buf, digits.format(u).as_bytes()),
        Val::I64(i) => put(buf, digits.format(i).as_bytes()),
        Val::F64(f) => {
            if serde_json::to_writer(&mut *buf, &f).is_err() {
                buf.extend_from_slice(b"null");
            }
        }
        Val::Str(s) => json_str(buf, s),
        Val::Json(j) => buf.extend_from_slice(j),
    }
}

/// `s` (UTF-8: it was a `&str`) as a JSON string, known to need no
/// escaping when `plain`.
#[inline(always)]
fn string(buf: &mut Vec<u8>, s: &[u8], plain: bool) {
    if plain {
        put_quoted(buf, s);
    } else {
        json_str(buf, s);
    }
}

/// `s` (UTF-8: it was a `&str`) as a JSON string: copied as it is when
/// nothing in it needs escaping, the common case.
#[inline]
pub(super) fn json_str(buf: &mut Vec<u8>, s: &[u8]) {
    if needs_escape(s) {
        json_str_escaped(buf, s);
    } else {
        put_quoted(buf, s);
    }
}

#[cold]
fn json_str_escaped(buf: &mut Vec<u8>, s: &[u8]) {
    let s = String::from_utf8_lossy(s);
    let _ = serde_json::to_writer(&mut *buf, &*s);
}

#[cfg(test)]
mod tests {
    use super::{Batch, Event, FastBody, Val, head};

    use crate::coordination::journal::Entry;

    #[test]
    fn lines_are_the_entries_as_json_with_the_event_flattened_in() {
        let mut b = Batch::new();
        b.push(
            &head("\"h:1\"", None),
            1,
            10,
            &Event::MessagesReleased { count: 2 },
        );
        b.push(
            &head("\"h:1\"", Some(r#""a\"1""#)),
            2,
            11,
            &Event::BlackboardDelete {
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
        assert_eq!(b.items().len(), 2);
    }

    /// The hand-written lines of the frequent events are what serde writes
    /// for the same events.
    #[test]
    fn fast_lines_are_the_lines_serde_writes() {
        let mut cases: Vec<(FastBody, Event)> = vec![
            (
                FastBody::BlackboardWrite {
                    key: b"k\"\x01",
                    bytes: 7,
                    value: Some(Val::Json(br#"{"a":[1,"x"]}"#)),
                },
                Event::BlackboardWrite {
                    key: "k\"\x01".into(),
                    bytes: 7,
                    value: Some(serde_json::json!({"a": [1, "x"]})),
                },
            ),
            (
                FastBody::BlackboardWrite {
                    key: b"big",
                    bytes: 5000,
                    value: None,
                },
                Event::BlackboardWrite {
                    key: "big".into(),
                    bytes: 5000,
                    value: None,
                },
            ),
            (
                FastBody::BlackboardDelete {
                    key: "é".as_bytes(),
                    existed: false,
                },
                Event::BlackboardDelete {
                    key: "é".into(),
                    existed: false,
                },
            ),
            (
                FastBody::MessageSent {
                    id: b"o-1",
                    to: b"beta",
                    message_type: b"step",
                    bytes: 2,
                    payload: Some(Val::U64(12)),
                },
                Event::MessageSent {
                    id: "o-1".into(),
                    to: "beta".into(),
                    message_type: "step".into(),
                    bytes: 2,
                    payload: Some(12.into()),
                },
            ),
            (
                FastBody::Settled {
                    kind_and_id: b",\"kind\":\"message_dead_lettered\",\"id\":",
                    attempt_key: b",\"attempts\":",
                    id: b"o-2",
                    from: b"alpha-1",
                    message_type: b"t",
                    attempt: 3,
                },
                Event::MessageDeadLettered {
                    id: "o-2".into(),
                    from: "alpha-1".into(),
                    message_type: "t".into(),
                    attempts: 3,
                },
            ),
        ];
        let scalars = [
            (Val::Null, serde_json::Value::Null),
            (Val::Bool(true), true.into()),
            (Val::I64(-3), (-3).into()),
            (Val::F64(0.1), 0.1.into()),
            (Val::F64(1e300), 1e300.into()),
            (Val::Str("a\"b\\c\u{1}é".as_bytes()), "a\"b\\c\u{1}é".into()),
        ];
        for (val, value) in scalars {
            cases.push((
                FastBody::BlackboardWrite {
                    key: b"k",
                    bytes: 3,
                    value: Some(val),
                },
                Event::BlackboardWrite {
                    key: "k".into(),
                    bytes: 3,
                    value: Some(value),
                },
            ));
        }
        for (fast, event) in cases {
            let mut ours = Batch::new();
            let head = head("\"h\"", Some("\"a-1\""));
            ours.push_fast(&head, 4, 5, &fast, false);
            let mut serde = Batch::new();
            serde.push(&head, 4, 5, &event);
            assert_eq!(ours.line(0), serde.line(0));
        }
    }
}
