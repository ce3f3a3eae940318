//! What the writer hands to the sinks: the entries taken in one round as
//! JSON Lines in one text, serialized once for every sink, and typed
//! ([`Item`]) for a sink that asks (parsed back from the lines then, once).

use std::io::Write;
use std::sync::{Arc, OnceLock};

use super::Event;
use super::bytes::{copy_short, needs_escape, put, put_quoted};
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

    /// Adds an entry of one of the frequent events, written as serde would
    /// write its [`Event`]; `plain` when none of the event's own strings
    /// needs escaping.
    #[inline(always)]
    pub(super) fn push_fast(
        &mut self,
        head: &[u8],
        seq: u64,
        at_us: u64,
        event: &FastBody<'_>,
        plain: bool,
    ) {
        match plain_room(event) {
            // A time before the epoch's second second has no seconds to
            // keep (see `Micros`): only in tests.
            Some(room) if plain && at_us >= 1_000_000 => {
                self.push_plain(head, seq, at_us, event, room)
            }
            _ => self.push_escaped(head, seq, at_us, event),
        }
    }

    /// [`Batch::push_fast`] of an event with nothing to escape: the line is
    /// written straight into room reserved for all of it at once. Written
    /// field by field into the `Vec` (a length check and an update of its
    /// length each, for some sixteen fields), the lines of a message took
    /// the writer about 1,000 instructions.
    #[inline(always)]
    fn push_plain(&mut self, head: &[u8], seq: u64, at_us: u64, event: &FastBody<'_>, room: usize) {
        let (seconds, micros) = self.at.split(at_us);
        let seq = self.seq.digits(seq);
        // SAFETY of the text: only JSON, which is UTF-8, goes in.
        let buf = unsafe { self.text.as_mut_vec() };
        let room = room + head.len() + seq.len() + seconds.len();
        buf.reserve(room);
        let start = buf.len();
        // SAFETY: `reserve` made room for `room` bytes past `start`, at
        // least what is written below (see `plain_room`), before the length
        // grows over them; what is copied in is borrowed apart from `buf`.
        unsafe {
            let mut w = Cursor(buf.as_mut_ptr().add(start));
            w.lit(b"{\"seq\":");
            w.bytes(seq);
            w.lit(b",\"at_us\":");
            w.bytes(seconds);
            w.lit(&micros);
            w.bytes(head);
            body(&mut w, event);
            w.lit(b"}\n");
            let end = w.0.offset_from(buf.as_ptr()) as usize;
            debug_assert!(end - start <= room);
            buf.set_len(end);
        }
        self.ends.push(self.text.len());
    }

    /// [`Batch::push_fast`] of an event with a string to escape (or a time
    /// in the epoch's first second), a field at a time.
    #[cold]
    fn push_escaped(&mut self, head: &[u8], seq: u64, at_us: u64, event: &FastBody<'_>) {
        let buf = self.start(head, seq, at_us);
        // SAFETY: a `Vec` grows for what it is given.
        unsafe { body(buf, event) };
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

/// Bytes a line of a frequent event with nothing to escape takes beyond
/// its head, its sequence number's and its seconds' digits, its strings and
/// its value's JSON: more than the longest such line's literals (a
/// `message_sent` line's keys and quotes, about 100 bytes), the six digits
/// of its microseconds, two numbers of up to 20 digits and a scalar value
/// (a float's JSON takes at most 24 bytes).
const PLAIN_LINE_BYTES: usize = 192;

/// Room for the line of `event` (see [`PLAIN_LINE_BYTES`]), when its value
/// needs no escaping (the event's own strings are checked by the reader).
#[inline(always)]
fn plain_room(event: &FastBody<'_>) -> Option<usize> {
    let value_bytes = |v: Option<Val<'_>>| match v {
        Some(Val::Str(s)) if needs_escape(s) => None,
        Some(Val::Str(s) | Val::Json(s)) => Some(s.len()),
        _ => Some(0),
    };
    let (strings, value) = match *event {
        FastBody::BlackboardWrite { key, value, .. } => (key.len(), value_bytes(value)?),
        FastBody::BlackboardDelete { key, .. } => (key.len(), 0),
        FastBody::MessageSent {
            id,
            to,
            message_type,
            payload,
            ..
        } => (
            id.len() + to.len() + message_type.len(),
            value_bytes(payload)?,
        ),
        FastBody::Settled {
            id,
            from,
            message_type,
            ..
        } => (id.len() + from.len() + message_type.len(), 0),
    };
    Some(PLAIN_LINE_BYTES + strings + value)
}

/// What a line of a frequent event is written into: room reserved for it
/// all ([`Cursor`], nothing to escape) or a `Vec` (strings escaped as they
/// need), so [`body`] says the fields of each event once.
///
/// # Safety
///
/// A [`Cursor`] must have room for what each method writes.
trait Line {
    /// A literal.
    unsafe fn lit<const N: usize>(&mut self, s: &[u8; N]);
    /// Bytes that are JSON already.
    unsafe fn bytes(&mut self, s: &[u8]);
    /// A string, as JSON.
    unsafe fn string(&mut self, s: &[u8]);
    /// A number's digits.
    unsafe fn number(&mut self, n: u64);
    /// A value, as serde_json writes it.
    unsafe fn value(&mut self, v: Val<'_>);
}

/// The fields of `event` from its `kind` on, as serde writes its [`Event`].
///
/// # Safety
///
/// As [`Line`]'s: `w` has room for them.
#[inline(always)]
unsafe fn body(w: &mut impl Line, event: &FastBody<'_>) {
    // SAFETY: the caller's.
    unsafe {
        match *event {
            FastBody::BlackboardWrite { key, bytes, value } => {
                w.lit(b",\"kind\":\"blackboard_write\",\"key\":");
                w.string(key);
                w.lit(b",\"bytes\":");
                w.number(bytes);
                if let Some(v) = value {
                    w.lit(b",\"value\":");
                    w.value(v);
                }
            }
            FastBody::BlackboardDelete { key, existed } => {
                w.lit(b",\"kind\":\"blackboard_delete\",\"key\":");
                w.string(key);
                if existed {
                    w.lit(b",\"existed\":true");
                } else {
                    w.lit(b",\"existed\":false");
                }
            }
            FastBody::MessageSent {
                id,
                to,
                message_type,
                bytes,
                payload,
            } => {
                w.lit(b",\"kind\":\"message_sent\",\"id\":");
                w.string(id);
                w.lit(b",\"to\":");
                w.string(to);
                w.lit(b",\"type\":");
                w.string(message_type);
                w.lit(b",\"bytes\":");
                w.number(bytes);
                if let Some(v) = payload {
                    w.lit(b",\"payload\":");
                    w.value(v);
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
                w.bytes(kind_and_id);
                w.string(id);
                w.lit(b",\"from\":");
                w.string(from);
                w.lit(b",\"type\":");
                w.string(message_type);
                w.bytes(attempt_key);
                w.number(u64::from(attempt));
            }
        }
    }
}

impl Line for Vec<u8> {
    #[inline(always)]
    unsafe fn lit<const N: usize>(&mut self, s: &[u8; N]) {
        self.extend_from_slice(s);
    }

    #[inline(always)]
    unsafe fn bytes(&mut self, s: &[u8]) {
        put(self, s);
    }

    #[inline(always)]
    unsafe fn string(&mut self, s: &[u8]) {
        json_str(self, s);
    }

    #[inline(always)]
    unsafe fn number(&mut self, n: u64) {
        put(self, itoa::Buffer::new().format(n).as_bytes());
    }

    #[inline(always)]
    unsafe fn value(&mut self, v: Val<'_>) {
        json_value(self, v);
    }
}

/// Where the next byte of a line goes, in room reserved for all of the
/// line (see [`Batch::push_plain`]). Every method writes at the pointer and
/// moves it past what it wrote.
///
/// # Safety
///
/// Each method must have room for what it writes: the caller reserves it.
struct Cursor(*mut u8);

impl Line for Cursor {
    /// A literal: its length is known, so the copy is a few moves.
    #[inline(always)]
    unsafe fn lit<const N: usize>(&mut self, s: &[u8; N]) {
        // SAFETY: the caller made room for `N` bytes.
        unsafe {
            self.0.cast::<[u8; N]>().write_unaligned(*s);
            self.0 = self.0.add(N);
        }
    }

    #[inline(always)]
    unsafe fn bytes(&mut self, s: &[u8]) {
        // SAFETY: the caller made room for `s`, which is borrowed apart
        // from it.
        unsafe {
            copy_short(s, self.0);
            self.0 = self.0.add(s.len());
        }
    }

    /// A string that needs no escaping, as JSON.
    #[inline(always)]
    unsafe fn string(&mut self, s: &[u8]) {
        // SAFETY: the caller made room for `s` and its quotes.
        unsafe {
            self.lit(b"\"");
            self.bytes(s);
            self.lit(b"\"");
        }
    }

    /// A number's digits: one, the usual `bytes` and attempt, without
    /// `itoa`.
    #[inline(always)]
    unsafe fn number(&mut self, n: u64) {
        // SAFETY: the caller made room for 20 digits.
        unsafe {
            if n < 10 {
                *self.0 = b'0' + n as u8;
                self.0 = self.0.add(1);
            } else {
                self.bytes(itoa::Buffer::new().format(n).as_bytes());
            }
        }
    }

    /// A value (a string one with nothing to escape), as serde_json writes it.
    #[inline(always)]
    unsafe fn value(&mut self, v: Val<'_>) {
        // SAFETY: the caller made room for a scalar, or for the string or
        // JSON (see `plain_room`).
        unsafe {
            match v {
                Val::Null => self.lit(b"null"),
                Val::Bool(true) => self.lit(b"true"),
                Val::Bool(false) => self.lit(b"false"),
                Val::U64(u) => self.number(u),
                Val::I64(i) => {
                    if i < 0 {
                        self.lit(b"-");
                    }
                    self.number(i.unsigned_abs());
                }
                Val::F64(f) => {
                    let mut json = [0u8; 32];
                    let len = {
                        let mut rest = &mut json[..];
                        serde_json::to_writer(&mut rest, &f).map(|()| 32 - rest.len())
                    };
                    match len {
                        Ok(len) => self.bytes(&json[..len]),
                        Err(_) => self.lit(b"null"),
                    }
                }
                Val::Str(s) => self.string(s),
                Val::Json(j) => self.bytes(j),
            }
        }
    }
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
    use super::{Batch, Event, FastBody, Val, head, needs_escape};

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
        cases.push((
            FastBody::MessageSent {
                id: b"a-sender-id-of-some-length-123456",
                to: b"receiver",
                message_type: b"m",
                bytes: 6,
                payload: Some(Val::I64(-123_456)),
            },
            Event::MessageSent {
                id: "a-sender-id-of-some-length-123456".into(),
                to: "receiver".into(),
                message_type: "m".into(),
                bytes: 6,
                payload: Some((-123_456).into()),
            },
        ));
        cases.push((
            FastBody::Settled {
                kind_and_id: b",\"kind\":\"message_handled\",\"id\":",
                attempt_key: b",\"attempt\":",
                id: b"o-3",
                from: b"alpha-1",
                message_type: b"t",
                attempt: 12,
            },
            Event::MessageHandled {
                id: "o-3".into(),
                from: "alpha-1".into(),
                message_type: "t".into(),
                attempt: 12,
            },
        ));
        for (val, value) in [
            (Val::U64(u64::MAX), serde_json::Value::from(u64::MAX)),
            (Val::I64(i64::MIN), i64::MIN.into()),
            (Val::F64(-1.5e-300), (-1.5e-300).into()),
            (Val::Bool(false), false.into()),
            (Val::Str(b"plain"), "plain".into()),
        ] {
            cases.push((
                FastBody::BlackboardWrite {
                    key: b"k",
                    bytes: 30,
                    value: Some(val),
                },
                Event::BlackboardWrite {
                    key: "k".into(),
                    bytes: 30,
                    value: Some(value),
                },
            ));
        }
        let head = head("\"h\"", Some("\"a-1\""));
        for (fast, event) in cases {
            // A string of the event's own to escape: `plain` is false then.
            let plain = !own_strings(&fast).into_iter().any(needs_escape);
            // In the epoch's first second (written a field at a time), and
            // later (all at once when nothing needs escaping).
            for at_us in [5, 1_796_206_332_678_909] {
                let mut ours = Batch::new();
                ours.push_fast(&head, 4, at_us, &fast, plain);
                ours.push_fast(&head, 5, at_us, &fast, false);
                let mut serde = Batch::new();
                serde.push(&head, 4, at_us, &event);
                serde.push(&head, 5, at_us, &event);
                assert_eq!(ours.text(), serde.text());
            }
        }
    }

    fn own_strings<'a>(fast: &FastBody<'a>) -> Vec<&'a [u8]> {
        match *fast {
            FastBody::BlackboardWrite { key, .. } | FastBody::BlackboardDelete { key, .. } => {
                vec![key]
            }
            FastBody::MessageSent {
                id,
                to,
                message_type,
                ..
            } => vec![id, to, message_type],
            FastBody::Settled {
                id,
                from,
                message_type,
                ..
            } => vec![id, from, message_type],
        }
    }
}
