//! Whose turn it is to take the next message of a role, among the agents of
//! that role in this process.
//!
//! A message to a role is handled by exactly one agent of the role (the
//! store guarantees that). Which one is decided here: the agent of the role
//! that has waited longest. Without it, an agent coming back from one
//! message takes the next at once, without ever yielding to the idle agents
//! of its role — on the embedded store, where a take never waits, two busy
//! agents drained a queue of 200 items while two idle ones got none.
//!
//! Each agent of a role that waits for a message queues up in its role's
//! line; only the first may take a message of the role queue, the others
//! take only messages to themselves until their turn comes. A role with one
//! agent here has no line (nothing to share), so it costs nothing.
//!
//! An agent keeps its place in the line while it is not waiting but has
//! taken nothing either: from when it is started (before its `start` ran,
//! so work a dispatcher sends in its own `start` waits for the whole pool
//! rather than going to whichever worker was ready first), and between a
//! take that found nothing and the next one. It keeps that place for
//! [`KEEP_PLACE`] at most, so a worker whose `start` runs long, or that
//! looked for a message and went on with other work, does not hold up the
//! others.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::{Duration, Instant};

/// How long an agent keeps its place in its role's line while it does not
/// wait for a message (see the module documentation).
pub(super) const KEEP_PLACE: Duration = Duration::from_millis(250);

/// The lines of every role with agents in this process.
#[derive(Default)]
pub(super) struct Turns {
    lines: Mutex<HashMap<String, Line>>,
    /// Wake-ups of agents waiting for their turn, by agent id: a message
    /// sent to one of them here must not wait for its turn.
    mail: Mutex<HashMap<String, Arc<Notify>>>,
    /// Agents waiting for their turn now (so a send skips the `mail` lock when none is).
    deferring: AtomicUsize,
    /// Roles with several agents here (so a take skips the `lines` lock when none has).
    shared_roles: AtomicUsize,
}

#[derive(Default)]
struct Line {
    /// Live agents of the role in this process.
    agents: usize,
    /// Agents waiting for a message of the role, longest first, and those
    /// keeping their place (with since when).
    waiting: VecDeque<(String, Option<Instant>)>,
    /// Moves whenever `waiting` does.
    changed: Arc<Notify>,
}

impl Turns {
    /// Agent `agent` of `role` joined; it keeps a place in the role's line
    /// while it starts.
    pub(super) fn join(&self, agent: &str, role: &str) {
        let mut lines = self.lines.lock();
        let line = lines.entry(role.to_string()).or_default();
        line.agents += 1;
        if line.agents == 2 {
            self.shared_roles.fetch_add(1, Ordering::SeqCst);
        }
        line.waiting
            .push_back((agent.to_string(), Some(Instant::now())));
    }

    /// Agent `agent` of `role` left.
    pub(super) fn leave(&self, agent: &str, role: &str) {
        let mut lines = self.lines.lock();
        if let Some(line) = lines.get_mut(role) {
            if line.agents == 2 {
                self.shared_roles.fetch_sub(1, Ordering::SeqCst);
            }
            line.agents = line.agents.saturating_sub(1);
            line.waiting.retain(|(a, _)| a != agent);
            line.changed.notify_waiters();
        }
        self.mail.lock().remove(agent);
    }

    /// True when `role` has several agents here, so they take turns.
    pub(super) fn is_shared(&self, role: &str) -> bool {
        if self.shared_roles.load(Ordering::SeqCst) == 0 {
            return false;
        }
        self.lines.lock().get(role).is_some_and(|l| l.agents > 1)
    }

    /// Puts `agent` at the end of `role`'s line (or, the first time, where
    /// it joined) until the ticket is dropped.
    pub(super) fn enter<'a>(&'a self, role: &'a str, agent: &'a str) -> Ticket<'a> {
        let changed = {
            let mut lines = self.lines.lock();
            let line = lines.entry(role.to_string()).or_default();
            match line.waiting.iter_mut().find(|(a, _)| a == agent) {
                Some(entry) => entry.1 = None,
                None => line.waiting.push_back((agent.to_string(), None)),
            }
            line.changed.clone()
        };
        Ticket {
            turns: self,
            role,
            agent,
            changed,
            took: false,
        }
    }

    /// A message was sent to `agent`'s own queue: wake it if it waits for its turn.
    pub(super) fn mail(&self, agent: &str) {
        if self.deferring.load(Ordering::SeqCst) == 0 {
            return;
        }
        if let Some(n) = self.mail.lock().get(agent) {
            n.notify_one();
        }
    }
}

/// A place in a role's line; leaving it (drop) lets the next agent on.
pub(super) struct Ticket<'a> {
    turns: &'a Turns,
    role: &'a str,
    agent: &'a str,
    changed: Arc<Notify>,
    /// The agent took a message: it leaves the line (else it keeps its place).
    took: bool,
}

impl Ticket<'_> {
    /// True when no agent of the role has waited longer (or keeps a place
    /// ahead, within [`KEEP_PLACE`]).
    pub(super) fn is_first(&self) -> bool {
        let now = Instant::now();
        let lines = self.turns.lines.lock();
        let Some(line) = lines.get(self.role) else {
            return true;
        };
        line.waiting
            .iter()
            .find(|(_, starting)| starting.is_none_or(|at| now - at < KEEP_PLACE))
            .is_none_or(|(first, _)| first == self.agent)
    }

    /// The agent took a message: it leaves the line when the ticket is dropped.
    pub(super) fn took(&mut self) {
        self.took = true;
    }

    /// Resolves when the line moves.
    pub(super) fn changed(&self) -> Arc<Notify> {
        self.changed.clone()
    }

    /// While the returned guard lives, a message sent to this agent wakes `mail`.
    pub(super) fn defer(&self) -> Deferring<'_> {
        let notify = self
            .turns
            .mail
            .lock()
            .entry(self.agent.to_string())
            .or_default()
            .clone();
        self.turns.deferring.fetch_add(1, Ordering::SeqCst);
        Deferring {
            turns: self.turns,
            notify,
        }
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        let mut lines = self.turns.lines.lock();
        if let Some(line) = lines.get_mut(self.role) {
            if let Some(at) = line.waiting.iter().position(|(a, _)| a == self.agent) {
                if self.took {
                    line.waiting.remove(at);
                } else {
                    line.waiting[at].1 = Some(Instant::now());
                }
            }
            line.changed.notify_waiters();
        }
    }
}

/// An agent waiting for its turn; see [`Ticket::defer`].
pub(super) struct Deferring<'a> {
    turns: &'a Turns,
    /// Notified when a message is sent to the agent itself.
    pub(super) notify: Arc<Notify>,
}

impl Drop for Deferring<'_> {
    fn drop(&mut self) {
        self.turns.deferring.fetch_sub(1, Ordering::SeqCst);
    }
}
