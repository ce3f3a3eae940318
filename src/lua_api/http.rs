//! `http` (capability `http`): `get(url [, opts])` and `post(url, body [, opts])`
//! to the hosts granted to the role, and nowhere else (redirects are not
//! followed). `body` is a string, or a table sent as JSON; `opts` may give
//! `headers` and `timeout` (ms, default 10 s). Returns `{status, body, headers}`;
//! a body beyond `max_value_bytes` fails the call.

use std::sync::Arc;
use std::time::Duration;

use mlua::{Lua, Table, Value as LuaValue};

use tracing::Instrument;

use super::module::Module;
use super::options::{FromOptions, OptionError, Options, decode};
use super::{AgentContext, arg_err, not_granted, to_json};
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
    let granted = Arc::new(Granted {
        caps,
        client,
        role: ctx.role.clone(),
        max_bytes: ctx.coord.config.max_value_bytes,
    });
    let m = Module::new(lua, ctx)?;
    m.set("get", m.wait_fn(granted.clone(), get)?)?;
    m.set("post", m.wait_fn(granted, post)?)?;
    Ok(m.finish())
}

/// What the role may reach, and the client it reaches it with.
struct Granted {
    caps: Capabilities,
    client: reqwest::Client,
    role: String,
    max_bytes: usize,
}

/// The options of `http.get` and `http.post`.
pub(super) struct RequestOptions {
    /// Headers sent with the request.
    headers: Option<Table>,
    /// How long the request may take (default 10 s).
    timeout: Duration,
}

impl FromOptions for RequestOptions {
    const NAMES: &'static [&'static str] = &["headers", "timeout"];

    fn from_options(o: &Options) -> Result<Self, OptionError> {
        Ok(RequestOptions {
            headers: o.table("headers")?,
            timeout: o
                .ms("timeout")?
                .unwrap_or(Duration::from_millis(DEFAULT_TIMEOUT_MS)),
        })
    }
}

/// `http.get(url [, opts])`: `{status, body, headers}`.
async fn get(
    lua: Lua,
    g: Arc<Granted>,
    (url, opts): (String, Option<Table>),
) -> mlua::Result<Table> {
    request(&lua, &g, "get", url, None, opts)
        .instrument(crate::trace::host_call("http.get"))
        .await
}

/// `http.post(url, body [, opts])`: `body` a string, or a table sent as JSON.
async fn post(
    lua: Lua,
    g: Arc<Granted>,
    (url, body, opts): (String, LuaValue, Option<Table>),
) -> mlua::Result<Table> {
    let body = match body {
        LuaValue::String(s) => (s.as_bytes().to_vec(), "text/plain; charset=utf-8"),
        other => {
            let json = to_json(&lua, other, || format!("http.post('{url}')"))?;
            (json.to_string().into_bytes(), "application/json")
        }
    };
    if body.0.len() > g.max_bytes {
        return Err(arg_err(
            &format!("http.post('{url}')"),
            format!(
                "body is larger than max_value_bytes ({} bytes)",
                g.max_bytes
            ),
        ));
    }
    request(&lua, &g, "post", url, Some(body), opts)
        .instrument(crate::trace::host_call("http.post"))
        .await
}

async fn request(
    lua: &Lua,
    g: &Granted,
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
    if !g.caps.allows_host(host, port, default_port) {
        return Err(arg_err(
            &func,
            format!(
                "{host}:{port} is not among the hosts granted to role '{}' ({})",
                g.role,
                g.caps.http.join(", ")
            ),
        ));
    }
    let opts: RequestOptions = decode(&format!("http.{method}"), opts)?;
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(given) = opts.headers {
        for pair in given.pairs::<String, String>() {
            let (k, v) = pair?;
            let name = reqwest::header::HeaderName::from_bytes(k.as_bytes()).map_err(|_| {
                arg_err(
                    &func,
                    format!("header name {k:?} is not a valid header name"),
                )
            })?;
            let value = reqwest::header::HeaderValue::from_str(&v).map_err(|_| {
                arg_err(
                    &func,
                    format!(
                        "header '{k}': its value holds a character no header may \
                         (a line break or another control character)"
                    ),
                )
            })?;
            headers.append(name, value);
        }
    }
    let mut req = match &body {
        None => g.client.get(parsed),
        Some(_) => g.client.post(parsed),
    }
    .timeout(opts.timeout);
    if let Some((bytes, content_type)) = body {
        // The caller's own content-type wins over the one the body's kind implies.
        if !headers.contains_key(reqwest::header::CONTENT_TYPE) {
            req = req.header(reqwest::header::CONTENT_TYPE, content_type);
        }
        req = req.body(bytes);
    }
    req = req.headers(headers);
    let max_bytes = g.max_bytes;
    let failed = |e: reqwest::Error| arg_err(&func, transport_error(&e, opts.timeout));
    let mut resp = req.send().await.map_err(failed)?;
    let mut bytes = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(failed)? {
        bytes.extend_from_slice(&chunk);
        if bytes.len() > max_bytes {
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

/// What went wrong with a request, in words: its timeout, or its cause
/// (see [`failure_text`](crate::http_client::failure_text)).
fn transport_error(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        return format!(
            "timed out after {} ms (option 'timeout')",
            timeout.as_millis()
        );
    }
    crate::http_client::failure_text(e)
}
