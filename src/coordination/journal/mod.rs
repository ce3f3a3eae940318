//! The run journal: every event of a run as one structured record
//! ([`Entry`]: sequence number, time, host, agent, [`Event`]).
//!
//! The coordination primitives, the agents and the orchestrator call
//! [`Journal::record`] at each event point, with a closure that builds the
//! event, or, for the frequent ones (blackboard writes, messages sent and
//! settled), [`Journal::note`] with the event borrowed ([`Fast`]). With no
//! [`Sink`] attached (no `--journal` file, live view, metrics endpoint, nor
//! a Redis store) that is one relaxed atomic load, and the closure never
//! runs. Attached, a frequent event is encoded as a compact binary record
//! (no allocation: its strings are copied into a reused buffer) and
//! appended, stamped, to the journal's byte buffer under a short lock; a
//! rare one is kept as it is beside it. A writer task takes the buffer every
//! [`FLUSH_EVERY`] (or sooner when it fills), numbers the records in order,
//! writes each once as a JSON line, and hands the batch to every sink in
//! order. So the agents pay for copying a few strings, a clock read and the
//! push, never for JSON or I/O.
//!
//! A journal never loses an entry silently: when the sinks fall so far
//! behind that [`MAX_PENDING_BYTES`] wait, new entries are dropped and
//! counted (the run goes on: a journal must not stop it), and the writer
//! puts a `journal_dropped` entry with the count where they are missing;
//! the report's host metrics and the Prometheus endpoint count them too.
//!
//! The agent an entry is about is given explicitly ([`Journal::record_for`])
//! or is the agent whose tokio task made the call ([`scope`]): the
//! orchestrator runs each agent inside `scope(id, ...)`, so a blackboard
//! write deep in the store layer knows its writer without passing it down.

mod batch;
mod event;
mod llm;
mod names;
mod record;
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
pub use record::Fast;
pub use sinks::{FileSink, Sink, StoreSink};

/// Values (blackboard values, message payloads) up to this many bytes of
/// JSON are journaled with their event; larger ones only by size.
pub const SMALL_VALUE_BYTES: usize = 1024;

/// How often the writer hands what was recorded to the sinks.
pub const FLUSH_EVERY: Duration = Duration::from_millis(20);

/// Bytes of records waiting for the writer that wake it before its next tick.
const WAKE_AT: usize = 1 << 20;

/// Bytes of records waiting for the writer past which new entries are
/// dropped (and counted) rather than growing the buffer without bound
/// behind a stuck sink. A record takes 30 to 100 bytes (1 KB more with a
/// value), so this is about a million entries.
pub const MAX_PENDING_BYTES: usize = 64 << 20;

/// What a rare entry (kept as an [`Event`]) counts for against
/// [`MAX_PENDING_BYTES`].
const COLD_BYTES: usize = 256;

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
    // clock_gettime itself: `SystemTime::now().duration_since(UNIX_EPOCH)`
    // costs a quarter more, on every event.
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the struct it is given.
    if unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut t) } != 0 {
        return SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
    }
    (t.tv_sec as u64) * 1_000_000 + (t.tv_nsec as u64) / 1_000
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
    max_pending: usize,
}

/// What was recorded since the writer's last round, in order.
#[derive(Default)]
struct Buffer {
    /// Binary records (see [`record`]).
    bytes: Vec<u8>,
    /// The rare events, which records of tag `COLD` point at.
    cold: Vec<Event>,
    /// Bytes counted against the limit (records, and rare events at [`COLD_BYTES`]).
    held: usize,
    /// Entries dropped since the last record kept: the writer reports them
    /// after it.
    dropped: u64,
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
        Journal::with_limit(host, MAX_PENDING_BYTES)
    }

    /// A journal that drops entries past `max_pending` bytes waiting for
    /// the writer (see [`MAX_PENDING_BYTES`]).
    pub fn with_limit(host: &str, max_pending: usize) -> Journal {
        Journal(Arc::new(Inner {
            on: AtomicBool::new(false),
            prompts: AtomicBool::new(false),
            host: Arc::from(host),
            buffer: Mutex::new(Buffer::default()),
            wake: Notify::new(),
            writer: Mutex::new(None),
            dropped: AtomicU64::new(0),
            max_pending,
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

    /// Records the frequent event `event` builds (borrowed: nothing is
    /// allocated), as the current agent's; `event` runs only when the
    /// journal is on.
    #[inline]
    pub fn note<'a>(&self, event: impl FnOnce() -> Fast<'a>) {
        if self.is_on() {
            self.push_fast(AGENT.try_with(|n| *n).ok(), &event());
        }
    }

    /// Records the frequent event `event` builds as agent `agent`'s.
    #[inline]
    pub fn note_for<'a>(&self, agent: &str, event: impl FnOnce() -> Fast<'a>) {
        if self.is_on() {
            self.push_fast(Some(names::number(agent)), &event());
        }
    }

    /// Returns what records `event` as the current agent's (see [`scope`])
    /// when called, later: for an event known only once a write is settled.
    pub fn deferred(&self, event: Event) -> impl FnOnce() + Send + 'static + use<> {
        let journal = self.clone();
        let agent = AGENT.try_with(|n| *n).ok();
        move || {
            if journal.is_on() {
                journal.push(agent, event);
            }
        }
    }

    fn push_fast(&self, agent: Option<names::Name>, event: &Fast<'_>) {
        record::with_value_json(event, |value_json| {
            let mut buffer = self.0.buffer.lock();
            let at = buffer.bytes.len();
            // Stamped under the lock, so times follow the records' order.
            record::encode(&mut buffer.bytes, agent, now_us(), event, value_json);
            let size = buffer.bytes.len() - at;
            if !self.admit(&mut buffer, size) {
                buffer.bytes.truncate(at);
                return;
            }
            self.filled(&buffer, size);
        });
    }

    fn push(&self, agent: Option<names::Name>, event: Event) {
        let mut buffer = self.0.buffer.lock();
        if !self.admit(&mut buffer, COLD_BYTES) {
            return;
        }
        let index = buffer.cold.len() as u32;
        buffer.cold.push(event);
        record::cold(&mut buffer.bytes, agent, now_us(), index);
        self.filled(&buffer, COLD_BYTES);
    }

    /// Counts `size` more bytes waiting, or counts a drop when that passes
    /// the limit (false).
    #[inline]
    fn admit(&self, buffer: &mut Buffer, size: usize) -> bool {
        if buffer.held + size > self.0.max_pending {
            buffer.dropped += 1;
            self.0.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        buffer.held += size;
        true
    }

    /// Wakes the writer when the `size` bytes just added filled the buffer
    /// past [`WAKE_AT`].
    #[inline]
    fn filled(&self, buffer: &Buffer, size: usize) {
        if buffer.held >= WAKE_AT && buffer.held - size < WAKE_AT {
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

    /// Entries dropped so far because the sinks fell too far behind.
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
    let mut taken = Buffer::default();
    let mut batch = Batch::new();
    let mut lines = Lines {
        host_json: serde_json::to_string(&*inner.host).unwrap_or_else(|_| "\"?\"".into()),
        next_seq: 1,
        agents: Vec::new(),
    };
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
        // Swapped, not taken, so both buffers keep their capacity.
        std::mem::swap(&mut *inner.buffer.lock(), &mut taken);
        if !taken.bytes.is_empty() || taken.dropped > 0 {
            batch.clear();
            lines.write(&mut taken, &mut batch);
            for sink in &mut sinks {
                sink.write(&batch).await;
            }
        }
        taken.bytes.clear();
        taken.cold.clear();
        taken.held = 0;
        taken.dropped = 0;
        if stopping {
            for sink in &mut sinks {
                sink.close().await;
            }
            return;
        }
    }
}

/// The writer's state for turning records into lines.
struct Lines {
    host_json: String,
    next_seq: u64,
    /// Agent ids as JSON strings, by number (filled as numbers show up).
    agents: Vec<String>,
}

impl Lines {
    /// Appends the lines of what `taken` holds to `batch`, numbered on from
    /// the last round, and a `journal_dropped` entry after them when
    /// entries were dropped.
    fn write(&mut self, taken: &mut Buffer, batch: &mut Batch) {
        let mut last_at = None;
        for rec in record::Reader::new(&taken.bytes) {
            last_at = Some(rec.at_us);
            let seq = self.next_seq;
            self.next_seq += 1;
            if let Some(n) = rec.agent {
                self.learn(n);
            }
            let agent = rec
                .agent
                .and_then(|n| self.agents.get(n as usize))
                .map(String::as_str);
            match rec.body {
                record::Body::Fast(f) => {
                    batch.push_fast(&self.host_json, seq, rec.at_us, agent, &f)
                }
                record::Body::Cold(i) => match taken.cold.get(i as usize) {
                    Some(e) => batch.push(&self.host_json, seq, rec.at_us, agent, e),
                    None => self.next_seq -= 1,
                },
            }
        }
        if taken.dropped > 0 {
            let seq = self.next_seq;
            self.next_seq += 1;
            let event = Event::JournalDropped {
                count: taken.dropped,
            };
            // Stamped as the last entry kept: the drops came right after it
            // (and entries recorded since the swap may be older than now).
            let at_us = last_at.unwrap_or_else(now_us);
            batch.push(&self.host_json, seq, at_us, None, &event);
        }
    }

    /// Makes sure the JSON string of agent number `n` is known.
    fn learn(&mut self, n: names::Name) {
        if n as usize >= self.agents.len() {
            for id in names::ids().iter().skip(self.agents.len()) {
                let mut quoted = Vec::with_capacity(id.len() + 2);
                batch::json_str(&mut quoted, id.as_bytes());
                self.agents
                    .push(String::from_utf8(quoted).unwrap_or_else(|_| "\"?\"".into()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use async_trait::async_trait;
    use parking_lot::Mutex;
    use serde_json::json;

    use super::{Batch, Entry, Event, Fast, Journal, Sink};

    /// Keeps every line it is handed.
    struct Keep(Arc<Mutex<Vec<String>>>);

    #[async_trait]
    impl Sink for Keep {
        async fn write(&mut self, batch: &Batch) {
            self.0.lock().extend(batch.lines().map(str::to_string));
        }
    }

    fn entries(lines: &Mutex<Vec<String>>) -> Vec<Entry> {
        lines
            .lock()
            .iter()
            .map(|l| Entry::parse(l).unwrap())
            .collect()
    }

    /// Past the limit entries are dropped, counted, and a `journal_dropped`
    /// entry stands where they are missing; numbering has no gap and the
    /// journal takes entries again once the writer caught up.
    #[tokio::test(flavor = "current_thread")]
    async fn entries_past_the_limit_are_counted_and_journaled_as_dropped() {
        let journal = Journal::with_limit("h", 2000);
        let lines = Arc::new(Mutex::new(Vec::new()));
        journal.attach(Box::new(Keep(lines.clone())));
        let value = json!(1);
        // The writer cannot run meanwhile (one thread, no await): the buffer fills.
        for i in 0..100 {
            let key = format!("k{i}");
            journal.note(|| Fast::BlackboardWrite {
                key: &key,
                bytes: 1,
                value: &value,
            });
        }
        let dropped = journal.dropped();
        assert!(dropped > 0 && dropped < 100, "{dropped}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        journal.record_host(|| Event::MessagesReleased { count: 1 });
        journal.close().await;

        let entries = entries(&lines);
        let kept = 100 - dropped as usize;
        assert_eq!(entries.len(), kept + 2);
        for (i, e) in entries.iter().enumerate() {
            assert_eq!(e.seq, i as u64 + 1);
        }
        assert!(matches!(
            &entries[kept - 1].event,
            Event::BlackboardWrite { key, value: Some(v), .. } if *key == format!("k{}", kept - 1) && *v == json!(1)
        ));
        assert_eq!(
            entries[kept].event,
            Event::JournalDropped { count: dropped }
        );
        assert_eq!(
            entries[kept + 1].event,
            Event::MessagesReleased { count: 1 }
        );
    }

    /// The frequent events come out as the events of the same name, their
    /// agent the one named, in the order recorded among the rare ones.
    #[tokio::test(flavor = "current_thread")]
    async fn frequent_and_rare_entries_keep_their_order_and_agents() {
        let journal = Journal::new("h");
        let lines = Arc::new(Mutex::new(Vec::new()));
        journal.attach(Box::new(Keep(lines.clone())));
        let payload = json!({ "s": "q\"uote" });
        journal.record_for("w-1", || Event::Spawned {
            role: "w".into(),
            parent: None,
        });
        journal.note_for("w-1", || Fast::MessageSent {
            id: "o-1",
            to: "x",
            message_type: "t",
            bytes: 14,
            payload: &payload,
        });
        journal.note_for("x-2", || Fast::MessageHandled {
            id: "o-1",
            from: "w-1",
            message_type: "t",
            attempt: 1,
        });
        journal.note(|| Fast::BlackboardDelete {
            key: "k",
            existed: true,
        });
        let values = [
            json!("s\"x\n"),
            json!(-1.5),
            json!(-7),
            json!(null),
            json!(false),
            json!([1, { "a": "b" }]),
            json!("big"),
        ];
        for (i, value) in values.iter().enumerate() {
            // The last one is over the size journaled with its event.
            let bytes = if i == values.len() - 1 { 5000 } else { 10 };
            journal.note(|| Fast::BlackboardWrite {
                key: "v",
                bytes,
                value,
            });
        }
        journal.close().await;
        let entries = entries(&lines);
        let agents: Vec<Option<&str>> = entries[..4].iter().map(|e| e.agent.as_deref()).collect();
        assert_eq!(agents, [Some("w-1"), Some("w-1"), Some("x-2"), None]);
        let written: Vec<Option<serde_json::Value>> = entries[4..]
            .iter()
            .map(|e| match &e.event {
                Event::BlackboardWrite { value, .. } => value.clone(),
                other => panic!("{other:?}"),
            })
            .collect();
        let mut expected: Vec<Option<serde_json::Value>> =
            values.iter().cloned().map(Some).collect();
        *expected.last_mut().unwrap() = None;
        // `"value":null` reads back as no value, as it always did.
        expected[3] = None;
        assert_eq!(written, expected);
        assert_eq!(
            entries[1].event,
            Event::MessageSent {
                id: "o-1".into(),
                to: "x".into(),
                message_type: "t".into(),
                bytes: 14,
                payload: Some(payload.clone()),
            }
        );
        assert!(entries.windows(2).all(|w| w[0].at_us <= w[1].at_us));
        assert_eq!(entries[3].event.kind(), "blackboard_delete");
    }
}
