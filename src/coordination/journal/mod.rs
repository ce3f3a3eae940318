//! The run journal: every event of a run as one structured record
//! ([`Entry`]: sequence number, time, host, agent, [`Event`]).
//!
//! The coordination primitives, the agents and the orchestrator call
//! [`Journal::record`] at each event point, with a closure that builds the
//! event. With no [`Sink`] attached (no `--journal` file, live view, metrics
//! endpoint, nor a Redis store) that is one relaxed atomic load, and the
//! closure never runs. Attached, the entry is numbered, stamped and pushed on
//! a buffer under a short lock; a writer task takes the buffer every
//! [`FLUSH_EVERY`] (or sooner when it fills), serializes each entry once as a
//! JSON line, and hands the batch to every sink in order. So the agents pay
//! for building the event and the push, never for JSON or I/O.
//!
//! The agent an entry is about is given explicitly ([`Journal::record_for`])
//! or is the agent whose tokio task made the call ([`scope`]): the
//! orchestrator runs each agent inside `scope(id, ...)`, so a blackboard
//! write deep in the store layer knows its writer without passing it down.

mod batch;
mod event;
mod llm;
mod names;
mod sinks;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use tokio::sync::{Notify, mpsc, watch};

pub use batch::{Batch, Item};
pub use event::{Entry, Event};
pub use llm::LlmCall;
pub use sinks::{FileSink, Sink, StoreSink};

/// Values (blackboard values, message payloads) up to this many bytes of
/// JSON are journaled with their event; larger ones only by size.
pub const SMALL_VALUE_BYTES: usize = 1024;

/// How often the writer hands what was recorded to the sinks.
pub const FLUSH_EVERY: Duration = Duration::from_millis(20);

/// Entries waiting for the writer that wake it before its next tick.
const WAKE_AT: usize = 16 * 1024;

/// Entries waiting for the writer past which new ones are dropped (and
/// counted) rather than growing the buffer without bound behind a stuck sink.
const MAX_PENDING: usize = 1 << 21;

tokio::task_local! {
    /// The agent whose tokio task is running (see [`scope`]), as its number.
    static AGENT: names::Name;
}

/// Runs `fut` as agent `agent`: entries it records without naming an agent
/// are that agent's.
pub fn scope<F: Future>(agent: &str, fut: F) -> impl Future<Output = F::Output> + use<F> {
    AGENT.scope(names::number(agent), fut)
}

/// The agent of the running tokio task, if it runs in a [`scope`].
pub fn current_agent() -> Option<Arc<str>> {
    names::id(AGENT.try_with(|n| *n).ok()?)
}

/// Microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// The journal of one task in this process. Cheap to clone (shared inside).
#[derive(Clone)]
pub struct Journal(Arc<Inner>);

struct Inner {
    on: AtomicBool,
    prompts: AtomicBool,
    host: Arc<str>,
    buffer: Mutex<Buffer>,
    wake: Notify,
    writer: Mutex<Option<Writer>>,
    dropped: AtomicU64,
}

#[derive(Default)]
struct Buffer {
    next_seq: u64,
    pending: Vec<Pending>,
}

/// An entry as recorded, before the writer adds the host and serializes it.
struct Pending {
    seq: u64,
    at_us: u64,
    agent: Option<names::Name>,
    event: Event,
}

/// The running writer task: new sinks go to it over `sinks`.
struct Writer {
    sinks: mpsc::UnboundedSender<Box<dyn Sink>>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Journal {
    /// A journal of the process `host`, off until a sink is attached.
    pub fn new(host: &str) -> Journal {
        Journal(Arc::new(Inner {
            on: AtomicBool::new(false),
            prompts: AtomicBool::new(false),
            host: Arc::from(host),
            buffer: Mutex::new(Buffer {
                next_seq: 1,
                pending: Vec::new(),
            }),
            wake: Notify::new(),
            writer: Mutex::new(None),
            dropped: AtomicU64::new(0),
        }))
    }

    /// True while some sink takes the entries.
    #[inline]
    pub fn is_on(&self) -> bool {
        self.0.on.load(Ordering::Relaxed)
    }

    /// Records the event `event` builds, as the current agent's (see
    /// [`scope`]); `event` runs only when the journal is on.
    #[inline]
    pub fn record(&self, event: impl FnOnce() -> Event) {
        if self.is_on() {
            self.push(AGENT.try_with(|n| *n).ok(), event());
        }
    }

    /// Records the event `event` builds as agent `agent`'s.
    #[inline]
    pub fn record_for(&self, agent: &str, event: impl FnOnce() -> Event) {
        if self.is_on() {
            self.push(Some(names::number(agent)), event());
        }
    }

    /// Records the event `event` builds as the host's own (no agent).
    #[inline]
    pub fn record_host(&self, event: impl FnOnce() -> Event) {
        if self.is_on() {
            self.push(None, event());
        }
    }

    fn push(&self, agent: Option<names::Name>, event: Event) {
        let mut buffer = self.0.buffer.lock();
        if buffer.pending.len() >= MAX_PENDING {
            self.0.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let seq = buffer.next_seq;
        buffer.next_seq += 1;
        // Stamped under the lock, so times follow sequence numbers.
        let at_us = now_us();
        buffer.pending.push(Pending {
            seq,
            at_us,
            agent,
            event,
        });
        if buffer.pending.len() == WAKE_AT {
            self.0.wake.notify_one();
        }
    }

    /// Journals the prompt text and answers of LLM calls from now on (off by
    /// default: prompts may hold what a script read from anywhere).
    pub fn set_prompts(&self, on: bool) {
        self.0.prompts.store(on, Ordering::Relaxed);
    }

    /// True when LLM prompts and answers are journaled.
    pub fn prompts(&self) -> bool {
        self.0.prompts.load(Ordering::Relaxed)
    }

    /// This process's id, as entries carry it.
    pub fn host(&self) -> &str {
        &self.0.host
    }

    /// Entries dropped because the sinks fell too far behind.
    pub fn dropped(&self) -> u64 {
        self.0.dropped.load(Ordering::Relaxed)
    }

    /// Adds a sink and turns the journal on. Sinks see the entries recorded
    /// from now on (and those not yet handed out). Must be called inside a
    /// tokio runtime: the first sink starts the writer task.
    pub fn attach(&self, sink: Box<dyn Sink>) {
        let mut writer = self.0.writer.lock();
        let writer = writer.get_or_insert_with(|| Writer::start(self.0.clone()));
        let _ = writer.sinks.send(sink);
        self.0.on.store(true, Ordering::Relaxed);
    }

    /// Stops recording, hands every entry recorded so far to the sinks, and
    /// lets them flush and close. Entries recorded afterwards are dropped.
    pub async fn close(&self) {
        self.0.on.store(false, Ordering::Relaxed);
        let writer = self.0.writer.lock().take();
        if let Some(writer) = writer {
            let _ = writer.stop.send(true);
            let _ = writer.task.await;
        }
        let dropped = self.dropped();
        if dropped > 0 {
            tracing::warn!("journal: {dropped} entries dropped: its sinks fell behind");
        }
    }
}

impl Writer {
    fn start(inner: Arc<Inner>) -> Writer {
        let (sinks, new_sinks) = mpsc::unbounded_channel();
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(write_loop(inner, new_sinks, stopped));
        Writer { sinks, stop, task }
    }
}

/// Every [`FLUSH_EVERY`], or when woken: takes what was recorded, turns it
/// into lines, and hands the batch to each sink; on stop, a last round and
/// the sinks' close.
async fn write_loop(
    inner: Arc<Inner>,
    mut new_sinks: mpsc::UnboundedReceiver<Box<dyn Sink>>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    let mut taken: Vec<Pending> = Vec::new();
    let mut batch = Batch::new();
    let host_json = serde_json::to_string(&*inner.host).unwrap_or_else(|_| "\"?\"".into());
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stopping = tokio::select! {
            _ = tick.tick() => false,
            _ = inner.wake.notified() => false,
            _ = stopped.changed() => true,
        };
        while let Ok(sink) = new_sinks.try_recv() {
            sinks.push(sink);
        }
        // Swapped, not taken, so both vectors keep their capacity.
        std::mem::swap(&mut inner.buffer.lock().pending, &mut taken);
        if !taken.is_empty() {
            batch.clear();
            let ids = names::ids();
            for p in taken.drain(..) {
                let agent = p.agent.and_then(|n| ids.get(n as usize).cloned());
                batch.push(&host_json, p.seq, p.at_us, agent, p.event);
            }
            for sink in &mut sinks {
                sink.write(&batch).await;
            }
        }
        if stopping {
            for sink in &mut sinks {
                sink.close().await;
            }
            return;
        }
    }
}
