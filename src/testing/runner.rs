//! Finding spec files and running one: a fresh VM per file, built by the
//! agent VM builder, on a current-thread tokio runtime whose clock is paused
//! (so sleeps, timers and timeouts take no real time, and the same spec runs
//! the same way every time), with a fresh world per test.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mlua::chunk::ChunkMode;
use mlua::{Function, Lua, Table};

use crate::agent::sandbox;
use crate::coordination::clock;
use crate::error::{Error, Result};
use crate::lua_api::error_text;

use super::answers;
use super::fixtures::{self, FileState};
use super::setup::default_setup;
use super::world::{Base, World};

/// The harness (describe, it, assert, spy), run before each spec.
const HARNESS: &str = include_str!("harness.lua");

/// How a test ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every assertion held.
    Passed,
    /// The first failure: `spec_file:line: expectation`, then what was found.
    Failed(String),
    /// Declared with `pending`: not run.
    Pending,
}

/// One test's result.
#[derive(Debug, Clone)]
pub struct TestResult {
    /// `describe > ... > it` names.
    pub name: String,
    /// Where it is declared: `spec/beta_spec.lua:12`.
    pub at: String,
    /// How it ended.
    pub outcome: Outcome,
    /// Real time it took.
    pub duration: Duration,
}

/// One spec file's results.
#[derive(Debug, Clone)]
pub struct FileResult {
    /// The spec file.
    pub path: PathBuf,
    /// Why the file could not run at all (it does not compile, its top level
    /// raised): `spec/x_spec.lua:3: ...`.
    pub error: Option<String>,
    /// Its tests, in order (those the filter left out are not listed).
    pub tests: Vec<TestResult>,
    /// Real time the file took, VM and worlds included.
    pub duration: Duration,
}

impl FileResult {
    /// True when the file ran and none of its tests failed.
    pub fn ok(&self) -> bool {
        self.error.is_none()
            && self
                .tests
                .iter()
                .all(|t| !matches!(t.outcome, Outcome::Failed(_)))
    }
}

/// What to run of each file.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Only tests whose full name contains this (or matches it as a Lua pattern).
    pub filter: Option<String>,
}

/// The spec files to run: those of `paths` (files as given, directories
/// searched for `*_spec.lua`), or with no paths, every `*_spec.lua` under
/// `spec/` and `tests/` beside `scripts_dir`. Sorted within each directory.
/// A path that does not exist, and finding no spec at all, are BadInput.
pub fn discover(paths: &[PathBuf], scripts_dir: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    if paths.is_empty() {
        let beside = match scripts_dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::new(),
        };
        let roots: Vec<PathBuf> = ["spec", "tests"]
            .iter()
            .map(|d| beside.join(d))
            .filter(|d| d.is_dir())
            .collect();
        for root in &roots {
            walk(root, &mut found)?;
        }
        if found.is_empty() {
            let shown = |d: &str| beside.join(d).display().to_string();
            return Err(Error::bad_input(
                "orrery test",
                format!(
                    "no spec files: no *_spec.lua under {} or {} (beside the scripts directory \
                     {}); write spec/<role>_spec.lua, or pass spec files or directories",
                    shown("spec"),
                    shown("tests"),
                    scripts_dir.display()
                ),
            ));
        }
        return Ok(found);
    }
    for path in paths {
        if path.is_file() {
            found.push(path.clone());
        } else if path.is_dir() {
            let before = found.len();
            walk(path, &mut found)?;
            if found.len() == before {
                return Err(Error::bad_input(
                    path.display().to_string(),
                    "no *_spec.lua in this directory",
                ));
            }
        } else {
            return Err(Error::bad_input(
                path.display().to_string(),
                "no such spec file or directory",
            ));
        }
    }
    Ok(found)
}

fn walk(dir: &Path, found: &mut Vec<PathBuf>) -> Result<()> {
    let read = std::fs::read_dir(dir)
        .map_err(|e| Error::bad_input(dir.display().to_string(), format!("cannot list it: {e}")))?;
    let mut entries: Vec<PathBuf> = read.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            walk(&path, found)?;
        } else if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.ends_with("_spec.lua"))
        {
            found.push(path);
        }
    }
    Ok(())
}

/// Runs the spec file `path` (see the module docs).
pub fn run_file(base: Arc<Base>, path: &Path, options: &Options) -> FileResult {
    let started = Instant::now();
    let mut result = FileResult {
        path: path.to_path_buf(),
        error: None,
        tests: Vec::new(),
        duration: Duration::ZERO,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build();
    match runtime {
        Ok(runtime) => {
            let run = runtime.block_on(async {
                clock::start_test_clock();
                let run = run_tests(base, path, options, &mut result.tests).await;
                clock::stop_test_clock();
                run
            });
            if let Err(e) = run {
                result.error = Some(e);
            }
        }
        Err(e) => result.error = Some(format!("cannot start a runtime: {e}")),
    }
    result.duration = started.elapsed();
    result
}

/// One test as the harness declared it.
struct Declared {
    name: String,
    at: String,
    pending: bool,
}

async fn run_tests(
    base: Arc<Base>,
    path: &Path,
    options: &Options,
    results: &mut Vec<TestResult>,
) -> std::result::Result<(), String> {
    let source = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read it: {e}", path.display()))?;
    let state = Arc::new(FileState::new(base).map_err(|e| e.to_string())?);
    // The spec's top level runs in a first world, like any test.
    let setup = state.setup.lock().clone();
    let world = World::held(&state.base, &setup)
        .await
        .map_err(|e| e.to_string())?;
    let (lua, budget) = sandbox::agent_vm(&world.spec).map_err(|e| lua_text(&e))?;
    *state.world.lock() = Some(world);
    fixtures::register(&lua, state.clone()).map_err(|e| lua_text(&e))?;
    let harness: Table = lua
        .load(HARNESS)
        .set_name("=orrery test harness")
        .eval()
        .map_err(|e| lua_text(&e))?;
    let chunk = lua
        .load(source.as_str())
        .set_name(format!("@{}", path.display()))
        .set_mode(ChunkMode::Text)
        .into_function()
        .map_err(|e| lua_text(&e))?;
    let loaded = budget.metered("load", chunk.call_async::<()>(())).await;
    state.end_world().await;
    if let Some(e) = budget.exceeded() {
        return Err(format!("{}: {e}", path.display()));
    }
    loaded.map_err(|e| lua_text(&e))?;

    let declared = declared(&harness).map_err(|e| lua_text(&e))?;
    let run: Function = harness.get("run").map_err(|e| lua_text(&e))?;
    for (i, test) in declared.iter().enumerate() {
        if let Some(filter) = &options.filter
            && !answers::matches(&test.name, filter)
        {
            continue;
        }
        let started = Instant::now();
        let outcome = if test.pending {
            Outcome::Pending
        } else {
            run_one(&lua, &budget, &state, &run, i + 1, test).await
        };
        results.push(TestResult {
            name: test.name.clone(),
            at: test.at.clone(),
            outcome,
            duration: started.elapsed(),
        });
    }
    Ok(())
}

fn declared(harness: &Table) -> mlua::Result<Vec<Declared>> {
    let list: Table = harness.get::<Function>("tests")?.call(())?;
    list.sequence_values::<Table>()
        .map(|t| {
            let t = t?;
            Ok(Declared {
                name: t.get("name")?,
                at: t.get("at")?,
                pending: t.get("pending")?,
            })
        })
        .collect()
}

async fn run_one(
    lua: &Lua,
    budget: &crate::agent::budget::Budget,
    state: &Arc<FileState>,
    run: &Function,
    index: usize,
    test: &Declared,
) -> Outcome {
    state.scripts.lock().clear();
    state.host_calls.lock().clear();
    let setup = match default_setup() {
        Ok(s) => s,
        Err(e) => return Outcome::Failed(e.to_string()),
    };
    if let Err(e) = state.rebuild(lua, setup).await {
        return Outcome::Failed(format!("{}: the test's world did not start: {e}", test.at));
    }
    let started = tokio::time::Instant::now();
    let ran = budget
        .metered(
            &test.name,
            within_task_timeout(
                state,
                started,
                run.call_async::<(bool, Option<String>)>(index),
            ),
        )
        .await;
    let mut outcome = match ran {
        _ if budget.exceeded().is_some() => Outcome::Failed(format!(
            "{}: {}",
            test.at,
            budget.exceeded().map(|e| e.to_string()).unwrap_or_default()
        )),
        Ok(Ok((true, _))) => Outcome::Passed,
        Ok(Ok((false, message))) => Outcome::Failed(message.unwrap_or_default()),
        Ok(Err(e)) => Outcome::Failed(lua_text(&e)),
        Err(limit) => Outcome::Failed(format!(
            "{}: still running after {} ms of test time (the task's timeout): it waits for \
             something that never comes",
            test.at,
            limit.as_millis()
        )),
    };
    // Whatever the agents made of it, an unscripted LLM call fails the test.
    let unscripted: Vec<String> = state
        .scripts
        .lock()
        .iter()
        .flat_map(|l| l.unscripted())
        .collect();
    if let Some(first) = unscripted.first() {
        let note = format!(
            "{}: unscripted llm.chat call ({} in all), the prompt starts {first:?}: give the \
             test an answer for it (test.setup{{llm = {{{{prompt = \"...\", answer = \"...\"}}}}}})",
            test.at,
            unscripted.len()
        );
        outcome = match outcome {
            Outcome::Failed(m) => Outcome::Failed(format!("{note}\n{m}")),
            _ => Outcome::Failed(note),
        };
    }
    let failed_agents = state.end_world().await;
    crate::agent::sandbox::spy_on_host_calls(None);
    // An agent that failed where the test did not wait for it (a failure
    // it expects, it sees with spawn.wait) fails the test: a crash of the
    // role under test is never a pass.
    let unexpected: Vec<&str> = failed_agents
        .iter()
        .filter(|(_, waited)| !waited)
        .map(|(line, _)| line.as_str())
        .collect();
    if matches!(outcome, Outcome::Passed)
        && let Some(first) = unexpected.first()
    {
        outcome = Outcome::Failed(format!(
            "{}: an agent failed while the test ran, and the test did not wait for it \
             (`spawn.wait(id)` returns FAILED for a failure the test expects): {first}",
            test.at
        ));
    }
    // What went wrong in the agents is often why the assertion failed.
    if let Outcome::Failed(m) = &mut outcome
        && !failed_agents.is_empty()
    {
        m.push_str("\nagents that failed meanwhile:");
        for (line, _) in failed_agents.iter().take(5) {
            m.push_str("\n  ");
            m.push_str(line);
        }
    }
    outcome
}

/// Runs `fut` until the timeout of the current world's task (a test's
/// `test.setup` may change it while it runs) has passed since `started`;
/// then the limit that ran out is the error.
async fn within_task_timeout<T>(
    state: &FileState,
    started: tokio::time::Instant,
    fut: impl std::future::Future<Output = T>,
) -> std::result::Result<T, Duration> {
    let mut fut = std::pin::pin!(fut);
    loop {
        let limit = Duration::from_millis(state.setup.lock().task.timeout);
        tokio::select! {
            out = &mut fut => return Ok(out),
            _ = tokio::time::sleep_until(started + limit) => {
                if Duration::from_millis(state.setup.lock().task.timeout) == limit {
                    return Err(limit);
                }
            }
        }
    }
}

/// The text of a Lua error for the reader: the message with its
/// `file:line`, without mlua's wrapping or the traceback. A message without
/// a place (a table raised as the error, `error(msg, 0)`) gets the first
/// script frame of the traceback in front.
pub fn lua_text(e: &mlua::Error) -> String {
    let text = match e {
        mlua::Error::SyntaxError { message, .. } => message.clone(),
        mlua::Error::RuntimeError(m) => error_text::object_text(m).into_owned(),
        mlua::Error::CallbackError { cause, .. } => return lua_text(cause),
        mlua::Error::WithContext { cause, .. } => return lua_text(cause),
        other => other.to_string(),
    };
    match text.split_once("\nstack traceback:") {
        Some((head, traceback)) => match error_text::script_location(traceback) {
            Some(at) if error_text::script_location(head).is_none() => format!("{at}: {head}"),
            _ => head.to_string(),
        },
        None => text,
    }
}
