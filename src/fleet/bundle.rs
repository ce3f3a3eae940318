//! The code a submitted task runs with: every file of its scripts directory
//! and of its stdlib directory, named by the SHA-1 of their contents, stored
//! once under `fleet:bundle:{hash}` and written out by each worker into a
//! cache directory of its own, so workers on other hosts run the same code.

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
    /// Reads every file below `scripts_dir` and `stdlib_dir` (when it
    /// exists). Errors name the file that could not be read.
    pub fn read(scripts_dir: &Path, stdlib_dir: &Path) -> Result<Bundle> {
        let mut bundle = Bundle {
            scripts: read_dir(scripts_dir)?,
            stdlib: BTreeMap::new(),
        };
        if stdlib_dir.is_dir() {
            bundle.stdlib = read_dir(stdlib_dir)?;
        }
        Ok(bundle)
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
    pub fn materialize(&self, cache: &Path) -> Result<(PathBuf, PathBuf)> {
        let hash = self.hash();
        let root = cache.join(&hash);
        let scripts = root.join("scripts");
        let stdlib = root.join("stdlib");
        if root.is_dir() {
            return Ok((scripts, stdlib));
        }
        // Written aside and renamed, so two tasks of one bundle never see half of it.
        let partial = cache.join(format!("{hash}.{:08x}.partial", rand::random::<u32>()));
        let io = |what: &Path, e: std::io::Error| {
            Error::Coordination(format!("cannot write {}: {e}", what.display()))
        };
        for (dir, files) in [("scripts", &self.scripts), ("stdlib", &self.stdlib)] {
            let base = partial.join(dir);
            std::fs::create_dir_all(&base).map_err(|e| io(&base, e))?;
            for (rel, text) in files {
                if rel.split('/').any(|part| part == ".." || part.is_empty()) {
                    return Err(Error::Coordination(format!(
                        "bundle {hash} names a file outside its directory: {rel}"
                    )));
                }
                let path = base.join(rel);
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
                }
                std::fs::write(&path, text).map_err(|e| io(&path, e))?;
            }
        }
        if std::fs::rename(&partial, &root).is_err() {
            // Another task wrote the same bundle first: use that one.
            let _ = std::fs::remove_dir_all(&partial);
        }
        Ok((scripts, stdlib))
    }
}

/// Every file below `dir`, by its `/`-separated path relative to `dir`.
fn read_dir(dir: &Path) -> Result<BTreeMap<String, String>> {
    let mut files = BTreeMap::new();
    for path in files_below(dir)? {
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
        assert_eq!(Bundle::read(&scripts, &dir.join("none")).unwrap(), a);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
