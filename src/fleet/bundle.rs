//! The code a submitted task runs with: every `.lua` file of its scripts
//! directory and of its stdlib directory, named by the SHA-1 of their
//! contents, stored once under `fleet:bundle:{hash}` and written out by each
//! worker into a cache directory of its own, so workers on other hosts run
//! the same code. Other files are left out: a worker reads nothing else
//! there (roles and modules are `.lua` files), and the bundle holds text
//! while such a file may be anything (an image, an editor's index).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::scripts::{files_below, read_script};

/// The files of a task's code, by path relative to their directory.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Bundle {
    /// `scripts/`: one `<role>.lua` per role, modules below.
    pub scripts: BTreeMap<String, String>,
    /// The stdlib directory's modules (empty: the built-in stdlib).
    pub stdlib: BTreeMap<String, String>,
}

impl Bundle {
    /// Reads every `.lua` file below `scripts_dir` and `stdlib_dir` (when
    /// it exists); returns the bundle and the other files, left out, for
    /// the caller to name. Errors name the file that could not be read.
    pub fn read(scripts_dir: &Path, stdlib_dir: &Path) -> Result<(Bundle, Vec<PathBuf>)> {
        let mut left_out = Vec::new();
        let mut bundle = Bundle {
            scripts: read_dir(scripts_dir, &mut left_out)?,
            stdlib: BTreeMap::new(),
        };
        if stdlib_dir.is_dir() {
            bundle.stdlib = read_dir(stdlib_dir, &mut left_out)?;
        }
        Ok((bundle, left_out))
    }

    /// The bundle as stored: JSON with sorted keys, so equal code gives equal bytes.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a map of strings serializes")
    }

    /// The content hash naming the bundle (SHA-1 of [`Bundle::to_json`], hex).
    pub fn hash(&self) -> String {
        sha1_smol::Sha1::from(self.to_json()).digest().to_string()
    }

    /// Writes the bundle below `cache/<hash>/` (once: a directory that is
    /// there already is used as it is) and returns its scripts and stdlib
    /// directories.
    ///
    /// A bundle that can never be written, whatever the disk (a file named
    /// outside its directory, or otherwise not as [`Bundle::read`] makes
    /// them), is a bad-input error naming the file, checked before anything
    /// is written; an I/O error (a full disk) is a coordination error, worth
    /// another try. Either way nothing is left in `cache`.
    pub fn materialize(&self, cache: &Path) -> Result<(PathBuf, PathBuf)> {
        let hash = self.hash();
        let root = cache.join(&hash);
        let scripts = root.join("scripts");
        let stdlib = root.join("stdlib");
        if root.is_dir() {
            return Ok((scripts, stdlib));
        }
        self.check()
            .map_err(|why| Error::bad_input(format!("code bundle {hash}"), why))?;
        // Written aside and renamed, so two tasks of one bundle never see half of it.
        let partial = cache.join(format!("{hash}.{:08x}.partial", rand::random::<u32>()));
        let written = self.write(&partial).and_then(|()| {
            std::fs::rename(&partial, &root).or_else(|e| match root.is_dir() {
                // Another task wrote the same bundle first: use that one.
                true => Ok(()),
                false => Err(io_error(&root, e)),
            })
        });
        // Gone after a rename; otherwise half a bundle, or one that lost the race.
        let _ = std::fs::remove_dir_all(&partial);
        written.map(|()| (scripts, stdlib))
    }

    /// Why the bundle cannot be written out as it is, naming the file:
    /// every path must be a relative path of `.lua` file (no empty, `.` or
    /// `..` part, no NUL byte), and no file may stand where another's
    /// directory goes.
    fn check(&self) -> std::result::Result<(), String> {
        for (dir, files) in [("scripts", &self.scripts), ("stdlib", &self.stdlib)] {
            for rel in files.keys() {
                let name = format!("{dir}/{rel}");
                if rel
                    .split('/')
                    .any(|part| part.is_empty() || part == "." || part == "..")
                {
                    return Err(format!("names a file outside its directory: {name}"));
                }
                if rel.contains('\0') || !rel.ends_with(".lua") {
                    return Err(format!("names a file that is not a Lua script: {name}"));
                }
                // Its directories, as files of the bundle (`a.lua` of `a.lua/b.lua`).
                let mut parent = rel.as_str();
                while let Some((up, _)) = parent.rsplit_once('/') {
                    if files.contains_key(up) {
                        return Err(format!("names {name} below the file {dir}/{up}"));
                    }
                    parent = up;
                }
            }
        }
        Ok(())
    }

    /// Writes the files below `root` (which must not exist yet).
    fn write(&self, root: &Path) -> Result<()> {
        for (dir, files) in [("scripts", &self.scripts), ("stdlib", &self.stdlib)] {
            let base = root.join(dir);
            std::fs::create_dir_all(&base).map_err(|e| io_error(&base, e))?;
            for (rel, text) in files {
                let path = base.join(rel);
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| io_error(parent, e))?;
                }
                std::fs::write(&path, text).map_err(|e| io_error(&path, e))?;
            }
        }
        Ok(())
    }
}

/// An I/O error writing a bundle out: worth another try.
fn io_error(what: &Path, e: std::io::Error) -> Error {
    Error::Coordination(format!("cannot write {}: {e}", what.display()))
}

/// Every `.lua` file below `dir`, by its `/`-separated path relative to
/// `dir`; the other files are added to `left_out`.
fn read_dir(dir: &Path, left_out: &mut Vec<PathBuf>) -> Result<BTreeMap<String, String>> {
    let mut files = BTreeMap::new();
    for path in files_below(dir)? {
        if path.extension().is_none_or(|e| e != "lua") {
            left_out.push(path);
            continue;
        }
        let rel = path
            .strip_prefix(dir)
            .unwrap_or(&path)
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/");
        files.insert(rel, read_script(&path)?);
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_code_has_equal_hash_and_round_trips() {
        let mut a = Bundle::default();
        a.scripts.insert("alpha.lua".into(), "return {}".into());
        a.scripts.insert("lib/x.lua".into(), "return 1".into());
        let b: Bundle = serde_json::from_str(&a.to_json()).unwrap();
        assert_eq!(a.hash(), b.hash());
        let dir = std::env::temp_dir().join(format!("orrery-bundle-{}", rand::random::<u32>()));
        std::fs::create_dir_all(&dir).unwrap();
        let (scripts, _) = a.materialize(&dir).unwrap();
        let (read, left_out) = Bundle::read(&scripts, &dir.join("none")).unwrap();
        assert_eq!(read, a);
        assert!(left_out.is_empty(), "{left_out:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A file that is not Lua (an image, not UTF-8) is left out and named,
    /// not refused as a script that is not UTF-8.
    #[test]
    fn a_file_that_is_not_lua_is_left_out_and_named() {
        let dir = std::env::temp_dir().join(format!("orrery-bundle-{}", rand::random::<u32>()));
        let scripts = dir.join("scripts");
        std::fs::create_dir_all(scripts.join("img")).unwrap();
        std::fs::write(scripts.join("alpha.lua"), "return {}").unwrap();
        std::fs::write(scripts.join("img/logo.png"), b"\x89PNG\r\n\x1a\n\xff\xfe").unwrap();
        std::fs::write(scripts.join("notes.md"), "# notes").unwrap();
        let read = Bundle::read(&scripts, &dir.join("none"));
        let _ = std::fs::remove_dir_all(&dir);
        let (bundle, left_out) = read.unwrap();
        assert_eq!(bundle.scripts.keys().collect::<Vec<_>>(), ["alpha.lua"]);
        assert_eq!(
            left_out,
            [scripts.join("img/logo.png"), scripts.join("notes.md")]
        );
    }
    /// The entries of `dir`, by name.
    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// A bundle naming a file it cannot hold is bad input naming the file,
    /// refused before anything is written.
    #[test]
    fn a_bundle_that_can_never_be_written_is_bad_input_naming_the_file() {
        let cache = std::env::temp_dir().join(format!("orrery-bundle-{}", rand::random::<u32>()));
        std::fs::create_dir_all(&cache).unwrap();
        let cases = [
            (&["../x.lua"][..], "outside its directory: scripts/../x.lua"),
            (&["/etc/x.lua"], "outside its directory: scripts//etc/x.lua"),
            (&["a//b.lua"], "outside its directory: scripts/a//b.lua"),
            (&["./a.lua"], "outside its directory: scripts/./a.lua"),
            (&["notes.md"], "not a Lua script: scripts/notes.md"),
            (&["a\0.lua"], "not a Lua script: scripts/a\0.lua"),
            (
                &["a.lua", "a.lua/b.lua"],
                "names scripts/a.lua/b.lua below the file scripts/a.lua",
            ),
        ];
        for (files, expected) in cases {
            let mut bundle = Bundle::default();
            bundle
                .scripts
                .insert("alpha.lua".into(), "return {}".into());
            for f in files {
                bundle.scripts.insert(f.to_string(), "return 1".into());
            }
            let e = bundle.materialize(&cache).unwrap_err();
            assert_eq!(
                e.kind(),
                crate::error::ErrorKind::BadInput,
                "{files:?}: {e}"
            );
            let text = e.to_string();
            assert!(
                text.contains(expected) && text.contains(&bundle.hash()),
                "{text}"
            );
            assert_eq!(entries(&cache), Vec::<String>::new(), "{files:?}");
        }
        let _ = std::fs::remove_dir_all(&cache);
    }

    /// A write that fails half way (a name the file system refuses, as a
    /// full disk would) is worth another try, and leaves nothing behind.
    #[test]
    fn a_write_that_fails_leaves_nothing_in_the_cache() {
        let cache = std::env::temp_dir().join(format!("orrery-bundle-{}", rand::random::<u32>()));
        std::fs::create_dir_all(&cache).unwrap();
        let mut bundle = Bundle::default();
        bundle
            .scripts
            .insert("alpha.lua".into(), "return {}".into());
        bundle.scripts.insert("lib/a.lua".into(), "return 1".into());
        bundle
            .scripts
            .insert(format!("{}.lua", "x".repeat(300)), "return 2".into());
        for _ in 0..3 {
            let e = bundle.materialize(&cache).unwrap_err();
            assert_eq!(e.kind(), crate::error::ErrorKind::Coordination, "{e}");
            assert!(e.to_string().contains("cannot write"), "{e}");
        }
        let left = entries(&cache);
        let _ = std::fs::remove_dir_all(&cache);
        assert_eq!(left, Vec::<String>::new());
    }
}
