//! Turns a batch of debounced file events into registry changes: classify
//! each touched path, read it, check it, register it, log and count it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use notify_debouncer_full::DebounceEventResult;
use notify_debouncer_full::notify::EventKind;
use notify_debouncer_full::notify::event::ModifyKind;
use tokio::sync::broadcast;

use super::roots::{FileWatcher, Root};
use super::{Change, LOG_TARGET, ReloadEvent, validate};
use crate::coordination::Coordination;
use crate::scripts::{Script, ScriptKind, ScriptRegistry};

/// Applies file changes to the registry; runs on the watcher's thread.
pub(super) struct Applier {
    registry: Arc<ScriptRegistry>,
    coord: Arc<Coordination>,
    /// Longest watched path first, so a nested root wins.
    roots: Vec<Root>,
    events: broadcast::Sender<ReloadEvent>,
    /// Roles the bus accepts messages for: only grows, since agents of a
    /// deleted role still read their role's queue.
    known_roles: BTreeSet<String>,
    /// Files whose last version was refused: saving them back to the running
    /// code is reported as a reload, so the user sees the error is gone.
    refused: BTreeSet<PathBuf>,
}

impl Applier {
    pub fn new(
        registry: Arc<ScriptRegistry>,
        coord: Arc<Coordination>,
        roots: Vec<Root>,
        events: broadcast::Sender<ReloadEvent>,
    ) -> Self {
        let known_roles = registry.roles().into_iter().collect();
        let mut applier = Applier {
            registry,
            coord,
            roots,
            events,
            known_roles,
            refused: BTreeSet::new(),
        };
        applier.sort_roots();
        applier
    }

    fn sort_roots(&mut self) {
        self.roots.sort_by_key(|r| {
            std::cmp::Reverse(r.watched.as_ref().map_or(0, |w| w.as_os_str().len()))
        });
    }

    /// Handles one debounced batch (`None`: no events, a look at the
    /// watched directories only). A watched directory that was deleted or
    /// replaced at its path counts as a change of every file it held and
    /// every file now there; the events reported under it before that are
    /// dropped, since they may come from the old directory.
    pub fn handle(&mut self, batch: Option<DebounceEventResult>, watcher: &mut FileWatcher) {
        let moved: Vec<PathBuf> = self
            .roots
            .iter_mut()
            .filter_map(|root| root.follow(watcher).then(|| root.shown.clone()))
            .collect();
        if !moved.is_empty() {
            self.sort_roots();
        }
        // Each path once, with the time of its first event.
        let mut touched: BTreeMap<PathBuf, Instant> = BTreeMap::new();
        let mut rescan = false;
        match batch {
            None => {}
            Some(Err(errors)) => {
                for e in errors {
                    tracing::warn!(target: LOG_TARGET, "file watcher: {e}");
                }
            }
            Some(Ok(events)) => {
                rescan = events.iter().any(|e| e.need_rescan());
                for event in events.iter().filter(|e| changes_content(&e.kind)) {
                    for path in &event.paths {
                        let Some((root, path)) = self.shown_path(path) else {
                            continue;
                        };
                        if moved.contains(root) {
                            continue;
                        }
                        let first = touched.entry(path).or_insert(event.time);
                        *first = (*first).min(event.time);
                    }
                }
            }
        }
        let now = Instant::now();
        if rescan {
            // The watcher lost events: look at every file it could have been about.
            for path in self.every_known_path(|_| true) {
                touched.entry(path).or_insert(now);
            }
        }
        if !moved.is_empty() {
            for path in self.every_known_path(|root| moved.contains(&root.shown)) {
                touched.insert(path, now);
            }
        }
        let mut files: Vec<(ScriptKind, String, PathBuf, Instant)> = Vec::new();
        for (path, at) in touched {
            match self.registry.classify(&path) {
                Ok(Some((kind, name))) => files.push((kind, name, path, at)),
                Ok(None) => {}
                // A file that cannot be a role: say so once it exists.
                Err(e) if path.is_file() => {
                    self.refused(&path, e.to_string(), Vec::new(), at, Instant::now())
                }
                Err(_) => {}
            }
        }
        // Modules first, so a role changed together with its modules is checked against them.
        files.sort_by_key(|(kind, ..)| *kind == ScriptKind::Role);
        for (kind, name, path, at) in files {
            self.apply(kind, &name, &path, at);
        }
    }

    /// `path` as the user would write it, with the root it is below.
    fn shown_path(&self, path: &Path) -> Option<(&PathBuf, PathBuf)> {
        self.roots
            .iter()
            .find_map(|root| Some((&root.shown, root.shown_path(path)?)))
    }

    /// Every file the registry read below the roots `which` picks, and every
    /// file now below them.
    fn every_known_path(&self, which: impl Fn(&Root) -> bool) -> Vec<PathBuf> {
        let roots: Vec<&Root> = self.roots.iter().filter(|r| which(r)).collect();
        let registry = &self.registry;
        // The built-in modules were read from no file: never "deleted".
        let modules = registry
            .modules()
            .into_iter()
            .filter(|s| !registry.is_built_in(&s.name));
        let mut paths: Vec<PathBuf> = registry
            .role_scripts()
            .into_iter()
            .chain(modules)
            .map(|s| s.path.clone())
            .filter(|p| roots.iter().any(|r| p.starts_with(&r.shown)))
            .collect();
        for root in roots {
            // A loop or an oversized tree was reported at start-up; a rescan
            // takes what it can (nothing, from a directory that is gone).
            paths.extend(crate::scripts::files_below(&root.shown).unwrap_or_default());
        }
        paths
    }

    fn current(&self, kind: ScriptKind, name: &str) -> Option<Arc<Script>> {
        match kind {
            ScriptKind::Role => self.registry.role(name).ok(),
            ScriptKind::Module => self.registry.module(name),
        }
    }

    fn agents(&self, kind: ScriptKind, name: &str) -> Vec<String> {
        match kind {
            ScriptKind::Role => self.registry.users().of_role(name),
            ScriptKind::Module => self.registry.users().of_module(name),
        }
    }

    fn apply(&mut self, kind: ScriptKind, name: &str, path: &Path, changed_at: Instant) {
        let started = Instant::now();
        let current = self.current(kind, name);
        let agents = self.agents(kind, name);
        if !path.exists() {
            return self.removed(kind, name, path, agents, changed_at, started);
        }
        // A regular file only, read without blocking (a FIFO saved in its place is refused).
        let source = match crate::scripts::read_script(path) {
            Ok(source) => source,
            Err(e) => return self.refused(path, e.to_string(), agents, changed_at, started),
        };
        if let Some(current) = &current {
            if current.path == path && *current.source == *source && !self.refused.contains(path) {
                return; // a second event for a save already applied
            }
            if kind == ScriptKind::Module && self.shadows(&current.path, path) {
                tracing::info!(target: LOG_TARGET, "{} changed, but {} overrides it", path.display(), current.path.display());
                return;
            }
        }
        let candidate = Script {
            name: name.to_string(),
            path: path.to_path_buf(),
            source: Arc::from(source.as_str()),
            version: 0,
        };
        if let Err(error) = validate::check(&self.registry, &self.coord, kind, &candidate) {
            return self.refused(path, error, agents, changed_at, started);
        }
        let script = self.registry.put(kind, name, path, &source);
        self.refused.remove(path);
        let change = if current.is_some() {
            Change::Updated {
                kind,
                name: name.to_string(),
                version: script.version,
            }
        } else {
            if kind == ScriptKind::Role && self.known_roles.insert(name.to_string()) {
                let roles = self.known_roles.iter().cloned().collect();
                self.coord.bus.set_known_roles(roles);
            }
            Change::Added {
                kind,
                name: name.to_string(),
                version: script.version,
            }
        };
        self.coord
            .metrics
            .host
            .reloads
            .fetch_add(1, Ordering::Relaxed);
        let event = self.event(path, change, agents, changed_at, started);
        let what = match kind {
            ScriptKind::Role => format!("role '{name}'"),
            ScriptKind::Module => format!("module '{name}'"),
        };
        let who = match (&event.change, event.agents.as_slice()) {
            (Change::Added { .. }, _) if kind == ScriptKind::Role => "now spawnable".to_string(),
            (Change::Added { .. }, _) => "now requirable".to_string(),
            (_, []) => "no live agent uses it".to_string(),
            (_, [agent]) => format!("agent {agent} switches at its next callback"),
            (_, agents) => format!("agents {} switch at their next callback", agents.join(", ")),
        };
        tracing::info!(
            target: LOG_TARGET,
            "reloaded {} ({what}; {who}) in {}",
            path.display(),
            timing(&event)
        );
        self.coord.journal.record_host(|| journaled(&event));
        self.revive_dead_letters(kind, name, &event.agents);
        let _ = self.events.send(event);
    }

    /// New code of a role (or of a module its agents use) was registered:
    /// the messages its old code dead-lettered go back to their queues —
    /// the role's and its agents' own — so fixing a handler resumes the
    /// work. Runs on the task's runtime; logs what it gave back.
    fn revive_dead_letters(&self, kind: ScriptKind, name: &str, agents: &[String]) {
        let users = self.registry.users();
        let mut queues: BTreeSet<String> = agents.iter().cloned().collect();
        queues.extend(agents.iter().filter_map(|a| users.role_of(a)));
        if kind == ScriptKind::Role {
            queues.insert(name.to_string());
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let coord = self.coord.clone();
        tokio::spawn(async move {
            for queue in queues {
                match coord.bus.revive(&queue).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(
                        target: LOG_TARGET,
                        "gave {n} dead-lettered message{} back to '{queue}': its code was reloaded",
                        if n == 1 { "" } else { "s" }
                    ),
                    Err(e) => tracing::warn!(
                        target: LOG_TARGET,
                        "cannot give the dead letters of '{queue}' back: {e}"
                    ),
                }
            }
        });
    }

    /// True when a module of the scripts directory overrides the stdlib file `changed`.
    fn shadows(&self, current: &Path, changed: &Path) -> bool {
        current != changed
            && current.starts_with(self.registry.scripts_dir())
            && changed.starts_with(self.registry.stdlib_dir())
    }

    fn removed(
        &mut self,
        kind: ScriptKind,
        name: &str,
        path: &Path,
        agents: Vec<String>,
        changed_at: Instant,
        started: Instant,
    ) {
        let removed = match kind {
            ScriptKind::Role => self
                .registry
                .role(name)
                .is_ok_and(|s| s.path == path && self.registry.remove_role(name)),
            ScriptKind::Module => {
                let had = self.registry.module(name).is_some_and(|s| s.path == path);
                if had {
                    self.registry.remove_module(name, path);
                }
                had
            }
        };
        self.refused.remove(path);
        if !removed {
            return;
        }
        let change = Change::Removed {
            kind,
            name: name.to_string(),
        };
        let event = self.event(path, change, agents, changed_at, started);
        let running = match event.agents.as_slice() {
            [] => String::new(),
            [agent] => format!("; agent {agent} keeps its code"),
            agents => format!("; agents {} keep their code", agents.join(", ")),
        };
        match kind {
            ScriptKind::Role => tracing::warn!(
                target: LOG_TARGET,
                "{} deleted: role '{name}' can no longer be spawned{running}",
                path.display()
            ),
            // The built-in module stands in for new requires only.
            ScriptKind::Module if self.registry.is_built_in(name) => tracing::warn!(
                target: LOG_TARGET,
                "{} deleted: a new require of module '{name}' gets the built-in one{running}",
                path.display()
            ),
            ScriptKind::Module => tracing::warn!(
                target: LOG_TARGET,
                "{} deleted: module '{name}' can no longer be required{running}",
                path.display()
            ),
        }
        self.coord.journal.record_host(|| journaled(&event));
        let _ = self.events.send(event);
    }

    fn refused(
        &mut self,
        path: &Path,
        error: String,
        agents: Vec<String>,
        changed_at: Instant,
        started: Instant,
    ) {
        self.coord
            .metrics
            .host
            .reload_errors
            .fetch_add(1, Ordering::Relaxed);
        self.refused.insert(path.to_path_buf());
        let event = self.event(path, Change::Refused { error }, agents, changed_at, started);
        let Change::Refused { error } = &event.change else {
            unreachable!("built as Refused above")
        };
        let keep = match event.agents.as_slice() {
            [] => "the running code stays".to_string(),
            [agent] => format!("agent {agent} keeps running the previous code"),
            agents => format!(
                "agents {} keep running the previous code",
                agents.join(", ")
            ),
        };
        tracing::error!(
            target: LOG_TARGET,
            "{error}\nreload of {} refused: {keep} (checked in {})",
            path.display(),
            timing(&event)
        );
        self.coord.journal.record_host(|| journaled(&event));
        let _ = self.events.send(event);
    }

    fn event(
        &self,
        path: &Path,
        change: Change,
        agents: Vec<String>,
        changed_at: Instant,
        started: Instant,
    ) -> ReloadEvent {
        ReloadEvent {
            path: path.to_path_buf(),
            change,
            agents,
            took: started.elapsed(),
            since_change: changed_at.elapsed(),
        }
    }
}

/// The journal's form of a reload event.
fn journaled(event: &ReloadEvent) -> crate::coordination::journal::Event {
    use crate::coordination::journal::Event;
    let path = event.path.display().to_string();
    let change = match &event.change {
        Change::Updated { .. } => "updated",
        Change::Added { .. } => "added",
        Change::Removed { .. } => "removed",
        Change::Refused { error } => {
            return Event::ReloadRefused {
                path,
                error: error.clone(),
            };
        }
    };
    Event::Reload {
        path,
        change: change.to_string(),
        agents: event.agents.clone(),
    }
}

/// False for events that cannot change what a file holds: reads (our own
/// included, or every check would trigger the next) and metadata changes.
fn changes_content(kind: &EventKind) -> bool {
    !matches!(
        kind,
        EventKind::Access(_) | EventKind::Modify(ModifyKind::Metadata(_))
    )
}

/// `1.2 ms, 23 ms after the change`.
fn timing(event: &ReloadEvent) -> String {
    format!(
        "{:.1} ms, {} ms after the change",
        ms(event.took),
        ms(event.since_change).round()
    )
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
