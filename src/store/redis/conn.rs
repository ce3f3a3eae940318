//! Connections to the server: one shared, auto-pipelined connection for
//! ordinary commands, a pool of dedicated connections for blocking reads, and
//! the retry policy that rides out a server restart.

use std::future::Future;
use std::time::Duration;

use parking_lot::Mutex;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{
    AsyncConnectionConfig, Client, Cmd, ErrorKind, FromRedisValue, Pipeline, RedisError,
    RedisResult, RetryMethod, Script, ScriptInvocation,
};
use tokio::time::Instant;

use crate::store::{StoreError, StoreResult};

/// Longest pause between two attempts while the server is away.
const MAX_BACKOFF: Duration = Duration::from_millis(500);

/// Longest one attempt of an ordinary (non-blocking) command may wait for its
/// answer before it is tried again (retries are safe: see [`Connection::run`]).
const ATTEMPT_LIMIT: Duration = Duration::from_secs(2);

/// The server behind a store URL.
pub(super) struct Connection {
    client: Client,
    shared: ConnectionManager,
    /// The URL with its password hidden, for messages.
    pub url: String,
    /// How long to keep trying to reach the server before failing.
    pub patience: Duration,
    /// Dedicated connections not in use, for blocking reads.
    idle: Mutex<Vec<MultiplexedConnection>>,
}

/// True for failures that a reconnect can cure: the server is restarting,
/// unreachable, or still loading its data.
pub(super) fn is_transient(e: &RedisError) -> bool {
    if matches!(
        e.kind(),
        ErrorKind::AuthenticationFailed | ErrorKind::InvalidClientConfig
    ) || e.code() == Some("NOAUTH")
        || e.code() == Some("WRONGPASS")
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

/// True when the server reports a missing consumer group (the queue was
/// never written to, or its keys were cleaned).
pub(super) fn is_no_group(e: &RedisError) -> bool {
    e.code() == Some("NOGROUP")
}

impl Connection {
    /// Connects to `url`, failing with `Unavailable` after `patience`.
    pub async fn open(url: &str, patience: Duration) -> Result<Connection, OpenError> {
        let redacted = super::redact_url(url);
        let client = Client::open(url).map_err(|e| OpenError::BadUrl(e.to_string()))?;
        let unavailable = |reason: String| {
            OpenError::Unavailable(StoreError::Unavailable {
                url: redacted.clone(),
                reason,
            })
        };
        // A first connection of our own, so an authentication failure or a
        // wrong database is reported as such instead of being retried.
        let deadline = Instant::now() + patience;
        let mut pause = Duration::from_millis(20);
        let first = loop {
            let attempt = tokio::time::timeout_at(deadline, dedicated(&client, patience)).await;
            match attempt {
                Ok(Ok(conn)) => break conn,
                Ok(Err(e)) if is_transient(&e) && Instant::now() + pause < deadline => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_BACKOFF);
                }
                Ok(Err(e)) if is_transient(&e) => {
                    return Err(unavailable(format!(
                        "{e} (gave up after {} ms; setting connect_timeout)",
                        patience.as_millis()
                    )));
                }
                Ok(Err(e)) => return Err(unavailable(e.to_string())),
                Err(_) => {
                    return Err(unavailable(format!(
                        "no connection within {} ms (setting connect_timeout)",
                        patience.as_millis()
                    )));
                }
            }
        };
        let config = ConnectionManagerConfig::new()
            .set_min_delay(Duration::from_millis(20))
            .set_max_delay(MAX_BACKOFF)
            .set_number_of_retries(40)
            .set_connection_timeout(Some(patience))
            // Our own deadline bounds every command (see `run`).
            .set_response_timeout(None);
        let shared = tokio::time::timeout_at(
            deadline,
            ConnectionManager::new_with_config(client.clone(), config),
        )
        .await
        .map_err(|_| unavailable("no connection within connect_timeout".into()))?
        .map_err(|e| unavailable(e.to_string()))?;
        Ok(Connection {
            client,
            shared,
            url: redacted,
            patience,
            idle: Mutex::new(vec![first]),
        })
    }

    /// The shared connection, for a single attempt whose failure the caller handles.
    pub fn shared(&self) -> ConnectionManager {
        self.shared.clone()
    }

    /// The client, for connections of other kinds (pub/sub).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Runs `op` on the shared connection. A transient failure is retried with
    /// backoff until `patience` has passed since the first attempt; then it is
    /// `Unavailable`. Other failures are `Command` errors naming `what`.
    ///
    /// `op` may run more than once: operations that are not idempotent carry a
    /// token that makes a repeat a no-op on the server.
    pub async fn run<T, F, Fut>(&self, what: &str, mut op: F) -> StoreResult<T>
    where
        F: FnMut(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let deadline = Instant::now() + self.patience;
        let mut pause = Duration::from_millis(10);
        loop {
            // One attempt may not take all the patience: a command written to a
            // connection that died under it can wait for an answer that never
            // comes, while a fresh attempt would go through the reconnected one.
            let attempt_deadline = deadline.min(Instant::now() + ATTEMPT_LIMIT);
            match tokio::time::timeout_at(attempt_deadline, op(self.shared.clone())).await {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) if is_transient(&e) => {
                    if Instant::now() + pause >= deadline {
                        return Err(self.gave_up(&e.to_string()));
                    }
                    tracing::debug!(command = what, "store unavailable, retrying: {e}");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_BACKOFF);
                }
                Ok(Err(e)) => return Err(command_error(what, &e)),
                Err(_) if Instant::now() >= deadline => {
                    return Err(self.gave_up("no connection or no answer"));
                }
                Err(_) => tracing::debug!(
                    command = what,
                    "no answer within {ATTEMPT_LIMIT:?}, retrying"
                ),
            }
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

    /// Runs `script` with the keys and arguments `build` gives it, with retries.
    pub async fn eval<T: FromRedisValue>(
        &self,
        what: &str,
        script: &'static Script,
        build: impl Fn(&mut ScriptInvocation<'static>),
    ) -> StoreResult<T> {
        self.run(what, |mut c| {
            let mut invocation = script.prepare_invoke();
            build(&mut invocation);
            async move { invocation.invoke_async(&mut c).await }
        })
        .await
    }

    /// The error for a server that stayed away longer than `patience`.
    pub fn gave_up(&self, reason: &str) -> StoreError {
        StoreError::Unavailable {
            url: self.url.clone(),
            reason: format!(
                "{reason} (gave up after {} ms; setting connect_timeout)",
                self.patience.as_millis()
            ),
        }
    }

    /// A dedicated connection for a blocking read: an idle one, or a new one.
    pub async fn checkout(&self) -> RedisResult<MultiplexedConnection> {
        let idle = self.idle.lock().pop();
        match idle {
            Some(conn) => Ok(conn),
            None => dedicated(&self.client, self.patience).await,
        }
    }

    /// Returns a dedicated connection whose last command completed.
    pub fn checkin(&self, conn: MultiplexedConnection) {
        self.idle.lock().push(conn);
    }
}

/// A new connection of its own, with no response timeout (blocking reads
/// bound themselves).
async fn dedicated(client: &Client, patience: Duration) -> RedisResult<MultiplexedConnection> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(patience))
        .set_response_timeout(None);
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

/// A failed command, named.
pub(super) fn command_error(what: &str, e: &RedisError) -> StoreError {
    StoreError::Command {
        command: what.to_string(),
        reason: e.to_string(),
    }
}

/// Why a store could not be opened.
pub(super) enum OpenError {
    /// The URL does not parse.
    BadUrl(String),
    /// The server could not be reached or refused us.
    Unavailable(StoreError),
}
