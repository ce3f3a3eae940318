//! `http` (capability `http`): `get(url [, opts])` and `post(url, body [, opts])`
//! to the hosts granted to the role, and nowhere else (redirects are not
//! followed). `body` is a string, or a table sent as JSON; `opts` may give
//! `headers` and `timeout` (ms, default 10 s). Returns `{status, body, headers}`;
//! a body beyond `max_value_bytes` fails the call.

use std::sync::Arc;

use mlua::{Lua, Table, Value as LuaValue};
use tracing::Instrument;

use super::{AgentContext, arg_err, ms_option, not_granted, to_json};
use crate::capabilities::Capabilities;

/// Time a request may take when the call gives no `timeout` (ms).
const DEFAULT_TIMEOUT_MS: u64 = 10_000;

pub(super) fn register(lua: &Lua, ctx: &Arc<AgentContext>) -> mlua::Result<Table> {
    let caps = ctx.coord.config.capabilities(&ctx.role);
    if caps.http.is_empty() {
        return not_granted(lua, "http", &ctx.role, "http = [\"HOST:PORT\", ...]");
    }
    let client = crate::http_client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| arg_err("http", e))?;
    let shared = Arc::new((
        caps,
        client,
        ctx.role.clone(),
        ctx.coord.config.max_value_bytes,
    ));
    let t = lua.create_table()?;

    let s = shared.clone();
    t.set(
        "get",
        lua.create_async_function(move |lua, (url, opts): (String, Option<Table>)| {
            let s = s.clone();
            async move { request(&lua, &s, "get", url, None, opts).await }
                .instrument(crate::trace::host_call("http.get"))
        })?,
    )?;
    t.set(
        "post",
        lua.create_async_function(
            move |lua, (url, body, opts): (String, LuaValue, Option<Table>)| {
                let s = shared.clone();
                async move {
                    let body = match body {
                        LuaValue::String(s) => (s.as_bytes().to_vec(), "text/plain; charset=utf-8"),
                        other => {
                            let json = to_json(&lua, other, || format!("http.post('{url}')"))?;
                            (json.to_string().into_bytes(), "application/json")
                        }
                    };
                    let limit = s.3;
                    if body.0.len() > limit {
                        return Err(arg_err(
                            &format!("http.post('{url}')"),
                            format!("body is larger than max_value_bytes ({limit} bytes)"),
                        ));
                    }
                    request(&lua, &s, "post", url, Some(body), opts).await
                }
                .instrument(crate::trace::host_call("http.post"))
            },
        )?,
    )?;
    Ok(t)
}

type Shared = (Capabilities, reqwest::Client, String, usize);

async fn request(
    lua: &Lua,
    (caps, client, role, max_bytes): &Shared,
    method: &str,
    url: String,
    body: Option<(Vec<u8>, &'static str)>,
    opts: Option<Table>,
) -> mlua::Result<Table> {
    let func = format!("http.{method}('{url}')");
    let parsed = reqwest::Url::parse(&url).map_err(|e| arg_err(&func, e))?;
    let default_port = match parsed.scheme() {
        "http" => 80,
        "https" => 443,
        other => {
            return Err(arg_err(
                &func,
                format!("scheme '{other}' is not http or https"),
            ));
        }
    };
    let host = parsed.host_str().unwrap_or_default();
    let port = parsed.port().unwrap_or(default_port);
    if !caps.allows_host(host, port, default_port) {
        return Err(arg_err(
            &func,
            format!(
                "{host}:{port} is not among the hosts granted to role '{role}' ({})",
                caps.http.join(", ")
            ),
        ));
    }
    let timeout = ms_option(
        &format!("http.{method}"),
        opts.as_ref(),
        "timeout",
        DEFAULT_TIMEOUT_MS,
    )?;
    let mut req = match &body {
        None => client.get(parsed),
        Some(_) => client.post(parsed),
    }
    .timeout(timeout);
    if let Some((bytes, content_type)) = body {
        req = req.header("content-type", content_type).body(bytes);
    }
    if let Some(headers) = opts
        .as_ref()
        .and_then(|o| o.get::<Option<Table>>("headers").ok().flatten())
    {
        for pair in headers.pairs::<String, String>() {
            let (k, v) = pair?;
            req = req.header(k, v);
        }
    }
    let mut resp = req.send().await.map_err(|e| arg_err(&func, e))?;
    let mut bytes = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| arg_err(&func, e))? {
        bytes.extend_from_slice(&chunk);
        if bytes.len() > *max_bytes {
            return Err(arg_err(
                &func,
                format!("response body is larger than max_value_bytes ({max_bytes} bytes)"),
            ));
        }
    }
    let out = lua.create_table()?;
    out.set("status", resp.status().as_u16())?;
    out.set("body", lua.create_string(bytes)?)?;
    let headers = lua.create_table()?;
    for (name, value) in resp.headers() {
        headers.set(
            name.as_str(),
            String::from_utf8_lossy(value.as_bytes()).into_owned(),
        )?;
    }
    out.set("headers", headers)?;
    Ok(out)
}
