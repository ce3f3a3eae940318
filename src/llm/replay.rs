//! Answers from recorded request/response pairs, so a run can be repeated
//! offline with the answers a real model once gave.
//!
//! # Replay file format
//!
//! JSON Lines: one JSON object per line; blank lines are skipped.
//!
//! ```text
//! {"request": {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
//!  "response": {"content": "hello", "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}, "model": "m"}}
//! ```
//! (shown on two lines here; in the file it is one line)
//!
//! - `request.messages` (required): the conversation, `role` + `content`.
//! - `request.model` (optional): when given, the entry only answers requests
//!   for that model (the request's model, or the config's default); when
//!   absent, any model matches. Other request fields are ignored.
//! - `response.content` (required): the answer.
//! - `response.usage` (optional, any field may be missing): missing counts are
//!   estimated as characters / 4.
//! - `response.model` (optional): the model reported in the answer.
//!
//! A request matches an entry when its messages are equal (role and content,
//! in order) and the model matches; the first matching entry in the file
//! answers, every time. [`record_line`] writes lines in this format, and a
//! client with `LlmConfig::record` set appends one for every answered call.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::types::PartialUsage;
use super::{ChatMessage, ChatRequest, ChatResponse, LlmError};

/// How much of the last message a "no recorded answer" error quotes.
const QUOTE_CHARS: usize = 80;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    request: EntryRequest,
    response: EntryResponse,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct EntryRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    model: Option<String>,
    messages: Vec<ChatMessage>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct EntryResponse {
    content: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    usage: Option<PartialUsage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    model: Option<String>,
}

/// The loaded entries of one replay file, indexed by conversation.
#[derive(Debug)]
pub struct ReplayBook {
    path: PathBuf,
    entries: Vec<Entry>,
    by_messages: HashMap<Vec<ChatMessage>, Vec<usize>>,
}

impl ReplayBook {
    /// Reads and checks the whole file. Fails with [`LlmError::Replay`]
    /// naming the file when it can't be read, or `file:line` for a line that
    /// is not a valid entry.
    pub fn load(path: &Path) -> Result<ReplayBook, LlmError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| LlmError::replay(path, None, format!("cannot read it: {e}")))?;
        let mut book = ReplayBook {
            path: path.to_path_buf(),
            entries: Vec::new(),
            by_messages: HashMap::new(),
        };
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let entry: Entry = serde_json::from_str(line).map_err(|e| {
                LlmError::replay(
                    path,
                    Some(n + 1),
                    format!("not a replay entry: {}", describe(&e)),
                )
            })?;
            book.by_messages
                .entry(entry.request.messages.clone())
                .or_default()
                .push(book.entries.len());
            book.entries.push(entry);
        }
        Ok(book)
    }

    /// The recorded answer to `req` asked of `model`. Fails with
    /// [`LlmError::Replay`] quoting the start of the last message when no
    /// entry matches.
    pub fn answer(&self, req: &ChatRequest, model: &str) -> Result<ChatResponse, LlmError> {
        let entry = self
            .by_messages
            .get(&req.messages)
            .into_iter()
            .flatten()
            .map(|&i| &self.entries[i])
            .find(|e| e.request.model.as_deref().is_none_or(|m| m == model))
            .ok_or_else(|| self.miss(req, model))?;
        let content = entry.response.content.clone();
        Ok(ChatResponse {
            usage: PartialUsage::complete(entry.response.usage, &req.messages, &content),
            model: entry
                .response
                .model
                .clone()
                .or_else(|| entry.request.model.clone())
                .unwrap_or_else(|| model.to_string()),
            content,
            source: "replay",
        })
    }

    fn miss(&self, req: &ChatRequest, model: &str) -> LlmError {
        let last = req
            .messages
            .last()
            .map(|m| m.content.as_str())
            .unwrap_or("");
        let mut quote: String = last.chars().take(QUOTE_CHARS).collect();
        if last.chars().count() > QUOTE_CHARS {
            quote.push('…');
        }
        LlmError::replay(
            &self.path,
            None,
            format!(
                "no recorded answer for this request (model {model}, {}, last message: {quote:?}); \
                 entries in the file: {}",
                crate::text::plural(req.messages.len() as u64, "message", "messages"),
                self.entries.len()
            ),
        )
    }
}

/// One replay-file line (without the trailing newline) recording that `req`
/// was answered with `resp`; see the [module docs](self) for the format.
/// The request's model is written only when the request named one, so the
/// entry answers whatever default model a later run is configured with.
pub fn record_line(req: &ChatRequest, resp: &ChatResponse) -> String {
    let entry = Entry {
        request: EntryRequest {
            model: req.model.clone(),
            messages: req.messages.clone(),
        },
        response: EntryResponse {
            content: resp.content.clone(),
            usage: Some(PartialUsage {
                prompt_tokens: Some(resp.usage.prompt_tokens),
                completion_tokens: Some(resp.usage.completion_tokens),
                total_tokens: Some(resp.usage.total_tokens),
            }),
            model: Some(resp.model.clone()),
        },
    };
    // Serializing plain strings and numbers cannot fail.
    serde_json::to_string(&entry).expect("a replay entry serializes")
}

/// Appends answered calls to a replay file (`LlmConfig::record`).
#[derive(Debug)]
pub(crate) struct Recorder {
    path: PathBuf,
    file: Mutex<std::fs::File>,
    /// Answers not recorded, and the first failure.
    unrecorded: Mutex<Option<(u64, String)>>,
}

impl Recorder {
    /// Opens `path` for appending, creating it when missing. Fails with
    /// [`LlmError::Config`] naming the file.
    pub(crate) fn open(path: &Path) -> Result<Recorder, LlmError> {
        use std::os::unix::fs::OpenOptionsExt;
        // Not blocking: a pipe whose reader stops reading must not hold the
        // agent's call (and with it a thread of the runtime) for ever; a
        // line it cannot take now is counted as not recorded.
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .map_err(|e| {
                LlmError::config(format!(
                    "cannot open the record file {}: {e}",
                    path.display()
                ))
            })?;
        Ok(Recorder {
            path: path.to_path_buf(),
            file: Mutex::new(file),
            unrecorded: Mutex::new(None),
        })
    }

    /// The answers that could not be recorded, and why (the first failure).
    pub(crate) fn unrecorded(&self) -> Option<(u64, String)> {
        self.unrecorded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Appends one [`record_line`]. A failed write is logged and counted
    /// ([`unrecorded`](Self::unrecorded), which the run's report shows), not
    /// returned: the call itself succeeded, and losing a recording must not
    /// fail a run.
    pub(crate) fn write(&self, req: &ChatRequest, resp: &ChatResponse) {
        let mut line = record_line(req, resp);
        line.push('\n');
        // One write_all per line under the lock keeps lines whole when
        // several agents answer at once.
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = file.write_all(line.as_bytes()) {
            let why = format!(
                "cannot append to the LLM record file {}: {e}",
                self.path.display()
            );
            tracing::warn!("{why}");
            let mut unrecorded = self.unrecorded.lock().unwrap_or_else(|e| e.into_inner());
            unrecorded.get_or_insert((0, why)).0 += 1;
        }
    }
}

/// A serde error without its "at line 1 column N" (every entry is line 1 of
/// its own parse; the file line is reported separately).
fn describe(err: &serde_json::Error) -> String {
    let text = err.to_string();
    match text.rfind(" at line ") {
        Some(cut) => format!("{} (column {})", &text[..cut], err.column()),
        None => text,
    }
}
