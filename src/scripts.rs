//! The script registry: every role script and Lua module the agents can load,
//! by name, with a version that moves on every change.
//!
//! Agents read code from here, never from disk, so the reloader can swap a
//! script for all agents by replacing one entry. The registry also keeps which
//! live agent runs which code ([`CodeUsers`]), so a reload can name the agents
//! it affects.

mod files;
mod users;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::RwLock;

use crate::error::{Error, Result};
use crate::task::is_role_name;

use files::lua_files;
pub use files::{MAX_ENTRIES, MAX_SCRIPT_BYTES, files_below, read_script};
pub use users::CodeUsers;

/// The stdlib modules compiled into the binary; a file of the same name in the
/// stdlib directory overrides one.
const EMBEDDED_STDLIB: &[(&str, &str)] = &[
    ("check", include_str!("../stdlib/check.lua")),
    ("plan", include_str!("../stdlib/plan.lua")),
    ("validate", include_str!("../stdlib/validate.lua")),
    ("retry", include_str!("../stdlib/retry.lua")),
    ("pretty", include_str!("../stdlib/pretty.lua")),
    ("testing", include_str!("../stdlib/testing.lua")),
    ("prompt", include_str!("../stdlib/prompt.lua")),
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
    /// Roles whose file was deleted while the task ran, with that file.
    deleted: RwLock<BTreeMap<String, PathBuf>>,
    /// Modules whose entry is the built-in one compiled into the binary (no
    /// file overrides it, or the file that did was deleted). Locked after
    /// `modules` when both are.
    built_in: RwLock<BTreeSet<String>>,
    /// Moves on every change; bumped while the changed map is write-locked, so
    /// a reader that saw the new version and then reads the map sees the change.
    version: AtomicU64,
    users: CodeUsers,
}

/// True for the names of files editors write beside the one being edited —
/// swap files, backups, lock files, temporary copies (`.beta.lua.swp`,
/// `beta.lua~`, `.#beta.lua`, `#beta.lua#`, `4913`, `beta.lua.tmp`,
/// `beta.lua___jb_tmp___`) — and of hidden files: they are never scripts.
pub fn is_editor_artifact(file_name: &str) -> bool {
    const SUFFIXES: &[&str] = &[
        "~",
        ".swp",
        ".swo",
        ".swx",
        ".tmp",
        ".temp",
        ".bak",
        ".orig",
        "___jb_tmp___",
        "___jb_old___",
        ".kate-swp",
        ".crswap",
    ];
    file_name.is_empty()
        || file_name.starts_with('.')
        || file_name.starts_with('#')
        || file_name.starts_with('~')
        || file_name == "4913"
        || SUFFIXES.iter().any(|s| file_name.ends_with(s))
}

impl ScriptRegistry {
    /// Reads every `*.lua` of `scripts_dir` as a role, modules below it and in
    /// `stdlib_dir` (when it exists) for `require`. Fails when `scripts_dir` is
    /// missing or holds no role.
    pub fn load(scripts_dir: &Path, stdlib_dir: &Path) -> Result<ScriptRegistry> {
        let origin = scripts_dir.display().to_string();
        if !scripts_dir.is_dir() {
            let absolute =
                std::path::absolute(scripts_dir).unwrap_or_else(|_| scripts_dir.to_path_buf());
            return Err(Error::bad_input(
                origin,
                format!(
                    "scripts directory does not exist ({}): pass --scripts DIR, the \
                     directory holding one <role>.lua per role",
                    absolute.display()
                ),
            ));
        }
        let registry = Self::with_embedded_stdlib(scripts_dir, stdlib_dir);
        let mut files = Vec::new();
        if stdlib_dir.is_dir() {
            files.extend(lua_files(stdlib_dir)?);
        }
        // Scripts after the stdlib: a module of the scripts directory overrides one of the stdlib.
        files.extend(lua_files(scripts_dir)?);
        for path in files {
            if let Some((kind, name)) = registry.classify(&path)? {
                registry.put_from_disk(kind, &name, &path)?;
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
            deleted: RwLock::default(),
            built_in: RwLock::default(),
            version: AtomicU64::new(1),
            users: CodeUsers::default(),
        };
        for (name, source) in EMBEDDED_STDLIB {
            registry.built_in.write().insert(name.to_string());
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

    /// The script of `role`; RoleDeleted when its file was deleted while the
    /// task ran, UnknownRole when there never was one.
    pub fn role(&self, role: &str) -> Result<Arc<Script>> {
        if let Some(script) = self.roles.read().get(role) {
            return Ok(script.clone());
        }
        match self.deleted.read().get(role) {
            Some(path) => Err(Error::RoleDeleted {
                role: role.to_string(),
                path: path.clone(),
            }),
            None => Err(Error::UnknownRole {
                role: role.to_string(),
                dir: self.scripts_dir.clone(),
            }),
        }
    }

    /// What `path` (a path as the user wrote it, below the scripts or stdlib
    /// directory) is: a role, a module, or nothing the registry holds (`None`:
    /// not a `.lua` file, an editor's scratch file, or the stdlib's `meta/`
    /// annotations). Fails for a top-level scripts file whose name cannot name
    /// a role.
    pub fn classify(&self, path: &Path) -> Result<Option<(ScriptKind, String)>> {
        let root = [&self.stdlib_dir, &self.scripts_dir]
            .into_iter()
            .find(|root| path.starts_with(root));
        let rel = root.map_or(path, |root| path.strip_prefix(root).unwrap_or(path));
        // Scratch files, and anything in a hidden directory (`.git`), as `load` skips them.
        let scratch = rel
            .components()
            .any(|c| is_editor_artifact(&c.as_os_str().to_string_lossy()));
        if path.extension().is_none_or(|e| e != "lua") || scratch {
            return Ok(None);
        }
        if let Ok(rel) = path.strip_prefix(&self.stdlib_dir) {
            if rel.starts_with("meta") {
                return Ok(None);
            }
            return Ok(module_name(&self.stdlib_dir, path).map(|n| (ScriptKind::Module, n)));
        }
        if path.parent() == Some(self.scripts_dir.as_path()) {
            let name = module_name(&self.scripts_dir, path).unwrap_or_default();
            if !is_role_name(&name) {
                return Err(Error::bad_input(
                    path.display().to_string(),
                    "a role file name must be letters, digits and '_' (it names the agents)",
                ));
            }
            return Ok(Some((ScriptKind::Role, name)));
        }
        Ok(module_name(&self.scripts_dir, path).map(|n| (ScriptKind::Module, n)))
    }

    /// Which live agent runs which code.
    pub fn users(&self) -> &CodeUsers {
        &self.users
    }

    /// Every role name, sorted.
    pub fn roles(&self) -> Vec<String> {
        self.roles.read().keys().cloned().collect()
    }

    /// The module `name` (`plan`, `lib.util`): the scripts directory's own first, then the stdlib.
    pub fn module(&self, name: &str) -> Option<Arc<Script>> {
        self.modules.read().get(name).cloned()
    }

    /// True when the module `name` is the built-in one compiled into the
    /// binary, not read from a file.
    pub fn is_built_in(&self, name: &str) -> bool {
        self.built_in.read().contains(name)
    }

    /// True when a VM that loaded module `name` at `version` should load it
    /// again: the registry holds other code of it, read from a file. The
    /// built-in module standing in for a deleted file is not new code for the
    /// VMs that loaded the file: they keep their copy, as they do when no
    /// module of that name is left.
    pub fn module_changed(&self, name: &str, version: u64) -> bool {
        let modules = self.modules.read();
        modules.get(name).is_some_and(|s| s.version != version) && !self.is_built_in(name)
    }

    /// Every module, sorted by name.
    pub fn modules(&self) -> Vec<Arc<Script>> {
        self.modules.read().values().cloned().collect()
    }

    /// Every role script, sorted by name.
    pub fn role_scripts(&self) -> Vec<Arc<Script>> {
        self.roles.read().values().cloned().collect()
    }

    /// Replaces (or adds) a script with new source; returns the new entry. A
    /// role put back after its file was deleted can be spawned again.
    pub fn put(&self, kind: ScriptKind, name: &str, path: &Path, source: &str) -> Arc<Script> {
        let mut map = self.map(kind).write();
        let version = self.version.fetch_add(1, Ordering::AcqRel) + 1;
        let script = Arc::new(Script {
            name: name.to_string(),
            path: path.to_path_buf(),
            source: Arc::from(source),
            version,
        });
        map.insert(name.to_string(), script.clone());
        match kind {
            ScriptKind::Role => {
                self.deleted.write().remove(name);
            }
            ScriptKind::Module => {
                self.built_in.write().remove(name);
            }
        }
        script
    }

    /// Removes a role whose file was deleted: running agents keep their code,
    /// new spawns fail with RoleDeleted. False when there was no such role.
    pub fn remove_role(&self, name: &str) -> bool {
        let mut roles = self.roles.write();
        let Some(script) = roles.remove(name) else {
            return false;
        };
        self.deleted
            .write()
            .insert(name.to_string(), script.path.clone());
        self.version.fetch_add(1, Ordering::AcqRel);
        true
    }

    /// Removes the module loaded from `path`, whose file was deleted: agents
    /// keep what they already required (see [`module_changed`](Self::module_changed));
    /// a later `require` gets the built-in
    /// stdlib module of that name, if there is one, or fails. Returns the entry
    /// that replaced it, if any. Does nothing when the module came from
    /// another file (a scripts module shadowing a stdlib one).
    pub fn remove_module(&self, name: &str, path: &Path) -> Option<Arc<Script>> {
        let mut modules = self.modules.write();
        if modules.get(name).is_none_or(|s| s.path != path) {
            return None;
        }
        let version = self.version.fetch_add(1, Ordering::AcqRel) + 1;
        match EMBEDDED_STDLIB.iter().find(|(n, _)| *n == name) {
            Some((_, source)) => {
                let script = Arc::new(Script {
                    name: name.to_string(),
                    path: PathBuf::from(format!("stdlib/{name}.lua")),
                    source: Arc::from(*source),
                    version,
                });
                modules.insert(name.to_string(), script.clone());
                self.built_in.write().insert(name.to_string());
                Some(script)
            }
            None => {
                modules.remove(name);
                None
            }
        }
    }

    fn map(&self, kind: ScriptKind) -> &RwLock<BTreeMap<String, Arc<Script>>> {
        match kind {
            ScriptKind::Role => &self.roles,
            ScriptKind::Module => &self.modules,
        }
    }

    fn put_from_disk(&self, kind: ScriptKind, name: &str, path: &Path) -> Result<()> {
        let source = read_script(path)?;
        let script = Arc::new(Script {
            name: name.to_string(),
            path: path.to_path_buf(),
            source: Arc::from(source),
            version: 1,
        });
        self.map(kind).write().insert(name.to_string(), script);
        if kind == ScriptKind::Module {
            self.built_in.write().remove(name);
        }
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
