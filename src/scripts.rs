//! The script registry: every role script and Lua module the agents can load,
//! by name, with a version that moves on every change.
//!
//! Agents read code from here, never from disk, so the reloader can swap a
//! script for all agents by replacing one entry.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::RwLock;

use crate::error::{Error, Result};

/// The stdlib modules compiled into the binary; a file of the same name in the
/// stdlib directory overrides one.
const EMBEDDED_STDLIB: &[(&str, &str)] = &[
    ("plan", include_str!("../stdlib/plan.lua")),
    ("validate", include_str!("../stdlib/validate.lua")),
    ("retry", include_str!("../stdlib/retry.lua")),
    ("pretty", include_str!("../stdlib/pretty.lua")),
    ("testing", include_str!("../stdlib/testing.lua")),
];

/// One Lua source file.
#[derive(Debug, Clone, PartialEq)]
pub struct Script {
    /// Role or module name (`beta`, `plan`, `lib.util`).
    pub name: String,
    /// Path shown in errors, as the user wrote it (`scripts/beta.lua`).
    pub path: PathBuf,
    /// The Lua source.
    pub source: Arc<str>,
    /// Registry version at which this script was (re)loaded.
    pub version: u64,
}

impl Script {
    /// The chunk name Lua reports in errors: `@` + path.
    pub fn chunk_name(&self) -> String {
        format!("@{}", self.path.display())
    }
}

/// What a registry entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScriptKind {
    /// `scripts/<role>.lua`: an agent role.
    Role,
    /// A module reachable with `require`.
    Module,
}

/// Role scripts and modules by name.
pub struct ScriptRegistry {
    scripts_dir: PathBuf,
    stdlib_dir: PathBuf,
    roles: RwLock<BTreeMap<String, Arc<Script>>>,
    modules: RwLock<BTreeMap<String, Arc<Script>>>,
    version: AtomicU64,
}

/// True for names a role file may have: they become agent ids `name-N`.
pub fn is_role_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl ScriptRegistry {
    /// Reads every `*.lua` of `scripts_dir` as a role, modules below it and in
    /// `stdlib_dir` (when it exists) for `require`. Fails when `scripts_dir` is
    /// missing or holds no role.
    pub fn load(scripts_dir: &Path, stdlib_dir: &Path) -> Result<ScriptRegistry> {
        let origin = scripts_dir.display().to_string();
        if !scripts_dir.is_dir() {
            return Err(Error::bad_input(origin, "scripts directory does not exist"));
        }
        let registry = Self::with_embedded_stdlib(scripts_dir, stdlib_dir);
        if stdlib_dir.is_dir() {
            for (name, path) in lua_files(stdlib_dir, stdlib_dir)? {
                if !path.starts_with(stdlib_dir.join("meta")) {
                    registry.put_from_disk(ScriptKind::Module, &name, &path)?;
                }
            }
        }
        for (name, path) in lua_files(scripts_dir, scripts_dir)? {
            let top_level = path.parent() == Some(scripts_dir);
            if top_level && is_role_name(&name) {
                registry.put_from_disk(ScriptKind::Role, &name, &path)?;
            } else if !top_level {
                registry.put_from_disk(ScriptKind::Module, &name, &path)?;
            } else {
                return Err(Error::bad_input(
                    path.display().to_string(),
                    "a role file name must be letters, digits and '_' (it names the agents)",
                ));
            }
        }
        if registry.roles.read().is_empty() {
            return Err(Error::bad_input(
                origin,
                "scripts directory has no <role>.lua file",
            ));
        }
        Ok(registry)
    }

    /// A registry of the built-in stdlib and `roles` given as `(name, source)`,
    /// for programs that carry their agents with them (the benchmarks). Each
    /// role's path reads `<scripts_dir>/<name>.lua`; nothing is read from disk.
    pub fn from_sources(scripts_dir: &Path, roles: &[(&str, &str)]) -> ScriptRegistry {
        let registry = Self::with_embedded_stdlib(scripts_dir, Path::new("stdlib"));
        for (name, source) in roles {
            registry.roles.write().insert(
                name.to_string(),
                Arc::new(Script {
                    name: name.to_string(),
                    path: scripts_dir.join(format!("{name}.lua")),
                    source: Arc::from(*source),
                    version: 1,
                }),
            );
        }
        registry
    }

    fn with_embedded_stdlib(scripts_dir: &Path, stdlib_dir: &Path) -> ScriptRegistry {
        let registry = ScriptRegistry {
            scripts_dir: scripts_dir.to_path_buf(),
            stdlib_dir: stdlib_dir.to_path_buf(),
            roles: RwLock::default(),
            modules: RwLock::default(),
            version: AtomicU64::new(1),
        };
        for (name, source) in EMBEDDED_STDLIB {
            registry.modules.write().insert(
                name.to_string(),
                Arc::new(Script {
                    name: name.to_string(),
                    path: PathBuf::from(format!("stdlib/{name}.lua")),
                    source: Arc::from(*source),
                    version: 1,
                }),
            );
        }
        registry
    }

    /// The scripts directory.
    pub fn scripts_dir(&self) -> &Path {
        &self.scripts_dir
    }

    /// The stdlib directory.
    pub fn stdlib_dir(&self) -> &Path {
        &self.stdlib_dir
    }

    /// Moves on every change to any script.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// The script of `role`, or UnknownRole.
    pub fn role(&self, role: &str) -> Result<Arc<Script>> {
        self.roles
            .read()
            .get(role)
            .cloned()
            .ok_or_else(|| Error::UnknownRole {
                role: role.to_string(),
                dir: self.scripts_dir.clone(),
            })
    }

    /// Every role name, sorted.
    pub fn roles(&self) -> Vec<String> {
        self.roles.read().keys().cloned().collect()
    }

    /// The module `name` (`plan`, `lib.util`): the scripts directory's own first, then the stdlib.
    pub fn module(&self, name: &str) -> Option<Arc<Script>> {
        self.modules.read().get(name).cloned()
    }

    /// Every module, sorted by name.
    pub fn modules(&self) -> Vec<Arc<Script>> {
        self.modules.read().values().cloned().collect()
    }

    /// Every role script, sorted by name.
    pub fn role_scripts(&self) -> Vec<Arc<Script>> {
        self.roles.read().values().cloned().collect()
    }

    /// Replaces (or adds) a script with new source; returns the new entry.
    pub fn put(&self, kind: ScriptKind, name: &str, path: &Path, source: &str) -> Arc<Script> {
        let version = self.version.fetch_add(1, Ordering::AcqRel) + 1;
        let script = Arc::new(Script {
            name: name.to_string(),
            path: path.to_path_buf(),
            source: Arc::from(source),
            version,
        });
        let map = match kind {
            ScriptKind::Role => &self.roles,
            ScriptKind::Module => &self.modules,
        };
        map.write().insert(name.to_string(), script.clone());
        script
    }

    /// Removes a role: running agents keep their code, new spawns are refused.
    pub fn remove_role(&self, name: &str) -> bool {
        let removed = self.roles.write().remove(name).is_some();
        if removed {
            self.version.fetch_add(1, Ordering::AcqRel);
        }
        removed
    }

    fn put_from_disk(&self, kind: ScriptKind, name: &str, path: &Path) -> Result<()> {
        let source = std::fs::read_to_string(path).map_err(|e| {
            Error::bad_input(
                path.display().to_string(),
                format!("cannot read script: {e}"),
            )
        })?;
        let script = Arc::new(Script {
            name: name.to_string(),
            path: path.to_path_buf(),
            source: Arc::from(source),
            version: 1,
        });
        let map = match kind {
            ScriptKind::Role => &self.roles,
            ScriptKind::Module => &self.modules,
        };
        map.write().insert(name.to_string(), script);
        Ok(())
    }
}

/// The module name of `path` below `root`: `lib/util.lua` -> `lib.util`.
pub fn module_name(root: &Path, path: &Path) -> Option<String> {
    let rel = path.strip_prefix(root).ok()?;
    let stem = rel.with_extension("");
    let parts: Vec<String> = stem
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    Some(parts.join("."))
}

/// Every `*.lua` below `dir` (recursively), with its module name relative to `root`.
fn lua_files(dir: &Path, root: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| {
        Error::bad_input(
            dir.display().to_string(),
            format!("cannot read directory: {e}"),
        )
    })?;
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths {
        if path.is_dir() {
            out.extend(lua_files(&path, root)?);
        } else if path.extension().is_some_and(|e| e == "lua")
            && let Some(name) = module_name(root, &path)
        {
            out.push((name, path));
        }
    }
    Ok(out)
}
