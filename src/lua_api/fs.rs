//! `fs` (capability `read_files`): read files below the directory granted to
//! the role. `read(path)` returns the file's text, `list([dir])` the sorted
//! names in a directory. Paths are relative to the granted directory; one that
//! leads outside it (`..`, an absolute path, a symbolic link) is refused.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use mlua::{Lua, Table};

use super::{AgentContext, arg_err, not_granted};

pub(super) fn register(lua: &Lua, ctx: &Arc<AgentContext>) -> mlua::Result<Table> {
    let Some(dir) = ctx.coord.config.capabilities(&ctx.role).read_files else {
        return not_granted(lua, "fs", &ctx.role, "read_files = \"DIR\"");
    };
    // Resolved once: the directory's real path is the fence.
    let root = Arc::new(std::fs::canonicalize(&dir).map_err(|e| {
        arg_err(
            "fs",
            format!("granted directory {} is unusable: {e}", dir.display()),
        )
    })?);
    let max_bytes = ctx.coord.config.max_value_bytes;
    let t = lua.create_table()?;

    let r = root.clone();
    t.set(
        "read",
        lua.create_async_function(move |lua, path: String| {
            let root = r.clone();
            async move {
                let func = format!("fs.read('{path}')");
                let full = confine(&root, &path).map_err(|m| arg_err(&func, m))?;
                let meta = tokio::fs::metadata(&full)
                    .await
                    .map_err(|e| arg_err(&func, e))?;
                if meta.len() > max_bytes as u64 {
                    return Err(arg_err(
                        &func,
                        format!("file is larger than max_value_bytes ({max_bytes} bytes)"),
                    ));
                }
                let bytes = tokio::fs::read(&full)
                    .await
                    .map_err(|e| arg_err(&func, e))?;
                lua.create_string(bytes)
            }
        })?,
    )?;

    t.set(
        "list",
        lua.create_async_function(move |_, dir: Option<String>| {
            let root = root.clone();
            async move {
                let dir = dir.unwrap_or_else(|| ".".into());
                let func = format!("fs.list('{dir}')");
                let full = confine(&root, &dir).map_err(|m| arg_err(&func, m))?;
                let mut entries = tokio::fs::read_dir(&full)
                    .await
                    .map_err(|e| arg_err(&func, e))?;
                let mut names = Vec::new();
                while let Some(entry) = entries.next_entry().await.map_err(|e| arg_err(&func, e))? {
                    names.push(entry.file_name().to_string_lossy().into_owned());
                }
                names.sort();
                Ok(names)
            }
        })?,
    )?;
    Ok(t)
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
