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

use std::sync::Arc;
use tracing::Instrument;

use mlua::{Function, Lua, Table, Value as LuaValue};

use super::{AgentContext, to_lua};
use crate::llm::{BudgetSpent, ChatMessage, ChatRequest, ChatResponse, LlmError};

/// The options `llm.chat` accepts; anything else is a typo worth reporting.
const OPTIONS: [&str; 8] = [
    "messages",
    "prompt",
    "system",
    "model",
    "temperature",
    "max_tokens",
    "json",
    "timeout",
];

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
    let t = lua.create_table()?;
    let c = ctx.clone();
    let call = lua.create_async_function(move |lua, opts: LuaValue| {
        let c = c.clone();
        let request = parse_request(opts);
        let location = caller_location(&lua);
        async move {
            match request {
                Ok(req) => chat(&lua, &c, req, location).await,
                Err(message) => {
                    let message = match location {
                        Some(at) => format!("{at}: {message}"),
                        None => message,
                    };
                    Ok((false, LuaValue::String(lua.create_string(message)?)))
                }
            }
        }
    })?;
    let error_mt: Table = lua.load(ERROR_MT).set_name("=llm.error").call(())?;
    let chat: Function = lua
        .load(CHAT)
        .set_name("=llm.chat")
        .call((call, error_mt))?;
    t.set("chat", chat)?;

    let client = ctx.llm.client.clone();
    t.set(
        "mode",
        lua.create_function(move |_, ()| Ok(client.mode().as_str()))?,
    )?;
    let client = ctx.llm.client.clone();
    t.set(
        "available",
        lua.create_function(move |_, ()| Ok(client.is_live()))?,
    )?;
    Ok(t)
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

/// Builds the request from the option table, or the argument error to raise.
fn parse_request(opts: LuaValue) -> Result<ChatRequest, String> {
    let LuaValue::Table(t) = opts else {
        return Err(format!(
            "llm.chat: expected a table of options, got {}",
            opts.type_name()
        ));
    };
    for pair in t.pairs::<LuaValue, LuaValue>() {
        let (key, _) = pair.map_err(|e| format!("llm.chat: {e}"))?;
        let known = match &key {
            LuaValue::String(s) => OPTIONS.iter().any(|o| s.as_bytes() == o.as_bytes()),
            _ => false,
        };
        if !known {
            return Err(format!(
                "llm.chat: unknown option {} (options: {})",
                key.to_string()
                    .map_or_else(|_| key.type_name().into(), |k| format!("'{k}'")),
                OPTIONS.join(", ")
            ));
        }
    }
    let prompt = string_opt(&t, "prompt")?;
    let system = string_opt(&t, "system")?;
    let mut messages = match (t.get::<LuaValue>("messages"), prompt) {
        (Ok(LuaValue::Nil), Some(prompt)) => vec![ChatMessage::user(prompt)],
        (Ok(LuaValue::Table(list)), None) => messages(&list)?,
        (Ok(LuaValue::Table(_)), Some(_)) => {
            return Err("llm.chat: give 'prompt' or 'messages', not both".into());
        }
        (Ok(other), _) => {
            return Err(format!(
                "llm.chat: expected string 'prompt' or table 'messages', got {}",
                other.type_name()
            ));
        }
        (Err(e), _) => return Err(format!("llm.chat: {e}")),
    };
    if let Some(system) = system {
        messages.insert(0, ChatMessage::system(system));
    }
    let model = string_opt(&t, "model")?;
    if let Some(m) = &model
        && let Err(e) = crate::coordination::quotas::check_name("llm.chat model", m)
    {
        return Err(format!("llm.chat: {e}"));
    }
    Ok(ChatRequest {
        messages,
        model,
        temperature: number_opt(&t, "temperature")?,
        max_tokens: whole_opt(&t, "max_tokens")?
            .map(|n| {
                u32::try_from(n).map_err(|_| "llm.chat: 'max_tokens' is too large".to_string())
            })
            .transpose()?,
        json: match t.get::<LuaValue>("json") {
            Ok(LuaValue::Nil) => false,
            Ok(LuaValue::Boolean(b)) => b,
            Ok(other) => return Err(expected("boolean", "json", &other)),
            Err(e) => return Err(format!("llm.chat: {e}")),
        },
        timeout_ms: whole_opt(&t, "timeout")?,
    })
}

/// `messages`: a non-empty list of `{role = string, content = string}`.
fn messages(list: &Table) -> Result<Vec<ChatMessage>, String> {
    let mut out = Vec::new();
    for (i, item) in list.sequence_values::<LuaValue>().enumerate() {
        let n = i + 1;
        let item = item.map_err(|e| format!("llm.chat: messages[{n}]: {e}"))?;
        let LuaValue::Table(m) = item else {
            return Err(format!(
                "llm.chat: expected table messages[{n}] ({{role = ..., content = ...}}), got {}",
                item.type_name()
            ));
        };
        let field = |name: &str| match m.get::<LuaValue>(name) {
            Ok(LuaValue::String(s)) => Ok(s.to_string_lossy()),
            Ok(other) => Err(expected("string", &format!("messages[{n}].{name}"), &other)),
            Err(e) => Err(format!("llm.chat: messages[{n}].{name}: {e}")),
        };
        out.push(ChatMessage::new(field("role")?, field("content")?));
    }
    if out.is_empty() {
        return Err("llm.chat: 'messages' is empty; give at least one message".into());
    }
    Ok(out)
}

fn expected(kind: &str, field: &str, got: &LuaValue) -> String {
    format!(
        "llm.chat: expected {kind} '{field}', got {}",
        got.type_name()
    )
}

fn string_opt(t: &Table, name: &str) -> Result<Option<String>, String> {
    match t.get::<LuaValue>(name) {
        Ok(LuaValue::Nil) => Ok(None),
        Ok(LuaValue::String(s)) => Ok(Some(s.to_string_lossy())),
        Ok(other) => Err(expected("string", name, &other)),
        Err(e) => Err(format!("llm.chat: {name}: {e}")),
    }
}

fn number_opt(t: &Table, name: &str) -> Result<Option<f64>, String> {
    let n = match t.get::<LuaValue>(name) {
        Ok(LuaValue::Nil) => return Ok(None),
        Ok(LuaValue::Integer(i)) => i as f64,
        Ok(LuaValue::Number(n)) => n,
        Ok(other) => return Err(expected("number", name, &other)),
        Err(e) => return Err(format!("llm.chat: {name}: {e}")),
    };
    if !n.is_finite() || n < 0.0 {
        return Err(format!(
            "llm.chat: '{name}' must be a finite number >= 0, got {n}"
        ));
    }
    Ok(Some(n))
}

/// A whole number of at least 1 (`max_tokens`, `timeout` in ms).
fn whole_opt(t: &Table, name: &str) -> Result<Option<u64>, String> {
    let Some(n) = number_opt(t, name)? else {
        return Ok(None);
    };
    if n < 1.0 || n.fract() != 0.0 {
        return Err(format!(
            "llm.chat: '{name}' must be a whole number >= 1, got {n}"
        ));
    }
    Ok(Some(n as u64))
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
