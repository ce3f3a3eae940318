//! The LLM of a test: answers scripted in the spec (by a piece of the prompt,
//! or in order) and, behind them, an optional replay file. A call nothing
//! answers fails — the agent sees an error of kind `replay` — and is kept, so
//! the runner fails the test quoting the prompt's start even when the agent
//! caught the error.

use std::path::PathBuf;

use parking_lot::Mutex;

use crate::agent::patterns::Matcher;
use crate::llm::{Answerer, ChatRequest, ChatResponse, LlmError, ReplayBook, Usage};

/// How much of a prompt an unscripted call quotes.
const QUOTE_CHARS: usize = 80;

/// What a scripted entry answers.
#[derive(Debug, Clone)]
pub enum Reply {
    /// The answer's text.
    Content(String),
    /// The call fails with an error of this kind (`timeout`, `http`,
    /// `rate_limited`, `malformed`) and message.
    Error(String, String),
}

/// One scripted answer.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Answers prompts containing this text (or matching it as a Lua
    /// pattern), every time; `None`: answers one call, in order.
    pub prompt: Option<String>,
    /// The answer.
    pub reply: Reply,
}

/// The scripted LLM of one test (see the module docs).
pub struct ScriptedLlm {
    entries: Vec<Entry>,
    /// Entries without a prompt already used.
    next_in_order: Mutex<usize>,
    replay: Option<ReplayBook>,
    calls: Mutex<Vec<ChatRequest>>,
    unscripted: Mutex<Vec<String>>,
}

impl ScriptedLlm {
    /// Answers from `entries`, then from the replay file at `replay` (read now;
    /// a bad file is an error naming it, or its line).
    pub fn new(entries: Vec<Entry>, replay: Option<PathBuf>) -> Result<ScriptedLlm, LlmError> {
        let replay = replay.map(|p| ReplayBook::load(&p)).transpose()?;
        Ok(ScriptedLlm {
            entries,
            next_in_order: Mutex::new(0),
            replay,
            calls: Mutex::new(Vec::new()),
            unscripted: Mutex::new(Vec::new()),
        })
    }

    /// True when the test configured an LLM (entries or a replay file).
    pub fn configured(&self) -> bool {
        !self.entries.is_empty() || self.replay.is_some()
    }

    /// The requests made so far, in order.
    pub fn calls(&self) -> Vec<ChatRequest> {
        self.calls.lock().clone()
    }

    /// What each call nothing answered asked, quoted.
    pub fn unscripted(&self) -> Vec<String> {
        self.unscripted.lock().clone()
    }

    fn scripted(&self, prompt: &str) -> Option<Reply> {
        if let Some(e) = self
            .entries
            .iter()
            .find(|e| e.prompt.as_deref().is_some_and(|p| matches(prompt, p)))
        {
            return Some(e.reply.clone());
        }
        let mut next = self.next_in_order.lock();
        let entry = self
            .entries
            .iter()
            .filter(|e| e.prompt.is_none())
            .nth(*next)?;
        *next += 1;
        Some(entry.reply.clone())
    }
}

impl Answerer for ScriptedLlm {
    fn answer(&self, req: &ChatRequest, model: &str) -> Result<ChatResponse, LlmError> {
        self.calls.lock().push(req.clone());
        let prompt = req.last_user_text();
        match self.scripted(prompt) {
            Some(Reply::Content(content)) => Ok(ChatResponse {
                usage: Usage::estimate(&req.messages, &content),
                content,
                model: model.to_string(),
                source: "script",
            }),
            Some(Reply::Error(kind, message)) => Err(scripted_error(&kind, message)),
            None => {
                if let Some(book) = &self.replay
                    && let Ok(answer) = book.answer(req, model)
                {
                    return Ok(answer);
                }
                let quote = quote(prompt);
                self.unscripted.lock().push(quote.clone());
                Err(LlmError::Config {
                    message: format!(
                        "unscripted llm.chat call: no answer in the test's llm script{} for the \
                         prompt {quote:?}",
                        if self.replay.is_some() {
                            " or replay file"
                        } else {
                            ""
                        }
                    ),
                })
            }
        }
    }
}

/// True when `prompt` contains `piece` as plain text or matches it as a Lua
/// pattern (a malformed pattern, checked whole first, matches as plain text
/// only: `(` would otherwise match everything).
pub(crate) fn matches(prompt: &str, piece: &str) -> bool {
    if prompt.contains(piece) {
        return true;
    }
    let (anchored, pat) = match piece.strip_prefix('^') {
        Some(rest) => (true, rest),
        None => (false, piece),
    };
    if crate::agent::patterns::check(pat.as_bytes()).is_err() {
        return false;
    }
    let no_budget = || Ok(());
    let mut m = Matcher::new(prompt.as_bytes(), pat.as_bytes(), &no_budget);
    let last = if anchored { 0 } else { prompt.len() };
    (0..=last).any(|s| matches!(m.match_at(s), Ok(Some(_))))
}

/// The start of `text` on one line, for messages.
pub fn quote(text: &str) -> String {
    let folded = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut q: String = folded.chars().take(QUOTE_CHARS).collect();
    if folded.chars().count() > QUOTE_CHARS {
        q.push('…');
    }
    q
}

fn scripted_error(kind: &str, message: String) -> LlmError {
    let url = "test script".to_string();
    match kind {
        "timeout" => LlmError::Timeout {
            url,
            timeout_ms: 0,
            attempts: 1,
        },
        "rate_limited" => LlmError::RateLimited {
            url,
            attempts: 1,
            retry_after_ms: None,
        },
        "malformed" => LlmError::Malformed {
            url,
            detail: message,
            excerpt: String::new(),
        },
        _ => LlmError::Http {
            url,
            status: Some(500),
            attempts: 1,
            detail: message,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_piece_of_the_prompt_matches_as_text_or_as_a_pattern() {
        assert!(matches("Plan this task (1+1)", "task (1+1)"));
        assert!(matches("Plan this task", "^Plan %a+"));
        assert!(!matches("Plan this task", "^task"));
        assert!(!matches("Plan", "[unclosed"));
    }
}
