//! `exec` (capability `commands`): `run(cmd [, args [, {timeout = ms, stdin = text}]])`
//! starts one of the programs granted to the role, directly (no shell), with
//! an empty environment but `PATH` and no capabilities (see
//! [`crate::secrets::confine_child`]), and returns `{status, ok, stdout, stderr}`.
//! Output beyond `max_value_bytes` or a run past the timeout (default 10 s)
//! kills the program and fails the call.
//!
//! The program runs in a process group of its own, and whatever it started
//! there dies with it: on its timeout, on too much output, when the call is
//! abandoned (its agent or task ends) and also when the program exits by
//! itself. A granted program leaves no process behind once its call
//! returns, so a background child cannot outlive the host nor hold the
//! output pipes open past the program's end. (One that leaves the group on
//! purpose, with `setsid`, is out of reach: see the README.)

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use mlua::{Lua, Table};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::signal::unix::{Signal, SignalKind, signal};

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

/// Runs `cmd` to its end; (exit status, stdout, stderr). Its process group
/// is killed when the program exits, when its output is too large and when
/// this future is dropped (timeout, the agent ends).
async fn run(
    cmd: &str,
    args: &[String],
    stdin: Option<Vec<u8>>,
    max_bytes: usize,
) -> Result<(Option<i32>, Vec<u8>, Vec<u8>), String> {
    // Watched before the start, so its exit cannot come unseen.
    let mut exits = signal(SignalKind::child()).map_err(|e| format!("cannot start: {e}"))?;
    let mut command = tokio::process::Command::new(cmd);
    // No capabilities, none to gain: it cannot read the host's memory or environment.
    crate::secrets::confine_child(&mut command);
    let child = command
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
        // A group of its own, with the program's pid as its id: what it
        // starts can be killed with it.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start: {e}"))?;
    let mut group = ProcessGroup::of(child)?;
    if let (Some(input), Some(mut pipe)) = (stdin, group.child.stdin.take()) {
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
    let out = group.child.stdout.take().map(|p| Box::new(p) as Box<_>);
    let err = group.child.stderr.take().map(|p| Box::new(p) as Box<_>);
    // The program's end is its group's: what it left in the background dies,
    // and with it the last writers of the pipes, so the reads end.
    let end = async {
        group.exited(&mut exits).await?;
        group.kill();
        Ok(())
    };
    // On an error (too much output) `group` is dropped: killed.
    let ((stdout, stderr), ()) =
        tokio::try_join!(async { tokio::try_join!(read(out), read(err)) }, end)?;
    let status = group.reap().await?;
    Ok((status.code(), stdout, stderr))
}

/// A started program and the process group it leads (its id is the
/// program's pid): the group is killed when this is dropped, unless the
/// program was reaped.
///
/// The program is reaped last, after its group is killed: until then its
/// pid, the group's id, cannot be taken by another process, so the kill
/// never reaches a stranger.
struct ProcessGroup {
    child: tokio::process::Child,
    /// The group's id: the program's pid.
    id: libc::pid_t,
    /// The program was reaped: its pid may belong to another process now.
    reaped: bool,
}

impl ProcessGroup {
    /// The group `child` leads (started with `process_group(0)`).
    fn of(child: tokio::process::Child) -> Result<Self, String> {
        let id = child
            .id()
            .and_then(|pid| libc::pid_t::try_from(pid).ok())
            .ok_or("cannot start: no process id")?;
        Ok(ProcessGroup {
            child,
            id,
            reaped: false,
        })
    }

    /// Kills every process of the group (the program too, when it is still
    /// running); a group already empty is fine.
    fn kill(&self) {
        if !self.reaped {
            // SAFETY: a plain system call on a number; no memory is involved.
            unsafe { libc::killpg(self.id, libc::SIGKILL) };
        }
    }

    /// Waits until the program has exited, without reaping it (see the
    /// type's docs). `exits` sees every child's exit of the process.
    async fn exited(&self, exits: &mut Signal) -> Result<(), String> {
        while !self.has_exited()? {
            if exits.recv().await.is_none() {
                return Err("cannot wait for it: the runtime is shutting down".into());
            }
        }
        Ok(())
    }

    /// True once the program has exited; it is not reaped.
    fn has_exited(&self) -> Result<bool, String> {
        loop {
            // SAFETY: `info` is a plain C struct, valid zeroed, written by waitid.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
            // SAFETY: `info` outlives the call; WNOWAIT leaves the child as it is.
            let done =
                unsafe { libc::waitid(libc::P_PID, self.id as libc::id_t, &mut info, flags) };
            if done == 0 {
                // SAFETY: waitid filled `info`; si_pid stays 0 while it runs.
                return Ok(unsafe { info.si_pid() } != 0);
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(format!("cannot wait for it: {e}"));
            }
        }
    }

    /// Kills what is left of the group and reaps the program: its exit status.
    async fn reap(&mut self) -> Result<std::process::ExitStatus, String> {
        self.kill();
        let status = self.child.wait().await.map_err(|e| e.to_string())?;
        self.reaped = true;
        Ok(status)
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // Before `child` is dropped (and then reaped by tokio): see the type's docs.
        self.kill();
    }
}
