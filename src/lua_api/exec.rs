//! `exec` (capability `commands`): `run(cmd [, args [, {timeout = ms, stdin = text}]])`
//! starts one of the programs granted to the role, directly (no shell), with
//! an empty environment but `PATH` and no capabilities (see
//! [`crate::secrets::confine_child`]), and returns `{status, ok, stdout, stderr}`.
//! Output beyond `max_value_bytes` or a run past the timeout (default 10 s)
//! kills the program and fails the call.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use mlua::{Lua, Table};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use tracing::Instrument;

use super::module::Module;
use super::options::{FromOptions, OptionError, Options, decode};
use super::{AgentContext, arg_err, not_granted};

/// Time a program may run when the call gives no `timeout` (ms).
const DEFAULT_TIMEOUT_MS: u64 = 10_000;

pub(super) fn register(lua: &Lua, ctx: &Arc<AgentContext>) -> mlua::Result<Table> {
    let commands = ctx.coord.config.capabilities(&ctx.role).commands;
    if commands.is_empty() {
        return not_granted(lua, "exec", &ctx.role, "commands = [\"PROGRAM\", ...]");
    }
    let granted = Arc::new(Granted {
        commands,
        role: ctx.role.clone(),
        max_bytes: ctx.coord.config.max_value_bytes,
    });
    let m = Module::new(lua, ctx)?;
    m.set("run", m.wait_fn(granted, run_fn)?)?;
    Ok(m.finish())
}

/// What the role may run: `commands`, with output of at most `max_bytes`.
struct Granted {
    commands: Vec<String>,
    role: String,
    max_bytes: usize,
}

/// The options of `exec.run`.
pub(super) struct RunOptions {
    /// How long the program may run (default 10 s).
    timeout: Duration,
    /// Bytes written to the program's standard input.
    stdin: Option<Vec<u8>>,
}

impl FromOptions for RunOptions {
    const NAMES: &'static [&'static str] = &["timeout", "stdin"];

    fn from_options(o: &Options) -> Result<Self, OptionError> {
        Ok(RunOptions {
            timeout: o
                .ms("timeout")?
                .unwrap_or(Duration::from_millis(DEFAULT_TIMEOUT_MS)),
            stdin: o.bytes("stdin")?.map(|s| s.as_bytes().to_vec()),
        })
    }
}

/// `exec.run(cmd [, args [, opts]])`: `{status, ok, stdout, stderr}`.
async fn run_fn(
    lua: Lua,
    g: Arc<Granted>,
    (cmd, args, opts): (String, Option<Vec<String>>, Option<Table>),
) -> mlua::Result<Table> {
    let func = format!("exec.run('{cmd}')");
    if !g.commands.contains(&cmd) {
        return Err(arg_err(
            &func,
            format!(
                "'{cmd}' is not among the commands granted to role '{}' ({})",
                g.role,
                g.commands.join(", ")
            ),
        ));
    }
    let opts: RunOptions = decode(&func, opts)?;
    let args = args.unwrap_or_default();
    let run = run(&cmd, &args, opts.stdin, g.max_bytes);
    let (status, stdout, stderr) = tokio::time::timeout(opts.timeout, run)
        .instrument(crate::trace::host_call("exec.run"))
        .await
        .map_err(|_| {
            arg_err(
                &func,
                format!("timed out after {} ms", opts.timeout.as_millis()),
            )
        })?
        .map_err(|m| arg_err(&func, m))?;
    let out = lua.create_table()?;
    out.set("status", status)?;
    out.set("ok", status == Some(0))?;
    out.set("stdout", lua.create_string(stdout)?)?;
    out.set("stderr", lua.create_string(stderr)?)?;
    Ok(out)
}

/// Runs `cmd` to its end; (exit status, stdout, stderr). The child is killed
/// when this future is dropped (timeout) or its output is too large.
async fn run(
    cmd: &str,
    args: &[String],
    stdin: Option<Vec<u8>>,
    max_bytes: usize,
) -> Result<(Option<i32>, Vec<u8>, Vec<u8>), String> {
    let mut command = tokio::process::Command::new(cmd);
    // No capabilities, none to gain: it cannot read the host's memory or environment.
    crate::secrets::confine_child(&mut command);
    let mut child = command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start: {e}"))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A program that does not read its input must not block us.
        tokio::spawn(async move {
            let _ = pipe.write_all(&input).await;
        });
    }
    // Each reader fails as soon as its pipe passes the limit, which ends both
    // reads at once (a flooding program would otherwise never close the other pipe).
    let read = |pipe: Option<_>| async move {
        let mut pipe: Box<dyn tokio::io::AsyncRead + Unpin + Send> = match pipe {
            Some(p) => p,
            None => return Ok(Vec::new()),
        };
        let mut buf = Vec::new();
        (&mut pipe)
            .take(max_bytes as u64 + 1)
            .read_to_end(&mut buf)
            .await
            .map_err(|e| format!("cannot read its output: {e}"))?;
        if buf.len() > max_bytes {
            return Err(format!(
                "output is larger than max_value_bytes ({max_bytes} bytes); the program was stopped"
            ));
        }
        Ok(buf)
    };
    let out = child.stdout.take().map(|p| Box::new(p) as Box<_>);
    let err = child.stderr.take().map(|p| Box::new(p) as Box<_>);
    let (stdout, stderr) = match tokio::try_join!(read(out), read(err)) {
        Ok(both) => both,
        Err(e) => {
            let _ = child.kill().await;
            return Err(e);
        }
    };
    let status = child.wait().await.map_err(|e| e.to_string())?;
    Ok((status.code(), stdout, stderr))
}
