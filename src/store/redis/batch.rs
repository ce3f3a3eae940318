//! Writes of many agents in one script call.
//!
//! The server's core was the limit with many agents: every blackboard set
//! and every send was a script call of its own, each paying the call's cost
//! and the membership check's GET (about half of the server's time per
//! operation). Here the writes and reads sent without waiting
//! ([`Connection::write`], [`Connection::read`]) wait in one queue per
//! connection while a batch is on the wire; the next batch takes them all:
//! the writes of one member (one task of this process) in one call of
//! [`BATCH`] per [`PER_CALL`] writes, then the reads, in one pipeline.
//!
//! Order: a batch keeps the order its writes were made in, and batches
//! reach the connection's queue in the order they were taken (under the
//! queue's lock), so an agent's writes are applied in its order. A read is
//! sent with the batch that holds the writes its agent made before it (a
//! read is never made while the same agent's later write exists: its agent
//! waits for the answer), and it does not wait for a batch in flight.
//!
//! Outcomes: each write gets the reply of its own place in the call (the
//! script applies each write as its own call would, so a write that fails
//! fails alone); a refusal of the whole call (`FENCED`, `NOSCRIPT`) and a
//! failure of the round trip reach every write of the call. A write whose
//! outcome is unknown (the connection broke) is sent again on its own, as
//! its own script call, when its agent settles it ([`Connection::write`]);
//! one that waited here while the connection was replaced is not sent on
//! the new one but fails as unknown too, so it is sent again in the order
//! its agent settles its writes, never after a later write of the agent.
//!
//! A batch taken is always sent and answered: its round trip runs on a task
//! of its own (redis-rs drops a queued command unwritten once nobody waits
//! for its answer), which then takes the next batch. That task waits
//! `connect_timeout` at most: by then its writes are past their deadline,
//! so a server that answers no more (paused) applies none of them later.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use parking_lot::Mutex;
use redis::{Cmd, RedisError, RedisResult, Value};
use tokio::sync::oneshot;

use super::conn::{Connection, Current, no_answer, script_call};
use super::scripts::{BATCH, BB_SET, SEND};

/// Batches on the wire at once on one connection. One: the writes made
/// meanwhile make the next batch, so its size follows the load.
const IN_FLIGHT: usize = 1;

/// Writes queued that make a batch go at once, whatever is on the wire: the
/// server is not left idle while many agents write faster than a round trip.
const FULL: usize = 64;

/// Most writes in one script call: a call holds the server for its length.
const PER_CALL: usize = 256;

/// A write the batch script applies, and the member it is made for.
pub(super) struct Write {
    /// The member key of the write's task, checked once per call.
    pub member: String,
    /// `1` when this process is a member of the task (see [`super::scripts`]).
    pub flag: &'static str,
    /// The write itself.
    pub kind: WriteKind,
}

/// What a [`Write`] does.
pub(super) enum WriteKind {
    /// A blackboard set (see `SET_OP` in [`super::scripts`]).
    Set {
        value_key: String,
        index: String,
        json: String,
        ttl_ms: u64,
        key: String,
        channel: String,
        event_prefix: String,
        index_ttl: u64,
        /// When the server must refuse it (server time, ms: see
        /// [`super::clock`]).
        deadline: i64,
    },
    /// A send (see `SEND_OP` in [`super::scripts`]).
    Send {
        stream: String,
        queues: String,
        sent: String,
        json: String,
        record: bool,
        queue: String,
        number: u64,
        /// When the server must refuse it (server time, ms: see
        /// [`super::clock`]).
        deadline: i64,
    },
}

impl WriteKind {
    fn key_count(&self) -> usize {
        match self {
            WriteKind::Set { .. } => 2,
            WriteKind::Send { .. } => 3,
        }
    }

    fn keys(&self, cmd: &mut Cmd) {
        match self {
            WriteKind::Set {
                value_key, index, ..
            } => cmd.arg(value_key).arg(index),
            WriteKind::Send {
                stream,
                queues,
                sent,
                ..
            } => cmd.arg(stream).arg(queues).arg(sent),
        };
    }

    fn args(&self, cmd: &mut Cmd) {
        match self {
            WriteKind::Set {
                json,
                ttl_ms,
                key,
                channel,
                event_prefix,
                index_ttl,
                deadline,
                ..
            } => cmd
                .arg(json)
                .arg(ttl_ms)
                .arg(key)
                .arg(channel)
                .arg(event_prefix)
                .arg(index_ttl)
                .arg(deadline),
            WriteKind::Send {
                json,
                record,
                queue,
                number,
                deadline,
                ..
            } => cmd
                .arg(json)
                .arg(if *record { "1" } else { "0" })
                .arg(queue)
                .arg(number)
                .arg(deadline),
        };
    }
}

impl Write {
    /// The write as a script call of its own, with its deadline: how it is
    /// sent alone, and again.
    pub fn alone(&self) -> Cmd {
        let mut cmd = match &self.kind {
            WriteKind::Set {
                value_key, index, ..
            } => script_call(&BB_SET, &[value_key, index, &self.member]),
            WriteKind::Send {
                stream,
                queues,
                sent,
                ..
            } => script_call(&SEND, &[stream, queues, sent, &self.member]),
        };
        self.kind.args(&mut cmd);
        cmd.arg(self.flag);
        cmd
    }
}

/// What waits for the next batch.
enum Item {
    Write(Arc<Write>),
    Read(Cmd),
}

/// A write or read waiting for the next batch, with where its reply goes.
pub(super) struct Queued {
    /// The connection's epoch when it was made.
    epoch: u64,
    item: Item,
    reply: oneshot::Sender<RedisResult<Value>>,
}

impl Queued {
    /// A write made on the connection of `epoch`, and its reply's receiver.
    pub fn write(epoch: u64, write: Arc<Write>) -> (Queued, oneshot::Receiver<RedisResult<Value>>) {
        Self::new(epoch, Item::Write(write))
    }

    /// A read made on the connection of `epoch`, and its reply's receiver.
    pub fn read(epoch: u64, cmd: Cmd) -> (Queued, oneshot::Receiver<RedisResult<Value>>) {
        Self::new(epoch, Item::Read(cmd))
    }

    fn new(epoch: u64, item: Item) -> (Queued, oneshot::Receiver<RedisResult<Value>>) {
        let (reply, answer) = oneshot::channel();
        (Queued { epoch, item, reply }, answer)
    }

    fn is_read(&self) -> bool {
        matches!(self.item, Item::Read(_))
    }
}

/// The queue of one connection.
#[derive(Default)]
pub(super) struct Batcher {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    queued: Vec<Queued>,
    /// The epochs of the batches on the wire.
    in_flight: Vec<u64>,
    /// Writes sent alone whose answer was not taken yet.
    alone: usize,
}

/// Where the replies of a batch's pipeline go, command by command.
enum Slot {
    /// A call of the batch script: one reply per write.
    Call(Vec<oneshot::Sender<RedisResult<Value>>>),
    /// A read.
    Read(oneshot::Sender<RedisResult<Value>>),
}

type Replies = Pin<Box<dyn Future<Output = RedisResult<Vec<Value>>> + Send>>;

/// A batch on the wire.
struct Flight {
    epoch: u64,
    replies: Replies,
    slots: Vec<Slot>,
}

impl Batcher {
    /// Queues `q` for the next batch, and sends a batch now when fewer than
    /// [`IN_FLIGHT`] are on the wire of the current connection, when `q` is
    /// a read (its agent waits for it), or when [`FULL`] wait.
    pub fn push(&self, conn: &Arc<Connection>, q: Queued) {
        let flight = {
            let mut st = self.state.lock();
            let urgent = q.is_read();
            let epoch = q.epoch;
            st.queued.push(q);
            // A batch of an older connection does not hold this one back:
            // it may never be answered.
            let flying = st.in_flight.iter().filter(|e| **e >= epoch).count();
            if flying >= IN_FLIGHT && !urgent && st.queued.len() < FULL {
                return;
            }
            st.take(conn.current())
        };
        if let Some(flight) = flight {
            tokio::spawn(fly(conn.clone(), flight));
        }
    }
}

impl Batcher {
    /// Runs `send` (which puts one command in the connection's queue) when
    /// the command may go alone, past the batches: nothing waits for a batch
    /// (so it comes after everything made before it), and for a write, no
    /// batch and no other write sent alone is on the wire. Alone, a command
    /// is answered to the one who waits for it, with no task between: an
    /// agent working by itself pays no batch. The guard of a write counts
    /// it until its answer is taken (or dropped): until then the next write
    /// goes in a batch.
    pub fn alone<R>(
        self: &Arc<Self>,
        epoch: u64,
        write: bool,
        send: impl FnOnce() -> R,
    ) -> Option<(R, Option<Alone>)> {
        let mut st = self.state.lock();
        if !st.queued.is_empty() {
            return None;
        }
        if !write {
            return Some((send(), None));
        }
        if st.alone > 0 || st.in_flight.iter().any(|e| *e >= epoch) {
            return None;
        }
        st.alone += 1;
        Some((send(), Some(Alone(self.clone()))))
    }
}

/// A write sent alone, until its answer is taken.
pub(super) struct Alone(Arc<Batcher>);

impl Drop for Alone {
    fn drop(&mut self) {
        let mut st = self.0.state.lock();
        st.alone = st.alone.saturating_sub(1);
    }
}

impl State {
    /// Takes what is queued into a batch and puts it in the connection's
    /// queue (called under the lock, so batches keep their order there).
    /// Nothing to send (all of it made on an older connection): `None`.
    fn take(&mut self, current: Current) -> Option<Flight> {
        let Current { epoch, mut conn } = current;
        let mut groups: Vec<Group> = Vec::new();
        let mut reads = Vec::new();
        for q in self.queued.drain(..) {
            if q.epoch != epoch {
                let _ = q.reply.send(Err(replaced()));
                continue;
            }
            match q.item {
                Item::Write(w) => {
                    match groups
                        .iter_mut()
                        .find(|(m, f, _)| *m == w.member && *f == w.flag)
                    {
                        Some((_, _, writes)) => writes.push((w, q.reply)),
                        None => groups.push((w.member.clone(), w.flag, vec![(w, q.reply)])),
                    }
                }
                Item::Read(cmd) => reads.push((cmd, q.reply)),
            }
        }
        if groups.is_empty() && reads.is_empty() {
            return None;
        }
        let mut pipe = redis::pipe();
        let mut slots = Vec::new();
        for (member, flag, writes) in groups {
            let mut writes = writes.into_iter().peekable();
            while writes.peek().is_some() {
                let call: Vec<_> = writes.by_ref().take(PER_CALL).collect();
                pipe.add_command(batch_call(&member, flag, &call));
                slots.push(Slot::Call(call.into_iter().map(|(_, s)| s).collect()));
            }
        }
        for (cmd, reply) in reads {
            pipe.add_command(cmd);
            slots.push(Slot::Read(reply));
        }
        let mut replies: Replies = Box::pin(tokio::task::unconstrained(async move {
            conn.send_packed_commands(&pipe, 0, pipe.len()).await
        }));
        // The first poll puts the pipeline in the connection's queue.
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        if let Poll::Ready(outcome) = replies.as_mut().poll(&mut cx) {
            replies = Box::pin(std::future::ready(outcome));
        }
        self.in_flight.push(epoch);
        Some(Flight {
            epoch,
            replies,
            slots,
        })
    }
}

type Sender = oneshot::Sender<RedisResult<Value>>;

/// The writes of one member in a batch: its key, its flag, the writes.
type Group = (String, &'static str, Vec<(Arc<Write>, Sender)>);

/// `EVALSHA` of [`BATCH`] over `writes` of `member`.
fn batch_call(member: &str, flag: &str, writes: &[(Arc<Write>, Sender)]) -> Cmd {
    let keys = 1 + writes
        .iter()
        .map(|(w, _)| w.kind.key_count())
        .sum::<usize>();
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(BATCH.hash()).arg(keys).arg(member);
    for (w, _) in writes {
        w.kind.keys(&mut cmd);
    }
    cmd.arg(flag);
    for (w, _) in writes {
        cmd.arg(match w.kind {
            WriteKind::Set { .. } => "s",
            WriteKind::Send { .. } => "m",
        });
        w.kind.args(&mut cmd);
    }
    cmd
}

/// Waits for the replies of `flight`, hands them out, and sends what was
/// queued meanwhile, until nothing is.
async fn fly(conn: Arc<Connection>, mut flight: Flight) {
    loop {
        // Bounded: a server that stopped answering (paused, cut off) would
        // hold this batch, and every batch of the connection after it, for
        // ever. Its writes' waits end by then (see `Connection::write`),
        // and their deadlines have passed: the server refuses them if they
        // reach it later.
        let replies = match tokio::time::timeout(conn.patience, flight.replies).await {
            Ok(replies) => replies,
            Err(_) => Err(no_answer()),
        };
        hand_out(flight.slots, replies);
        let current = conn.current();
        let mut st = conn.batcher.state.lock();
        if let Some(i) = st.in_flight.iter().position(|e| *e == flight.epoch) {
            st.in_flight.swap_remove(i);
        }
        let flying = st.in_flight.iter().filter(|e| **e == current.epoch).count();
        if st.queued.is_empty() || flying >= IN_FLIGHT {
            return;
        }
        match st.take(current) {
            Some(next) => flight = next,
            None => return,
        }
    }
}

/// Gives each write and read its reply.
fn hand_out(slots: Vec<Slot>, replies: RedisResult<Vec<Value>>) {
    let replies = match replies {
        Ok(replies) => replies,
        Err(e) => {
            for slot in slots {
                match slot {
                    Slot::Call(writes) => {
                        for w in writes {
                            let _ = w.send(Err(e.clone()));
                        }
                    }
                    Slot::Read(r) => {
                        let _ = r.send(Err(e.clone()));
                    }
                }
            }
            return;
        }
    };
    let mut replies = replies.into_iter();
    for slot in slots {
        let reply = replies.next().unwrap_or(Value::Nil);
        match slot {
            Slot::Read(r) => {
                let _ = r.send(reply.extract_error());
            }
            Slot::Call(writes) => match reply {
                Value::Array(each) if each.len() == writes.len() => {
                    for (w, reply) in writes.into_iter().zip(each) {
                        let _ = w.send(reply.extract_error());
                    }
                }
                Value::ServerError(e) => {
                    for w in writes {
                        let _ = w.send(Err(e.clone().into()));
                    }
                }
                other => {
                    for w in writes {
                        let _ = w.send(Err(unexpected(&other)));
                    }
                }
            },
        }
    }
}

/// The failure of a write or read made on a connection replaced before it
/// was sent: its outcome is as unknown as a broken connection's.
fn replaced() -> RedisError {
    std::io::Error::new(
        std::io::ErrorKind::ConnectionReset,
        "the connection was replaced before the command was sent",
    )
    .into()
}

/// A batch reply of the wrong shape.
fn unexpected(reply: &Value) -> RedisError {
    RedisError::from((
        redis::ErrorKind::UnexpectedReturnType,
        "the batch script answered",
        format!("{reply:?}"),
    ))
}

/// The failure of a write or read whose batch's task ended without an
/// answer (the runtime shutting down).
pub(super) fn lost() -> RedisError {
    std::io::Error::new(
        std::io::ErrorKind::ConnectionAborted,
        "the batch holding the command ended unanswered",
    )
    .into()
}
