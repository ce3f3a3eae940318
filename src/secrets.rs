//! Keeping the LLM API key inside the host: nothing a script can start or
//! open may read it.
//!
//! - [`take_from_environment`] runs first thing in `main`, before any thread
//!   starts. It reads the key (from `ORRERY_LLM_KEY_FILE`, `ORRERY_LLM_KEY`,
//!   `OPENAI_API_KEY` or `OPENROUTER_API_KEY`), overwrites the value in the
//!   process's initial environment block (which `/proc/<pid>/environ` keeps
//!   showing after `remove_var`), removes the variables, and makes the process
//!   non-dumpable, so that reading its `/proc/<pid>/environ`, `mem` or `maps`
//!   needs `CAP_SYS_PTRACE`.
//! - [`confine_child`] makes a program `exec.run` starts drop every
//!   capability (and gain none through setuid files) before it runs, so even
//!   when the host runs as root the program cannot read the host's memory.
//! - [`refuse_file`] is what `fs.read` asks before reading: never the key
//!   file, never a file of a kernel pseudo file system.

use std::path::Path;
use std::sync::OnceLock;

use crate::error::Error;
use crate::llm::{API_KEY_VARS, ApiKey};

/// Variable naming a file that holds the API key.
pub const KEY_FILE_VAR: &str = "ORRERY_LLM_KEY_FILE";

/// Longest key file read (bytes).
const MAX_KEY_FILE_BYTES: u64 = 64 * 1024;

/// What [`take_from_environment`] found.
struct Startup {
    /// The key and the variable it came from, or why it could not be read.
    key: Result<Option<(&'static str, ApiKey)>, Error>,
    /// Device and inode of the key file, when the key came from one.
    key_file: Option<(u64, u64)>,
}

static STARTUP: OnceLock<Startup> = OnceLock::new();

/// Takes the API key out of the process environment (see the module docs).
/// Call it before any other thread starts; later calls do nothing.
pub fn take_from_environment() {
    STARTUP.get_or_init(|| {
        let mut key_file = None;
        let key = read_key(&mut key_file);
        for var in API_KEY_VARS {
            scrub(var);
        }
        make_non_dumpable();
        Startup { key, key_file }
    });
}

/// The API key taken at start-up with the variable it came from (`None`
/// without one); an error naming the variable when a key file could not be
/// read or two variables disagree. Without [`take_from_environment`] having
/// run (a program using the library), the environment is read now.
pub fn startup_key() -> Result<Option<(&'static str, ApiKey)>, Error> {
    match STARTUP.get() {
        Some(startup) => startup.key.clone(),
        None => read_key(&mut None),
    }
}

fn read_key(key_file: &mut Option<(u64, u64)>) -> Result<Option<(&'static str, ApiKey)>, Error> {
    let var = |name: &str| {
        std::env::var(name)
            .ok()
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    if let Some(path) = var(KEY_FILE_VAR) {
        if var(API_KEY_VARS[0]).is_some() {
            return Err(Error::bad_input(
                format!(
                    "environment variables {KEY_FILE_VAR} and {}",
                    API_KEY_VARS[0]
                ),
                "both are set: give the key one way only",
            ));
        }
        let (key, identity) = read_key_file(Path::new(&path))?;
        *key_file = identity;
        return Ok(Some((KEY_FILE_VAR, key)));
    }
    Ok(API_KEY_VARS
        .iter()
        .find_map(|name| var(name).map(|v| (*name, ApiKey::new(v)))))
}

/// The key in the file at `path` (a regular file or a pipe, at most 64 KiB),
/// and the file's device and inode.
fn read_key_file(path: &Path) -> Result<(ApiKey, Option<(u64, u64)>), Error> {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    let origin = format!("environment variable {KEY_FILE_VAR}");
    let fail = |why: String| Error::bad_input(&origin, format!("{}: {why}", path.display()));
    use std::os::unix::fs::OpenOptionsExt;
    // Not blocking: opening a named pipe waits for a writer, and one that
    // never comes (fed once, by an earlier command) held every command for ever.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| fail(format!("cannot read: {e}")))?;
    let meta = file
        .metadata()
        .map_err(|e| fail(format!("cannot read: {e}")))?;
    let kind = meta.file_type();
    let pipe = std::os::unix::fs::FileTypeExt::is_fifo(&kind);
    if !kind.is_file() && !pipe {
        return Err(fail("not a regular file or a pipe".into()));
    }
    let mut text = String::new();
    if pipe {
        text = read_pipe(file, PIPE_WAIT).map_err(fail)?;
    } else {
        file.take(MAX_KEY_FILE_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(|e| fail(format!("cannot read: {e}")))?;
    }
    if text.len() as u64 > MAX_KEY_FILE_BYTES {
        return Err(fail(format!(
            "longer than {MAX_KEY_FILE_BYTES} bytes: not a key"
        )));
    }
    let key = text.trim();
    if key.is_empty() || key.contains(char::is_whitespace) {
        return Err(fail("expected one key, on a line of its own".into()));
    }
    let identity = kind.is_file().then(|| (meta.dev(), meta.ino()));
    Ok((ApiKey::new(key), identity))
}

/// How long a key pipe may stay without a writer, or without its key.
const PIPE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The text written into the pipe `file` (opened without blocking) until
/// its writer closes it, at most [`MAX_KEY_FILE_BYTES`] + 1 bytes; an error
/// when no writer has written anything within `wait`.
fn read_pipe(mut file: std::fs::File, wait: std::time::Duration) -> Result<String, String> {
    use std::io::Read;
    let deadline = std::time::Instant::now() + wait;
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match file.read(&mut chunk) {
            // The writer closed the pipe after writing: that is the key.
            Ok(0) if !bytes.is_empty() => break,
            Ok(n) if n > 0 => {
                bytes.extend_from_slice(&chunk[..n]);
                if bytes.len() as u64 > MAX_KEY_FILE_BYTES {
                    break;
                }
                continue;
            }
            // No writer yet (end of file), or one that has not written yet.
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("cannot read: {e}")),
        }
        if std::time::Instant::now() >= deadline {
            return Err(format!(
                "a pipe no program wrote a key into within {} s (a pipe is read once: \
                 was it fed for an earlier command?)",
                wait.as_secs()
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    String::from_utf8(bytes).map_err(|_| "not UTF-8 text: not a key".to_string())
}

/// Overwrites the value of `name` in the environment block with zero bytes,
/// then removes the variable.
fn scrub(name: &str) {
    #[cfg(target_os = "linux")]
    // SAFETY: called from `take_from_environment`, before any other thread
    // exists; `environ` is the libc array of NUL-terminated `NAME=value`
    // strings, and overwriting a value's bytes with zeros keeps it terminated.
    unsafe {
        let prefix = format!("{name}=");
        let mut entry = libc::environ;
        while !entry.is_null() && !(*entry).is_null() {
            let text = std::ffi::CStr::from_ptr(*entry);
            if text.to_bytes().starts_with(prefix.as_bytes()) {
                let value = (*entry).add(prefix.len());
                std::ptr::write_bytes(value, 0, text.to_bytes().len() - prefix.len());
            }
            entry = entry.add(1);
        }
        std::env::remove_var(name);
    }
    #[cfg(not(target_os = "linux"))]
    // SAFETY: as above, no other thread exists yet.
    unsafe {
        std::env::remove_var(name)
    };
}

/// Without `CAP_SYS_PTRACE`, nobody (same user included) can read a
/// non-dumpable process's `/proc/<pid>/environ`, `mem` or `maps`.
fn make_non_dumpable() {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
}

/// Makes the program `command` starts run with no capabilities and unable to
/// gain any (no setuid, no file capabilities): root included, it cannot read
/// the memory or environment of the non-dumpable host.
pub fn confine_child(command: &mut tokio::process::Command) {
    #[cfg(target_os = "linux")]
    // SAFETY: the closure runs in the child between fork and exec and makes
    // only async-signal-safe system calls, allocating nothing.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL,
                0,
                0,
                0,
            );
            // Fails without CAP_SETPCAP (an unprivileged host has no
            // capabilities to drop): that is fine.
            for cap in 0..64 {
                libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0);
            }
            #[repr(C)]
            struct Header {
                version: u32,
                pid: i32,
            }
            #[repr(C)]
            #[derive(Clone, Copy)]
            struct Data {
                effective: u32,
                permitted: u32,
                inheritable: u32,
            }
            let header = Header {
                version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
                pid: 0,
            };
            let data = [Data {
                effective: 0,
                permitted: 0,
                inheritable: 0,
            }; 2];
            if libc::syscall(libc::SYS_capset, &header, data.as_ptr()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Directories whose files are the kernel's views of processes and devices.
const PSEUDO_TREES: &[&str] = &["/proc", "/sys", "/dev"];

/// Why `fs` must not read the file at `path` (its real path) or list the
/// directory there, if it must not: a kernel pseudo file system
/// (`/proc/self/environ` holds the start-up environment), or the key file.
pub fn refuse_file(path: &Path, file: Option<&std::fs::File>) -> Result<(), String> {
    if PSEUDO_TREES.iter().any(|tree| path.starts_with(tree)) {
        return Err(format!(
            "{} is part of the kernel's process and device files, which scripts may not read",
            path.display()
        ));
    }
    let Some(file) = file else {
        return Ok(());
    };
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: fstatfs on an open descriptor into a zeroed struct.
        let kind = unsafe {
            let mut stat: libc::statfs = std::mem::zeroed();
            (libc::fstatfs(file.as_raw_fd(), &mut stat) == 0).then_some(stat.f_type)
        };
        const PSEUDO: &[i64] = &[
            0x9fa0,      // proc
            0x6265_6572, // sysfs
            0x6462_6720, // debugfs
            0x7472_6163, // tracefs
            0x7363_6673, // securityfs
            0x0027_e0eb, // cgroup
            0x6367_7270, // cgroup2
            0x1cd1,      // devpts
        ];
        // `f_type`'s integer type differs between platforms.
        #[allow(clippy::unnecessary_cast)]
        let pseudo = kind.is_some_and(|k| PSEUDO.contains(&(k as i64)));
        if pseudo {
            return Err(format!(
                "{} is on a kernel pseudo file system, which scripts may not read",
                path.display()
            ));
        }
    }
    if let Some((dev, ino)) = STARTUP.get().and_then(|s| s.key_file) {
        use std::os::unix::fs::MetadataExt;
        if let Ok(meta) = file.metadata()
            && meta.dev() == dev
            && meta.ino() == ino
        {
            return Err(format!(
                "{} holds the LLM API key ({KEY_FILE_VAR})",
                path.display()
            ));
        }
    }
    Ok(())
}
