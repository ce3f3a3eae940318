//! The live view: a journal sink that keeps the run's lines (its first
//! thousand, and the last 64 MiB after them) and passes new ones on
//! ([`LiveFeed`]), and the HTTP server that serves the page and streams
//! the journal to it with server-sent events ([`serve`]).
//!
//! Routes: `/` the page; `/events` the journal as server-sent events (a
//! `hello`, every line so far, then new lines as they come, and `end` once
//! the run's journal closed); `/journal.jsonl` the journal so far;
//! `/api/status` `{"clients", "entries", "ended"}`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use futures::Stream;
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::sync::broadcast;

use crate::coordination::journal::{Batch, Entry, Event, Sink};
use crate::error::{Error, Result};

/// Lines a slow browser may fall behind before it is made to start over.
const LAG: usize = 4096;

/// What the live view shows: every journal line of the run so far, and the
/// new ones as they come. Cheap to clone.
#[derive(Clone)]
pub struct LiveFeed(Arc<Feed>);

struct Feed {
    state: Mutex<FeedState>,
    lines: broadcast::Sender<Update>,
    clients: AtomicUsize,
}

/// Lines at the start of a run the view always keeps: the run's start and
/// its first agents, which the page needs to show anything.
const HEAD_LINES: usize = 1_000;

/// Text of the lines kept after the head: a view open for days (`orrery
/// dev` on a busy task) would otherwise hold the whole journal in memory.
/// Past it the oldest lines after the head go, counted; the journal file
/// (`--journal`) keeps everything.
const MAX_TAIL_BYTES: usize = 64 << 20;

struct FeedState {
    head: Vec<Arc<str>>,
    tail: std::collections::VecDeque<Arc<str>>,
    tail_bytes: usize,
    max_tail_bytes: usize,
    /// Lines let go between the head and the tail.
    trimmed: u64,
    ended: bool,
}

impl Default for FeedState {
    fn default() -> Self {
        FeedState::with_limit(MAX_TAIL_BYTES)
    }
}

impl FeedState {
    fn with_limit(max_tail_bytes: usize) -> FeedState {
        FeedState {
            head: Vec::new(),
            tail: std::collections::VecDeque::new(),
            tail_bytes: 0,
            max_tail_bytes,
            trimmed: 0,
            ended: false,
        }
    }

    fn push(&mut self, line: Arc<str>) {
        if self.head.len() < HEAD_LINES {
            self.head.push(line);
            return;
        }
        self.tail_bytes += line.len();
        self.tail.push_back(line);
        while self.tail_bytes > self.max_tail_bytes
            && let Some(old) = self.tail.pop_front()
        {
            self.tail_bytes -= old.len();
            self.trimmed += 1;
        }
    }

    /// The lines kept, with a `journal_dropped` entry where lines were let go.
    fn history(&self) -> Vec<Arc<str>> {
        let mut lines = Vec::with_capacity(self.head.len() + self.tail.len() + 1);
        lines.extend(self.head.iter().cloned());
        if self.trimmed > 0 {
            lines.push(self.trimmed_entry().into());
        }
        lines.extend(self.tail.iter().cloned());
        lines
    }

    /// A journal entry saying how many lines the view let go, timed as the
    /// first line it kept after them.
    fn trimmed_entry(&self) -> String {
        let next = self.tail.front().and_then(|l| Entry::parse(l).ok());
        let entry = Entry {
            seq: 0,
            at_us: next.as_ref().map_or(0, |e| e.at_us),
            host: next.map_or_else(|| "live view".to_string(), |e| e.host),
            agent: None,
            event: Event::JournalDropped {
                count: self.trimmed,
            },
        };
        serde_json::to_string(&entry).expect("an entry serializes")
    }
}

#[derive(Clone)]
enum Update {
    Line(Arc<str>),
    End,
}

impl Default for LiveFeed {
    fn default() -> Self {
        LiveFeed(Arc::new(Feed {
            state: Mutex::default(),
            lines: broadcast::channel(LAG).0,
            clients: AtomicUsize::new(0),
        }))
    }
}

impl LiveFeed {
    /// A journal sink feeding this view.
    pub fn sink(&self) -> Box<dyn Sink> {
        Box::new(FeedSink(self.clone()))
    }

    /// Browsers following the journal now.
    pub fn clients(&self) -> usize {
        self.0.clients.load(Ordering::Relaxed)
    }

    /// The lines so far and a receiver of what comes next (nothing is lost
    /// or repeated between the two), and whether the journal has closed.
    fn follow(&self) -> (Vec<Arc<str>>, broadcast::Receiver<Update>, bool) {
        let state = self.0.state.lock();
        (state.history(), self.0.lines.subscribe(), state.ended)
    }
}

struct FeedSink(LiveFeed);

#[async_trait]
impl Sink for FeedSink {
    async fn write(&mut self, batch: &Batch) {
        let feed = &self.0.0;
        let mut state = feed.state.lock();
        for line in batch.lines() {
            let line: Arc<str> = Arc::from(line);
            state.push(line.clone());
            let _ = feed.lines.send(Update::Line(line));
        }
    }

    async fn close(&mut self) {
        let feed = &self.0.0;
        let mut state = feed.state.lock();
        state.ended = true;
        let _ = feed.lines.send(Update::End);
    }
}

/// The address the live view tries when none is given; any free port on
/// 127.0.0.1 when another program holds it.
pub const DEFAULT_ADDR: &str = "127.0.0.1:4780";

/// Binds the live view's address: `addr` as given (a BadInput naming
/// `flag` when it cannot be bound), or [`DEFAULT_ADDR`] falling back to any
/// free port when `addr` is `None`.
pub async fn bind(addr: Option<&str>, flag: &str) -> Result<TcpListener> {
    match addr {
        Some(addr) => TcpListener::bind(addr)
            .await
            .map_err(|e| Error::bad_input(format!("{flag} {addr}"), format!("cannot listen: {e}"))),
        None => match TcpListener::bind(DEFAULT_ADDR).await {
            Ok(l) => Ok(l),
            Err(_) => TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(|e| Error::bad_input(flag, format!("cannot listen on 127.0.0.1: {e}"))),
        },
    }
}

/// Serves the live view of `feed` on `listener` until the process ends;
/// returns the address it serves.
pub fn serve(listener: TcpListener, feed: LiveFeed) -> Result<SocketAddr> {
    let addr = listener
        .local_addr()
        .map_err(|e| Error::Coordination(format!("live view: {e}")))?;
    let app = Router::new()
        .route("/", get(|| async { Html(super::page::live()) }))
        .route("/events", get(events))
        .route("/journal.jsonl", get(journal))
        .route("/api/status", get(status))
        .with_state(feed);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("live view stopped: {e}");
        }
    });
    Ok(addr)
}

async fn journal(State(feed): State<LiveFeed>) -> impl IntoResponse {
    let (history, _, _) = feed.follow();
    let mut body = String::new();
    for line in history {
        body.push_str(&line);
        body.push('\n');
    }
    ([(header::CONTENT_TYPE, "application/x-ndjson")], body)
}

async fn status(State(feed): State<LiveFeed>) -> impl IntoResponse {
    let (history, _, ended) = feed.follow();
    let body = serde_json::json!({
        "clients": feed.clients(),
        "entries": history.len(),
        "ended": ended,
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
}

/// Counts a browser while its stream lives.
struct Client(LiveFeed);

impl Drop for Client {
    fn drop(&mut self) {
        self.0.0.clients.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One browser's stream: the hello, the history, then live lines.
struct Follow {
    hello_sent: bool,
    history: std::vec::IntoIter<Arc<str>>,
    rx: broadcast::Receiver<Update>,
    ended: bool,
    done: bool,
    _client: Client,
}

async fn events(
    State(feed): State<LiveFeed>,
) -> Sse<impl Stream<Item = std::result::Result<SseEvent, Infallible>>> {
    feed.0.clients.fetch_add(1, Ordering::Relaxed);
    let (history, rx, ended) = feed.follow();
    let follow = Follow {
        hello_sent: false,
        history: history.into_iter(),
        rx,
        ended,
        done: false,
        _client: Client(feed),
    };
    Sse::new(futures::stream::unfold(follow, step)).keep_alive(KeepAlive::default())
}

/// The next event of a stream: `hello`, each line so far, each new line,
/// then `end` once the journal closed. A browser that fell too far behind
/// loses its stream; it reconnects and starts over from the hello.
async fn step(mut f: Follow) -> Option<(std::result::Result<SseEvent, Infallible>, Follow)> {
    if f.done {
        return None;
    }
    if !f.hello_sent {
        f.hello_sent = true;
        return Some((Ok(SseEvent::default().event("hello").data("orrery")), f));
    }
    if let Some(line) = f.history.next() {
        return Some((Ok(SseEvent::default().data(&*line)), f));
    }
    let update = if f.ended {
        Update::End
    } else {
        f.rx.recv().await.ok()?
    };
    match update {
        Update::Line(line) => Some((Ok(SseEvent::default().data(&*line)), f)),
        Update::End => {
            f.done = true;
            Some((Ok(SseEvent::default().event("end").data("end")), f))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(seq: u64) -> Arc<str> {
        format!(
            r#"{{"seq":{seq},"at_us":{},"host":"h","kind":"blackboard_write","agent":"a-1","key":"k","bytes":1,"value":{seq}}}"#,
            1000 + seq
        )
        .into()
    }

    /// Past its limit the view lets the oldest lines after the head go and
    /// says how many where they were; the head and the newest stay.
    #[test]
    fn the_history_keeps_its_head_and_the_newest_lines_within_its_limit() {
        let limit = 10 * line(HEAD_LINES as u64).len();
        let mut state = FeedState::with_limit(limit);
        let total = HEAD_LINES as u64 + 500;
        for seq in 0..total {
            state.push(line(seq));
        }
        assert!(state.tail_bytes <= limit);
        let history = state.history();
        assert_eq!(&history[0], &line(0));
        assert_eq!(&history[HEAD_LINES - 1], &line(HEAD_LINES as u64 - 1));
        let notice = Entry::parse(&history[HEAD_LINES]).expect("a journal entry");
        let kept = history.len() - HEAD_LINES - 1;
        assert_eq!(
            notice.event,
            Event::JournalDropped {
                count: total - HEAD_LINES as u64 - kept as u64
            }
        );
        assert_eq!(notice.at_us, 1000 + total - kept as u64);
        assert_eq!(history.last().unwrap(), &line(total - 1));
        // Within the limit nothing is let go and no notice is made.
        let mut state = FeedState::default();
        for seq in 0..total {
            state.push(line(seq));
        }
        assert_eq!(state.history().len(), total as usize);
    }
}
