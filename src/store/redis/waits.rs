//! Waiting for messages without a server connection per waiter.
//!
//! A blocking read on the shared connection would stall every command behind
//! it, and a connection per waiting agent does not scale (500 agents would
//! hold 500 connections). So one reader per process blocks, on a connection
//! of its own, in `XREAD BLOCK` over every stream some consumer of the process
//! waits on, and wakes the waiters of the streams that got new entries; they
//! then look with a plain XREADGROUP on the shared connection.
//!
//! XREAD (no group) only says that entries newer than an id arrived. The
//! reader keeps, per stream, the newest id it has reported; a stream first
//! waited on starts from 0, so entries already there wake its waiters once
//! (they look and find them taken or not). A waiter registers before it
//! looks, and a wake-up is kept until it waits, so nothing that arrives
//! between its look and its wait is missed. When a stream the reader is not
//! blocked on gets a waiter, the reader is woken with `CLIENT UNBLOCK` (on a
//! server without it, the reader blocks in short slices instead).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use redis::Value;
use redis::aio::MultiplexedConnection;
use tokio::sync::Notify;

use super::Server;
use super::reply::{array, id_text};

/// Longest single blocking read when the reader can be woken.
const BLOCK: Duration = Duration::from_secs(2);

/// Longest single blocking read on a server without `CLIENT UNBLOCK`: how
/// long a new waiter may wait for the reader to include its streams.
const BLOCK_SLICE: Duration = Duration::from_millis(50);

/// Entries the reader takes note of per stream and read.
const NOTE: usize = 128;

/// The waiters of one process.
#[derive(Default)]
pub(super) struct Waits {
    state: Mutex<WaitState>,
    /// Wakes the reader when it has nothing to block on.
    wake: Arc<Notify>,
}

#[derive(Default)]
struct WaitState {
    streams: HashMap<String, Watched>,
    started: bool,
    /// The streams of the read the reader is blocked in, if it is.
    blocked_on: Option<HashSet<String>>,
    /// A `CLIENT UNBLOCK` is on its way for the current read.
    unblocking: bool,
    /// Counts the reader's reads, so an unblocker knows when its read ended.
    read: u64,
    /// The reader connection's client id, when it can be woken.
    reader_id: Option<i64>,
}

struct Watched {
    /// Entries up to this id were reported.
    since: String,
    waiters: Vec<Arc<Notify>>,
}

/// A waiter's registration on some streams; dropped when it stops waiting.
pub(super) struct Watch {
    server: Weak<Server>,
    notify: Arc<Notify>,
    streams: Vec<String>,
}

impl Watch {
    /// Returns once one of the streams got entries since the registration
    /// (or since the last call), or the reader lost its connection.
    pub async fn changed(&self) {
        self.notify.notified().await;
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let Some(server) = self.server.upgrade() else {
            return;
        };
        let mut st = server.waits.state.lock();
        for s in &self.streams {
            if let Some(w) = st.streams.get_mut(s) {
                w.waiters.retain(|n| !Arc::ptr_eq(n, &self.notify));
            }
        }
    }
}

impl Waits {
    /// Registers a waiter on `streams`, starting the reader if needed.
    pub fn watch(&self, server: &Arc<Server>, streams: &[String]) -> Watch {
        let notify = Arc::new(Notify::new());
        let mut st = self.state.lock();
        let mut news = false;
        for s in streams {
            news |= !st.blocked_on.as_ref().is_some_and(|b| b.contains(s));
            let w = st.streams.entry(s.clone()).or_insert_with(|| Watched {
                since: "0-0".into(),
                waiters: Vec::new(),
            });
            w.waiters.push(notify.clone());
        }
        if !st.started {
            st.started = true;
            tokio::spawn(read(Arc::downgrade(server), self.wake.clone()));
        }
        if news {
            match (&st.blocked_on, st.reader_id, st.unblocking) {
                (Some(_), Some(id), false) => {
                    st.unblocking = true;
                    tokio::spawn(unblock(Arc::downgrade(server), id, st.read));
                }
                _ => self.wake.notify_one(),
            }
        }
        Watch {
            server: Arc::downgrade(server),
            notify,
            streams: streams.to_vec(),
        }
    }

    /// Forgets the streams of a cleaned task.
    pub fn forget(&self, prefix: &str) {
        self.state
            .lock()
            .streams
            .retain(|s, w| !s.starts_with(prefix) || !w.waiters.is_empty());
    }

    /// Wakes every waiter (the reader cannot tell them what arrived).
    fn wake_all(&self) {
        for w in self.state.lock().streams.values() {
            for n in &w.waiters {
                n.notify_one();
            }
        }
    }
}

/// Wakes the reader out of read number `read`. The reader marks itself
/// blocked before its `XREAD` reaches the server, and the `CLIENT UNBLOCK`
/// travels on another connection, so it can arrive first and find nothing
/// to wake (it answers 0): then it is sent again until it wakes the read or
/// the read has ended on its own. Without this, a waiter on a new stream
/// could wait for the whole blocking read (seconds) for a message that was
/// already there.
async fn unblock(server: Weak<Server>, id: i64, read: u64) {
    loop {
        let Some(me) = server.upgrade() else { return };
        let mut cmd = redis::cmd("CLIENT");
        cmd.arg("UNBLOCK").arg(id);
        let (_, reply) = me.conn.send("wake the reader".into(), cmd, None);
        let woke = matches!(reply.await, Ok((Value::Int(1), _)));
        {
            let st = me.waits.state.lock();
            if woke || st.read != read || st.blocked_on.is_none() {
                return;
            }
        }
        drop(me);
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

/// The reader: blocks on the streams waited on, wakes their waiters. Ends
/// when the store is dropped.
async fn read(server: Weak<Server>, wake: Arc<Notify>) {
    let mut conn: Option<MultiplexedConnection> = None;
    let mut pause = Duration::from_millis(20);
    let mut unblockable = true;
    loop {
        let idle = wake.clone().notified_owned();
        tokio::pin!(idle);
        idle.as_mut().enable();
        let Some(me) = server.upgrade() else { return };
        let patience = me.conn.patience;
        if !me.waited_on() {
            drop(me);
            idle.await;
            continue;
        }
        let mut c = match conn.take() {
            Some(c) => c,
            None => match me.reader_connection().await {
                Ok((c, id, can_unblock)) => {
                    unblockable = can_unblock;
                    me.waits.state.lock().reader_id = id.filter(|_| can_unblock);
                    pause = Duration::from_millis(20);
                    c
                }
                Err(e) => {
                    tracing::debug!("blocking reader cannot connect: {e}");
                    me.waits.wake_all();
                    drop(me);
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(500));
                    continue;
                }
            },
        };
        // Marked blocked only now that the reader can be woken: a waiter
        // coming while it connects must find it not blocked yet.
        let (names, ids) = me.waited_streams();
        if names.is_empty() {
            conn = Some(c);
            continue;
        }
        let block = if unblockable { BLOCK } else { BLOCK_SLICE };
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT")
            .arg(NOTE)
            .arg("BLOCK")
            .arg(block.as_millis() as u64)
            .arg("STREAMS")
            .arg(&names)
            .arg(&ids);
        drop(me);
        let reply = tokio::time::timeout(block + patience, c.send_packed_command(&cmd)).await;
        let Some(me) = server.upgrade() else { return };
        {
            let mut st = me.waits.state.lock();
            st.blocked_on = None;
            st.unblocking = false;
        }
        match reply {
            Ok(Ok(Value::Nil)) => conn = Some(c),
            Ok(Ok(Value::ServerError(e))) => {
                tracing::warn!("blocking reader: the server refused XREAD: {}", e.code());
                me.waits.wake_all();
                conn = Some(c);
                drop(me);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(Ok(v)) => {
                me.noted(&v);
                conn = Some(c);
            }
            Ok(Err(e)) => {
                tracing::debug!("blocking reader lost its connection: {e}");
                me.waits.wake_all();
            }
            Err(_) => {
                tracing::debug!("blocking reader got no answer; reconnecting");
                me.waits.wake_all();
            }
        }
    }
}

impl Server {
    /// Whether anyone waits on some stream.
    fn waited_on(&self) -> bool {
        let st = self.waits.state.lock();
        st.streams.values().any(|w| !w.waiters.is_empty())
    }

    /// The streams someone waits on, with the id to read after; marks the
    /// reader blocked on them.
    fn waited_streams(&self) -> (Vec<String>, Vec<String>) {
        let mut st = self.waits.state.lock();
        let (names, ids): (Vec<String>, Vec<String>) = st
            .streams
            .iter()
            .filter(|(_, w)| !w.waiters.is_empty())
            .map(|(s, w)| (s.clone(), w.since.clone()))
            .unzip();
        st.blocked_on = (!names.is_empty()).then(|| names.iter().cloned().collect());
        st.unblocking = false;
        st.read += 1;
        (names, ids)
    }

    /// A connection for the reader, its client id, and whether the server
    /// knows `CLIENT UNBLOCK`.
    async fn reader_connection(
        &self,
    ) -> redis::RedisResult<(MultiplexedConnection, Option<i64>, bool)> {
        let mut c = self.conn.dedicated().await?;
        let id: Option<i64> = self
            .conn
            .bounded(redis::cmd("CLIENT").arg("ID").query_async(&mut c))
            .await
            .ok();
        let can_unblock = match id {
            // Unblocking a client that is not blocked answers 0 where supported.
            Some(id) => self
                .conn
                .query::<i64>("client unblock", || {
                    let mut cmd = redis::cmd("CLIENT");
                    cmd.arg("UNBLOCK").arg(id);
                    cmd
                })
                .await
                .is_ok(),
            None => false,
        };
        Ok((c, id, can_unblock))
    }

    /// Takes note of an XREAD reply: moves each stream's id on and wakes its waiters.
    fn noted(&self, reply: &Value) {
        let mut st = self.waits.state.lock();
        for stream in array(reply) {
            let [name, entries] = array(stream) else {
                continue;
            };
            let (Some(name), Some(last)) = (
                id_text(name),
                array(entries)
                    .last()
                    .and_then(|e| array(e).first())
                    .and_then(id_text),
            ) else {
                continue;
            };
            if let Some(w) = st.streams.get_mut(&name) {
                w.since = last;
                for n in &w.waiters {
                    n.notify_one();
                }
            }
        }
    }
}
