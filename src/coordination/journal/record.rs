//! The frequent events as the agents' threads record them: borrowed
//! ([`Fast`]), encoded as compact binary records into a reused byte buffer,
//! and turned into JSON lines by the writer. Recording one allocates
//! nothing and copies only the strings it names; escaping, number
//! formatting and the rest of JSON are the writer's.
//!
//! A record is `tag u8 | agent u32 | at_us u64 | fields`, strings as
//! `len u32 | bytes`, a value as `len u32 | JSON bytes` (`u32::MAX`: none),
//! all native-endian: the bytes never leave the process.

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
/// Length of an absent value.
const NONE: u32 = u32::MAX;

/// Where `at_us` sits in a record, to stamp it once the record is placed.
pub(super) const AT_OFFSET: usize = 5;
/// Bytes of the header (tag, agent, time).
pub(super) const HEADER: usize = 13;

thread_local! {
    /// Where a record is put together before it is copied into the shared
    /// buffer, so the buffer's lock is held only for the copy.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Runs `place` with the record of `event` by `agent` (its time left 0).
pub(super) fn with_encoded<R>(
    agent: Option<Name>,
    event: &Fast<'_>,
    place: impl FnOnce(&[u8]) -> R,
) -> R {
    SCRATCH.with(|s| match s.try_borrow_mut() {
        Ok(mut s) => {
            s.clear();
            encode(&mut s, agent, event);
            place(&s)
        }
        // Only if `place` recorded again on this thread: not the case, but
        // a fresh vector is correct anyway.
        Err(_) => {
            let mut s = Vec::new();
            encode(&mut s, agent, event);
            place(&s)
        }
    })
}

/// The header of a record with tag `tag` (its time left 0).
pub(super) fn header(out: &mut Vec<u8>, tag: u8, agent: Option<Name>) {
    out.push(tag);
    out.extend_from_slice(&agent.unwrap_or(NO_AGENT).to_ne_bytes());
    out.extend_from_slice(&0u64.to_ne_bytes());
}

/// Appends a cold record: the event is number `index` of the round's
/// [`Event`](super::Event)s.
pub(super) fn cold(out: &mut Vec<u8>, agent: Option<Name>, index: u32) {
    header(out, COLD, agent);
    out.extend_from_slice(&index.to_ne_bytes());
}

fn encode(out: &mut Vec<u8>, agent: Option<Name>, event: &Fast<'_>) {
    match *event {
        Fast::BlackboardWrite { key, bytes, value } => {
            header(out, BB_WRITE, agent);
            str(out, key);
            out.extend_from_slice(&(bytes as u64).to_ne_bytes());
            small_value(out, bytes, value);
        }
        Fast::BlackboardDelete { key, existed } => {
            header(out, BB_DELETE, agent);
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
            header(out, MSG_SENT, agent);
            str(out, id);
            str(out, to);
            str(out, message_type);
            out.extend_from_slice(&(bytes as u64).to_ne_bytes());
            small_value(out, bytes, payload);
        }
        Fast::MessageHandled {
            id,
            from,
            message_type,
            attempt,
        } => settled(out, MSG_HANDLED, agent, id, from, message_type, attempt),
        Fast::MessageGivenBack {
            id,
            from,
            message_type,
            attempt,
        } => settled(out, MSG_GIVEN_BACK, agent, id, from, message_type, attempt),
        Fast::MessageDeadLettered {
            id,
            from,
            message_type,
            attempts,
        } => settled(out, MSG_DEAD, agent, id, from, message_type, attempts),
    }
}

fn settled(
    out: &mut Vec<u8>,
    tag: u8,
    agent: Option<Name>,
    id: &str,
    from: &str,
    message_type: &str,
    attempt: u32,
) {
    header(out, tag, agent);
    str(out, id);
    str(out, from);
    str(out, message_type);
    out.extend_from_slice(&attempt.to_ne_bytes());
}

fn str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_ne_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// The value's JSON when it is small: serialized here (it is borrowed),
/// which for the usual small value is cheaper than a copy of the tree.
fn small_value(out: &mut Vec<u8>, bytes: usize, value: &Value) {
    if bytes > SMALL_VALUE_BYTES {
        out.extend_from_slice(&NONE.to_ne_bytes());
        return;
    }
    let at = out.len();
    out.extend_from_slice(&0u32.to_ne_bytes());
    if serde_json::to_writer(&mut *out, value).is_err() {
        out.truncate(at);
        out.extend_from_slice(&NONE.to_ne_bytes());
        return;
    }
    let len = (out.len() - at - 4) as u32;
    out[at..at + 4].copy_from_slice(&len.to_ne_bytes());
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
        value: Option<&'a [u8]>,
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
        payload: Option<&'a [u8]>,
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

    fn value(&mut self) -> Option<&'a [u8]> {
        match self.u32() {
            NONE => None,
            n => Some(self.take(n as usize)),
        }
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
