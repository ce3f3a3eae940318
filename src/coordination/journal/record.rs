//! The frequent events as the agents' threads record them: borrowed
//! ([`Fast`]), encoded as compact binary records into a reused byte buffer,
//! and turned into JSON lines by the writer. Recording one allocates
//! nothing and copies only the strings it names; escaping, number
//! formatting and the rest of JSON are the writer's.
//!
//! A record is a fixed part of [`FIXED`] bytes (tag, value kind, agent,
//! time, a number, a scalar value, the lengths of up to four strings), then
//! those strings one after the other: the event's own (a key; or an id, a
//! recipient or sender and a type), then a string value or the JSON of a
//! table. All native-endian: the bytes never leave the process. One fixed
//! part, filled on the stack and copied at once, costs the agent's thread
//! fewer instructions than a field at a time (each a length check and an
//! update of the buffer's length), and the writer reads it with one bounds
//! check.

use std::borrow::Cow;
use std::cell::RefCell;

use serde_json::Value;

use super::SMALL_VALUE_BYTES;
use super::bytes::{copy_short, needs_escape};
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

/// Bytes of a record's fixed part: six native-endian words,
/// `tag u8 | value kind u8 | flag u8 | 0 u8 | agent u32`, the time (`at`,
/// in the journal clock's ticks), a number,
/// a scalar value's bits, and the lengths of four strings as `u32` pairs.
pub(super) const FIXED: usize = 48;

/// The length slot of a string value (or table's JSON), after the event's
/// up to three strings.
const VALUE_SLOT: usize = 3;

/// A record's fixed part, as words kept in registers until they are
/// written: staged as bytes on the stack, the copy into the buffer read
/// back what it had just stored a byte at a time, which stalls.
struct Fixed {
    words: [u64; 6],
}

impl Fixed {
    fn new(tag: u8, agent: Option<Name>, at: u64) -> Fixed {
        let agent = u64::from(agent.unwrap_or(NO_AGENT));
        Fixed {
            words: [u64::from(tag) | agent << 32, at, 0, 0, 0, 0],
        }
    }

    fn flag(&mut self, on: bool) {
        self.words[0] |= u64::from(on) << 16;
    }

    fn number(&mut self, n: u64) {
        self.words[2] = n;
    }

    fn scalar(&mut self, kind: u8, bits: u64) {
        self.words[0] |= u64::from(kind) << 8;
        self.words[3] = bits;
    }

    fn len(&mut self, slot: usize, n: usize) {
        // Strings longer than 4 GiB cannot be journaled (nor stored).
        let n = n.min(u32::MAX as usize) as u64;
        self.words[4 + slot / 2] |= n << (32 * (slot % 2));
    }

    /// Appends the record: this part, then `strings` (whose lengths it
    /// holds). Written through a pointer after one `reserve`: a
    /// `extend_from_slice` a field re-reads and updates the buffer's length
    /// each time (its bytes may alias it), which took more instructions
    /// than the copies.
    #[inline(always)]
    fn push(&self, out: &mut Vec<u8>, strings: &[&[u8]]) {
        let total = FIXED + strings.iter().map(|s| s.len()).sum::<usize>();
        out.reserve(total);
        let len = out.len();
        // SAFETY: `reserve` made room for `total` bytes past `len`, and
        // exactly that many are written below (six words, then each string)
        // before the length grows over them; the strings are borrowed from
        // elsewhere, so they cannot overlap the buffer.
        unsafe {
            let mut p = out.as_mut_ptr().add(len);
            for w in self.words {
                p.cast::<[u8; 8]>().write_unaligned(w.to_ne_bytes());
                p = p.add(8);
            }
            for s in strings {
                copy_short(s, p);
                p = p.add(s.len());
            }
            out.set_len(len + total);
        }
    }
}

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

/// Appends a cold record: it stands for the next of its shard's
/// [`Event`](super::Event)s.
pub(super) fn cold(out: &mut Vec<u8>, agent: Option<Name>, at: u64) {
    Fixed::new(COLD, agent, at).push(out, &[]);
}

/// Appends the record of `event`; `value_json` is its value serialized
/// already (see [`with_value_json`]), else a small value is serialized here.
pub(super) fn encode(
    out: &mut Vec<u8>,
    agent: Option<Name>,
    at: u64,
    event: &Fast<'_>,
    value_json: Option<&[u8]>,
) {
    match *event {
        Fast::BlackboardWrite { key, bytes, value } => {
            let mut f = Fixed::new(BB_WRITE, agent, at);
            f.number(bytes as u64);
            f.len(0, key.len());
            let value = small_value(&mut f, bytes, value, value_json);
            f.push(out, &[key.as_bytes(), &value]);
        }
        Fast::BlackboardDelete { key, existed } => {
            let mut f = Fixed::new(BB_DELETE, agent, at);
            f.flag(existed);
            f.len(0, key.len());
            f.push(out, &[key.as_bytes()]);
        }
        Fast::MessageSent {
            id,
            to,
            message_type,
            bytes,
            payload,
        } => {
            let mut f = Fixed::new(MSG_SENT, agent, at);
            f.number(bytes as u64);
            f.len(0, id.len());
            f.len(1, to.len());
            f.len(2, message_type.len());
            let payload = small_value(&mut f, bytes, payload, value_json);
            f.push(
                out,
                &[
                    id.as_bytes(),
                    to.as_bytes(),
                    message_type.as_bytes(),
                    &payload,
                ],
            );
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
            at,
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
            at,
            [id, from, message_type],
            attempt,
        ),
        Fast::MessageDeadLettered {
            id,
            from,
            message_type,
            attempts,
        } => settled(out, MSG_DEAD, agent, at, [id, from, message_type], attempts),
    }
}

fn settled(
    out: &mut Vec<u8>,
    tag: u8,
    agent: Option<Name>,
    at: u64,
    [id, from, message_type]: [&str; 3],
    attempt: u32,
) {
    let mut f = Fixed::new(tag, agent, at);
    f.number(u64::from(attempt));
    f.len(0, id.len());
    f.len(1, from.len());
    f.len(2, message_type.len());
    f.push(
        out,
        &[id.as_bytes(), from.as_bytes(), message_type.as_bytes()],
    );
}

/// Notes the value in `f` when it is small: a scalar in the fixed part, a
/// string or a table (as `json`, see [`with_value_json`]) as the bytes
/// returned, to follow the event's strings.
fn small_value<'v>(
    f: &mut Fixed,
    bytes: usize,
    value: &'v Value,
    json: Option<&'v [u8]>,
) -> Cow<'v, [u8]> {
    if bytes > SMALL_VALUE_BYTES {
        return Cow::Borrowed(&[]);
    }
    let (kind, bits, tail): (u8, u64, Cow<'v, [u8]>) = match (value, json) {
        (_, Some(json)) => (V_JSON, 0, Cow::Borrowed(json)),
        (Value::Null, None) => (V_NULL, 0, Cow::Borrowed(&[])),
        (Value::Bool(b), None) => (if *b { V_TRUE } else { V_FALSE }, 0, Cow::Borrowed(&[])),
        (Value::Number(n), None) => {
            if let Some(u) = n.as_u64() {
                (V_U64, u, Cow::Borrowed(&[]))
            } else if let Some(i) = n.as_i64() {
                (V_I64, i as u64, Cow::Borrowed(&[]))
            } else {
                let x = n.as_f64().unwrap_or(0.0);
                (V_F64, x.to_bits(), Cow::Borrowed(&[]))
            }
        }
        (Value::String(s), None) => (V_STR, 0, Cow::Borrowed(s.as_bytes())),
        // Tables come serialized; this is only for a caller that did not.
        (table, None) => match serde_json::to_vec(table) {
            Ok(json) => (V_JSON, 0, Cow::Owned(json)),
            Err(_) => return Cow::Borrowed(&[]),
        },
    };
    f.scalar(kind, bits);
    f.len(VALUE_SLOT, tail.len());
    tail
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
    pub at: u64,
    pub body: Body<'a>,
}

/// The fields of a decoded record.
pub(super) enum Body<'a> {
    /// The next of the shard's rare events.
    Cold,
    /// A frequent event, its strings as bytes (UTF-8, taken from `&str`)
    /// and its value as JSON.
    Fast {
        event: FastBody<'a>,
        /// True when none of the event's own strings (its key, or its id,
        /// recipient or sender and type) needs escaping in JSON: checked at
        /// once over them all, as they lie one after the other.
        plain: bool,
    },
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
    /// Handled, given back or dead-lettered.
    Settled {
        /// The line's `kind` and the key of the id that follows it.
        kind_and_id: &'static [u8],
        /// The key of the attempt number.
        attempt_key: &'static [u8],
        id: &'a [u8],
        from: &'a [u8],
        message_type: &'a [u8],
        attempt: u32,
    },
}

/// Reads the records of a buffer in order.
pub(super) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(super) fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, pos: 0 }
    }

    /// The time of the next record, if there is one.
    #[inline]
    pub(super) fn next_at(&self) -> Option<u64> {
        let word = self.bytes.get(self.pos + 8..self.pos + 16)?;
        Some(u64::from_ne_bytes(word.try_into().ok()?))
    }

    /// How many bytes of records were read.
    pub(super) fn position(&self) -> usize {
        self.pos
    }
}

/// The six words of a fixed part.
fn words(f: &[u8; FIXED]) -> [u64; 6] {
    let mut words = [0u64; 6];
    for (w, b) in words.iter_mut().zip(f.chunks_exact(8)) {
        let mut eight = [0u8; 8];
        eight.copy_from_slice(b);
        *w = u64::from_ne_bytes(eight);
    }
    words
}

/// The value of a record whose value kind is `kind`, scalar `bits` and
/// value bytes `tail`.
fn value(kind: u8, bits: u64, tail: &[u8]) -> Option<Val<'_>> {
    Some(match kind {
        V_NONE => return None,
        V_NULL => Val::Null,
        V_FALSE => Val::Bool(false),
        V_TRUE => Val::Bool(true),
        V_U64 => Val::U64(bits),
        V_I64 => Val::I64(bits as i64),
        V_F64 => Val::F64(f64::from_bits(bits)),
        V_STR => Val::Str(tail),
        V_JSON => Val::Json(tail),
        _ => return None,
    })
}

impl<'a> Iterator for Reader<'a> {
    type Item = Decoded<'a>;

    #[inline(always)]
    fn next(&mut self) -> Option<Decoded<'a>> {
        let rest = self.bytes.get(self.pos..)?;
        // Only this module writes records: a short or unknown one cannot be.
        let Some(f) = rest
            .get(..FIXED)
            .and_then(|f| <&[u8; FIXED]>::try_from(f).ok())
        else {
            self.pos = self.bytes.len();
            return None;
        };
        let w = words(f);
        let lengths = [w[4], w[4] >> 32, w[5], w[5] >> 32].map(|n| n as u32 as usize);
        let total = FIXED + lengths.iter().sum::<usize>();
        let Some(strings) = rest.get(FIXED..total) else {
            self.pos = self.bytes.len();
            return None;
        };
        self.pos += total;
        let (own, tail) = strings.split_at(lengths[0] + lengths[1] + lengths[2]);
        let (s0, own_rest) = own.split_at(lengths[0]);
        let (s1, s2) = own_rest.split_at(lengths[1]);
        let agent = match (w[0] >> 32) as u32 {
            NO_AGENT => None,
            n => Some(n),
        };
        let (tag, kind, flag) = (w[0] as u8, (w[0] >> 8) as u8, (w[0] >> 16) as u8);
        let at = w[1];
        let number = w[2];
        let bits = w[3];
        let event = match tag {
            COLD => {
                let body = Body::Cold;
                return Some(Decoded { agent, at, body });
            }
            BB_WRITE => FastBody::BlackboardWrite {
                key: s0,
                bytes: number,
                value: value(kind, bits, tail),
            },
            BB_DELETE => FastBody::BlackboardDelete {
                key: s0,
                existed: flag != 0,
            },
            MSG_SENT => FastBody::MessageSent {
                id: s0,
                to: s1,
                message_type: s2,
                bytes: number,
                payload: value(kind, bits, tail),
            },
            tag @ (MSG_HANDLED | MSG_GIVEN_BACK | MSG_DEAD) => {
                let (kind_and_id, attempt_key): (&[u8], &[u8]) = match tag {
                    MSG_HANDLED => (b",\"kind\":\"message_handled\",\"id\":", b",\"attempt\":"),
                    MSG_GIVEN_BACK => (
                        b",\"kind\":\"message_given_back\",\"id\":",
                        b",\"attempt\":",
                    ),
                    _ => (
                        b",\"kind\":\"message_dead_lettered\",\"id\":",
                        b",\"attempts\":",
                    ),
                };
                FastBody::Settled {
                    kind_and_id,
                    attempt_key,
                    id: s0,
                    from: s1,
                    message_type: s2,
                    attempt: number as u32,
                }
            }
            _ => {
                self.pos = self.bytes.len();
                return None;
            }
        };
        let plain = !needs_escape(own);
        let body = Body::Fast { event, plain };
        Some(Decoded { agent, at, body })
    }
}
