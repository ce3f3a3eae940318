//! The frequent events as the agents' threads record them: borrowed
//! ([`Fast`]), encoded as compact binary records into a reused byte buffer,
//! and turned into JSON lines by the writer. Recording one allocates
//! nothing and copies only the strings it names; escaping, number
//! formatting and the rest of JSON are the writer's.
//!
//! A record is `tag u8 | agent u32 | at_us u64 | fields`, strings as
//! `len u32 | bytes`, a value as a kind byte and then a number, a string, or
//! the JSON of a table, all native-endian: the bytes never leave the process.

use std::cell::RefCell;

use serde_json::Value;

use super::SMALL_VALUE_BYTES;
use super::names::Name;

/// One of the frequent events, borrowed from the caller (see
/// [`Journal::note`](super::Journal::note)); the writer makes it the
/// [`Event`](super::Event) of the same name.
/// Fields are those of the event of the same name.
#[allow(missing_docs)]
#[derive(Debug, Clone, Copy)]
pub enum Fast<'a> {
    /// [`Event::BlackboardWrite`](super::Event::BlackboardWrite); the value
    /// is journaled when `bytes` is at most [`SMALL_VALUE_BYTES`].
    BlackboardWrite {
        key: &'a str,
        bytes: usize,
        value: &'a Value,
    },
    /// [`Event::BlackboardDelete`](super::Event::BlackboardDelete).
    BlackboardDelete { key: &'a str, existed: bool },
    /// [`Event::MessageSent`](super::Event::MessageSent); the payload is
    /// journaled when `bytes` is at most [`SMALL_VALUE_BYTES`].
    MessageSent {
        id: &'a str,
        to: &'a str,
        message_type: &'a str,
        bytes: usize,
        payload: &'a Value,
    },
    /// [`Event::MessageHandled`](super::Event::MessageHandled).
    MessageHandled {
        id: &'a str,
        from: &'a str,
        message_type: &'a str,
        attempt: u32,
    },
    /// [`Event::MessageGivenBack`](super::Event::MessageGivenBack).
    MessageGivenBack {
        id: &'a str,
        from: &'a str,
        message_type: &'a str,
        attempt: u32,
    },
    /// [`Event::MessageDeadLettered`](super::Event::MessageDeadLettered).
    MessageDeadLettered {
        id: &'a str,
        from: &'a str,
        message_type: &'a str,
        attempts: u32,
    },
}

/// Record tags.
pub(super) const COLD: u8 = 0;
const BB_WRITE: u8 = 1;
const BB_DELETE: u8 = 2;
const MSG_SENT: u8 = 3;
const MSG_HANDLED: u8 = 4;
const MSG_GIVEN_BACK: u8 = 5;
const MSG_DEAD: u8 = 6;

/// `agent` of a record about no agent.
const NO_AGENT: u32 = u32::MAX;

/// Value kinds: a scalar is kept in binary and written as JSON by the
/// writer; a table as the JSON it was serialized to.
const V_NONE: u8 = 0;
const V_NULL: u8 = 1;
const V_FALSE: u8 = 2;
const V_TRUE: u8 = 3;
const V_U64: u8 = 4;
const V_I64: u8 = 5;
const V_F64: u8 = 6;
const V_STR: u8 = 7;
const V_JSON: u8 = 8;

thread_local! {
    /// Where a compound value (a table) is serialized before the journal's
    /// lock is taken, so the lock is held only for copies.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// The value `event` journals, when it has one and it is small enough.
fn small_value_of<'a>(event: &Fast<'a>) -> Option<&'a Value> {
    match *event {
        Fast::BlackboardWrite { bytes, value, .. }
        | Fast::MessageSent {
            bytes,
            payload: value,
            ..
        } if bytes <= SMALL_VALUE_BYTES => Some(value),
        _ => None,
    }
}

/// Runs `place` with the JSON of the value of `event` when that is a table
/// (serialized here, outside any lock), else with `None`: scalars are
/// cheap enough to write in place.
pub(super) fn with_value_json<R>(event: &Fast<'_>, place: impl FnOnce(Option<&[u8]>) -> R) -> R {
    let compound = small_value_of(event).filter(|v| v.is_array() || v.is_object());
    let Some(value) = compound else {
        return place(None);
    };
    SCRATCH.with(|s| match s.try_borrow_mut() {
        Ok(mut s) => {
            s.clear();
            let ok = serde_json::to_writer(&mut *s, value).is_ok();
            place(Some(if ok { &s[..] } else { b"null" }))
        }
        // Only if `place` recorded again on this thread, which it does not.
        Err(_) => place(serde_json::to_vec(value).ok().as_deref()),
    })
}

/// The header of a record with tag `tag`, stamped `at_us`.
fn header(out: &mut Vec<u8>, tag: u8, agent: Option<Name>, at_us: u64) {
    out.push(tag);
    out.extend_from_slice(&agent.unwrap_or(NO_AGENT).to_ne_bytes());
    out.extend_from_slice(&at_us.to_ne_bytes());
}

/// Appends a cold record: the event is number `index` of the round's
/// [`Event`](super::Event)s.
pub(super) fn cold(out: &mut Vec<u8>, agent: Option<Name>, at_us: u64, index: u32) {
    header(out, COLD, agent, at_us);
    out.extend_from_slice(&index.to_ne_bytes());
}

/// Appends the record of `event`; `value_json` is its value serialized
/// already (see [`with_value_json`]), else a small value is serialized here.
pub(super) fn encode(
    out: &mut Vec<u8>,
    agent: Option<Name>,
    at_us: u64,
    event: &Fast<'_>,
    value_json: Option<&[u8]>,
) {
    match *event {
        Fast::BlackboardWrite { key, bytes, value } => {
            header(out, BB_WRITE, agent, at_us);
            str(out, key);
            out.extend_from_slice(&(bytes as u64).to_ne_bytes());
            small_value(out, bytes, value, value_json);
        }
        Fast::BlackboardDelete { key, existed } => {
            header(out, BB_DELETE, agent, at_us);
            str(out, key);
            out.push(u8::from(existed));
        }
        Fast::MessageSent {
            id,
            to,
            message_type,
            bytes,
            payload,
        } => {
            header(out, MSG_SENT, agent, at_us);
            str(out, id);
            str(out, to);
            str(out, message_type);
            out.extend_from_slice(&(bytes as u64).to_ne_bytes());
            small_value(out, bytes, payload, value_json);
        }
        Fast::MessageHandled {
            id,
            from,
            message_type,
            attempt,
        } => settled(
            out,
            MSG_HANDLED,
            agent,
            at_us,
            [id, from, message_type],
            attempt,
        ),
        Fast::MessageGivenBack {
            id,
            from,
            message_type,
            attempt,
        } => settled(
            out,
            MSG_GIVEN_BACK,
            agent,
            at_us,
            [id, from, message_type],
            attempt,
        ),
        Fast::MessageDeadLettered {
            id,
            from,
            message_type,
            attempts,
        } => settled(
            out,
            MSG_DEAD,
            agent,
            at_us,
            [id, from, message_type],
            attempts,
        ),
    }
}

fn settled(
    out: &mut Vec<u8>,
    tag: u8,
    agent: Option<Name>,
    at_us: u64,
    [id, from, message_type]: [&str; 3],
    attempt: u32,
) {
    header(out, tag, agent, at_us);
    str(out, id);
    str(out, from);
    str(out, message_type);
    out.extend_from_slice(&attempt.to_ne_bytes());
}

fn str(out: &mut Vec<u8>, s: &str) {
    str_bytes(out, s.as_bytes());
}

/// The value when it is small: a scalar as it is, a table as `json` (see
/// [`with_value_json`]).
fn small_value(out: &mut Vec<u8>, bytes: usize, value: &Value, json: Option<&[u8]>) {
    if bytes > SMALL_VALUE_BYTES {
        out.push(V_NONE);
        return;
    }
    match (value, json) {
        (_, Some(json)) => {
            out.push(V_JSON);
            str_bytes(out, json);
        }
        (Value::Null, None) => out.push(V_NULL),
        (Value::Bool(b), None) => out.push(if *b { V_TRUE } else { V_FALSE }),
        (Value::Number(n), None) => {
            if let Some(u) = n.as_u64() {
                out.push(V_U64);
                out.extend_from_slice(&u.to_ne_bytes());
            } else if let Some(i) = n.as_i64() {
                out.push(V_I64);
                out.extend_from_slice(&i.to_ne_bytes());
            } else {
                out.push(V_F64);
                out.extend_from_slice(&n.as_f64().unwrap_or(0.0).to_ne_bytes());
            }
        }
        (Value::String(s), None) => {
            out.push(V_STR);
            str(out, s);
        }
        // Tables come serialized; this is only for a caller that did not.
        (table, None) => match serde_json::to_vec(table) {
            Ok(json) => {
                out.push(V_JSON);
                str_bytes(out, &json);
            }
            Err(_) => out.push(V_NONE),
        },
    }
}

fn str_bytes(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u32).to_ne_bytes());
    out.extend_from_slice(s);
}

/// A value as decoded.
#[derive(Debug, Clone, Copy)]
pub(super) enum Val<'a> {
    Null,
    Bool(bool),
    U64(u64),
    I64(i64),
    F64(f64),
    /// A string's bytes (UTF-8), to escape.
    Str(&'a [u8]),
    /// JSON, to copy.
    Json(&'a [u8]),
}

/// A record read back by the writer.
pub(super) struct Decoded<'a> {
    pub agent: Option<Name>,
    pub at_us: u64,
    pub body: Body<'a>,
}

/// The fields of a decoded record.
pub(super) enum Body<'a> {
    /// Number `index` of the round's cold events.
    Cold(u32),
    /// A frequent event, its strings as bytes (UTF-8, taken from `&str`)
    /// and its value as JSON.
    Fast(FastBody<'a>),
}

/// A frequent event as decoded.
pub(super) enum FastBody<'a> {
    BlackboardWrite {
        key: &'a [u8],
        bytes: u64,
        value: Option<Val<'a>>,
    },
    BlackboardDelete {
        key: &'a [u8],
        existed: bool,
    },
    MessageSent {
        id: &'a [u8],
        to: &'a [u8],
        message_type: &'a [u8],
        bytes: u64,
        payload: Option<Val<'a>>,
    },
    Settled {
        kind: &'static str,
        attempt_field: &'static str,
        id: &'a [u8],
        from: &'a [u8],
        message_type: &'a [u8],
        attempt: u32,
    },
}

/// Reads the records of a buffer in order.
pub(super) struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub(super) fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, at: 0 }
    }

    fn take(&mut self, n: usize) -> &'a [u8] {
        let s = &self.bytes[self.at..self.at + n];
        self.at += n;
        s
    }

    fn u32(&mut self) -> u32 {
        u32::from_ne_bytes(self.take(4).try_into().unwrap_or_default())
    }

    fn u64(&mut self) -> u64 {
        u64::from_ne_bytes(self.take(8).try_into().unwrap_or_default())
    }

    fn str(&mut self) -> &'a [u8] {
        let n = self.u32() as usize;
        self.take(n)
    }

    fn value(&mut self) -> Option<Val<'a>> {
        let eight = |r: &mut Self| -> [u8; 8] { r.take(8).try_into().unwrap_or_default() };
        Some(match self.take(1)[0] {
            V_NULL => Val::Null,
            V_FALSE => Val::Bool(false),
            V_TRUE => Val::Bool(true),
            V_U64 => Val::U64(u64::from_ne_bytes(eight(self))),
            V_I64 => Val::I64(i64::from_ne_bytes(eight(self))),
            V_F64 => Val::F64(f64::from_ne_bytes(eight(self))),
            V_STR => Val::Str(self.str()),
            V_JSON => Val::Json(self.str()),
            _ => return None,
        })
    }
}

impl<'a> Iterator for Reader<'a> {
    type Item = Decoded<'a>;

    fn next(&mut self) -> Option<Decoded<'a>> {
        if self.at >= self.bytes.len() {
            return None;
        }
        let tag = self.take(1)[0];
        let agent = match self.u32() {
            NO_AGENT => None,
            n => Some(n),
        };
        let at_us = self.u64();
        let body = match tag {
            COLD => Body::Cold(self.u32()),
            BB_WRITE => Body::Fast(FastBody::BlackboardWrite {
                key: self.str(),
                bytes: self.u64(),
                value: self.value(),
            }),
            BB_DELETE => Body::Fast(FastBody::BlackboardDelete {
                key: self.str(),
                existed: self.take(1)[0] != 0,
            }),
            MSG_SENT => Body::Fast(FastBody::MessageSent {
                id: self.str(),
                to: self.str(),
                message_type: self.str(),
                bytes: self.u64(),
                payload: self.value(),
            }),
            MSG_HANDLED | MSG_GIVEN_BACK | MSG_DEAD => {
                let (kind, attempt_field) = match tag {
                    MSG_HANDLED => ("message_handled", "attempt"),
                    MSG_GIVEN_BACK => ("message_given_back", "attempt"),
                    _ => ("message_dead_lettered", "attempts"),
                };
                Body::Fast(FastBody::Settled {
                    kind,
                    attempt_field,
                    id: self.str(),
                    from: self.str(),
                    message_type: self.str(),
                    attempt: self.u32(),
                })
            }
            // Only this module writes records: an unknown tag cannot be.
            _ => {
                self.at = self.bytes.len();
                return None;
            }
        };
        Some(Decoded { agent, at_us, body })
    }
}
