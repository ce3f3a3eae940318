//! `fs` (capability `read_files`): read files below the directory granted to
//! the role. `read(path)` returns the file's text, `list([dir])` the sorted
//! names in a directory. Paths are relative to the granted directory; one that
//! leads outside it (`..`, an absolute path, a symbolic link) is refused.
//!
//! Only regular files are read, and never more than `max_value_bytes` of one:
//! a FIFO (opened without waiting for a writer), a device such as
//! `/dev/zero`, a socket is refused, and so is anything on a kernel pseudo
//! file system (`/proc`, `/sys`, `/dev`: `/proc/self/environ` would show the
//! host's start-up environment) and the LLM key file (see
//! [`crate::secrets::refuse_file`]).

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mlua::{Lua, LuaString, Table};

use tracing::Instrument;

use super::module::Module;
use super::{AgentContext, arg_err, not_granted};

pub(super) fn register(lua: &Lua, ctx: &Arc<AgentContext>) -> mlua::Result<Table> {
    let Some(dir) = ctx.coord.config.capabilities(&ctx.role).read_files else {
        return not_granted(lua, "fs", &ctx.role, "read_files = \"DIR\"");
    };
    // Resolved once: the directory's real path is the fence.
    let root = std::fs::canonicalize(&dir).map_err(|e| {
        arg_err(
            "fs",
            format!("granted directory {} is unusable: {e}", dir.display()),
        )
    })?;
    let granted = Arc::new(Granted {
        root,
        max_bytes: ctx.coord.config.max_value_bytes,
    });
    let m = Module::new(lua, ctx)?;
    m.set("read", m.wait_fn(granted.clone(), read_fn)?)?;
    m.set("list", m.wait_fn(granted, list_fn)?)?;
    Ok(m.finish())
}

/// What the role may read: below `root`, files of at most `max_bytes`.
struct Granted {
    root: PathBuf,
    max_bytes: usize,
}

/// `fs.read(path)`: the file's bytes.
async fn read_fn(lua: Lua, g: Arc<Granted>, path: String) -> mlua::Result<LuaString> {
    let func = format!("fs.read('{path}')");
    let bytes = tokio::task::spawn_blocking(move || read(&g.root, &path, g.max_bytes))
        .instrument(crate::trace::host_call("fs.read"))
        .await
        .map_err(|e| arg_err(&func, e))?
        .map_err(|m| arg_err(&func, m))?;
    lua.create_string(bytes)
}

/// `fs.list([dir])`: the sorted names in the directory.
async fn list_fn(_: Lua, g: Arc<Granted>, dir: Option<String>) -> mlua::Result<Vec<String>> {
    let dir = dir.unwrap_or_else(|| ".".into());
    let func = format!("fs.list('{dir}')");
    tokio::task::spawn_blocking(move || list(&g.root, &dir, g.max_bytes))
        .instrument(crate::trace::host_call("fs.list"))
        .await
        .map_err(|e| arg_err(&func, e))?
        .map_err(|m| arg_err(&func, m))
}

/// The bytes of the regular file `path` below `root`, at most `max_bytes`.
fn read(root: &Path, path: &str, max_bytes: usize) -> Result<Vec<u8>, String> {
    let full = confine(root, path)?;
    crate::secrets::refuse_file(&full, None)?;
    // Without waiting for a FIFO's writer, and never through a symbolic link
    // swapped in since `confine` resolved the path.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(&full)
        .map_err(|e| format!("cannot open: {e}"))?;
    let meta = file.metadata().map_err(|e| format!("cannot open: {e}"))?;
    if !meta.file_type().is_file() {
        return Err(format!("{} is not a regular file", kind(&meta)));
    }
    crate::secrets::refuse_file(&full, Some(&file))?;
    let too_big = || format!("file is larger than max_value_bytes ({max_bytes} bytes)");
    if meta.len() > max_bytes as u64 {
        return Err(too_big());
    }
    let mut bytes = Vec::new();
    // The size can grow while we read; never read past the limit.
    file.take(max_bytes as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() > max_bytes {
        return Err(too_big());
    }
    Ok(bytes)
}

/// The sorted names in the directory `dir` below `root`, at most `max_bytes` of them.
fn list(root: &Path, dir: &str, max_bytes: usize) -> Result<Vec<String>, String> {
    let full = confine(root, dir)?;
    crate::secrets::refuse_file(&full, None)?;
    let entries = std::fs::read_dir(&full).map_err(|e| format!("cannot open: {e}"))?;
    let mut names = Vec::new();
    let mut size = 0;
    for entry in entries {
        let name = entry
            .map_err(|e| format!("cannot read: {e}"))?
            .file_name()
            .to_string_lossy()
            .into_owned();
        size += name.len() + 3;
        if size > max_bytes {
            return Err(format!(
                "the names are larger than max_value_bytes ({max_bytes} bytes)"
            ));
        }
        names.push(name);
    }
    names.sort();
    Ok(names)
}

/// What a file that is not regular is, for the message.
fn kind(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else {
        "it"
    }
}

/// The real path of `path` below `root`, or why it is refused.
fn confine(root: &Path, path: &str) -> Result<PathBuf, String> {
    if path.is_empty() || Path::new(path).is_absolute() {
        return Err("expected a path relative to the granted directory".into());
    }
    let full = root
        .join(path)
        .canonicalize()
        .map_err(|e| format!("cannot open: {e}"))?;
    if !full.starts_with(root) {
        return Err(format!(
            "path leads outside the granted directory {}",
            root.display()
        ));
    }
    Ok(full)
}
