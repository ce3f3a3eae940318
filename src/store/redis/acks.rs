//! Acknowledgements: gathered in this process, sent in batches (XACK + XDEL
//! per stream, in one script call each) with the next look at the queues or
//! a flush.
//!
//! An acknowledgement is never dropped on the way. A batch leaves the book's
//! waiting list only for its in-flight list, and goes back to waiting when its
//! round trip fails (acknowledging twice is harmless). Its round trip is
//! awaited through [`Finish`]: a look cancelled while the batch is on the
//! wire does not cancel the batch (the connection would drop it unwritten,
//! and the message would stay pending for ever, or be taken for an orphan
//! and handled again). While a batch is in flight its messages still count
//! as known to this process (see [`AckBook::ids`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use parking_lot::Mutex;
use redis::{Pipeline, RedisError, Value as RedisValue};
use tokio::time::Instant;

use super::Server;
use super::conn::{
    ATTEMPT_LIMIT, Connection, Finish, command_error, error_code, is_no_script, is_transient,
};
use super::keys::{GROUP, task_of};
use super::scripts::ACK;
use crate::store::StoreResult;

/// Acknowledgements by stream: entry ids.
pub(super) type AckBatch = HashMap<String, Vec<String>>;

/// The acknowledgements of this process not applied yet.
#[derive(Default)]
pub(super) struct AckBook {
    /// Waiting for the next batch.
    waiting: AckBatch,
    /// Batches sent, by number, until their answer.
    in_flight: HashMap<u64, AckBatch>,
    next: u64,
}

impl AckBook {
    /// Adds the acknowledgement of entry `id` of `stream`.
    pub fn add(&mut self, stream: String, id: String) {
        self.waiting.entry(stream).or_default().push(id);
    }

    /// The ids of `stream` acknowledged and not known to be applied.
    pub fn ids<'a>(&'a self, stream: &'a str) -> impl Iterator<Item = &'a String> + 'a {
        self.waiting
            .get(stream)
            .into_iter()
            .chain(self.in_flight.values().filter_map(move |b| b.get(stream)))
            .flatten()
    }

    /// Forgets the acknowledgements of streams starting with `prefix` (a
    /// cleaned task's).
    pub fn forget(&mut self, prefix: &str) {
        self.waiting.retain(|s, _| !s.starts_with(prefix));
        for batch in self.in_flight.values_mut() {
            batch.retain(|s, _| !s.starts_with(prefix));
        }
    }

    /// Moves what waits in flight; its number and a copy to send.
    fn send(&mut self) -> Option<(u64, AckBatch)> {
        if self.waiting.is_empty() {
            return None;
        }
        let batch = std::mem::take(&mut self.waiting);
        let n = self.next;
        self.next += 1;
        self.in_flight.insert(n, batch.clone());
        Some((n, batch))
    }

    /// Batch `n` was answered: applied (or refused for good) when `done`,
    /// else it waits again for the next batch.
    fn answered(&mut self, n: u64, done: bool) {
        let Some(batch) = self.in_flight.remove(&n) else {
            return;
        };
        if !done {
            for (stream, ids) in batch {
                self.waiting.entry(stream).or_default().extend(ids);
            }
        }
    }
}

impl Server {
    /// Queues an acknowledgement for the next batch.
    pub(super) fn ack_later(&self, stream: String, id: String) {
        self.acks.lock().add(stream, id);
    }

    /// Sends the acknowledgements waiting in this process, if any: they are
    /// in the connection's queue when this returns, so the server applies
    /// them before anything this process sends after. The answer is `Err`
    /// when the batch was not applied (it waits again, unless the process is
    /// fenced: then it may acknowledge nothing).
    pub(super) fn send_acks(
        &self,
    ) -> Option<Finish<impl Future<Output = Result<(), RedisError>> + Send + use<>>> {
        let (n, batch) = self.acks.lock().send()?;
        let pipe = self.ack_pipeline(&batch);
        let (conn, book) = (self.conn.clone(), self.acks.clone());
        let mut sent = Finish::new(apply(conn, book, n, pipe));
        // The first poll puts the batch in the connection's queue.
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        if let Poll::Ready(outcome) = std::pin::Pin::new(&mut sent).poll(&mut cx) {
            return Some(Finish::done(outcome));
        }
        Some(sent)
    }

    /// Sends the acknowledgements waiting in this process now, retrying
    /// within `connect_timeout`.
    pub(super) async fn flush_acks(&self) -> StoreResult<()> {
        let deadline = Instant::now() + self.conn.patience;
        let mut pause = Duration::from_millis(10);
        loop {
            let epoch = self.conn.epoch();
            let Some(sent) = self.send_acks() else {
                return Ok(());
            };
            // An answer that does not come is a broken connection: replacing
            // it fails the batch, which then waits again.
            let outcome = match tokio::time::timeout(ATTEMPT_LIMIT, sent).await {
                Ok(outcome) => outcome,
                Err(_) => Err(std::io::Error::from(std::io::ErrorKind::TimedOut).into()),
            };
            let e = match outcome {
                Ok(()) => return Ok(()),
                Err(e) if is_transient(&e) || is_no_script(&e) => e,
                Err(e) => return Err(command_error("bus ack", &e)),
            };
            self.conn.repair(epoch, &e).await;
            if Instant::now() + pause >= deadline {
                return Err(self.conn.gave_up(&e.to_string()));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }

    /// `batch` as one ACK script call per stream.
    fn ack_pipeline(&self, batch: &AckBatch) -> Pipeline {
        let mut pipe = redis::pipe();
        for (stream, ids) in batch {
            let (member, fenced) = self.fence(task_of(stream));
            let mut ack = super::conn::script_call(&ACK, &[stream, &member]);
            ack.arg(GROUP).arg(ids).arg(fenced);
            pipe.add_command(ack);
        }
        pipe
    }
}

/// Sends batch `n` and books its outcome. A broken connection is left to
/// the next command to replace (see [`Connection::round_trip_only`]).
async fn apply(
    conn: Arc<Connection>,
    book: Arc<Mutex<AckBook>>,
    n: u64,
    pipe: Pipeline,
) -> Result<(), RedisError> {
    let outcome = match conn.round_trip_only(&pipe).await {
        Ok(replies) => judge(&conn, &replies).await,
        Err(e) => Err(e),
    };
    let fenced = matches!(&outcome, Err(e) if e.code() == Some("FENCED"));
    book.lock().answered(n, outcome.is_ok() || fenced);
    outcome
}

/// The outcome of a batch from its replies: a fenced process's batch is
/// refused whole; a script the server lost is loaded again and the batch
/// sent again later; other refusals (NOGROUP: the stream is gone) leave
/// nothing to acknowledge.
async fn judge(conn: &Connection, replies: &[RedisValue]) -> Result<(), RedisError> {
    let refused = |code: &str| {
        replies.iter().find_map(|r| match r {
            RedisValue::ServerError(e) if e.code() == code => Some(e.clone().into()),
            _ => None,
        })
    };
    if let Some(e) = refused("FENCED") {
        return Err(e);
    }
    if let Some(e) = refused("NOSCRIPT") {
        conn.load_scripts().await;
        return Err(e);
    }
    for r in replies {
        if let Some(code) = error_code(r) {
            tracing::debug!("acknowledgement refused: {code}");
        }
    }
    Ok(())
}
