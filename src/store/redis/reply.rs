//! Parsing the replies of stream commands (RESP2 arrays) into deliveries.

use redis::RedisResult;
use redis::Value as RedisValue;

use super::keys::Keys;
use crate::store::{Delivery, Envelope};

/// Parses an XREADGROUP reply into deliveries.
pub(super) fn read_reply(
    keys: &Keys,
    reply: &RedisValue,
    deliveries: u32,
) -> RedisResult<Vec<Delivery>> {
    let mut out = Vec::new();
    for stream in array(reply) {
        let [name, entries] = array(stream) else {
            return Err(unexpected("XREADGROUP"));
        };
        let name = id_text(name).ok_or_else(|| unexpected("XREADGROUP"))?;
        let queue = keys.queue_of(&name).to_string();
        for entry in array(entries) {
            let [id, fields] = array(entry) else {
                return Err(unexpected("XREADGROUP"));
            };
            // A pending entry whose message was deleted reads as nil fields.
            if matches!(fields, RedisValue::Nil) {
                continue;
            }
            out.push(entry_delivery(&queue, id, fields, deliveries)?);
        }
    }
    Ok(out)
}

/// The entry ids in an XREADGROUP reply (also those a parse would refuse).
pub(super) fn entry_ids(reply: &RedisValue) -> Vec<String> {
    array(reply)
        .iter()
        .filter_map(|stream| array(stream).get(1))
        .flat_map(array)
        .filter_map(|entry| array(entry).first().and_then(id_text))
        .collect()
}

/// True when a member key's value (a GET reply) says the member was fenced.
pub(super) fn is_fence_mark(v: &RedisValue) -> bool {
    match v {
        RedisValue::BulkString(b) => b == b"fenced",
        RedisValue::SimpleString(s) => s == "fenced",
        _ => false,
    }
}

/// A delivery from a stream entry whose field `m` holds the envelope.
pub(super) fn entry_delivery(
    queue: &str,
    id: &RedisValue,
    fields: &RedisValue,
    deliveries: u32,
) -> RedisResult<Delivery> {
    let id = id_text(id).ok_or_else(|| unexpected("stream entry id"))?;
    // Parsed where the reply holds it: no copy of the envelope's text.
    let m = field_str(array(fields), "m").ok_or_else(|| unexpected("stream entry without 'm'"))?;
    let mut envelope: Envelope = serde_json::from_str(m).map_err(|e| {
        redis::RedisError::from((
            redis::ErrorKind::Parse,
            "corrupt message",
            format!("entry {id} of queue '{queue}': {e}"),
        ))
    })?;
    envelope.attempts = deliveries;
    Ok(Delivery {
        queue: queue.into(),
        envelope: std::sync::Arc::new(envelope),
        receipt: crate::store::Receipt::Entry(id),
    })
}

/// `(entry id, deliveries)` of an extended XPENDING reply.
pub(super) fn pending_counts(reply: &RedisValue) -> Vec<(String, u64)> {
    array(reply)
        .iter()
        .filter_map(|p| match array(p) {
            [id, _, _, count] => Some((id_text(id)?, usize_of(count)? as u64)),
            _ => None,
        })
        .collect()
}

pub(super) fn array(v: &RedisValue) -> &[RedisValue] {
    match v {
        RedisValue::Array(a) => a,
        _ => &[],
    }
}

pub(super) fn id_text(v: &RedisValue) -> Option<String> {
    text_of(v).map(str::to_owned)
}

pub(super) fn usize_of(v: &RedisValue) -> Option<usize> {
    match v {
        RedisValue::Int(n) => usize::try_from(*n).ok(),
        other => id_text(other)?.parse().ok(),
    }
}

/// The value of `name` in a flat `[field, value, ...]` list.
pub(super) fn field(fields: &[RedisValue], name: &str) -> Option<String> {
    field_str(fields, name).map(str::to_owned)
}

/// [`field`], borrowed from the reply: read for every message received,
/// where a copy of each name compared and of the value showed.
fn field_str<'a>(fields: &'a [RedisValue], name: &str) -> Option<&'a str> {
    fields
        .chunks(2)
        .find(|kv| text_of(&kv[0]) == Some(name))
        .and_then(|kv| kv.get(1))
        .and_then(text_of)
}

/// The text of a string reply, borrowed.
fn text_of(v: &RedisValue) -> Option<&str> {
    match v {
        RedisValue::BulkString(b) => std::str::from_utf8(b).ok(),
        RedisValue::SimpleString(s) => Some(s),
        _ => None,
    }
}

pub(super) fn unexpected(what: &str) -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::UnexpectedReturnType,
        "unexpected reply",
        what.to_string(),
    ))
}
