//! `orrery run TASK [--watch]` (and `orrery dev TASK`, the same with
//! `--watch`): run a task and print its report. Ctrl-C stops the run and
//! still prints the report; a second Ctrl-C aborts the agents still running.
//! With `--join TASK_ID --role ROLE`, add agents to a task another process
//! runs (see `join.rs`); both are driven to their end by `drive.rs`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use orrery::llm::{LlmMode, LlmSettings};
use orrery::orchestrator::Orchestrator;
use orrery::reload::ReloadOptions;
use orrery::report::TaskStatus;
use orrery::scripts::ScriptRegistry;
use orrery::task::Task;

use super::ConfigArgs;
use super::drive::{drive, print_report};

/// Arguments of `orrery run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Task file (.toml or .json). Not with --join.
    #[arg(required_unless_present = "join", conflicts_with = "join")]
    pub task: Option<PathBuf>,
    /// Join the running task TASK_ID of a shared store instead of starting one.
    #[arg(long, value_name = "TASK_ID", requires = "role")]
    pub join: Option<String>,
    /// With --join: start one agent of ROLE (repeat the flag for more).
    #[arg(long, value_name = "ROLE", requires = "join")]
    pub role: Vec<String>,
    /// Print one JSON object instead of the summary.
    #[arg(long)]
    pub json: bool,
    /// Override the task's timeout (ms).
    #[arg(long, value_name = "MS", conflicts_with = "join")]
    pub timeout: Option<u64>,
    /// No phase changes on stderr (set by the global `-q`).
    #[arg(skip)]
    pub quiet: bool,
    /// Hot reload: apply edits of the scripts and stdlib directories to the
    /// running agents, and keep the task running when it goes quiet (until its
    /// agents finish, the timeout, or Ctrl-C).
    #[arg(long)]
    pub watch: bool,
    #[command(flatten)]
    pub config: ConfigArgs,
    #[command(flatten)]
    pub llm: LlmArgs,
    #[command(flatten)]
    pub observe: super::observe::ObserveArgs,
}

/// Arguments of `orrery dev`: `run --watch` for one task file, without the
/// flags that mean nothing there (`--watch`, `--join`, `--role`).
#[derive(Debug, clap::Args)]
pub struct DevArgs {
    /// Task file (.toml or .json).
    pub task: PathBuf,
    /// Print one JSON object instead of the summary.
    #[arg(long)]
    pub json: bool,
    /// Override the task's timeout (ms).
    #[arg(long, value_name = "MS")]
    pub timeout: Option<u64>,
    #[command(flatten)]
    pub config: ConfigArgs,
    #[command(flatten)]
    pub llm: LlmArgs,
    #[command(flatten)]
    pub observe: super::observe::ObserveArgs,
}

impl DevArgs {
    /// The same run as `orrery run TASK --watch`.
    pub fn into_run(self, quiet: bool) -> RunArgs {
        RunArgs {
            task: Some(self.task),
            join: None,
            role: Vec::new(),
            json: self.json,
            timeout: self.timeout,
            quiet,
            watch: true,
            config: self.config,
            llm: self.llm,
            // A dev session always has its live view.
            observe: super::observe::ObserveArgs {
                ui: true,
                ..self.observe
            },
        }
    }
}

/// Where `llm.chat` gets its answers. The API key is read from the
/// environment only (ORRERY_LLM_KEY, OPENAI_API_KEY or OPENROUTER_API_KEY).
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "LLM")]
pub struct LlmArgs {
    /// Model for calls that name none (default anthropic/claude-sonnet-4).
    #[arg(long, value_name = "MODEL")]
    pub model: Option<String>,
    /// Base URL of an OpenAI-compatible API, e.g. https://openrouter.ai/api/v1
    /// or http://127.0.0.1:11434/v1 (Ollama).
    #[arg(long, value_name = "URL")]
    pub llm_url: Option<String>,
    /// Answer with the offline deterministic responder, whatever else is set.
    #[arg(long, conflicts_with = "llm_replay")]
    pub mock: bool,
    /// Answer from the request/response pairs recorded in FILE (JSON Lines).
    #[arg(long, value_name = "FILE")]
    pub llm_replay: Option<PathBuf>,
    /// Append every answered call to FILE, in the --llm-replay format.
    #[arg(long, value_name = "FILE")]
    pub llm_record: Option<PathBuf>,
    /// LLM tokens the task may spend; a call beyond them fails the task (exit 8).
    #[arg(long, value_name = "N")]
    pub token_budget: Option<u64>,
}

impl LlmArgs {
    /// The flags as the top settings layer (`None` when no flag is given).
    fn settings(&self) -> Option<LlmSettings> {
        let settings = LlmSettings {
            url: self.llm_url.clone(),
            model: self.model.clone(),
            mock: self.mock.then_some(true),
            replay: self.llm_replay.clone(),
            record: self.llm_record.clone(),
            token_budget: self.token_budget,
            ..LlmSettings::default()
        };
        (settings != LlmSettings::default()).then_some(settings)
    }
}

pub fn execute(args: RunArgs) -> anyhow::Result<i32> {
    let mut config = args.config.resolve_with(args.llm.settings())?;
    if let Some(task_id) = &args.join {
        return super::join::execute(task_id, &args, config);
    }
    let path = args
        .task
        .as_ref()
        .expect("clap requires TASK without --join");
    let mut task = Task::load(path)?;
    config.scripts = scripts_dir(&config, path)?;
    if let Some(ms) = args.timeout {
        if ms == 0 {
            return Err(
                orrery::Error::bad_input("flag --timeout", "must be greater than 0 ms").into(),
            );
        }
        task.timeout = ms;
    }
    let registry = Arc::new(ScriptRegistry::load(&config.scripts, &config.stdlib)?);
    task.check_roles(&path.display().to_string(), |role| {
        registry.role(role).map(|_| ())
    })?;
    orrery::orchestrator::check_initial_agents(
        &task,
        &config,
        &registry,
        &path.display().to_string(),
    )?;
    if !args.quiet {
        for warning in config.grants_to_unknown_roles(&config.scripts, &registry.roles()) {
            super::print_err(&format!("warning: {warning}"));
        }
    }
    let watched = if config.stdlib.is_dir() {
        format!(
            "{} and {}",
            config.scripts.display(),
            config.stdlib.display()
        )
    } else {
        config.scripts.display().to_string()
    };
    let runtime = super::runtime()?;
    let id = task.id.clone();
    runtime.block_on(async {
        let store = super::open_store(&config).await?;
        let llm_line = describe_llm(&config.llm);
        let mut orchestrator = Orchestrator::new(task, config, store, registry)?;
        let observers = args.observe.start(orchestrator.coordination()).await?;
        if !args.quiet && orchestrator.llm().mode() != LlmMode::Mock {
            super::print_err(&orchestrator.llm().redact(&llm_line));
        }
        if args.watch {
            orchestrator.watch(ReloadOptions::default())?;
            super::print_err(&format!("watching {watched} for changes (Ctrl-C to stop)"));
        }
        // Started or not, a run that fails this way leaves no report
        // (a store lost mid-run too: "did not run" would be wrong then).
        let report = drive(orchestrator, args.quiet)
            .await
            .with_context(|| format!("task '{id}' ended without a report"))?;
        let code = print_report(&report, args.json)?;
        observers
            .finish(report.status == TaskStatus::Interrupted)
            .await;
        Ok(code)
    })
}

/// The scripts directory of a run of the task file `task`: the configured
/// one when a flag, variable or config file sets it; else `scripts/` beside
/// the task file when there is one, else `./scripts`. A directory that does
/// not exist is BadInput naming its absolute path, where it came from, and
/// what to do.
pub(super) fn scripts_dir(
    config: &orrery::config::Config,
    task: &std::path::Path,
) -> orrery::Result<PathBuf> {
    let absolute = |p: &std::path::Path| {
        std::path::absolute(p)
            .unwrap_or_else(|_| p.to_path_buf())
            .display()
            .to_string()
    };
    if let Some(origin) = config.origin("scripts") {
        if config.scripts.is_dir() {
            return Ok(config.scripts.clone());
        }
        return Err(orrery::Error::bad_input(
            config.scripts.display().to_string(),
            format!(
                "scripts directory does not exist ({}; set by {origin}): create it with a \
                 <role>.lua per role, or point --scripts at the directory that has them",
                absolute(&config.scripts)
            ),
        ));
    }
    let beside = task
        .parent()
        .map(|dir| dir.join("scripts"))
        .filter(|dir| !dir.as_os_str().is_empty() && dir.is_dir());
    if let Some(dir) = beside {
        return Ok(dir);
    }
    if config.scripts.is_dir() {
        return Ok(config.scripts.clone());
    }
    let beside = task
        .parent()
        .unwrap_or(std::path::Path::new(""))
        .join("scripts");
    Err(orrery::Error::bad_input(
        config.scripts.display().to_string(),
        format!(
            "no scripts directory: neither {} (beside the task file) nor {} (in the current \
             directory) exists; put a <role>.lua per role in one of them, or pass --scripts DIR",
            absolute(&beside),
            absolute(&config.scripts)
        ),
    ))
}

/// One line saying where LLM answers come from (the key is never shown).
fn describe_llm(llm: &orrery::llm::LlmConfig) -> String {
    match (&llm.replay, &llm.url) {
        (Some(file), _) => format!("llm: replaying answers from {}", file.display()),
        (None, Some(url)) => format!("llm: {} at {url}", llm.model),
        (None, None) => "llm: offline mock".to_string(),
    }
}
