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

    /// Waits for the outcome; true when the write had to be sent again (it
    /// may then have been applied after writes made after it).
    pub async fn settle(self) -> StoreResult<bool> {
        match self.state {
            PendingState::Done(outcome) => outcome.map(|()| false),
            PendingState::Sent { outcome, .. } => outcome.await,
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
