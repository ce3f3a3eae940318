//! Reading the files scripts come from, without trusting them: only regular
//! files, never more than [`MAX_SCRIPT_BYTES`], and directory walks that
//! refuse symbolic link loops and stop at [`MAX_ENTRIES`] entries. A FIFO or
//! a link to `/dev/zero` named `x.lua` is an error naming it, never a hang.

use std::path::{Path, PathBuf};

use super::is_editor_artifact;
use crate::error::{Error, Result};

/// Largest script or module read (bytes).
pub const MAX_SCRIPT_BYTES: u64 = 16 * 1024 * 1024;

/// Most files and directories walked below one scripts or stdlib directory.
pub const MAX_ENTRIES: usize = 10_000;

/// Reads the script at `path`: a regular file (symbolic links followed) of
/// at most [`MAX_SCRIPT_BYTES`] of UTF-8. A FIFO, device or socket is
/// refused without being opened for reading, so it can neither block nor
/// feed endless bytes. Errors name the path; text that is not UTF-8 is a
/// Script error naming the line of its first invalid byte.
pub fn read_script(path: &Path) -> Result<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let origin = path.display().to_string();
    let fail = |why: String| Error::bad_input(&origin, why);
    let check = |meta: &std::fs::Metadata| {
        if meta.is_file() {
            return Ok(());
        }
        Err(fail(format!(
            "not a regular file ({}): scripts must be regular files",
            file_kind(meta)
        )))
    };
    check(&std::fs::metadata(path).map_err(|e| fail(format!("cannot read script: {e}")))?)?;
    // Non-blocking, in case a FIFO took the file's place since the look above.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| fail(format!("cannot read script: {e}")))?;
    check(
        &file
            .metadata()
            .map_err(|e| fail(format!("cannot read script: {e}")))?,
    )?;
    let mut bytes = Vec::new();
    file.take(MAX_SCRIPT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(format!("cannot read script: {e}")))?;
    if bytes.len() as u64 > MAX_SCRIPT_BYTES {
        return Err(fail(format!(
            "larger than {MAX_SCRIPT_BYTES} bytes: not read"
        )));
    }
    let text =
        String::from_utf8(bytes).map_err(|e| not_utf8(&origin, e.as_bytes(), e.utf8_error()))?;
    // A byte-order mark some editors write: Lua's own `lua` skips it too.
    Ok(match text.strip_prefix('\u{FEFF}') {
        Some(rest) => rest.to_string(),
        None => text,
    })
}

/// A script that is not UTF-8 is a bad script, like one that does not
/// compile (exit 3, not bad input): named at the line, column and byte
/// offset of its first invalid byte, for an editor to go to.
fn not_utf8(origin: &str, bytes: &[u8], e: std::str::Utf8Error) -> Error {
    let at = e.valid_up_to();
    let before = &bytes[..at];
    let (line, line_start) = line_and_start(before);
    // Columns count characters: the bytes before `at` are valid UTF-8.
    let column = 1 + String::from_utf8_lossy(&before[line_start..])
        .chars()
        .count();
    Error::Script {
        message: format!(
            "{origin}:{line}: not UTF-8 text: byte {:#04x} at offset {at} \
             (line {line}, column {column}) is not valid UTF-8",
            bytes[at]
        ),
    }
}

/// The 1-based line at the end of `text` and the offset where it starts,
/// counting line breaks as Lua's lexer does (`\n`, `\r`, `\r\n` and
/// `\n\r` each one break), so the line is the one Lua's errors would name.
fn line_and_start(text: &[u8]) -> (usize, usize) {
    let (mut line, mut start, mut i) = (1, 0, 0);
    while i < text.len() {
        let b = text[i];
        if b == b'\n' || b == b'\r' {
            let pair = text
                .get(i + 1)
                .is_some_and(|&c| (c == b'\n' || c == b'\r') && c != b);
            i += if pair { 2 } else { 1 };
            line += 1;
            start = i;
        } else {
            i += 1;
        }
    }
    (line, start)
}

/// What a file that is not regular is, for messages.
fn file_kind(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    match () {
        _ if t.is_dir() => "a directory",
        _ if t.is_fifo() => "a FIFO",
        _ if t.is_socket() => "a socket",
        _ if t.is_char_device() || t.is_block_device() => "a device",
        _ => "not a file",
    }
}

/// Every `*.lua` below `dir` (recursively, symbolic links followed), sorted,
/// without editors' scratch files. A symbolic link leading back to a
/// directory it is in is an error naming it, and so are more than
/// [`MAX_ENTRIES`] entries.
pub(super) fn lua_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut entries = 0;
    walk(dir, &mut Vec::new(), &mut entries, &mut |path| {
        if path.extension().is_some_and(|e| e == "lua") {
            out.push(path.to_path_buf());
        }
    })?;
    Ok(out)
}

/// Every file below `dir` (recursively, as [`lua_files`] walks), sorted,
/// without editors' scratch files; for the reloader's rescans.
pub fn files_below(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut entries = 0;
    walk(dir, &mut Vec::new(), &mut entries, &mut |path| {
        out.push(path.to_path_buf())
    })?;
    Ok(out)
}

/// Walks `dir`, calling `found` for each entry that is not a directory,
/// skipping editors' scratch files and hidden entries.
/// `ancestors` holds the real paths of the directories being walked, to
/// catch symbolic link loops; `entries` counts every entry seen.
fn walk(
    dir: &Path,
    ancestors: &mut Vec<PathBuf>,
    entries: &mut usize,
    found: &mut dyn FnMut(&Path),
) -> Result<()> {
    let origin = || dir.display().to_string();
    let real = dir
        .canonicalize()
        .map_err(|e| Error::bad_input(origin(), format!("cannot read directory: {e}")))?;
    if let Some(ancestor) = ancestors.iter().find(|a| **a == real) {
        return Err(Error::bad_input(
            origin(),
            format!(
                "a symbolic link loop: this directory is {}, which contains it",
                ancestor.display()
            ),
        ));
    }
    let listing = std::fs::read_dir(dir)
        .map_err(|e| Error::bad_input(origin(), format!("cannot read directory: {e}")))?;
    let mut paths: Vec<PathBuf> = listing.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    ancestors.push(real);
    for path in paths {
        *entries += 1;
        if *entries > MAX_ENTRIES {
            ancestors.pop();
            return Err(Error::bad_input(
                origin(),
                format!("more than {MAX_ENTRIES} files and directories below it"),
            ));
        }
        let scratch = path
            .file_name()
            .is_some_and(|n| is_editor_artifact(&n.to_string_lossy()));
        if scratch {
            continue;
        }
        if path.is_dir() {
            if let Err(e) = walk(&path, ancestors, entries, found) {
                ancestors.pop();
                return Err(e);
            }
        } else {
            found(&path);
        }
    }
    ancestors.pop();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::line_and_start;

    /// Lines are counted as Lua counts them, whatever the line ends.
    #[test]
    fn lines_end_as_lua_ends_them() {
        assert_eq!(line_and_start(b"a"), (1, 0));
        assert_eq!(line_and_start(b"a\nb\nc"), (3, 4));
        assert_eq!(line_and_start(b"a\r\nb\r\nc"), (3, 6));
        assert_eq!(
            line_and_start(b"a\rb\rc"),
            (3, 4),
            "CR alone, old Mac style"
        );
        assert_eq!(line_and_start(b"a\n\rb"), (2, 3));
        assert_eq!(line_and_start(b"a\n\nb"), (3, 3), "two LFs are two lines");
    }
}
