//! `orrery test [PATH...]`: run agent specs written in Lua (see
//! `orrery::testing`), print a summary (or TAP), write JUnit XML, and with
//! `--watch` run the affected specs again on every save.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use orrery::error::exit;
use orrery::scripts::ScriptRegistry;
use orrery::testing::{self, Base, FileResult, Options};

use super::ConfigArgs;

/// Arguments of `orrery test`.
#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// Spec files, or directories searched for `*_spec.lua` (default: spec/
    /// and tests/ beside the scripts directory).
    pub paths: Vec<PathBuf>,
    /// Print TAP (version 13) instead of the summary.
    #[arg(long)]
    pub tap: bool,
    /// Also write the results as JUnit XML to FILE.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Run only the tests whose full name (`describe > it`) contains PATTERN
    /// (or matches it as a Lua pattern).
    #[arg(long, value_name = "PATTERN")]
    pub filter: Option<String>,
    /// Run again on every save of a spec, a script or a stdlib module: a
    /// changed spec runs alone, a changed script runs every spec (until Ctrl-C).
    #[arg(long)]
    pub watch: bool,
    #[command(flatten)]
    pub config: ConfigArgs,
}

pub fn execute(args: TestArgs) -> anyhow::Result<i32> {
    let config = args.config.resolve()?;
    let files = testing::discover(&args.paths, &config.scripts)?;
    let options = Options {
        filter: args.filter.clone(),
    };
    if args.watch {
        return super::test_watch::watch(&args, config, files, &options);
    }
    let registry = Arc::new(ScriptRegistry::load(&config.scripts, &config.stdlib)?);
    let base = Arc::new(Base { config, registry });
    let results = run_all(&base, &files, &options);
    let code = report(&args, &results)?;
    let totals = testing::totals(&results);
    match &args.filter {
        // A filter that leaves no test to run is a mistake (a typo, a
        // renamed test), not a pass: CI would go green running nothing.
        Some(filter) if code == exit::OK && totals.passed + totals.failed + totals.pending == 0 => {
            let pattern = filter.strip_prefix('^').unwrap_or(filter);
            let how = match orrery::agent::patterns::check(pattern.as_bytes()) {
                Ok(()) => "as plain text or as a Lua pattern".to_string(),
                Err(why) => format!(
                    "as plain text only: as a Lua pattern it is malformed ({why}; escape a magic \
                     character with %, as in %( or %[)"
                ),
            };
            Err(orrery::Error::bad_input(
                "flag --filter",
                format!(
                    "'{filter}' matches no test of {} spec file(s) (matched against each test's \
                     full name, `describe > it`, {how})",
                    files.len()
                ),
            )
            .into())
        }
        _ => Ok(code),
    }
}

/// Runs `files` one after the other.
pub(super) fn run_all(base: &Arc<Base>, files: &[PathBuf], options: &Options) -> Vec<FileResult> {
    files
        .iter()
        .map(|f| testing::run_file(base.clone(), f, options))
        .collect()
}

/// Prints the results (and writes the JUnit file); returns the exit code:
/// 0 when every test passed, 3 when a spec file could not run, 10 when a
/// test failed.
pub(super) fn report(args: &TestArgs, results: &[FileResult]) -> anyhow::Result<i32> {
    if args.tap {
        super::print_out(&testing::tap(results));
    } else {
        super::print_out(&testing::summary(results));
    }
    if let Some(path) = &args.junit {
        std::fs::write(path, testing::junit(results))
            .with_context(|| format!("cannot write the JUnit report to {}", path.display()))
            .map_err(|e| {
                anyhow::Error::from(orrery::Error::bad_input("flag --junit", format!("{e:#}")))
            })?;
    }
    let totals = testing::totals(results);
    Ok(if totals.broken_files > 0 {
        exit::SCRIPT
    } else if totals.failed > 0 {
        exit::TESTS_FAILED
    } else {
        exit::OK
    })
}
