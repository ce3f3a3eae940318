//! The connection to the server: one shared, multiplexed connection for every
//! command of the process (commands sent while others are on their way share
//! a write and a round trip), replaced when it breaks, and the retry policy
//! that rides out a server restart.
//!
//! Writes may be sent without waiting ([`Connection::send`]): the command is
//! in the connection's queue when `send` returns, so the server applies the
//! commands of one caller in the order they were sent. That rests on the
//! multiplexed connection taking a command into its queue on the first poll
//! of its future, which holds while the queue has room: it is sized far
//! beyond what the agents can have in flight (see [`QUEUE_ROOM`]).
//!
//! The connection also drops, unwritten, a queued command whose caller
//! stopped waiting for its answer. A command that must not vanish so (a
//! write, an acknowledgement) is awaited through [`Finish`], which hands the
//! wait to the runtime when its caller goes away.
//!
//! Every wait for the server is bounded by `connect_timeout` (the store's
//! patience): a server that keeps its connections open but answers nothing
//! (paused, a hung machine, a network dropping packets) fails the command
//! as one that cannot be reached. A write may then be neither applied nor
//! refused yet: each carries a deadline in the server's time (see
//! [`super::clock`]) past which the server refuses it, and its wait ends
//! only once that deadline has passed, so a write reported failed is never
//! applied later. Once a command gave up, the server is *lost* until a new
//! connection is made: one task tries new connections, one after another,
//! and commands that retry wait for the attempt under way during the next
//! `connect_timeout`, then fail at once (commands sent without waiting are
//! then not sent: they fail at once too). So a run that lost its server ends
//! within a few `connect_timeout`s instead of waiting out each of its last
//! commands in turn, and a server that comes back is used again as soon as
//! that task reaches it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::FutureExt;
use parking_lot::RwLock;
use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, Client, Cmd, ErrorKind, FromRedisValue, Pipeline, RedisError,
    RedisResult, RetryMethod, Value,
};
use tokio::time::Instant;
use tracing::Instrument;

use super::batch::{self, Batcher, Queued, Write};
use super::scripts::{self, ServerScript};
use crate::store::{StoreError, StoreFuture, StoreResult};

/// Longest pause between two attempts while the server is away.
const MAX_BACKOFF: Duration = Duration::from_millis(500);

/// Longest one attempt of an ordinary (non-blocking) command may wait for its
/// answer before it is tried again (retries are safe: see [`Connection::run`]).
pub(super) const ATTEMPT_LIMIT: Duration = Duration::from_secs(2);

/// Commands the shared connection's queue holds before a sender has to wait.
/// Each agent keeps at most [`crate::store::writes::MAX_UNSETTLED`] writes in
/// flight plus one read, so this is never reached by fewer than 4000 agents.
const QUEUE_ROOM: usize = 1 << 20;

/// The server behind a store URL.
pub(super) struct Connection {
    /// Itself, for the reconnecting task a lost server starts.
    me: std::sync::Weak<Connection>,
    client: Client,
    /// Writes and reads sent without waiting, for the next batch.
    pub(super) batcher: Arc<Batcher>,
    current: RwLock<Current>,
    /// Held while the shared connection is being replaced, with the last
    /// replacement that failed: when it ended, and why.
    replacing: tokio::sync::Mutex<Option<(Instant, RedisError)>>,
    /// A command gave up on the server, and no connection was made since
    /// (see the module docs).
    lost: AtomicBool,
    /// Since when, and why (for the commands failed meanwhile).
    lost_at: parking_lot::Mutex<(Instant, String)>,
    /// The URL with its password hidden, for messages.
    pub url: String,
    /// How long to keep trying to reach the server before failing.
    pub patience: Duration,
}

/// The shared connection and its epoch.
#[derive(Clone)]
pub(super) struct Current {
    pub epoch: u64,
    pub conn: MultiplexedConnection,
}

/// True for failures that a reconnect can cure: the server is restarting,
/// unreachable, or still loading its data.
pub(super) fn is_transient(e: &RedisError) -> bool {
    if matches!(
        e.kind(),
        ErrorKind::AuthenticationFailed | ErrorKind::InvalidClientConfig
    ) || e.code() == Some("NOAUTH")
        || e.code() == Some("WRONGPASS")
        || is_untrusted(e)
    {
        return false;
    }
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_unrecoverable_error()
        || matches!(e.retry_method(), RetryMethod::WaitAndRetry)
}

/// True when the connection itself is gone (as opposed to a server that
/// answers, if only with "loading").
fn is_broken(e: &RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error() || e.is_timeout()
}

/// True when the server had flushed its scripts (a restart, SCRIPT FLUSH).
pub(super) fn is_no_script(e: &RedisError) -> bool {
    e.code() == Some("NOSCRIPT")
}

/// The error code of a reply that is a server error (`NOGROUP`, `BUSYGROUP`),
/// also inside a pipeline's replies, where redis-rs gives no `code()`.
pub(super) fn error_code(reply: &Value) -> Option<&str> {
    match reply {
        Value::ServerError(e) => Some(e.code()),
        _ => None,
    }
}

impl Connection {
    /// Connects to `url`, failing with `Unavailable` after `patience`.
    pub async fn open(url: &str, patience: Duration) -> Result<Arc<Connection>, OpenError> {
        let redacted = super::redact_url(url);
        if url.starts_with("rediss://") {
            // rustls needs a process-wide crypto provider; the HTTP client
            // installs the same one, whichever comes first.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let client = Client::open(url).map_err(|e| OpenError::BadUrl(e.to_string()))?;
        let unavailable = |reason: String| {
            OpenError::Unavailable(StoreError::Unavailable {
                url: redacted.clone(),
                reason,
            })
        };
        // Keep trying transient failures until the deadline; an authentication
        // failure or a wrong database is reported as such at once.
        let deadline = Instant::now() + patience;
        let mut pause = Duration::from_millis(20);
        let conn = loop {
            let attempt =
                tokio::time::timeout_at(deadline, connect_shared(&client, patience)).await;
            match attempt {
                Ok(Ok(conn)) => break conn,
                Ok(Err(e)) if is_transient(&e) && Instant::now() + pause < deadline => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_BACKOFF);
                }
                Ok(Err(e)) if is_transient(&e) => {
                    return Err(unavailable(format!(
                        "{} (gave up after {} ms; setting connect_timeout)",
                        server_reason(&client).await.unwrap_or_else(|| describe(&e)),
                        patience.as_millis()
                    )));
                }
                Ok(Err(e)) => return Err(unavailable(describe(&e))),
                Err(_) => {
                    return Err(unavailable(format!(
                        "{} within {} ms (setting connect_timeout)",
                        server_reason(&client)
                            .await
                            .unwrap_or_else(|| "no connection".to_string()),
                        patience.as_millis()
                    )));
                }
            }
        };
        Ok(Arc::new_cyclic(|me| Connection {
            me: me.clone(),
            client,
            batcher: Arc::default(),
            current: RwLock::new(Current { epoch: 1, conn }),
            replacing: tokio::sync::Mutex::new(None),
            lost: AtomicBool::new(false),
            lost_at: parking_lot::Mutex::new((Instant::now(), String::new())),
            url: redacted,
            patience,
        }))
    }

    /// The client, for connections of other kinds (pub/sub, blocking reads).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Moves whenever the shared connection is replaced.
    pub fn epoch(&self) -> u64 {
        self.current.read().epoch
    }

    /// The shared connection now.
    pub(super) fn current(&self) -> Current {
        self.current.read().clone()
    }

    /// After `e` on the shared connection of `epoch`: replaces it if `e`
    /// says it is broken (and no one did yet).
    pub async fn repair(&self, epoch: u64, e: &RedisError) {
        if is_broken(e) {
            let _ = self.replace(epoch).await;
        }
    }

    /// Replaces the shared connection of `epoch` (if no one did yet), loading
    /// the scripts on the new one. One attempt, within `connect_timeout`;
    /// the caller retries. An attempt that failed while this call waited
    /// for its turn is this call's answer too: on a server that accepts
    /// connections and answers nothing, each attempt takes the whole
    /// `connect_timeout`, and callers must not wait them out one after
    /// another.
    async fn replace(&self, epoch: u64) -> RedisResult<()> {
        let asked = Instant::now();
        let mut failed = self.replacing.lock().await;
        if self.epoch() != epoch {
            return Ok(());
        }
        if let Some((ended, e)) = &*failed
            && *ended >= asked
        {
            return Err(e.clone());
        }
        let conn = match connect_shared(&self.client, self.patience).await {
            Ok(conn) => conn,
            Err(e) => {
                *failed = Some((Instant::now(), e.clone()));
                return Err(e);
            }
        };
        *failed = None;
        let mut current = self.current.write();
        current.epoch += 1;
        current.conn = conn;
        self.lost.store(false, Ordering::Relaxed);
        tracing::debug!(epoch = current.epoch, "store connection replaced");
        Ok(())
    }

    /// True once a command gave up on the server, until a new connection
    /// is made.
    fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Relaxed)
    }

    /// The server is lost (a command gave up on it because of `reason`):
    /// one task tries new connections until one is made, back to back when
    /// each waits out its time, with backoff when refused at once.
    fn lose(&self, reason: &str) {
        // Without a runtime to reconnect on, nothing would end it.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        {
            let mut at = self.lost_at.lock();
            if self.lost.swap(true, Ordering::Relaxed) {
                return;
            }
            *at = (Instant::now(), reason.to_string());
        }
        let me = self.me.clone();
        runtime.spawn(async move {
            let mut pause = Duration::from_millis(20);
            loop {
                let Some(conn) = me.upgrade() else { return };
                if !conn.is_lost() {
                    return;
                }
                let started = Instant::now();
                if let Err(e) = conn.replace(conn.epoch()).await {
                    tracing::debug!("store still unreachable: {}", describe(&e));
                }
                drop(conn);
                // Attempts that waited out their time follow one another:
                // a paused server that resumes finds one under way.
                tokio::time::sleep(pause.saturating_sub(started.elapsed())).await;
                pause = (pause * 2).min(MAX_BACKOFF);
            }
        });
    }

    /// Runs `op` on the shared connection. A transient failure is retried with
    /// backoff until `patience` has passed since the first attempt; then it is
    /// `Unavailable`. Other failures are `Command` errors naming `what`.
    ///
    /// `op` may run more than once: operations that are not idempotent carry a
    /// token that makes a repeat a no-op on the server.
    ///
    /// The wait is a `redis` span of the trace (see [`crate::trace::store_call`]).
    pub async fn run<T, F, Fut>(&self, what: &str, op: F) -> StoreResult<T>
    where
        F: FnMut(MultiplexedConnection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        self.run_untraced(what, op)
            .instrument(crate::trace::store_call(what))
            .await
    }

    async fn run_untraced<T, F, Fut>(&self, what: &str, op: F) -> StoreResult<T>
    where
        F: FnMut(MultiplexedConnection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        self.run_until(what, Instant::now() + self.patience, op)
            .await
    }

    /// [`run`](Self::run), giving up at `deadline`. Once the server is lost
    /// (see the module docs), nothing is sent: the command waits for the
    /// reconnecting attempt under way (during the first `connect_timeout`
    /// of the loss) and fails unless it made a new connection.
    async fn run_until<T, F, Fut>(&self, what: &str, deadline: Instant, mut op: F) -> StoreResult<T>
    where
        F: FnMut(MultiplexedConnection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let mut pause = Duration::from_millis(10);
        let mut reloaded = false;
        loop {
            if self.is_lost() {
                let (since, reason) = self.lost_at.lock().clone();
                // Within `connect_timeout` of losing the server, a command
                // waits for the reconnecting attempt under way (a server
                // that resumes is used at once); later, it fails at once.
                if since.elapsed() < self.patience {
                    drop(self.replacing.lock().await);
                }
                if self.is_lost() {
                    return Err(self.gave_up(&reason));
                }
                continue;
            }
            let Current { epoch, conn } = self.current();
            // One attempt may not take all the patience: a command written to a
            // connection that died under it can wait for an answer that never
            // comes, while a fresh attempt would go through a new connection.
            let attempt_deadline = deadline.min(Instant::now() + ATTEMPT_LIMIT);
            let (failure, broken) = match tokio::time::timeout_at(attempt_deadline, op(conn)).await
            {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) if is_no_script(&e) && !reloaded => {
                    reloaded = true;
                    self.load_scripts().await;
                    continue;
                }
                Ok(Err(e)) if is_transient(&e) => (describe(&e), is_broken(&e)),
                Ok(Err(e)) => return Err(command_error(what, &e)),
                Err(_) => (NO_ANSWER.to_string(), true),
            };
            if Instant::now() + pause >= deadline {
                let failure = server_reason(&self.client).await.unwrap_or(failure);
                return Err(self.gave_up(&failure));
            }
            if broken {
                // Within what is left: a server that accepts connections
                // and answers nothing holds an attempt for its whole time.
                let _ = tokio::time::timeout_at(deadline, self.replace(epoch)).await;
            }
            tracing::debug!(command = what, "store unavailable, retrying: {failure}");
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_BACKOFF);
        }
    }

    /// Runs the command `build` makes, with [`run`](Self::run)'s retries.
    pub async fn query<T: FromRedisValue>(
        &self,
        what: &str,
        build: impl Fn() -> Cmd,
    ) -> StoreResult<T> {
        self.run(what, |mut c| {
            let cmd = build();
            async move { cmd.query_async(&mut c).await }
        })
        .await
    }

    /// Runs the pipeline `build` makes (one round trip), with retries.
    pub async fn pipeline<T: FromRedisValue>(
        &self,
        what: &str,
        build: impl Fn() -> Pipeline,
    ) -> StoreResult<T> {
        self.run(what, |mut c| {
            let pipe = build();
            async move { pipe.query_async(&mut c).await }
        })
        .await
    }

    /// Runs the pipeline `build` makes and returns each command's reply as
    /// it came, server errors included (so their codes can be read).
    pub async fn replies(
        &self,
        what: &str,
        build: impl Fn() -> Pipeline,
    ) -> StoreResult<Vec<Value>> {
        self.run(what, |mut c| {
            let pipe = build();
            async move { c.send_packed_commands(&pipe, 0, pipe.len()).await }
        })
        .await
    }

    /// Runs `script` on `keys`, with the arguments `args` adds, with retries.
    pub async fn eval<T: FromRedisValue>(
        &self,
        what: &str,
        script: &ServerScript,
        keys: &[&str],
        args: impl Fn(&mut Cmd),
    ) -> StoreResult<T> {
        self.query(what, || {
            let mut cmd = script_call(script, keys);
            args(&mut cmd);
            cmd
        })
        .await
    }

    /// Sends `cmd` now and returns its answer later. The command is in the
    /// connection's queue when this returns (see the module docs), so it
    /// is applied after everything sent before and before everything sent
    /// after. A transient failure sends it again (with [`run`](Self::run)'s
    /// retries) when the answer is awaited; the answer then says so.
    ///
    /// The answer is awaited until `expires` for a write (the moment its
    /// deadline passes: see [`outcome`](Self::outcome)), `connect_timeout`
    /// for anything else.
    pub fn send(
        self: &Arc<Self>,
        what: String,
        cmd: Cmd,
        expires: Option<Instant>,
    ) -> (u64, StoreFuture<(Value, bool)>) {
        if let Some(failed) = self.lost_for_good() {
            return failed;
        }
        let Current { epoch, mut conn } = self.current();
        let limit = expires.unwrap_or_else(|| Instant::now() + self.patience);
        let me = self.clone();
        // From now until the answer is taken: the wait of whoever settles it.
        let span = crate::trace::store_call(&what);
        // Finished even if the answer is dropped unawaited: the promise is
        // that a write sent is applied, whoever waits for it.
        let mut first = Finish::new(tokio::task::unconstrained(async move {
            let reply = conn.send_packed_command(&cmd).await;
            (reply.and_then(Value::extract_error), cmd)
        }));
        // The first poll puts the request in the connection's queue.
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        let early = match Pin::new(&mut first).poll(&mut cx) {
            Poll::Ready(done) => Some(done),
            Poll::Pending => None,
        };
        let answer = async move {
            let (reply, cmd) = match early {
                Some(done) => done,
                None => match within(limit, &mut first).await {
                    Some(done) => done,
                    None => {
                        first.abandon();
                        return Err(me.unanswered(expires.is_some()));
                    }
                },
            };
            me.outcome(epoch, &what, reply, || cmd, expires).await
        };
        (epoch, answer.instrument(span).boxed())
    }

    /// Sends `write` with the next batch (see [`batch`]) and returns its
    /// answer later, like [`send`](Self::send): it is applied after every
    /// write and read sent before and before every one sent after. When
    /// its outcome is unknown it is sent again on its own when the answer
    /// is awaited. Its answer is awaited until its deadline has passed on
    /// the server (`connect_timeout` after it is made), no longer.
    pub fn write(
        self: &Arc<Self>,
        what: String,
        write: Write,
    ) -> (u64, StoreFuture<(Value, bool)>) {
        if let Some(failed) = self.lost_for_good() {
            return failed;
        }
        let epoch = self.epoch();
        // Its deadline was taken before: this is later.
        let expires = Some(Instant::now() + self.patience);
        if let Some(((epoch, answer), guard)) = self.batcher.alone(epoch, true, || {
            self.send(what.clone(), write.alone(), expires)
        }) {
            let answer = async move {
                let outcome = answer.await;
                drop(guard);
                outcome
            };
            return (epoch, answer.boxed());
        }
        let write = Arc::new(write);
        let (queued, reply) = Queued::write(epoch, write.clone());
        self.batcher.push(self, queued);
        self.answer(epoch, what, reply, move || write.alone(), expires)
    }

    /// Sends the read `cmd` with the next batch, at once (see [`batch`]):
    /// it sees every write sent before it.
    pub fn read(self: &Arc<Self>, what: String, cmd: Cmd) -> (u64, StoreFuture<(Value, bool)>) {
        if let Some(failed) = self.lost_for_good() {
            return failed;
        }
        let epoch = self.epoch();
        if let Some((sent, _)) = self
            .batcher
            .alone(epoch, false, || self.send(what.clone(), cmd.clone(), None))
        {
            return sent;
        }
        let (queued, reply) = Queued::read(epoch, cmd.clone());
        self.batcher.push(self, queued);
        self.answer(epoch, what, reply, move || cmd, None)
    }

    /// The answer of a request queued in a batch: its reply, or after a
    /// transient failure the reply of `request` sent again. Awaited until
    /// `expires` for a write, `connect_timeout` for a read.
    fn answer(
        self: &Arc<Self>,
        epoch: u64,
        what: String,
        reply: tokio::sync::oneshot::Receiver<RedisResult<Value>>,
        request: impl FnOnce() -> Cmd + Send + 'static,
        expires: Option<Instant>,
    ) -> (u64, StoreFuture<(Value, bool)>) {
        let me = self.clone();
        let limit = expires.unwrap_or_else(|| Instant::now() + self.patience);
        let span = crate::trace::store_call(&what);
        let answer = async move {
            let reply = match within(limit, reply).await {
                Some(reply) => reply.unwrap_or_else(|_| Err(batch::lost())),
                None => return Err(me.unanswered(expires.is_some())),
            };
            me.outcome(epoch, &what, reply, request, expires).await
        };
        (epoch, answer.instrument(span).boxed())
    }

    /// A command sent without waiting, made once the server has been lost
    /// for a whole `connect_timeout`: not sent, it fails at once, as
    /// [`run_until`](Self::run_until) does. Sent on the dead connection, it
    /// would wait out its own `connect_timeout`, and a run's end, made of
    /// such commands one after another, took one each.
    fn lost_for_good(&self) -> Option<(u64, StoreFuture<(Value, bool)>)> {
        if !self.is_lost() {
            return None;
        }
        let (since, reason) = self.lost_at.lock().clone();
        if since.elapsed() < self.patience {
            return None;
        }
        let failed = Err(self.gave_up(&reason));
        Some((self.epoch(), futures::future::ready(failed).boxed()))
    }

    /// The failure of a command sent without waiting that got no answer
    /// within `connect_timeout` (for a `write`, until its deadline passed):
    /// not tried again, as its time is up. A write's outcome is not known:
    /// the server may have applied it with its answer lost on the way.
    fn unanswered(&self, write: bool) -> StoreError {
        self.gave_up(match write {
            true => {
                "the server did not answer by the write's deadline: whether it applied the \
                 write is not known (it may have; if the write reaches it after the deadline, \
                 it is refused)"
            }
            false => NO_ANSWER,
        })
    }

    /// The outcome of a request sent without waiting on the connection of
    /// `epoch`, from its `reply`: after a transient failure it is sent again
    /// (with [`run`](Self::run)'s retries, and for a write its deadline),
    /// and the outcome says so.
    ///
    /// A write `expires` when its deadline has passed on the server: no
    /// attempt of it can be applied any more, so it is not tried again, and
    /// its failure is reported no earlier (a failed attempt may still be on
    /// its way to the server until then).
    async fn outcome(
        &self,
        epoch: u64,
        what: &str,
        reply: RedisResult<Value>,
        request: impl FnOnce() -> Cmd,
        expires: Option<Instant>,
    ) -> StoreResult<(Value, bool)> {
        match reply {
            Ok(v) => Ok((v, false)),
            Err(e) if is_transient(&e) || is_no_script(&e) => {
                if expires.is_some_and(|t| Instant::now() >= t) {
                    return Err(self.unanswered(true));
                }
                let limit = expires.unwrap_or_else(|| Instant::now() + self.patience);
                if is_broken(&e) {
                    let _ = tokio::time::timeout_at(limit, self.replace(epoch)).await;
                }
                if is_no_script(&e) {
                    self.load_scripts().await;
                }
                let cmd = &request();
                let sent = self
                    .run_until(what, limit, |mut c| async move {
                        c.send_packed_command(cmd).await?.extract_error()
                    })
                    .await;
                match sent {
                    Ok(v) => Ok((v, true)),
                    Err(e) => {
                        if let Some(expires) = expires {
                            tokio::time::sleep_until(expires).await;
                        }
                        Err(e)
                    }
                }
            }
            Err(e) => Err(command_error(what, &e)),
        }
    }

    /// Sends `pipe` once on the shared connection and returns each command's
    /// reply as it came, server errors included, like
    /// [`round_trip`](Self::round_trip) but leaving a broken connection to be
    /// replaced by the next command. For a future polled before it is awaited
    /// (see [`Finish`]): replacing takes a lock, and a future holding it
    /// unpolled would stall every other command.
    pub async fn round_trip_only(&self, pipe: &Pipeline) -> RedisResult<Vec<Value>> {
        let mut conn = self.current().conn;
        self.bounded(conn.send_packed_commands(pipe, 0, pipe.len()))
            .await
    }

    /// Sends `pipe` once on the shared connection and returns each command's
    /// reply as it came, server errors included. One attempt, answered
    /// within `connect_timeout`: a broken connection (or one that did not
    /// answer) is replaced, and the caller decides about retrying.
    pub async fn round_trip(&self, pipe: &Pipeline) -> RedisResult<Vec<Value>> {
        let Current { epoch, mut conn } = self.current();
        let replies = self
            .bounded(conn.send_packed_commands(pipe, 0, pipe.len()))
            .await;
        if let Err(e) = &replies
            && is_broken(e)
        {
            let _ = self.replace(epoch).await;
        }
        replies
    }

    /// Sends `cmd` once on the shared connection, like [`round_trip`](Self::round_trip).
    pub async fn round_trip_cmd(&self, cmd: &Cmd) -> RedisResult<Value> {
        let Current { epoch, mut conn } = self.current();
        let reply = self
            .bounded(conn.send_packed_command(cmd))
            .await
            .and_then(Value::extract_error);
        match &reply {
            Err(e) if is_broken(e) => {
                let _ = self.replace(epoch).await;
            }
            Err(e) if is_no_script(e) => self.load_scripts().await,
            _ => {}
        }
        reply
    }

    /// Loads every script on the shared connection (after a restart the
    /// server has none). Failures are left to the commands that follow.
    pub async fn load_scripts(&self) {
        let mut pipe = redis::pipe();
        for script in scripts::all() {
            pipe.add_command(script_load(script)).ignore();
        }
        let mut conn = self.current().conn;
        if let Err(e) = self.bounded(pipe.query_async::<()>(&mut conn)).await {
            tracing::debug!("cannot load the store's scripts: {e}");
        }
    }

    /// `reply`, or [`no_answer`] once `connect_timeout` has passed.
    pub async fn bounded<T>(&self, reply: impl Future<Output = RedisResult<T>>) -> RedisResult<T> {
        tokio::time::timeout(self.patience, reply)
            .await
            .unwrap_or_else(|_| Err(no_answer()))
    }

    /// The error for a server that stayed away longer than `patience`; the
    /// server is lost from then on (see the module docs).
    pub fn gave_up(&self, reason: &str) -> StoreError {
        self.lose(reason);
        StoreError::Unavailable {
            url: self.url.clone(),
            reason: format!(
                "{reason} (gave up after {} ms; setting connect_timeout)",
                self.patience.as_millis()
            ),
        }
    }

    /// A new connection of its own, for blocking reads.
    pub async fn dedicated(&self) -> RedisResult<MultiplexedConnection> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.patience))
            .set_response_timeout(None);
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }
}

/// A future that, dropped before it is done, is finished on the runtime
/// instead. The multiplexed connection drops a queued command unwritten when
/// its answer's receiver is gone: wrapped in this, a command once queued is
/// written and answered, and what follows its answer in the future runs.
pub(super) struct Finish<F: Future + Send + 'static>
where
    F::Output: Send + 'static,
{
    running: Option<Pin<Box<F>>>,
    /// The output, when it came before the first await.
    ready: Option<F::Output>,
}

impl<F: Future + Send + 'static> Finish<F>
where
    F::Output: Send + 'static,
{
    pub fn new(future: F) -> Finish<F> {
        Finish {
            running: Some(Box::pin(future)),
            ready: None,
        }
    }

    /// Stops waiting: the future is dropped, not finished on the runtime
    /// (for a wait given up on, whose outcome no longer matters).
    pub fn abandon(mut self) {
        self.running = None;
    }

    /// A future already done, with its output.
    pub fn done(output: F::Output) -> Finish<F> {
        Finish {
            running: None,
            ready: Some(output),
        }
    }
}

// The future is boxed and the output never pinned.
impl<F: Future + Send + 'static> Unpin for Finish<F> where F::Output: Send + 'static {}

impl<F: Future + Send + 'static> Future for Finish<F>
where
    F::Output: Send + 'static,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let me = self.get_mut();
        if let Some(out) = me.ready.take() {
            return Poll::Ready(out);
        }
        let running = me
            .running
            .as_mut()
            .expect("a Finish is not polled after it is done");
        let out = std::task::ready!(running.as_mut().poll(cx));
        me.running = None;
        Poll::Ready(out)
    }
}

impl<F: Future + Send + 'static> Drop for Finish<F>
where
    F::Output: Send + 'static,
{
    fn drop(&mut self) {
        if let Some(rest) = self.running.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(rest);
        }
    }
}

/// What a command that got no answer within `connect_timeout` failed with.
const NO_ANSWER: &str = "the server did not answer";

/// The failure of a command whose answer did not come in time: as unknown
/// as a broken connection's (a transient failure, the connection suspect).
pub(super) fn no_answer() -> RedisError {
    std::io::Error::new(std::io::ErrorKind::TimedOut, NO_ANSWER).into()
}

/// `answer`'s output, or `None` once `limit` has passed. The timer is made
/// only when the answer is not there at once (most are, by the time they
/// are awaited).
async fn within<F: Future + Unpin>(limit: Instant, mut answer: F) -> Option<F::Output> {
    if let Poll::Ready(out) = futures::poll!(&mut answer) {
        return Some(out);
    }
    tokio::time::timeout_at(limit, answer).await.ok()
}

/// The shared connection: no response timeout (every command bounds its own
/// wait), a queue that never makes a sender wait, and the scripts loaded,
/// all within `patience` (a paused server accepts the connection and
/// answers nothing).
async fn connect_shared(client: &Client, patience: Duration) -> RedisResult<MultiplexedConnection> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(patience))
        .set_response_timeout(None)
        .set_pipeline_buffer_size(QUEUE_ROOM);
    let connect = async {
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let mut pipe = redis::pipe();
        for script in scripts::all() {
            pipe.add_command(script_load(script)).ignore();
        }
        pipe.query_async::<()>(&mut conn).await?;
        Ok(conn)
    };
    tokio::time::timeout(patience, connect)
        .await
        .unwrap_or_else(|_| Err(no_answer()))
}

fn script_load(script: &ServerScript) -> Cmd {
    let mut cmd = redis::cmd("SCRIPT");
    cmd.arg("LOAD").arg(script.source());
    cmd
}

/// `EVALSHA sha numkeys keys...`, for the caller to add the arguments.
pub(super) fn script_call(script: &ServerScript, keys: &[&str]) -> Cmd {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(script.hash()).arg(keys.len()).arg(keys);
    cmd
}

/// A failed command, named.
pub(super) fn command_error(what: &str, e: &RedisError) -> StoreError {
    if e.code() == Some("FENCED") {
        return StoreError::Fenced {
            command: what.to_string(),
            reason: e
                .detail()
                .unwrap_or("this process was declared lost")
                .to_string(),
        };
    }
    StoreError::Command {
        command: what.to_string(),
        reason: describe(e),
    }
}

/// True when the server's TLS certificate was refused: trying again cannot help.
fn is_untrusted(e: &RedisError) -> bool {
    let text = e.to_string();
    text.contains("invalid peer certificate") || text.contains("UnknownIssuer")
}

/// A failure as a person reads it: a TLS certificate the client does not
/// trust says so.
fn describe(e: &RedisError) -> String {
    let text = e.to_string();
    if is_untrusted(e) {
        format!(
            "the server's TLS certificate is not trusted ({text}); \
             name its CA in SSL_CERT_FILE or install it in the system's store"
        )
    } else {
        text
    }
}

/// What the server itself says to a new connection before it is asked
/// anything: a server that refuses clients (`maxclients`) writes its error
/// and closes, and the client library then reports only "connection reset" or
/// "broken pipe". `None` when it says nothing within a moment, on TLS (its
/// refusal comes inside the handshake) and on Unix sockets.
async fn server_reason(client: &Client) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let redis::ConnectionAddr::Tcp(host, port) = client.get_connection_info().addr() else {
        return None;
    };
    let moment = Duration::from_millis(300);
    let mut stream = tokio::time::timeout(
        moment,
        tokio::net::TcpStream::connect((host.as_str(), *port)),
    )
    .await
    .ok()?
    .ok()?;
    let mut buf = [0u8; 512];
    let n = tokio::time::timeout(moment, stream.read(&mut buf))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&buf[..n]);
    let line = text.strip_prefix('-')?.lines().next()?.trim();
    (!line.is_empty()).then(|| format!("the server refused the connection: {line}"))
}

/// Why a store could not be opened.
pub(super) enum OpenError {
    /// The URL does not parse.
    BadUrl(String),
    /// The server could not be reached or refused us.
    Unavailable(StoreError),
}
