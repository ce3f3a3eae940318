//! The live view: a journal sink that keeps every line and passes new ones
//! on ([`LiveFeed`]), and the HTTP server that serves the page and streams
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

use crate::coordination::journal::{Batch, Sink};
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

#[derive(Default)]
struct FeedState {
    history: Vec<Arc<str>>,
    ended: bool,
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
        (state.history.clone(), self.0.lines.subscribe(), state.ended)
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
            state.history.push(line.clone());
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
