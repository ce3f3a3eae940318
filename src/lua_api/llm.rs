//! `llm`: chat with the configured model (live endpoint, replay file or the
//! offline mock).
//!
//! `chat{...}` returns `{content, model, source, usage, json}` and blocks only
//! the calling agent; a failed call raises a table
//! `{kind, message, status, where}` whose `tostring` reads as a message, so
//! `pcall` callers can branch on `err.kind`. `mode()` says which answerer is
//! configured and `available()` whether it is a real one (live or replay).
//! The API key never enters the VM: answers and errors come out of the client
//! redacted, and nothing here can read the key.

use std::future::Future;
use std::sync::Arc;
use tracing::Instrument;

use mlua::{Function, Lua, Table, Value as LuaValue};

use super::module::Module;
use super::options::{self, FromOptions, OptionError, Options};
use super::{AgentContext, chunks, to_lua};
use crate::llm::{BudgetSpent, ChatMessage, ChatRequest, ChatResponse, LlmError};

/// Raises what the host function hands back: argument errors as strings,
/// call failures as error tables; both already name the calling line (which
/// `error`'s level could not do under `pcall(llm.chat, ...)`).
const CHAT: &str = r#"
local call, error_mt = ...
return function(opts)
  local ok, result = call(opts)
  if ok then return result end
  if type(result) == "string" then error(result, 0) end
  error(setmetatable(result, error_mt), 0)
end
"#;

const ERROR_MT: &str = r#"
return {
  __tostring = function(e)
    local where = e.where and (e.where .. ": ") or ""
    return ("%sllm.chat failed (%s): %s"):format(where, tostring(e.kind), tostring(e.message))
  end,
}
"#;

pub(super) fn register(lua: &Lua, ctx: &Arc<AgentContext>) -> mlua::Result<Table> {
    let m = Module::new(lua, ctx)?;
    let call = m.wait_fn(ctx.clone(), call)?;
    // From bytecode compiled once per process, as the other host chunks.
    let error_mt: Table = chunks::named(lua, "=llm.error", ERROR_MT)?.call(())?;
    let chat: Function = chunks::named(lua, "=llm.chat", CHAT)?.call((call, error_mt))?;
    m.set("chat", chat)?;
    m.sync("mode", mode)?;
    m.sync("available", available)?;
    Ok(m.finish())
}

/// `llm.mode()`: which answerer is configured (`live`, `replay`, `mock`).
fn mode(_: &Lua, c: &AgentContext, (): ()) -> mlua::Result<&'static str> {
    Ok(c.llm.client.mode().as_str())
}

/// `llm.available()`: true when a real model answers (live or replay).
fn available(_: &Lua, c: &AgentContext, (): ()) -> mlua::Result<bool> {
    Ok(c.llm.client.is_live())
}

/// The host side of `llm.chat(opts)`: `(true, result)`, or `(false, error)`
/// for the wrapper to raise; both an argument error (a string) and a failed
/// call (a table) name the calling line, read before the call yields.
fn call(
    lua: Lua,
    c: Arc<AgentContext>,
    opts: LuaValue,
) -> impl Future<Output = mlua::Result<(bool, LuaValue)>> {
    let request = options::decode_required::<ChatRequest>("llm.chat", opts);
    let location = caller_location(&lua);
    async move {
        match request {
            Ok(req) => chat(&lua, &c, req, location).await,
            Err(e) => {
                let message = match location {
                    Some(at) => format!("{at}: {e}"),
                    None => e.to_string(),
                };
                Ok((false, LuaValue::String(lua.create_string(message)?)))
            }
        }
    }
}

/// Runs one call and counts it in the metrics; `(true, result)` or `(false, error table)`.
async fn chat(
    lua: &Lua,
    c: &AgentContext,
    req: ChatRequest,
    location: Option<String>,
) -> mlua::Result<(bool, LuaValue)> {
    let llm = &c.llm;
    let model = req
        .model
        .clone()
        .unwrap_or_else(|| llm.client.default_model().to_string());
    let wants_json = req.json;
    let call = c.coord.journal.llm_call(&model, &req);
    let result = llm.client.chat(req).instrument(call.span()).await;
    call.finish(&c.coord.journal, &result);
    c.coord
        .metrics
        .llm_call(&c.id, &model, result.as_ref().ok().map(|r| &r.usage));
    match result {
        Ok(resp) => Ok((
            true,
            LuaValue::Table(response_table(lua, &resp, wants_json)?),
        )),
        Err(e) => {
            if let LlmError::BudgetExhausted { used, budget } = e {
                // The receiver is gone only once the run is over.
                let _ = llm.budget_spent.send(BudgetSpent {
                    agent: c.id.clone(),
                    used,
                    budget,
                });
            }
            Ok((false, LuaValue::Table(error_table(lua, &e, location)?)))
        }
    }
}

/// The options of `llm.chat`: the request it sends.
impl FromOptions for ChatRequest {
    const NAMES: &'static [&'static str] = &[
        "messages",
        "prompt",
        "system",
        "model",
        "temperature",
        "max_tokens",
        "json",
        "timeout",
    ];

    fn from_options(o: &Options) -> Result<Self, OptionError> {
        let prompt = o.string("prompt")?;
        let system = o.string("system")?;
        let mut messages = match (o.value("messages")?, prompt) {
            (LuaValue::Nil, Some(prompt)) => vec![ChatMessage::user(prompt)],
            (LuaValue::Table(list), None) => messages(o, &list)?,
            (LuaValue::Table(_), Some(_)) => {
                return Err(o.error("give 'prompt' or 'messages', not both"));
            }
            (other, _) => {
                return Err(o.error(format!(
                    "expected string 'prompt' or table 'messages', got {}",
                    other.type_name()
                )));
            }
        };
        if let Some(system) = system {
            messages.insert(0, ChatMessage::system(system));
        }
        let model = o.string("model")?;
        if let Some(m) = &model {
            crate::coordination::quotas::check_name("llm.chat model", m).map_err(|e| o.error(e))?;
        }
        let max_tokens = o
            .whole("max_tokens")?
            .map(|n| u32::try_from(n).map_err(|_| o.error("'max_tokens' is too large")))
            .transpose()?;
        Ok(ChatRequest {
            messages,
            model,
            temperature: o.number("temperature")?,
            max_tokens,
            json: o.boolean("json")?.unwrap_or(false),
            timeout_ms: o.whole("timeout")?,
        })
    }
}

/// `messages`: a non-empty list of `{role = string, content = string}`.
fn messages(o: &Options, list: &Table) -> Result<Vec<ChatMessage>, OptionError> {
    let mut out = Vec::new();
    for (i, item) in list.sequence_values::<LuaValue>().enumerate() {
        let n = i + 1;
        let item = item.map_err(|e| o.error(format!("messages[{n}]: {e}")))?;
        let LuaValue::Table(m) = item else {
            return Err(o.error(format!(
                "expected table messages[{n}] ({{role = ..., content = ...}}), got {}",
                item.type_name()
            )));
        };
        let field = |name: &str| match m.get::<LuaValue>(name) {
            Ok(LuaValue::String(s)) => Ok(s.to_string_lossy()),
            Ok(other) => Err(o.expected("string", &format!("messages[{n}].{name}"), &other)),
            Err(e) => Err(o.error(format!("messages[{n}].{name}: {e}"))),
        };
        out.push(ChatMessage::new(field("role")?, field("content")?));
    }
    if out.is_empty() {
        return Err(o.error("'messages' is empty; give at least one message"));
    }
    Ok(out)
}

/// `{content, model, source, usage = {...}}`, plus `json` (or `json_error`)
/// when JSON was asked for.
fn response_table(lua: &Lua, resp: &ChatResponse, wants_json: bool) -> mlua::Result<Table> {
    let t = lua.create_table_with_capacity(0, 6)?;
    t.set("content", resp.content.as_str())?;
    t.set("model", resp.model.as_str())?;
    t.set("source", resp.source)?;
    let usage = lua.create_table_with_capacity(0, 3)?;
    usage.set("prompt_tokens", resp.usage.prompt_tokens)?;
    usage.set("completion_tokens", resp.usage.completion_tokens)?;
    usage.set("total_tokens", resp.usage.total_tokens)?;
    t.set("usage", usage)?;
    if wants_json {
        match serde_json::from_str::<serde_json::Value>(json_body(&resp.content)) {
            Ok(value) => t.set("json", to_lua(lua, &value)?)?,
            Err(e) => t.set("json_error", format!("the answer is not JSON: {e}"))?,
        }
    }
    Ok(t)
}

/// The JSON inside an answer: models often wrap it in a Markdown code fence
/// (```` ```json ... ``` ````) even when asked for bare JSON.
fn json_body(content: &str) -> &str {
    let text = content.trim();
    let Some(fenced) = text.strip_prefix("```") else {
        return text;
    };
    // Skip the fence's info string ("json") up to the end of its line.
    let body = fenced.split_once('\n').map_or("", |(_, rest)| rest);
    body.trim_end().strip_suffix("```").unwrap_or(body).trim()
}

/// `{kind, message, status, where}` for a failed call.
fn error_table(lua: &Lua, e: &LlmError, location: Option<String>) -> mlua::Result<Table> {
    let t = lua.create_table_with_capacity(0, 4)?;
    t.set("kind", e.kind())?;
    t.set("message", e.to_string())?;
    if let LlmError::Http {
        status: Some(status),
        ..
    } = e
    {
        t.set("status", *status)?;
    }
    t.set("where", location)?;
    Ok(t)
}

/// `path:line` of the innermost script frame calling `llm.chat`: the first
/// frame from a file chunk (`@path`), skipping host wrappers (`=name`).
fn caller_location(lua: &Lua) -> Option<String> {
    (0..32)
        .map_while(|level| {
            lua.inspect_stack(level, |frame| {
                let source = frame.source().source?.into_owned();
                let path = source.strip_prefix('@')?.to_string();
                Some(format!("{path}:{}", frame.current_line()?))
            })
        })
        .flatten()
        .next()
}
