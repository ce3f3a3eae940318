//! `orrery test --watch`: run the specs, then again on every save, until
//! Ctrl-C. A saved spec runs alone; a saved script or stdlib module reloads
//! the scripts and runs every spec. Watched like hot reload watches
//! (directories, the reload debounce, editors' swap files ignored).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;

use notify_debouncer_full::notify::RecursiveMode;
use notify_debouncer_full::{DebounceEventResult, new_debouncer};
use orrery::config::Config;
use orrery::reload::{DEFAULT_DEBOUNCE, is_editor_artifact};
use orrery::scripts::ScriptRegistry;
use orrery::testing::{Base, Options};

use super::test::{TestArgs, report, run_all};

pub fn watch(
    args: &TestArgs,
    config: Config,
    mut files: Vec<PathBuf>,
    options: &Options,
) -> anyhow::Result<i32> {
    let mut dirs: BTreeSet<PathBuf> = files
        .iter()
        .filter_map(|f| f.parent().map(absolute))
        .collect();
    let code_dirs: Vec<PathBuf> = [&config.scripts, &config.stdlib]
        .into_iter()
        .filter(|d| d.is_dir())
        .map(|d| absolute(d))
        .collect();
    dirs.extend(code_dirs.iter().cloned());
    let (tx, rx) = mpsc::channel();
    let mut debouncer = new_debouncer(DEFAULT_DEBOUNCE, None, move |r: DebounceEventResult| {
        if let Ok(events) = r {
            // Reading a spec is an access event too: only changes count.
            for e in events
                .iter()
                .filter(|e| !e.kind.is_access() && !e.kind.is_other())
            {
                for p in &e.paths {
                    let _ = tx.send(p.clone());
                }
            }
        }
    })?;
    for d in &dirs {
        debouncer.watch(d, RecursiveMode::Recursive)?;
    }
    let mut code = {
        let registry = Arc::new(ScriptRegistry::load(&config.scripts, &config.stdlib)?);
        let base = Arc::new(Base {
            config: config.clone(),
            registry,
        });
        let results = run_all(&base, &files, options);
        announce(&results);
        report(args, &results)?
    };
    super::print_err("watching for changes (Ctrl-C to stop)");
    while let Ok(first) = rx.recv() {
        let mut changed = vec![first];
        // The rest of the same save.
        while let Ok(p) = rx.recv_timeout(DEFAULT_DEBOUNCE) {
            changed.push(p);
        }
        changed.retain(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(".lua") && !is_editor_artifact(n))
        });
        if changed.is_empty() {
            continue;
        }
        let code_changed = changed
            .iter()
            .any(|p| code_dirs.iter().any(|d| p.starts_with(d)) && !is_spec(p));
        let to_run: Vec<PathBuf> = if code_changed {
            files.clone()
        } else {
            let mut specs = Vec::new();
            for p in changed.iter().filter(|p| is_spec(p) && p.is_file()) {
                match files.iter().find(|f| absolute(f) == *p) {
                    Some(f) => specs.push(f.clone()),
                    None => {
                        files.push(p.clone());
                        specs.push(p.clone());
                    }
                }
            }
            specs.dedup();
            specs
        };
        if to_run.is_empty() {
            continue;
        }
        let registry = match ScriptRegistry::load(&config.scripts, &config.stdlib) {
            Ok(r) => Arc::new(r),
            Err(e) => {
                super::print_err(&format!("error: {e}"));
                continue;
            }
        };
        let base = Arc::new(Base {
            config: config.clone(),
            registry,
        });
        let results = run_all(&base, &to_run, options);
        code = report(args, &results)?;
        announce(&results);
    }
    Ok(code)
}

/// One line on stderr per run, for a terminal whose stdout scrolled (and for tests).
fn announce(results: &[orrery::testing::FileResult]) {
    let t = orrery::testing::totals(results);
    super::print_err(&format!(
        "watched run: {} passed, {} failed, {} pending",
        t.passed, t.failed, t.pending
    ));
}

fn is_spec(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with("_spec.lua"))
}

fn absolute(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}
