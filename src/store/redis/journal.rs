//! The run journal's stream, `task:{id}:journal`: lines appended with
//! `XADD MAXLEN ~`, up to [`PACK`] of them per stream entry (one field `e`
//! holding the JSON lines joined by `\n`), and read back in order with
//! `XRANGE` by `orrery tail` (from any host). One entry per line cost the
//! server an `XADD` per journaled event, half a command per operation of the
//! Redis benchmark's workload.

use redis::Value;

use super::Server;
use super::keys::Keys;
use crate::store::{StoreError, StoreResult};

/// Lines per stream entry at most. JSON lines hold no raw newline, so `\n`
/// separates them.
pub(super) const PACK: usize = 64;

/// The stream length (`MAXLEN ~`) that keeps about `max_len` lines when the
/// entries hold as many lines as those of this append (the newest, which
/// trimming keeps); `0` keeps none, as before.
fn entries_for(max_len: usize, lines: usize, packs: usize) -> usize {
    if max_len == 0 {
        return 0;
    }
    max_len.div_ceil(lines.div_ceil(packs.max(1)).max(1))
}

impl Server {
    pub(super) async fn journal_append(
        &self,
        task: &str,
        lines: &[&str],
        max_len: usize,
    ) -> StoreResult<()> {
        if lines.is_empty() {
            return Ok(());
        }
        let key = Keys::new(task).journal();
        let packs: Vec<String> = lines.chunks(PACK).map(|c| c.join("\n")).collect();
        let keep = entries_for(max_len, lines.len(), packs.len());
        self.conn
            .pipeline::<()>("journal append", || {
                let mut pipe = redis::pipe();
                for pack in &packs {
                    pipe.cmd("XADD")
                        .arg(&key)
                        .arg("MAXLEN")
                        .arg("~")
                        .arg(keep)
                        .arg("*")
                        .arg("e")
                        .arg(pack)
                        .ignore();
                }
                pipe
            })
            .await
    }

    pub(super) async fn journal_read(
        &self,
        task: &str,
        after: Option<&str>,
        count: usize,
    ) -> StoreResult<Vec<(String, String)>> {
        let key = Keys::new(task).journal();
        let start = match after {
            Some(id) => next_id(id).ok_or_else(|| StoreError::Corrupt {
                key: key.clone(),
                reason: format!("'{id}' is not a stream position"),
            })?,
            None => "-".to_string(),
        };
        let reply: Value = self
            .conn
            .query("journal read", || {
                let mut cmd = redis::cmd("XRANGE");
                cmd.arg(&key).arg(&start).arg("+").arg("COUNT").arg(count);
                cmd
            })
            .await?;
        let Value::Array(entries) = reply else {
            return Ok(Vec::new());
        };
        let mut out = Vec::with_capacity(entries.len());
        for entry in entries {
            if let Some((id, pack)) = entry_line(entry) {
                out.extend(pack.split('\n').map(|line| (id.clone(), line.to_string())));
            }
        }
        Ok(out)
    }
}

/// The first stream position after `id` (`ms-seq` → `ms-(seq+1)`): XRANGE
/// is inclusive, and exclusive ranges need Redis 6.2.
fn next_id(id: &str) -> Option<String> {
    let (ms, seq) = id.split_once('-')?;
    let (ms, seq): (u64, u64) = (ms.parse().ok()?, seq.parse().ok()?);
    Some(match seq.checked_add(1) {
        Some(next) => format!("{ms}-{next}"),
        None => format!("{}-0", ms + 1),
    })
}

/// `[id, [field, value, ...]]` → `(id, value of e)`.
fn entry_line(entry: Value) -> Option<(String, String)> {
    let Value::Array(mut parts) = entry else {
        return None;
    };
    if parts.len() != 2 {
        return None;
    }
    let fields = parts.pop()?;
    let id = text(parts.pop()?)?;
    let Value::Array(fields) = fields else {
        return None;
    };
    let mut fields = fields.into_iter();
    while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
        if text(name).as_deref() == Some("e") {
            return Some((id, text(value)?));
        }
    }
    None
}

fn text(v: Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b).ok(),
        Value::SimpleString(s) => Some(s),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_stream_keeps_about_max_len_lines_whatever_the_packing() {
        use super::entries_for;
        assert_eq!(entries_for(10_000, 640, 10), 157); // full packs of 64
        assert_eq!(entries_for(10_000, 3, 1), 3_334);
        assert_eq!(entries_for(10_000, 1, 1), 10_000); // one line each: as before
        assert_eq!(entries_for(0, 640, 10), 0);
        assert_eq!(entries_for(5, 640, 10), 1);
    }

    #[test]
    fn the_position_after_an_id_is_the_next_sequence() {
        assert_eq!(super::next_id("17-0").as_deref(), Some("17-1"));
        assert_eq!(
            super::next_id(&format!("17-{}", u64::MAX)).as_deref(),
            Some("18-0")
        );
        assert_eq!(super::next_id("junk"), None);
    }
}
