//! Writes sent without waiting, and the order an agent's writes keep.
//!
//! An agent's `blackboard.set` and `bus.send` go to the server at once but
//! are not waited for: the script goes on while they travel, and the writes
//! of many agents share round trips. Each returns a [`Pending`], which an
//! agent keeps in its [`Writes`] and settles — waits for, in order — before
//! its next read, before anything that must come after its writes, and when
//! its callback ends. A write that failed reports its error there.
//!
//! Order: a store sends the writes of one connection in the order they were
//! made, so the server applies them in that order, and a read sent after
//! them sees them. A write that must be sent again (its connection dropped)
//! is sent again when it is settled; it may then come after a later write
//! made on the new connection, so [`Writes`] settles writes of an earlier
//! [`epoch`](super::Store::epoch) before a new one is made.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::{StoreFuture, StoreResult};

/// Most writes one agent keeps unsettled; past it the oldest half are
/// settled first (the newer half keeps the server busy meanwhile).
pub const MAX_UNSETTLED: usize = 512;

/// A write already sent, whose outcome is not known yet.
#[must_use = "a pending write reports its failure only when settled"]
pub struct Pending {
    state: PendingState,
}

enum PendingState {
    /// Applied (or refused) before it was returned.
    Done(StoreResult<()>),
    /// On its way; the future tells whether it had to be sent again.
    Sent {
        epoch: u64,
        outcome: StoreFuture<bool>,
    },
}

impl Pending {
    /// A write that already happened, with its outcome.
    pub fn done(outcome: StoreResult<()>) -> Pending {
        Pending {
            state: PendingState::Done(outcome),
        }
    }

    /// A write sent on the connection of `epoch`; `outcome` is true when the
    /// write had to be sent again.
    pub(crate) fn sent(epoch: u64, outcome: StoreFuture<bool>) -> Pending {
        Pending {
            state: PendingState::Sent { epoch, outcome },
        }
    }

    /// The same write, running `f` once it is known to have been applied:
    /// now for a write already done, when settled for one on its way
    /// (nothing for a write that failed).
    pub fn on_success(self, f: impl FnOnce() + Send + 'static) -> Pending {
        match self.state {
            PendingState::Done(Ok(())) => {
                f();
                self
            }
            PendingState::Done(Err(_)) => self,
            PendingState::Sent { epoch, outcome } => Pending::sent(
                epoch,
                Box::pin(async move {
                    let again = outcome.await?;
                    f();
                    Ok(again)
                }),
            ),
        }
    }

    /// The same write, running `f` with its outcome once it is known: now
    /// for a write already done, when settled for one on its way, and as
    /// [`Outcome::Unknown`] when dropped unsettled (its agent's settle
    /// stopped at an earlier failure, or the agent was stopped).
    pub fn on_settled(self, f: impl FnOnce(Outcome<'_>) + Send + 'static) -> Pending {
        let hook = Hook(Some(f));
        match self.state {
            PendingState::Done(outcome) => {
                hook.run(Outcome::of(&outcome));
                Pending::done(outcome)
            }
            PendingState::Sent { epoch, outcome } => Pending::sent(
                epoch,
                Box::pin(async move {
                    let outcome = outcome.await;
                    hook.run(Outcome::of(&outcome));
                    outcome
                }),
            ),
        }
    }

    /// Waits for the outcome; true when the write had to be sent again (it
    /// may then have been applied after writes made after it).
    pub async fn settle(self) -> StoreResult<bool> {
        match self.state {
            PendingState::Done(outcome) => outcome.map(|()| false),
            PendingState::Sent { outcome, .. } => outcome.await,
        }
    }
}

/// How a write ended, as [`Pending::on_settled`] tells it.
pub enum Outcome<'a> {
    /// The store applied it.
    Applied,
    /// The store refused it, or it could not be sent.
    Failed(&'a super::StoreError),
    /// Dropped before its answer came: it may still be applied.
    Unknown,
}

impl<'a> Outcome<'a> {
    fn of<T>(outcome: &'a StoreResult<T>) -> Outcome<'a> {
        match outcome {
            Ok(_) => Outcome::Applied,
            Err(e) => Outcome::Failed(e),
        }
    }
}

/// Runs its function once: with the outcome it is given, or with
/// [`Outcome::Unknown`] when dropped first.
struct Hook<F: FnOnce(Outcome<'_>)>(Option<F>);

impl<F: FnOnce(Outcome<'_>)> Hook<F> {
    fn run(mut self, outcome: Outcome<'_>) {
        if let Some(f) = self.0.take() {
            f(outcome);
        }
    }
}

impl<F: FnOnce(Outcome<'_>)> Drop for Hook<F> {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f(Outcome::Unknown);
        }
    }
}

/// A read already sent, whose answer comes later.
pub struct Sent<T>(SentState<T>);

enum SentState<T> {
    Ready(Option<StoreResult<T>>),
    Waiting(StoreFuture<T>),
}

impl<T> Sent<T> {
    /// An answer already known.
    pub fn ready(answer: StoreResult<T>) -> Sent<T> {
        Sent(SentState::Ready(Some(answer)))
    }

    /// An answer on its way.
    pub(crate) fn waiting(answer: StoreFuture<T>) -> Sent<T> {
        Sent(SentState::Waiting(answer))
    }
}

impl<T: Unpin> Future for Sent<T> {
    type Output = StoreResult<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.get_mut().0 {
            SentState::Ready(answer) => {
                Poll::Ready(answer.take().expect("a Sent answer is taken once"))
            }
            SentState::Waiting(answer) => answer.as_mut().poll(cx),
        }
    }
}

/// One agent's writes not settled yet, oldest first.
#[derive(Default)]
pub struct Writes {
    pending: VecDeque<(u64, StoreFuture<bool>)>,
    /// The first failure of a write already settled, for the next settle.
    failed: Option<super::StoreError>,
}

impl Writes {
    /// Keeps `write` until the next [`settle`](Self::settle); a failure known
    /// already is kept for it too.
    pub fn push(&mut self, write: Pending) {
        match write.state {
            PendingState::Done(Ok(())) => {}
            PendingState::Done(Err(e)) => {
                self.failed.get_or_insert(e);
            }
            PendingState::Sent { epoch, outcome } => self.pending.push_back((epoch, outcome)),
        }
    }

    /// True when nothing waits to be settled.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty() && self.failed.is_none()
    }

    /// True when the writes must be settled before another is made on a
    /// store whose connection is now at `epoch`: some were sent on an
    /// earlier connection (a resend could overtake the new write), or there
    /// are too many.
    pub fn must_settle_before_write(&self, epoch: u64) -> bool {
        self.failed.is_some()
            || self.pending.len() >= MAX_UNSETTLED
            || self.pending.front().is_some_and(|(e, _)| *e != epoch)
    }

    /// Makes room for another write on a store whose connection is at
    /// `epoch`: settles every write when one failed or was sent on an earlier
    /// connection, else the oldest ones while there are too many.
    pub async fn settle_for_write(&mut self, epoch: u64) -> StoreResult<()> {
        if self.failed.is_some() || self.pending.front().is_some_and(|(e, _)| *e != epoch) {
            return self.settle().await.map(|_| ());
        }
        while self.pending.len() > MAX_UNSETTLED / 2 {
            let (_, outcome) = self.pending.pop_front().expect("not empty");
            if let Err(e) = outcome.await {
                self.failed = Some(e);
                return self.settle().await.map(|_| ());
            }
        }
        Ok(())
    }

    /// Waits for every write, oldest first, and returns the first failure,
    /// or whether any write had to be sent again. Once one has failed the
    /// others are not waited for (they are on their way and may still be
    /// applied): a server gone for good fails the caller after one
    /// `connect_timeout`, not one per write.
    pub async fn settle(&mut self) -> StoreResult<bool> {
        let mut resent = false;
        while self.failed.is_none() {
            let Some((_, outcome)) = self.pending.pop_front() else {
                break;
            };
            match outcome.await {
                Ok(again) => resent |= again,
                Err(e) => self.failed = Some(e),
            }
        }
        self.pending.clear();
        match self.failed.take() {
            Some(e) => Err(e),
            None => Ok(resent),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::{Outcome, Pending};
    use crate::store::StoreError;

    fn seen() -> (
        Arc<Mutex<Vec<String>>>,
        impl FnOnce(Outcome<'_>) + Send + 'static,
    ) {
        let log = Arc::new(Mutex::new(Vec::new()));
        let out = log.clone();
        let f = move |o: Outcome<'_>| {
            out.lock().unwrap().push(match o {
                Outcome::Applied => "applied".to_string(),
                Outcome::Failed(e) => format!("failed: {e}"),
                Outcome::Unknown => "unknown".to_string(),
            })
        };
        (log, f)
    }

    /// A write's hook runs once: with its outcome when settled, as unknown
    /// when the write is dropped before its answer (an agent's settle stops
    /// waiting at its first failure).
    #[tokio::test]
    async fn a_write_tells_its_outcome_once_even_when_dropped_unsettled() {
        let (log, f) = seen();
        let done = Pending::done(Ok(())).on_settled(f);
        assert_eq!(*log.lock().unwrap(), ["applied"]);
        done.settle().await.unwrap();
        assert_eq!(log.lock().unwrap().len(), 1);

        let (log, f) = seen();
        let refused = Err(StoreError::Command {
            command: "SET".into(),
            reason: "OOM".into(),
        });
        let sent = Pending::sent(1, Box::pin(async move { refused })).on_settled(f);
        assert!(log.lock().unwrap().is_empty(), "not before it is settled");
        assert!(sent.settle().await.is_err());
        assert_eq!(
            *log.lock().unwrap(),
            ["failed: store command SET failed: OOM"]
        );

        let (log, f) = seen();
        let dropped = Pending::sent(1, Box::pin(std::future::pending())).on_settled(f);
        drop(dropped);
        assert_eq!(*log.lock().unwrap(), ["unknown"]);
    }
}
