//! The modules one VM has required: which registry version of each, and which
//! chunk required which while it was loading.
//!
//! A role script captures its modules at load time (`local plan =
//! require("plan")` is an upvalue of every callback), and so does a module
//! requiring another. When a module changes, hot reload must therefore drop it
//! *and everything that captured it* from `package.loaded`, and run the role
//! chunk again if the role captured any of them. This graph answers both.
//! A `require` made while a callback runs (not while a chunk loads) captures
//! nothing: it reads `package.loaded` again on every call.

use std::collections::{BTreeMap, BTreeSet};

use mlua::Lua;

use crate::lua_api::top_level;
use crate::scripts::ScriptRegistry;

/// The chunk that is loading: the agent's role script or a module.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Loader {
    /// The role script.
    Role,
    /// A module, by name.
    Module(String),
}

/// The require graph of one VM, kept as the VM's app data.
#[derive(Debug, Clone, Default)]
pub struct ModuleGraph {
    /// Registry version of each module the VM loaded from the registry.
    versions: BTreeMap<String, u64>,
    /// What each chunk required while it was loading.
    requires: BTreeMap<Loader, BTreeSet<String>>,
    /// Chunks loading right now, innermost last.
    loading: Vec<Loader>,
    /// Moves whenever the set of loaded modules changes.
    generation: u64,
}

impl ModuleGraph {
    /// `name` was required (from `package.loaded` or freshly) by the chunk
    /// loading now, if any.
    pub fn required(&mut self, name: &str) {
        if let Some(loader) = self.loading.last() {
            self.requires
                .entry(loader.clone())
                .or_default()
                .insert(name.to_string());
        }
    }

    /// Module `name` of registry version `version` was loaded.
    pub fn loaded(&mut self, name: &str, version: u64) {
        self.versions.insert(name.to_string(), version);
        self.generation += 1;
    }

    /// The registry modules loaded in this VM.
    pub fn modules(&self) -> BTreeSet<String> {
        self.versions.keys().cloned().collect()
    }

    /// Moves whenever [`modules`](Self::modules) changes.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Loaded modules whose registry entry has moved to other code read from
    /// a file. A module whose file was deleted is not stale, whether the
    /// built-in module of that name stands in for it or none: the VM keeps
    /// the copy it has.
    pub fn stale(&self, registry: &ScriptRegistry) -> BTreeSet<String> {
        self.versions
            .iter()
            .filter(|(name, version)| registry.module_changed(name, **version))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// `changed` plus every loaded module that required one of them while
    /// loading, transitively.
    pub fn with_dependants(&self, changed: &BTreeSet<String>) -> BTreeSet<String> {
        let mut out = changed.clone();
        loop {
            let before = out.len();
            for (loader, required) in &self.requires {
                if let Loader::Module(name) = loader
                    && self.versions.contains_key(name)
                    && !required.is_disjoint(&out)
                {
                    out.insert(name.clone());
                }
            }
            if out.len() == before {
                return out;
            }
        }
    }

    /// True when the role script required one of `modules` while loading.
    pub fn role_requires_any(&self, modules: &BTreeSet<String>) -> bool {
        self.requires
            .get(&Loader::Role)
            .is_some_and(|r| !r.is_disjoint(modules))
    }

    /// Forgets `modules` (they are about to be loaded again) and, with `role`,
    /// what the role script required.
    pub fn forget(&mut self, modules: &BTreeSet<String>, role: bool) {
        for name in modules {
            self.versions.remove(name);
            self.requires.remove(&Loader::Module(name.clone()));
        }
        if role {
            self.requires.remove(&Loader::Role);
        }
        self.generation += 1;
    }
}

/// Runs `load`, a script's top level, with `loader` recorded as the chunk
/// loading (for the VM's [`ModuleGraph`], when it has one); the VM's
/// waiting host functions refuse meanwhile (see [`top_level`]).
pub fn loading<T>(lua: &Lua, loader: Loader, load: impl FnOnce() -> T) -> T {
    if let Some(mut graph) = lua.app_data_mut::<ModuleGraph>() {
        graph.loading.push(loader);
    }
    let result = top_level::running(lua, load);
    if let Some(mut graph) = lua.app_data_mut::<ModuleGraph>() {
        graph.loading.pop();
    }
    result
}

/// Applies `f` to the VM's [`ModuleGraph`], if it has one. The borrow ends
/// before `f` returns, so `f` must not run Lua code.
pub fn with_graph<T>(lua: &Lua, f: impl FnOnce(&mut ModuleGraph) -> T) -> Option<T> {
    lua.app_data_mut::<ModuleGraph>().map(|mut g| f(&mut g))
}
