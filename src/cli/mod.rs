//! Command-line parsing and the commands. `anyhow` lives here only; the library
//! returns typed errors, which map to exit codes.

mod bench;
mod check;
mod clean;
mod drive;
mod inspect;
mod join;
mod observe;
mod report;
mod resume;
mod run;
mod status;
mod submit;
mod tail;
mod test;
mod test_watch;
mod worker;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use orrery::config::{Config, ConfigLayer};
use orrery::error::{Error, exit};
use orrery::llm::LlmSettings;

/// Multi-agent systems written as Lua scripts.
#[derive(Debug, Parser)]
#[command(name = "orrery", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log lines as text, or as one JSON object each.
    #[arg(long, global = true, value_enum, default_value_t = observe::LogFormat::Text, env = "ORRERY_LOG_FORMAT")]
    log_format: observe::LogFormat,
    /// More log output: -v everything at info, -vv debug, -vvv trace (wins over ORRERY_LOG).
    #[arg(short, long, action = clap::ArgAction::Count, global = true, conflicts_with = "quiet")]
    verbose: u8,
    /// Less output: errors only, and no phase changes while a task runs (wins over ORRERY_LOG).
    #[arg(short, long, global = true)]
    quiet: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a task file (TOML or JSON) with the agents of a scripts directory.
    Run(run::RunArgs),
    /// Run a task with hot reload until Ctrl-C (`run` with watching on).
    Dev(run::DevArgs),
    /// Find what `run` would refuse: scripts that do not compile or load, unknown host functions.
    Check(check::CheckArgs),
    /// Show what a task holds in a shared store: run, agents, blackboard, messages, metrics.
    Inspect(inspect::InspectArgs),
    /// Continue a task of a shared store whose processes are all gone.
    Resume(resume::ResumeArgs),
    /// Delete every key of a task from a shared store.
    Clean(clean::CleanArgs),
    /// Queue a task for the fleet's workers and print its id.
    Submit(submit::SubmitArgs),
    /// Run the fleet's submitted tasks until SIGTERM, which drains.
    Worker(worker::WorkerArgs),
    /// The fleet's tasks (queued, running, finished) or, with --workers, its workers.
    Status(status::StatusArgs),
    /// Cancel a submitted task: a queued one never starts, a running one is stopped.
    Cancel(status::CancelArgs),
    /// Measure the host on the embedded store and print the figures.
    Bench(bench::BenchArgs),
    /// Follow the journal of a task in a shared store, live, from its start.
    Tail(tail::TailArgs),
    /// Run agent specs (`*_spec.lua`) offline, on a test clock, with a scripted LLM.
    Test(test::TestArgs),
    /// Render a journal (JSON Lines from --journal) as one self-contained HTML page.
    Report(report::ReportArgs),
    /// Print a shell completion script: `orrery completions bash > /etc/bash_completion.d/orrery`.
    Completions(CompletionsArgs),
}

/// Arguments of `orrery completions`.
#[derive(Debug, clap::Args)]
struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

/// Settings flags shared by the commands that load a configuration.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConfigArgs {
    /// Config file (default: ./orrery.toml when it exists).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Directory of agent scripts: every DIR/<role>.lua is a role.
    #[arg(long, value_name = "DIR")]
    pub scripts: Option<PathBuf>,
    /// Directory of Lua modules overriding the built-in stdlib.
    #[arg(long, value_name = "DIR")]
    pub stdlib: Option<PathBuf>,
    /// Most agents live at once.
    #[arg(long, value_name = "N")]
    pub max_agents: Option<usize>,
    /// Store: `memory` (default) or a redis:// or rediss:// URL (user, password and db in it).
    #[arg(long, value_name = "URL")]
    pub store: Option<String>,
}

impl ConfigArgs {
    /// Defaults < config file < ORRERY_* environment < flags.
    pub fn resolve(&self) -> Result<Config, Error> {
        self.resolve_with(None)
    }

    /// Like [`ConfigArgs::resolve`], with the LLM flags of a command as the
    /// top `[llm]` layer. The LLM API key comes from the environment only.
    pub fn resolve_with(&self, llm_flags: Option<LlmSettings>) -> Result<Config, Error> {
        let mut layers = Vec::new();
        match &self.config {
            Some(path) => layers.push(ConfigLayer::from_file(path)?),
            None if std::path::Path::new("orrery.toml").is_file() => {
                layers.push(ConfigLayer::from_file(std::path::Path::new("orrery.toml"))?)
            }
            None => {}
        }
        layers.push(ConfigLayer::from_env(|k| std::env::var(k).ok())?);
        if let Some(store) = &self.store {
            orrery::store::check_url(store).map_err(|m| Error::bad_input("flag --store", m))?;
        }
        layers.push(ConfigLayer {
            origin: orrery::config::LayerOrigin::Flags,
            scripts: self.scripts.clone(),
            stdlib: self.stdlib.clone(),
            max_agents: self.max_agents,
            store: self.store.clone(),
            llm: llm_flags,
            ..ConfigLayer::default()
        });
        let mut config = Config::resolve(&layers)?;
        // The key was taken out of the environment at start-up (see orrery::secrets).
        if let Some((var, key)) = orrery::secrets::startup_key()? {
            config.llm = config.llm.with_key(var, key);
        }
        Ok(config)
    }
}

/// clap's message for a `--json` error object: its first paragraph on one
/// line, without the usage and tips after it. The first line alone leaves
/// out what it is about (`the following required arguments were not
/// provided:` names them on the next lines).
fn parse_error_message(text: &str) -> String {
    let first: Vec<&str> = text
        .lines()
        .map(str::trim)
        .take_while(|l| !l.is_empty())
        .collect();
    first.join(" ").trim_start_matches("error: ").to_string()
}

impl Cli {
    /// Parses the process arguments; on bad flags prints clap's message and
    /// returns the bad-input exit code (help and version exit 0).
    pub fn parse_args() -> Result<Cli, i32> {
        Cli::try_parse().map_err(|e| {
            let _ = e.print();
            if !e.use_stderr() {
                return exit::OK;
            }
            if std::env::args().any(|a| a == "--json") {
                let object = serde_json::json!({
                    "error": {
                        "kind": "bad_input",
                        "message": parse_error_message(&e.to_string()),
                        "exit_code": exit::BAD_INPUT,
                    }
                });
                print_out(&format!("{object:#}\n"));
            }
            exit::BAD_INPUT
        })
    }

    /// What is logged: `-q` errors only, `-v`/`-vv`/`-vvv` info, debug,
    /// trace (the flags win); else `ORRERY_LOG` / `RUST_LOG`; else script logs
    /// and reloads while running tasks, and only warnings while
    /// benchmarking, whose hundreds of scripted edits and agents would drown
    /// the figures.
    pub fn log_filter(&self) -> String {
        let flagged = match (self.quiet, self.verbose) {
            (true, _) => Some("error"),
            (false, 0) => None,
            (false, 1) => Some("info"),
            (false, 2) => Some("debug"),
            (false, _) => Some("trace"),
        };
        if let Some(filter) = flagged {
            return filter.to_string();
        }
        std::env::var("ORRERY_LOG")
            .or_else(|_| std::env::var("RUST_LOG"))
            .unwrap_or_else(|_| match self.command {
                Command::Bench(_) => "warn".to_string(),
                // The results are the output; agents' logs would bury them (-v shows them).
                Command::Test(_) => "off".to_string(),
                _ => "warn,orrery::script=info,orrery::reload=info".to_string(),
            })
    }

    /// True when the command was asked for JSON (`--json`).
    fn wants_json(&self) -> bool {
        match &self.command {
            Command::Run(a) => a.json,
            Command::Dev(a) => a.json,
            Command::Check(a) => a.json,
            Command::Inspect(a) => a.json,
            Command::Resume(a) => a.json,
            Command::Bench(a) => a.json,
            Command::Tail(a) => a.json,
            Command::Submit(a) => a.json,
            Command::Status(a) => a.json,
            Command::Worker(_) | Command::Cancel(_) => false,
            Command::Clean(_) | Command::Completions(_) | Command::Report(_) | Command::Test(_) => {
                false
            }
        }
    }

    /// Runs the command; returns the exit code.
    pub fn execute(self) -> i32 {
        let json = self.wants_json();
        let quiet = self.quiet;
        let result = match self.command {
            Command::Run(args) => run::execute(run::RunArgs { quiet, ..args }),
            Command::Dev(args) => run::execute(args.into_run(quiet)),
            Command::Check(args) => check::execute(args),
            Command::Inspect(args) => inspect::execute(args),
            Command::Resume(args) => resume::execute(args, quiet),
            Command::Clean(args) => clean::execute(args),
            Command::Submit(args) => submit::execute(args),
            Command::Worker(args) => worker::execute(args),
            Command::Status(args) => status::execute(args),
            Command::Cancel(args) => status::cancel(args),
            Command::Bench(args) => bench::execute(args),
            Command::Tail(args) => tail::execute(args),
            Command::Report(args) => report::execute(args),
            Command::Test(args) => test::execute(args),
            Command::Completions(args) => {
                let mut out = Vec::new();
                clap_complete::generate(
                    args.shell,
                    &mut <Cli as clap::CommandFactory>::command(),
                    "orrery",
                    &mut out,
                );
                print_out(&String::from_utf8_lossy(&out));
                Ok(exit::OK)
            }
        };
        match result {
            Ok(code) => code,
            Err(e) if json => {
                // A JSON reader gets an object for bad input too, not an empty stdout.
                let code = report_error(&e);
                let kind = e
                    .chain()
                    .find_map(|c| c.downcast_ref::<Error>())
                    .map_or("internal", |e| e.kind().as_str());
                let object = serde_json::json!({
                    "error": { "kind": kind, "message": format!("{e:#}"), "exit_code": code }
                });
                print_out(&format!("{object:#}\n"));
                code
            }
            Err(e) => report_error(&e),
        }
    }
}

/// Refuses the embedded store for a command that needs to reach a task
/// another process ran: that store lives and dies with its process.
pub fn require_shared_store(config: &Config, what: &str) -> Result<(), Error> {
    if config.store == "memory" {
        return Err(Error::bad_input(
            "setting store",
            format!(
                "{what} needs a shared store: pass --store redis://HOST:PORT/DB (or set \
                 ORRERY_STORE); the embedded store lives only as long as the process running the task"
            ),
        ));
    }
    Ok(())
}

/// Writes a command's result to stdout. A reader that went away (`| head`)
/// is not an error of the command: the rest is dropped, not a panic.
pub fn print_out(text: &str) {
    let _ = write_out(text);
}

/// [`print_out`] for a command that follows something until its reader
/// goes away (`orrery tail … | head -1`): false once the reader is gone.
pub fn write_out(text: &str) -> bool {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    !matches!(
        out.write_all(text.as_bytes()).and_then(|()| out.flush()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe
    )
}

/// Writes one line to stderr. A reader that went away (`2>&1 | tee log`
/// when Ctrl-C ended `tee`) is not an error: the line is dropped, never a
/// panic, so the run still ends with its report and exit code. Under
/// `--log-format json` the line is a log object like the others (see
/// [`json_line`]).
pub fn print_err(line: &str) {
    print_err_at("INFO", line, serde_json::Map::new());
}

/// [`print_err`] at `level`, with `fields` beside the message in JSON.
pub fn print_err_at(level: &str, line: &str, fields: serde_json::Map<String, serde_json::Value>) {
    use std::io::Write;
    let json;
    let line = if observe::json_stderr() {
        json = json_line(level, line, fields);
        &json
    } else {
        line
    };
    let mut err = std::io::stderr().lock();
    let _ = err
        .write_all(line.as_bytes())
        .and_then(|()| err.write_all(b"\n"))
        .and_then(|()| err.flush());
}

/// One line of the host's own (a phase change, `stopping: …`, the final
/// error) as the object `--log-format json` makes of a log line:
/// `timestamp`, `level`, `fields` (`message` and the rest), `target`.
fn json_line(
    level: &str,
    message: &str,
    mut fields: serde_json::Map<String, serde_json::Value>,
) -> String {
    use tracing_subscriber::fmt::{format::Writer, time::FormatTime};
    let mut timestamp = String::new();
    let _ = tracing_subscriber::fmt::time::SystemTime.format_time(&mut Writer::new(&mut timestamp));
    fields.insert("message".into(), message.into());
    serde_json::json!({
        "timestamp": timestamp,
        "level": level,
        "fields": fields,
        "target": "orrery",
    })
    .to_string()
}

/// Prints an error for the user and returns its exit code.
pub fn report_error(e: &anyhow::Error) -> i32 {
    print_err_at("ERROR", &format!("error: {e:#}"), serde_json::Map::new());
    e.chain()
        .find_map(|c| c.downcast_ref::<Error>())
        .map_or(exit::INTERNAL, Error::exit_code)
}

impl Cli {
    /// Sets up logging at [`Cli::log_filter`] in `--log-format`, and trace
    /// export when the environment asks for it (see
    /// [`observe::init_tracing`]); prints the error and returns its exit code
    /// when a variable is bad.
    pub fn init_tracing(&self) -> Result<Option<orrery::observe::otel::Telemetry>, i32> {
        observe::init_tracing(&self.log_filter(), self.log_format).map_err(|e| {
            eprintln!("error: {e}");
            e.exit_code()
        })
    }
}

/// A multi-threaded tokio runtime for a command.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Opens the store a command's settings name. Its errors are the host's
/// typed errors, so a bad URL exits as bad input and an unreachable server
/// as a coordination failure.
pub async fn open_store(
    config: &Config,
) -> Result<std::sync::Arc<dyn orrery::store::Store>, Error> {
    let timeout = std::time::Duration::from_millis(config.connect_timeout);
    Ok(orrery::store::open(&config.store, timeout).await?)
}
