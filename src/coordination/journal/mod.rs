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
//! appended, stamped, to the byte buffer of the recording thread's own
//! shard of the journal ([`Shard`]: no other thread records there, so no
//! cache line goes back and forth between the agents' cores); a rare one
//! is kept as it is beside it. A writer task takes every shard's buffer
//! every [`FLUSH_EVERY`] (nothing wakes it sooner: see [`write_loop`]),
//! merges the records by time ([`Merge`]), numbers them in that order,
//! writes each once as a JSON line, and hands the lines to every sink in
//! order, in batches of about [`BATCH_BYTES`]. So the agents pay for
//! copying a few strings, a clock read and the push, never for JSON or I/O.
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
mod bytes;
mod clock;
mod digits;
mod event;
mod llm;
mod names;
mod record;
mod sinks;
mod spin;

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};

pub use batch::{Batch, Item};
pub use event::{Entry, Event};
pub use llm::LlmCall;
pub use record::Fast;
pub use sinks::{FileSink, Sink, SinkLoss, StoreSink};

/// Values (blackboard values, message payloads) up to this many bytes of
/// JSON are journaled with their event; larger ones only by size.
pub const SMALL_VALUE_BYTES: usize = 1024;

/// How often the writer hands what was recorded to the sinks.
pub const FLUSH_EVERY: Duration = Duration::from_millis(20);

/// Bytes of JSON text past which the writer hands a batch to the sinks
/// and starts the next one, within a round.
const BATCH_BYTES: usize = 256 << 10;

/// Bytes of records waiting for the writer in one thread's shard past
/// which that thread's new entries are dropped (and counted) rather than
/// growing the buffer without bound behind a stuck sink. A record takes 30
/// to 100 bytes (1 KB more with a value), so this is about a million
/// entries per recording thread.
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
    match clock::now_us() {
        0 => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64),
        us => us,
    }
}

/// The journal of one task in this process. Cheap to clone (shared inside).
#[derive(Clone)]
pub struct Journal(Arc<Inner>);

struct Inner {
    /// This journal's key in the threads' shard caches ([`SHARDS`]): unique
    /// in the process, unlike the address of a journal dropped since.
    key: u64,
    on: AtomicBool,
    prompts: AtomicBool,
    host: Arc<str>,
    epoch: clock::Epoch,
    /// The shards made since the writer's last round, for it to take in.
    new_shards: Mutex<Vec<Arc<Shard>>>,
    /// The shard of a thread whose cache is gone (it is exiting) or busy.
    spare: Arc<Shard>,
    writer: Mutex<Option<Writer>>,
    dropped: AtomicU64,
    /// What each sink could not take, collected when the journal closes.
    losses: Mutex<Vec<SinkLoss>>,
    max_pending: usize,
}

/// What one thread recorded since the writer's last round, in order.
///
/// Each recording thread has a shard of its own, so the agents' threads
/// never share a cache line while they record: with one buffer for all,
/// the sender and the receiver of a message took its lock, its length and
/// its last bytes from each other's core on every record, and the
/// benchmark's messages lost 34-45% with the journal on. The writer merges
/// the shards by their records' times (see [`Merge`]).
///
/// Aligned so that two shards never share a cache line.
#[repr(align(128))]
#[derive(Default)]
struct Shard {
    buffer: spin::SpinLock<Buffer>,
}

/// A shard's records.
#[derive(Default)]
struct Buffer {
    /// Binary records (see [`record`]), timed in the journal clock's ticks
    /// (see [`clock`]).
    bytes: Vec<u8>,
    /// The rare events, in the order of the records of tag `COLD` that
    /// stand for them.
    cold: Vec<Event>,
    /// Bytes counted against the limit (records, and rare events at [`COLD_BYTES`]).
    held: usize,
    /// Entries dropped since the writer's last round: it reports them
    /// after the entries of that round.
    dropped: u64,
    /// The time of the last record.
    last_at: u64,
}

impl Buffer {
    /// The time of a record read from the clock as `now` under the
    /// shard's lock: never before the record ahead of it.
    #[inline]
    fn stamp(&mut self, now: u64) -> u64 {
        self.last_at = self.last_at.max(now);
        self.last_at
    }
}

/// How many journals' shards a thread keeps at hand: one task runs in a
/// process, several only in tests. A thread that records into more gets a
/// new shard for the one it dropped (the writer merges it all the same).
const CACHED_SHARDS: usize = 4;

thread_local! {
    /// This thread's shard of each journal it recorded into lately, by
    /// journal key, the last used first.
    static SHARDS: RefCell<Vec<(u64, Arc<Shard>)>> = const { RefCell::new(Vec::new()) };
}

/// The keys of journals.
static NEXT_KEY: AtomicU64 = AtomicU64::new(1);

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
        let spare = Arc::new(Shard::default());
        Journal(Arc::new(Inner {
            key: NEXT_KEY.fetch_add(1, Ordering::Relaxed),
            on: AtomicBool::new(false),
            prompts: AtomicBool::new(false),
            host: Arc::from(host),
            epoch: clock::Epoch::now(),
            new_shards: Mutex::new(vec![spare.clone()]),
            spare,
            writer: Mutex::new(None),
            dropped: AtomicU64::new(0),
            losses: Mutex::new(Vec::new()),
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

    /// Records, when [`Later::record`] is called, an event as the current
    /// agent's (see [`scope`]): for an event whose fields are known only
    /// once a write is settled.
    pub fn later(&self) -> Later {
        Later {
            journal: self.clone(),
            agent: AGENT.try_with(|n| *n).ok(),
        }
    }

    fn push_fast(&self, agent: Option<names::Name>, event: &Fast<'_>) {
        record::with_value_json(event, |value_json| {
            self.with_buffer(|buffer| {
                let at = buffer.bytes.len();
                let now = buffer.stamp(clock::ticks());
                record::encode(&mut buffer.bytes, agent, now, event, value_json);
                let size = buffer.bytes.len() - at;
                if !self.admit(buffer, size) {
                    buffer.bytes.truncate(at);
                }
            })
        });
    }

    fn push(&self, agent: Option<names::Name>, event: Event) {
        self.with_buffer(|buffer| {
            if !self.admit(buffer, COLD_BYTES) {
                return;
            }
            let now = buffer.stamp(clock::ticks());
            buffer.cold.push(event);
            record::cold(&mut buffer.bytes, agent, now);
        })
    }

    /// Runs `f` with this thread's shard's buffer, locked. The clock is
    /// read under the lock: the writer, which reads the clock before it
    /// takes the shards in turn, then finds in a shard every record timed
    /// before its reading (see [`Merge`]).
    #[inline]
    fn with_buffer<R>(&self, f: impl FnOnce(&mut Buffer) -> R) -> R {
        let key = self.0.key;
        let mut f = Some(f);
        let done = SHARDS.try_with(|cache| {
            let mut cache = cache.try_borrow_mut().ok()?;
            if cache.first().is_none_or(|(k, _)| *k != key) {
                self.adopt_shard(&mut cache);
            }
            let f = f.take()?;
            Some(f(&mut cache[0].1.buffer.lock()))
        });
        match (done, f) {
            (Ok(Some(r)), _) => r,
            (_, Some(f)) => f(&mut self.0.spare.buffer.lock()),
            // `f` ran but gave nothing back: cannot be, it returns an `R`.
            (_, None) => unreachable!("the journal's shard ran without a result"),
        }
    }

    /// Puts this journal's shard first in this thread's `cache`: the one it
    /// holds, or a new one, which the writer takes in on its next round.
    #[cold]
    fn adopt_shard(&self, cache: &mut Vec<(u64, Arc<Shard>)>) {
        let key = self.0.key;
        let shard = match cache.iter().position(|(k, _)| *k == key) {
            Some(i) => cache.remove(i).1,
            None => {
                let shard = Arc::new(Shard::default());
                self.0.new_shards.lock().push(shard.clone());
                cache.truncate(CACHED_SHARDS - 1);
                shard
            }
        };
        cache.insert(0, (key, shard));
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

    /// What the sinks could not take (a full disk, a store gone), known
    /// once the journal is closed ([`close`](Self::close)).
    pub fn losses(&self) -> Vec<SinkLoss> {
        self.0.losses.lock().clone()
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

/// Every [`FLUSH_EVERY`]: takes what was recorded, turns it into lines, and
/// hands them to each sink in batches; on stop, a last round and the sinks'
/// close.
///
/// The agents never wake it sooner. A task woken from a tokio worker waits
/// in that worker's slot for its next task, which no other worker takes
/// from: woken by an agent that never yields (a Lua loop of blackboard
/// writes on the embedded store), the writer did not run until the loop
/// ended. The tick is driven by an idle worker, which runs it.
async fn write_loop(
    inner: Arc<Inner>,
    mut new_sinks: mpsc::UnboundedReceiver<Box<dyn Sink>>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    let mut rounds = Rounds::new(&inner.host);
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stopping = tokio::select! {
            _ = tick.tick() => false,
            _ = stopped.changed() => true,
        };
        while let Ok(sink) = new_sinks.try_recv() {
            sinks.push(sink);
        }
        // Every record timed up to `cut` is in its shard once the shard's
        // lock is taken after reading it; later ones wait for the next round.
        // Read before the new shards are taken in: a shard made after that
        // holds only records timed after it.
        let cut = if stopping { u64::MAX } else { clock::ticks() };
        rounds.adopt(&inner);
        let dropped = rounds.taken.iter_mut().map(Taken::take).sum();
        rounds
            .write(cut, dropped, inner.epoch.scale(), &mut sinks)
            .await;
        if stopping {
            rounds.release();
            for sink in &mut sinks {
                sink.close().await;
            }
            *inner.losses.lock() = sinks.iter().filter_map(|s| s.loss()).collect();
            return;
        }
    }
}

/// The writer's state between rounds.
struct Rounds {
    /// What was taken from each shard and not written yet.
    taken: Vec<Taken>,
    lines: Lines,
    batch: Batch,
}

impl Rounds {
    fn new(host: &str) -> Rounds {
        Rounds {
            taken: Vec::new(),
            lines: Lines::new(host),
            batch: Batch::new(),
        }
    }

    /// Gives back the memory of every shard's buffer, once the journal is
    /// closed: threads keep their shards of a few journals at hand (see
    /// [`CACHED_SHARDS`]), and a busy run grows each buffer to megabytes.
    fn release(&mut self) {
        for t in self.taken.drain(..) {
            *t.shard.buffer.lock() = Buffer::default();
        }
    }

    /// Takes in the shards made since the last round.
    fn adopt(&mut self, inner: &Inner) {
        let new = inner.new_shards.lock().drain(..).collect::<Vec<_>>();
        self.taken.extend(new.into_iter().map(|shard| Taken {
            shard,
            bytes: Vec::new(),
            cold: VecDeque::new(),
            orphan: false,
        }));
    }

    /// Writes the records taken and timed up to `cut` to `sinks`, then a
    /// `journal_dropped` entry when `dropped` entries were dropped.
    async fn write(
        &mut self,
        cut: u64,
        dropped: u64,
        scale: clock::Scale,
        sinks: &mut [Box<dyn Sink>],
    ) {
        // In batches of about BATCH_BYTES of text: the text stays in the
        // cache between its lines and the sinks' copies (the kernel's, for
        // a file), and its buffer does not grow with a busy round.
        let mut merge = Merge::new(&mut self.taken, cut, scale);
        let mut done = merge.is_empty() && dropped == 0;
        while !done {
            self.batch.clear();
            done = self.lines.write(&mut merge, &mut self.batch);
            if done && dropped > 0 {
                self.lines.dropped(dropped, &mut self.batch);
            }
            for sink in sinks.iter_mut() {
                sink.write(&self.batch).await;
            }
        }
        let read = merge.read();
        for (t, read) in self.taken.iter_mut().zip(read) {
            t.bytes.drain(..read);
        }
        // A shard no thread held any more at its take (its thread ended,
        // or dropped it from its cache) goes once its last record is out.
        self.taken.retain(|t| !(t.orphan && t.bytes.is_empty()));
    }
}

/// What the writer took from one shard and has not written yet.
struct Taken {
    shard: Arc<Shard>,
    /// Records, in time order; those timed after the last round's cut first.
    bytes: Vec<u8>,
    /// The rare events of the records of tag `COLD` in `bytes`, in order.
    cold: VecDeque<Event>,
    /// True once no thread held the shard when it was taken: nothing can
    /// be recorded into it any more, and that take had its last records.
    orphan: bool,
}

impl Taken {
    /// Takes the shard's records after those left from the last round, and
    /// returns the count of entries it dropped since.
    fn take(&mut self) -> u64 {
        if Arc::strong_count(&self.shard) == 1 {
            // What its last holder recorded before letting it go is seen
            // below (the count's decrement is a release).
            std::sync::atomic::fence(Ordering::Acquire);
            self.orphan = true;
        }
        let mut buffer = self.shard.buffer.lock();
        if self.bytes.is_empty() {
            // Swapped, not copied, so both keep their capacity.
            std::mem::swap(&mut buffer.bytes, &mut self.bytes);
        } else {
            self.bytes.extend_from_slice(&buffer.bytes);
            buffer.bytes.clear();
        }
        self.cold.extend(buffer.cold.drain(..));
        buffer.held = 0;
        std::mem::take(&mut buffer.dropped)
    }
}

/// The records of a round from every shard, in time order: each shard's are
/// in order already (their times are read under its lock), so the next is
/// the earliest at the head of one. Records timed after the round's cut
/// stay for the next round: a thread may have read the clock just before
/// the cut and pushed into a shard the writer had taken already; everything
/// timed before the cut was in its shard when the writer took it.
///
/// Equal times (nanoseconds) go in the order of the shards: a message's
/// `sent` is timed before it is queued, its `handled` after it is taken, so
/// two records that follow each other are never timed alike.
struct Merge<'a> {
    heads: Vec<Head<'a>>,
    cut: u64,
    scale: clock::Scale,
}

/// The records of one shard not merged yet.
struct Head<'a> {
    records: record::Reader<'a>,
    cold: &'a mut VecDeque<Event>,
}

impl<'a> Merge<'a> {
    fn new(taken: &'a mut [Taken], cut: u64, scale: clock::Scale) -> Merge<'a> {
        let heads = taken
            .iter_mut()
            .map(|t| Head {
                records: record::Reader::new(&t.bytes),
                cold: &mut t.cold,
            })
            .collect();
        Merge { heads, cut, scale }
    }

    /// True when no record is due this round.
    fn is_empty(&self) -> bool {
        self.heads
            .iter()
            .all(|h| h.records.next_at().is_none_or(|at| at > self.cut))
    }

    /// The next record, its time on the wall clock, with its rare event
    /// when it stands for one.
    fn next(&mut self) -> Option<(record::Decoded<'a>, u64, Option<Event>)> {
        let mut first: Option<(usize, u64)> = None;
        for (i, head) in self.heads.iter().enumerate() {
            if let Some(at) = head.records.next_at()
                && at <= self.cut
                && first.is_none_or(|(_, earliest)| at < earliest)
            {
                first = Some((i, at));
            }
        }
        let head = &mut self.heads[first?.0];
        let rec = head.records.next()?;
        let cold = match rec.body {
            record::Body::Cold => head.cold.pop_front(),
            record::Body::Fast { .. } => None,
        };
        let at_us = self.scale.wall_us(rec.at);
        Some((rec, at_us, cold))
    }

    /// How many bytes of each shard's records were merged.
    fn read(self) -> Vec<usize> {
        self.heads.iter().map(|h| h.records.position()).collect()
    }
}

/// The writer's state for turning records into lines.
struct Lines {
    host_json: String,
    next_seq: u64,
    /// The head (see [`batch::head`]) of the host's own lines.
    host_head: Vec<u8>,
    /// The heads of the agents' lines, by agent number (filled as numbers
    /// show up).
    heads: Vec<Vec<u8>>,
    /// The time of the last entry written.
    last_at: Option<u64>,
}

impl Lines {
    fn new(host: &str) -> Lines {
        let host_json = serde_json::to_string(host).unwrap_or_else(|_| "\"?\"".into());
        Lines {
            host_head: batch::head(&host_json, None),
            host_json,
            next_seq: 1,
            heads: Vec::new(),
            last_at: None,
        }
    }

    /// Appends the lines of the next records of `records` to `batch`,
    /// numbered on from the last ones, until the batch holds
    /// [`BATCH_BYTES`] of text. True
    /// when no record is left.
    fn write(&mut self, records: &mut Merge<'_>, batch: &mut Batch) -> bool {
        while batch.text().len() < BATCH_BYTES {
            let Some((rec, at_us, cold)) = records.next() else {
                return true;
            };
            // Times follow the order even where two rounds' scales
            // disagree by a few nanoseconds.
            let at_us = self.last_at.map_or(at_us, |last| last.max(at_us));
            self.last_at = Some(at_us);
            let seq = self.next_seq;
            self.next_seq += 1;
            let head = match rec.agent {
                Some(n) => self.head(n),
                None => &self.host_head,
            };
            match (rec.body, cold) {
                (record::Body::Fast { event, plain }, _) => {
                    batch.push_fast(head, seq, at_us, &event, plain)
                }
                (record::Body::Cold, Some(e)) => batch.push(head, seq, at_us, &e),
                // Only if a shard's rare events and records disagreed.
                (record::Body::Cold, None) => self.next_seq -= 1,
            }
        }
        false
    }

    /// Appends a `journal_dropped` entry for `count` entries dropped after
    /// the last one written.
    fn dropped(&mut self, count: u64, batch: &mut Batch) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let event = Event::JournalDropped { count };
        // Stamped as the last entry kept: the drops came right after it
        // (and entries recorded since the swap may be older than now).
        let at_us = self.last_at.unwrap_or_else(now_us);
        batch.push(&self.host_head, seq, at_us, &event);
    }

    /// The head of the lines of agent number `n` (the host's alone for a
    /// number not in the table, which cannot be).
    fn head(&mut self, n: names::Name) -> &[u8] {
        if n as usize >= self.heads.len() {
            for id in names::ids_from(self.heads.len()) {
                let mut quoted = Vec::with_capacity(id.len() + 2);
                batch::json_str(&mut quoted, id.as_bytes());
                let quoted = String::from_utf8(quoted).unwrap_or_else(|_| "\"?\"".into());
                self.heads.push(batch::head(&self.host_json, Some(&quoted)));
            }
        }
        self.heads.get(n as usize).unwrap_or(&self.host_head)
    }
}

/// An event to record later as the agent's that made this (see
/// [`Journal::later`]).
pub struct Later {
    journal: Journal,
    agent: Option<names::Name>,
}

impl Later {
    /// Records `event`, when the journal is on.
    pub fn record(self, event: Event) {
        if self.journal.is_on() {
            self.journal.push(self.agent, event);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use async_trait::async_trait;
    use parking_lot::Mutex;
    use serde_json::json;

    use std::sync::atomic::Ordering;

    use super::clock::ticks;
    use super::{Batch, Entry, Event, Fast, Journal, Rounds, Sink};

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

    /// Keeps the size of every batch it is handed.
    struct Sizes(Arc<Mutex<Vec<usize>>>);

    #[async_trait]
    impl Sink for Sizes {
        async fn write(&mut self, batch: &Batch) {
            self.0.lock().push(batch.text().len());
        }
    }

    /// A round of more text than a batch holds comes in several batches,
    /// in order and numbered on, each about as large as a batch holds.
    #[tokio::test(flavor = "current_thread")]
    async fn a_large_round_is_handed_out_in_batches() {
        let journal = Journal::new("h");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sizes = Arc::new(Mutex::new(Vec::new()));
        journal.attach(Box::new(Keep(lines.clone())));
        journal.attach(Box::new(Sizes(sizes.clone())));
        let value = json!("x".repeat(500));
        // No await: all of it is one round.
        for i in 0..2000 {
            let key = format!("k{i}");
            journal.note(|| Fast::BlackboardWrite {
                key: &key,
                bytes: 502,
                value: &value,
            });
        }
        journal.close().await;
        let sizes = sizes.lock().clone();
        assert!(sizes.len() >= 4, "{sizes:?}");
        let last = sizes.len() - 1;
        assert!(
            sizes[..last]
                .iter()
                .all(|&n| (super::BATCH_BYTES..super::BATCH_BYTES + 1024).contains(&n)),
            "{sizes:?}"
        );
        let entries = entries(&lines);
        assert_eq!(entries.len(), 2000);
        for (i, e) in entries.iter().enumerate() {
            assert_eq!(e.seq, i as u64 + 1);
            assert!(
                matches!(&e.event, Event::BlackboardWrite { key, .. } if *key == format!("k{i}"))
            );
        }
    }

    /// An agent that records without ever yielding (a Lua loop of
    /// blackboard writes on the embedded store) does not hold the writer
    /// back: its entries reach the sinks while it runs. Woken from the
    /// agent's thread, the writer used to wait in that tokio worker's slot
    /// for its next task, which no other worker takes from, until the loop
    /// ended (its records piling up meanwhile).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_writer_runs_while_an_agent_never_yields() {
        let journal = Journal::new("h");
        let lines = Arc::new(Mutex::new(Vec::new()));
        journal.attach(Box::new(Keep(lines.clone())));
        let (agent_journal, seen) = (journal.clone(), lines.clone());
        let recorded = tokio::spawn(async move {
            let value = json!(1);
            // Only so that a failure ends: the loop never awaits.
            let give_up = Instant::now() + Duration::from_secs(30);
            let mut n = 0u64;
            while seen.lock().is_empty() && Instant::now() < give_up {
                agent_journal.note(|| Fast::BlackboardWrite {
                    key: "k",
                    bytes: 1,
                    value: &value,
                });
                n += 1;
            }
            n
        })
        .await
        .unwrap();
        let written = lines.lock().len();
        journal.close().await;
        assert!(
            written > 0,
            "no entry reached the sink while the agent ran ({recorded} recorded)"
        );
    }

    /// Two threads taking turns (one records a message sent, then the
    /// other its handling, a thousand times over many of the writer's
    /// rounds) come out in the order they recorded, numbered and timed in
    /// that order: each thread records into a shard of its own, and the
    /// writer merges them by time, leaving for the next round what was
    /// timed after it read the clock (else a round that took the first
    /// thread's shard before its `sent` and the second's after its
    /// `handled` would put the handling first).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn threads_taking_turns_come_out_in_the_order_they_recorded() {
        let journal = Journal::new("h");
        let lines = Arc::new(Mutex::new(Vec::new()));
        journal.attach(Box::new(Keep(lines.clone())));
        const TURNS: usize = 1000;
        let (to_b, from_a) = std::sync::mpsc::channel::<usize>();
        let (to_a, from_b) = std::sync::mpsc::channel::<usize>();
        let a = {
            let journal = journal.clone();
            std::thread::spawn(move || {
                for i in 0..TURNS {
                    let id = i.to_string();
                    journal.note_for("a-1", || Fast::MessageSent {
                        id: &id,
                        to: "b-1",
                        message_type: "t",
                        bytes: 1,
                        payload: &serde_json::Value::Null,
                    });
                    to_b.send(i).unwrap();
                    from_b.recv().unwrap();
                    if i % 100 == 0 {
                        // Across the writer's rounds.
                        std::thread::sleep(Duration::from_millis(3));
                    }
                }
            })
        };
        let b = {
            let journal = journal.clone();
            std::thread::spawn(move || {
                for i in from_a.iter().take(TURNS) {
                    let id = i.to_string();
                    journal.note_for("b-1", || Fast::MessageHandled {
                        id: &id,
                        from: "a-1",
                        message_type: "t",
                        attempt: 1,
                    });
                    to_a.send(i).unwrap();
                }
            })
        };
        tokio::task::spawn_blocking(move || {
            a.join().unwrap();
            b.join().unwrap();
        })
        .await
        .unwrap();
        journal.close().await;
        let entries = entries(&lines);
        assert_eq!(entries.len(), 2 * TURNS);
        for (n, e) in entries.iter().enumerate() {
            assert_eq!(e.seq, n as u64 + 1);
            let id = (n / 2).to_string();
            match &e.event {
                Event::MessageSent { id: got, .. } if n % 2 == 0 => assert_eq!(*got, id),
                Event::MessageHandled { id: got, .. } if n % 2 == 1 => assert_eq!(*got, id),
                other => panic!("entry {n}: {other:?}"),
            }
        }
        assert!(entries.windows(2).all(|w| w[0].at_us <= w[1].at_us));
    }

    /// A closure for a [`Thread`], and where to say it ran.
    type Job = (Box<dyn FnOnce() + Send>, std::sync::mpsc::Sender<()>);

    /// Runs closures on a thread of its own, one at a time, in order.
    struct Thread(std::sync::mpsc::Sender<Job>);

    impl Thread {
        fn new() -> Thread {
            let (tx, rx) = std::sync::mpsc::channel::<Job>();
            std::thread::spawn(move || {
                for (f, done) in rx {
                    f();
                    let _ = done.send(());
                }
            });
            Thread(tx)
        }

        fn run(&self, f: impl FnOnce() + Send + 'static) {
            let (done, wait) = std::sync::mpsc::channel();
            self.0.send((Box::new(f), done)).unwrap();
            wait.recv().unwrap();
        }
    }

    fn send(journal: &Journal, id: &'static str) -> impl FnOnce() + Send + 'static {
        let journal = journal.clone();
        move || {
            journal.note_for("a-1", || Fast::MessageSent {
                id,
                to: "b-1",
                message_type: "t",
                bytes: 4,
                payload: &serde_json::Value::Null,
            })
        }
    }

    fn handle(journal: &Journal, id: &'static str) -> impl FnOnce() + Send + 'static {
        let journal = journal.clone();
        move || {
            journal.note_for("b-1", || Fast::MessageHandled {
                id,
                from: "a-1",
                message_type: "t",
                attempt: 1,
            })
        }
    }

    /// The writer reads the clock, then takes the shards one after the
    /// other. A message sent from one thread after its shard was taken and
    /// handled on another before that one's was (the second is in this
    /// round's records, the first is not) comes out after it was sent: its
    /// handling was timed after the round's cut and waits for the next.
    #[tokio::test(flavor = "current_thread")]
    async fn a_record_timed_after_the_writers_cut_waits_for_the_next_round() {
        let journal = Journal::new("h");
        journal.0.on.store(true, Ordering::Relaxed);
        let lines = Arc::new(Mutex::new(Vec::new()));
        let mut sinks: Vec<Box<dyn Sink>> = vec![Box::new(Keep(lines.clone()))];
        let mut rounds = Rounds::new("h");
        let (a, b) = (Thread::new(), Thread::new());
        a.run(send(&journal, "m0"));
        b.run(handle(&journal, "m0"));
        // The spare shard, a's, b's.
        rounds.adopt(&journal.0);
        assert_eq!(rounds.taken.len(), 3);

        let cut = ticks();
        rounds.taken[0].take();
        rounds.taken[1].take();
        a.run(send(&journal, "m1"));
        b.run(handle(&journal, "m1"));
        rounds.taken[2].take();
        rounds
            .write(cut, 0, journal.0.epoch.scale(), &mut sinks)
            .await;
        let first_round = lines.lock().len();

        let cut = ticks();
        for t in &mut rounds.taken {
            t.take();
        }
        rounds
            .write(cut, 0, journal.0.epoch.scale(), &mut sinks)
            .await;

        let order: Vec<(String, u64)> = entries(&lines)
            .into_iter()
            .map(|e| match e.event {
                Event::MessageSent { id, .. } => (format!("sent {id}"), e.seq),
                Event::MessageHandled { id, .. } => (format!("handled {id}"), e.seq),
                other => panic!("{other:?}"),
            })
            .collect();
        let expected = [
            ("sent m0", 1),
            ("handled m0", 2),
            ("sent m1", 3),
            ("handled m1", 4),
        ]
        .map(|(s, n)| (s.to_string(), n));
        assert_eq!(order, expected);
        assert_eq!(first_round, 2);
    }

    /// A shard whose thread ended is written out to its last record, then
    /// let go.
    #[tokio::test(flavor = "current_thread")]
    async fn the_shard_of_an_ended_thread_is_written_out_then_let_go() {
        let journal = Journal::new("h");
        journal.0.on.store(true, Ordering::Relaxed);
        let lines = Arc::new(Mutex::new(Vec::new()));
        let mut sinks: Vec<Box<dyn Sink>> = vec![Box::new(Keep(lines.clone()))];
        let mut rounds = Rounds::new("h");
        let record = send(&journal, "m0");
        std::thread::spawn(record).join().unwrap();
        rounds.adopt(&journal.0);
        assert_eq!(rounds.taken.len(), 2);
        for _ in 0..2 {
            let cut = ticks();
            for t in &mut rounds.taken {
                t.take();
            }
            rounds
                .write(cut, 0, journal.0.epoch.scale(), &mut sinks)
                .await;
        }
        assert_eq!(entries(&lines).len(), 1);
        // The spare shard stays: the journal holds it.
        assert_eq!(rounds.taken.len(), 1);
    }

    /// Eight threads recording at once, each its own numbered keys, while
    /// the writer takes rounds: every entry comes out once, each thread's
    /// in the order it recorded them, numbered without a gap and timed in
    /// order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_threads_at_once_lose_nothing_and_keep_their_order() {
        const THREADS: usize = 8;
        const EACH: usize = 20_000;
        let journal = Journal::new("h");
        let lines = Arc::new(Mutex::new(Vec::new()));
        journal.attach(Box::new(Keep(lines.clone())));
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let journal = journal.clone();
                std::thread::spawn(move || {
                    for i in 0..EACH {
                        let key = format!("{t}/{i}");
                        journal.note(|| Fast::BlackboardDelete {
                            key: &key,
                            existed: false,
                        });
                    }
                })
            })
            .collect();
        tokio::task::spawn_blocking(move || threads.into_iter().for_each(|t| t.join().unwrap()))
            .await
            .unwrap();
        journal.close().await;
        let entries = entries(&lines);
        assert_eq!(entries.len(), THREADS * EACH);
        let mut next = [0usize; THREADS];
        for (n, e) in entries.iter().enumerate() {
            assert_eq!(e.seq, n as u64 + 1);
            let Event::BlackboardDelete { key, .. } = &e.event else {
                panic!("{:?}", e.event)
            };
            let (t, i) = key.split_once('/').unwrap();
            let (t, i): (usize, usize) = (t.parse().unwrap(), i.parse().unwrap());
            assert_eq!(i, next[t], "thread {t}'s entries out of order");
            next[t] += 1;
        }
        assert!(entries.windows(2).all(|w| w[0].at_us <= w[1].at_us));
        assert_eq!(journal.dropped(), 0);
    }

    /// A closed journal's shards hold no memory, though the threads that
    /// recorded keep them at hand.
    #[tokio::test(flavor = "current_thread")]
    async fn a_closed_journal_gives_its_shards_memory_back() {
        let journal = Journal::new("h");
        journal.attach(Box::new(Keep(Arc::new(Mutex::new(Vec::new())))));
        // Over several of the writer's rounds, which hand the shard back
        // a buffer that held a round's records.
        for _ in 0..3 {
            for i in 0..10_000 {
                let key = format!("k{i}");
                journal.note(|| Fast::BlackboardDelete {
                    key: &key,
                    existed: true,
                });
            }
            tokio::time::sleep(super::FLUSH_EVERY * 3).await;
        }
        journal.close().await;
        let shard = super::SHARDS.with(|cache| cache.borrow()[0].1.clone());
        let buffer = shard.buffer.lock();
        assert_eq!(buffer.bytes.capacity(), 0);
    }

    /// A thread that records into more journals than it keeps shards of at
    /// hand (and a thread that ends) loses none of their entries.
    #[tokio::test(flavor = "current_thread")]
    async fn a_thread_recording_into_many_journals_loses_nothing() {
        let journals: Vec<(Journal, Arc<Mutex<Vec<String>>>)> = (0..super::CACHED_SHARDS * 2 + 1)
            .map(|_| {
                let journal = Journal::new("h");
                let lines = Arc::new(Mutex::new(Vec::new()));
                journal.attach(Box::new(Keep(lines.clone())));
                (journal, lines)
            })
            .collect();
        let recording = journals.iter().map(|(j, _)| j.clone()).collect::<Vec<_>>();
        std::thread::spawn(move || {
            for round in 0..10 {
                for (n, journal) in recording.iter().enumerate() {
                    let key = format!("k{n}-{round}");
                    journal.note(|| Fast::BlackboardDelete {
                        key: &key,
                        existed: true,
                    });
                }
            }
        })
        .join()
        .unwrap();
        for (n, (journal, lines)) in journals.iter().enumerate() {
            journal.close().await;
            let keys: Vec<String> = entries(lines)
                .into_iter()
                .map(|e| match e.event {
                    Event::BlackboardDelete { key, .. } => key,
                    other => panic!("{other:?}"),
                })
                .collect();
            let expected: Vec<String> = (0..10).map(|round| format!("k{n}-{round}")).collect();
            assert_eq!(keys, expected, "journal {n}");
        }
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

    /// The strings of a frequent event are escaped when one of them needs
    /// it, wherever it stands, and copied as they are when none does.
    #[tokio::test(flavor = "current_thread")]
    async fn frequent_entries_escape_exactly_the_strings_that_need_it() {
        let journal = Journal::new("h");
        let lines = Arc::new(Mutex::new(Vec::new()));
        journal.attach(Box::new(Keep(lines.clone())));
        let cases = [
            ("o-1", "w-1", "t"),
            ("o\"2", "w-1", "t"),
            ("o-3", "w\\1", "t"),
            ("o-4", "w-1", "t\n"),
            ("o-5", "wé-1", "ü\u{1}"),
            (
                "o-6",
                "a-much-longer-sender-name-7",
                "a type of forty bytes, more or less",
            ),
        ];
        for (id, from, message_type) in cases {
            journal.note_for("x-1", || Fast::MessageHandled {
                id,
                from,
                message_type,
                attempt: 2,
            });
        }
        journal.close().await;
        let entries = entries(&lines);
        assert_eq!(entries.len(), cases.len());
        for (e, (id, from, message_type)) in entries.iter().zip(cases) {
            assert_eq!(
                e.event,
                Event::MessageHandled {
                    id: id.into(),
                    from: from.into(),
                    message_type: message_type.into(),
                    attempt: 2,
                }
            );
        }
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
