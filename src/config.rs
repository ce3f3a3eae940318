//! Host settings: defaults, then the config file, then `ORRERY_*` environment
//! variables, then flags (flags win). The LLM settings are the `[llm]` table
//! ([`LlmSettings`]); the LLM API key is the one setting read from the
//! environment only.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::capabilities::RoleConfig;
use crate::error::{Error, Result, toml_error};
use crate::llm::{API_KEY_VARS, LlmConfig, LlmSettings};

/// Every setting of a run, resolved.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Config {
    /// Most agents live at once in one task (SpawnLimit beyond).
    pub max_agents: usize,
    /// Time a spawn may take before it fails (ms).
    pub spawn_timeout: u64,
    /// Default wait of `bus.receive` (ms).
    pub message_timeout: u64,
    /// Blackboard keys expire after this (s).
    pub blackboard_ttl: u64,
    /// Period of metric flushes to the store (ms).
    pub metrics_interval: u64,
    /// `memory` or a `redis://` / `rediss://` URL.
    pub store: String,
    /// Directory holding `<role>.lua` agent scripts.
    pub scripts: PathBuf,
    /// Directory of Lua modules that override or extend the built-in stdlib.
    pub stdlib: PathBuf,
    /// Deliveries of one message before it is dead-lettered.
    pub max_attempts: u32,
    /// Wait before a message whose handler failed is delivered again (ms),
    /// doubling with each attempt up to 5 s; 0 redelivers at once.
    pub redelivery_backoff: u64,
    /// Lua heap limit per agent (bytes).
    pub memory_limit: usize,
    /// Longest a single callback may run without yielding to the host (ms).
    pub callback_timeout: u64,
    /// Largest value (as JSON bytes) a script may store or send.
    pub max_value_bytes: usize,
    /// Time allowed to reach the store, at start and after losing the
    /// connection, before a Coordination error (ms).
    pub connect_timeout: u64,
    /// LLM access for `llm.chat` (the `[llm]` table, `ORRERY_LLM_*`, the LLM
    /// flags; the key from the environment only). Serializes without the key.
    pub llm: LlmConfig,
    /// Longest an agent may live, awaiting included (ms); AgentTimeout beyond.
    pub agent_timeout: u64,
    /// Per-role settings (capabilities), from the config file only.
    pub roles: BTreeMap<String, RoleConfig>,
    /// Period of the heartbeat each process writes for a shared task (ms); a
    /// process silent for 5 periods is lost, and its agents' messages go back
    /// to their queues.
    pub heartbeat_interval: u64,
    /// Lines of the run journal a shared store keeps, about, in the task's
    /// stream (`task:{id}:journal`, for `orrery tail`); 0 keeps none.
    pub journal_max_len: usize,
    /// How long every key of a task ended on a shared store is kept (s):
    /// each gets this expiry when the run ends (a key that expires sooner
    /// keeps its own).
    pub retention: u64,
    /// Where each setting that is not a default came from (`orrery.toml:3`,
    /// `environment variable ORRERY_MAX_AGENTS`, `flag --max-agents`), by
    /// name (`max_agents`, `llm.timeout_ms`).
    #[serde(skip)]
    pub origins: BTreeMap<String, String>,
    /// Host-memory quotas of one task (see [`Quotas`]).
    #[serde(flatten)]
    pub quotas: Quotas,
}

/// Quotas on what scripts make the host keep, each a setting of its own. A
/// script going past one gets an error naming the quota and the setting.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Quotas {
    /// Blackboard keys of one task (keys written and not deleted).
    pub max_blackboard_keys: usize,
    /// Bytes of one task's blackboard: keys plus values as JSON.
    pub max_blackboard_bytes: usize,
    /// Messages on one queue (an agent's or a role's): waiting, in flight or
    /// dead-lettered. Embedded store only: a shared store keeps them in its server.
    pub max_queue_depth: usize,
    /// Bytes of all the messages of one task's queues. Embedded store only.
    pub max_queued_bytes: usize,
    /// Agents one task may start over its whole run (initial ones included).
    pub max_spawns: usize,
    /// Spawn conditions one task may register (the task file's included).
    pub max_spawn_conditions: usize,
    /// Custom metric names one task may use.
    pub max_metrics: usize,
    /// Lock names one task may use.
    pub max_locks: usize,
}

impl Default for Quotas {
    fn default() -> Self {
        Quotas {
            max_blackboard_keys: 10_000,
            max_blackboard_bytes: 64 * 1024 * 1024,
            max_queue_depth: 100_000,
            max_queued_bytes: 64 * 1024 * 1024,
            max_spawns: 1_000,
            max_spawn_conditions: 256,
            max_metrics: 1_000,
            max_locks: 1_000,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_agents: 5,
            spawn_timeout: 10_000,
            message_timeout: 5_000,
            blackboard_ttl: 3_600,
            metrics_interval: 1_000,
            store: "memory".into(),
            scripts: "scripts".into(),
            stdlib: "stdlib".into(),
            max_attempts: 5,
            redelivery_backoff: 100,
            memory_limit: 64 * 1024 * 1024,
            callback_timeout: 10_000,
            max_value_bytes: 1024 * 1024,
            connect_timeout: 3_000,
            llm: LlmConfig::default(),
            agent_timeout: 3_600_000,
            roles: BTreeMap::new(),
            heartbeat_interval: 1_000,
            journal_max_len: 10_000,
            retention: 7 * 24 * 3_600,
            origins: BTreeMap::new(),
            quotas: Quotas::default(),
        }
    }
}

/// One layer of settings (file, environment or flags); unset fields keep the
/// value of the layer below.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigLayer {
    /// [`Config::max_agents`].
    pub max_agents: Option<usize>,
    /// [`Config::spawn_timeout`] (ms).
    pub spawn_timeout: Option<u64>,
    /// [`Config::message_timeout`] (ms).
    pub message_timeout: Option<u64>,
    /// [`Config::blackboard_ttl`] (s).
    pub blackboard_ttl: Option<u64>,
    /// [`Config::metrics_interval`] (ms).
    pub metrics_interval: Option<u64>,
    /// [`Config::store`].
    pub store: Option<String>,
    /// [`Config::scripts`].
    pub scripts: Option<PathBuf>,
    /// [`Config::stdlib`].
    pub stdlib: Option<PathBuf>,
    /// [`Config::max_attempts`].
    pub max_attempts: Option<u32>,
    /// [`Config::redelivery_backoff`] (ms).
    pub redelivery_backoff: Option<u64>,
    /// [`Config::memory_limit`] (bytes).
    pub memory_limit: Option<usize>,
    /// [`Config::callback_timeout`] (ms).
    pub callback_timeout: Option<u64>,
    /// [`Config::max_value_bytes`].
    pub max_value_bytes: Option<usize>,
    /// [`Config::connect_timeout`] (ms).
    pub connect_timeout: Option<u64>,
    /// The `[llm]` table; its fields replace those of the layer below one by one.
    pub llm: Option<LlmSettings>,
    /// [`Config::agent_timeout`] (ms).
    pub agent_timeout: Option<u64>,
    /// [`Config::roles`] (from the config file only).
    pub roles: Option<BTreeMap<String, RoleConfig>>,
    /// [`Config::heartbeat_interval`] (ms).
    pub heartbeat_interval: Option<u64>,
    /// [`Config::journal_max_len`].
    pub journal_max_len: Option<usize>,
    /// [`Config::retention`] (s).
    pub retention: Option<u64>,
    /// [`Quotas::max_blackboard_keys`].
    pub max_blackboard_keys: Option<usize>,
    /// [`Quotas::max_blackboard_bytes`].
    pub max_blackboard_bytes: Option<usize>,
    /// [`Quotas::max_queue_depth`].
    pub max_queue_depth: Option<usize>,
    /// [`Quotas::max_queued_bytes`].
    pub max_queued_bytes: Option<usize>,
    /// [`Quotas::max_spawns`].
    pub max_spawns: Option<usize>,
    /// [`Quotas::max_spawn_conditions`].
    pub max_spawn_conditions: Option<usize>,
    /// [`Quotas::max_metrics`].
    pub max_metrics: Option<usize>,
    /// [`Quotas::max_locks`].
    pub max_locks: Option<usize>,
    /// Where the layer came from, to name it in errors.
    #[serde(skip)]
    pub origin: LayerOrigin,
}

/// Where a [`ConfigLayer`] came from.
#[derive(Debug, Clone, Default)]
pub enum LayerOrigin {
    /// Command-line flags (`--max-agents`).
    #[default]
    Flags,
    /// `ORRERY_*` environment variables.
    Environment,
    /// A config file, with its text (to find the line of a key).
    File {
        /// The path as given.
        path: String,
        /// Its text.
        text: String,
    },
}

impl LayerOrigin {
    /// Where setting `name` (`max_agents`, `llm.timeout_ms`) of this layer
    /// was written: `orrery.toml:3`, `environment variable
    /// ORRERY_MAX_AGENTS`, `flag --max-agents`.
    pub fn of(&self, name: &str) -> String {
        match self {
            LayerOrigin::Flags => {
                let key = name.rsplit('.').next().unwrap_or(name);
                format!("flag --{}", key.replace('_', "-"))
            }
            LayerOrigin::Environment => format!(
                "environment variable ORRERY_{}",
                name.replace('.', "_").to_ascii_uppercase()
            ),
            LayerOrigin::File { .. } => self.of_all([name.to_string()]).remove(0).1,
        }
    }

    /// [`of`](Self::of) of each of `names`, with its name: a file's text
    /// parsed once for all of them (once per setting, a config of thousands
    /// of grants took seconds).
    pub fn of_all(&self, names: impl IntoIterator<Item = String>) -> Vec<(String, String)> {
        let LayerOrigin::File { path, text } = self else {
            return names
                .into_iter()
                .map(|name| {
                    let at = self.of(&name);
                    (name, at)
                })
                .collect();
        };
        let root = toml::de::DeTable::parse(text).ok();
        names
            .into_iter()
            .map(|name| {
                let line = root
                    .as_ref()
                    .and_then(|r| line_of_setting(r.get_ref(), text, &name));
                let at = match line {
                    Some(line) => format!("{path}:{line}"),
                    None => path.clone(),
                };
                (name, at)
            })
            .collect()
    }
}

/// The name of role `role`'s settings table: `roles.beta`, or with the
/// role quoted as TOML quotes a key that is not bare, `roles."a.b"`, so
/// the name reads as the file wrote it and its path splits back into the
/// same keys (see [`setting_path`]).
pub fn role_setting(role: &str) -> String {
    let bare = !role.is_empty()
        && role
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        return format!("roles.{role}");
    }
    let mut name = String::from("roles.\"");
    for c in role.chars() {
        if c == '"' || c == '\\' {
            name.push('\\');
        }
        name.push(c);
    }
    name.push('"');
    name
}

/// The keys of setting `name` (`roles."a.b".capabilities.http[1]`), each
/// with its array index: split on the dots outside quotes, a quoted key
/// (as [`role_setting`] writes it) unquoted. None for a name that is not
/// such a path.
fn setting_path(name: &str) -> Option<Vec<(String, Option<usize>)>> {
    let mut keys = Vec::new();
    let mut chars = name.chars().peekable();
    loop {
        let mut key = String::new();
        let quoted = chars.next_if_eq(&'"').is_some();
        if quoted {
            loop {
                match chars.next()? {
                    '"' => break,
                    '\\' => key.push(chars.next()?),
                    c => key.push(c),
                }
            }
        }
        let rest: String = std::iter::from_fn(|| chars.next_if(|c| *c != '.')).collect();
        let (bare, index) = match rest.split_once('[') {
            Some((bare, i)) => (bare, Some(i.strip_suffix(']')?.parse::<usize>().ok()?)),
            None => (rest.as_str(), None),
        };
        if quoted && !bare.is_empty() {
            return None;
        }
        key.push_str(bare);
        keys.push((key, index));
        if chars.next().is_none() {
            return Some(keys);
        }
    }
}

/// The 1-based line where setting `name` (`max_agents`, `llm.timeout_ms`,
/// `roles.beta.capabilities.http[1]`, `roles."a.b"`) is written in TOML
/// `text`, from the parser's spans: the value's line for a value, the
/// key's for a table (a `[roles.beta.capabilities]` header), whatever form
/// the file gives it (dotted keys, inline tables, an array over several
/// lines).
fn line_of_setting(root: &toml::de::DeTable<'_>, text: &str, name: &str) -> Option<usize> {
    use toml::de::DeValue;
    let mut table = root;
    let mut parts = setting_path(name)?.into_iter().peekable();
    let at = loop {
        let (key, index) = parts.next()?;
        let (key, value) = table.get_key_value(key.as_str())?;
        let value = match (index, value.get_ref()) {
            (Some(i), DeValue::Array(items)) => items.get(i)?,
            (Some(_), _) => return None,
            (None, _) => value,
        };
        match value.get_ref() {
            DeValue::Table(inner) if parts.peek().is_some() => table = inner,
            DeValue::Table(_) if index.is_none() => break key.span().start,
            _ if parts.peek().is_none() => break value.span().start,
            _ => return None,
        }
    };
    Some(1 + text[..at.min(text.len())].matches('\n').count())
}

/// Calls `$mac!($args, <every setting that is one value>)`: the one list of
/// the settings that environment variables and flags can set, so a new
/// setting cannot be forgotten in one of the places that walk them.
macro_rules! with_scalar_settings {
    ($mac:ident!($($args:tt)*)) => {
        $mac!(
            $($args)*,
            max_agents,
            spawn_timeout,
            message_timeout,
            blackboard_ttl,
            metrics_interval,
            store,
            scripts,
            stdlib,
            max_attempts,
            redelivery_backoff,
            memory_limit,
            callback_timeout,
            max_value_bytes,
            connect_timeout,
            agent_timeout,
            heartbeat_interval,
            journal_max_len,
            retention
        )
    };
}

/// Calls `$mac!($args, <every quota>)`: the quotas, set like the settings of
/// [`with_scalar_settings`] but kept in [`Quotas`].
macro_rules! with_quotas {
    ($mac:ident!($($args:tt)*)) => {
        $mac!(
            $($args)*,
            max_blackboard_keys,
            max_blackboard_bytes,
            max_queue_depth,
            max_queued_bytes,
            max_spawns,
            max_spawn_conditions,
            max_metrics,
            max_locks
        )
    };
}

/// Applies `$layer`'s set fields over `$cfg`, for every listed field, and
/// notes where each came from.
macro_rules! overlay {
    ($cfg:expr, $origins:expr, $layer:expr, $($field:ident),*) => {
        $(
            if let Some(v) = $layer.$field.clone() {
                $cfg.$field = v;
                $origins.push(stringify!($field).to_string());
            }
        )*
    };
}

/// Reads each listed `ORRERY_<FIELD>` variable into `$layer`, failing with the
/// variable's name on a value that does not parse.
macro_rules! from_env {
    ($layer:expr, $get:expr, $($field:ident),*) => {
        $(
            let var = concat!("ORRERY_", stringify!($field)).to_ascii_uppercase();
            if let Some(raw) = $get(&var) {
                $layer.$field = Some(raw.parse().map_err(|_| {
                    // A whole number past the setting's range is too large,
                    // not "not a whole number".
                    let why = match raw.parse::<u128>() {
                        Ok(_) => format!("'{raw}' is too large"),
                        Err(_) => format!("'{raw}' is not {}", what_it_takes(stringify!($field))),
                    };
                    Error::bad_input(format!("environment variable {var}"), why)
                })?);
            }
        )*
    };
}

impl ConfigLayer {
    /// Reads a config file. Errors name the file and line.
    pub fn from_file(path: &Path) -> Result<ConfigLayer> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::bad_input(&origin, format!("cannot read config file: {e}")))?;
        let mut layer: ConfigLayer = toml::from_str(&text).map_err(|e| {
            if e.message().starts_with("unknown field `api_key`") {
                let message = format!(
                    "the LLM API key is not read from files; set {} in the environment",
                    API_KEY_VARS.join(", ")
                );
                let line = e
                    .span()
                    .map(|s| {
                        format!(
                            ":{}",
                            1 + text[..s.start.min(text.len())].matches('\n').count()
                        )
                    })
                    .unwrap_or_default();
                return Error::bad_input(format!("{origin}{line}"), message);
            }
            toml_error(&origin, &text, &e)
        })?;
        layer.origin = LayerOrigin::File {
            path: origin.clone(),
            text: text.clone(),
        };
        if let Some(store) = &layer.store {
            crate::store::check_url(store).map_err(|m| {
                Error::bad_input(format!("{}: setting store", layer.origin.of("store")), m)
            })?;
        }
        let base = path.parent().unwrap_or(Path::new("."));
        for role in layer.roles.iter_mut().flat_map(|r| r.values_mut()) {
            role.capabilities.resolve_paths(base);
        }
        Ok(layer)
    }

    /// Reads `ORRERY_*` variables through `get` (the process environment in the CLI).
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<ConfigLayer> {
        let mut layer = ConfigLayer {
            origin: LayerOrigin::Environment,
            ..ConfigLayer::default()
        };
        with_scalar_settings!(from_env!(layer, get));
        with_quotas!(from_env!(layer, get));
        let llm =
            LlmSettings::from_vars(&get).map_err(|e| Error::bad_llm_settings("environment", e))?;
        layer.llm = (llm != LlmSettings::default()).then_some(llm);
        if let Some(store) = &layer.store {
            crate::store::check_url(store)
                .map_err(|m| Error::bad_input("environment variable ORRERY_STORE", m))?;
        }
        Ok(layer)
    }
}

impl Config {
    /// Applies `layers` over the defaults, lowest precedence first, then checks the result.
    pub fn resolve(layers: &[ConfigLayer]) -> Result<Config> {
        let mut cfg = Config::default();
        for layer in layers {
            // The names of the settings this layer sets, located at its end.
            let mut set: Vec<String> = Vec::new();
            with_scalar_settings!(overlay!(cfg, set, layer));
            with_quotas!(overlay!(cfg.quotas, set, layer));
            if let Some(roles) = &layer.roles {
                cfg.roles = roles.clone();
                for (role, settings) in roles {
                    set.push(role_setting(role));
                    set.extend(settings.capabilities.settings(role));
                }
            }
            if let Some(llm) = &layer.llm {
                llm.apply_to(&mut cfg.llm);
                let llm_set = [
                    ("llm.timeout_ms", llm.timeout_ms.is_some()),
                    ("llm.max_concurrent", llm.max_concurrent.is_some()),
                    ("llm.token_budget", llm.token_budget.is_some()),
                ];
                for (name, _) in llm_set.iter().filter(|(_, set)| *set) {
                    set.push(name.to_string());
                }
            }
            cfg.origins.extend(layer.origin.of_all(set));
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Where setting `name` came from (see [`Config::origins`]); `None` for a default.
    pub fn origin(&self, name: &str) -> Option<&str> {
        self.origins.get(name).map(String::as_str)
    }

    /// A BadInput error for setting `name`, naming where its value came from:
    /// `orrery.toml:3: setting max_agents: must be greater than 0`.
    fn bad_setting(&self, name: &str, message: impl Into<String>) -> Error {
        let origin = match self.origin(name) {
            Some(at) => format!("{at}: setting {name}"),
            None => format!("setting {name}"),
        };
        Error::bad_input(origin, message)
    }

    /// The capabilities granted to `role` (none when the config names no such role).
    pub fn capabilities(&self, role: &str) -> crate::capabilities::Capabilities {
        self.roles
            .get(role)
            .map(|r| r.capabilities.clone())
            .unwrap_or_default()
    }

    /// One warning for each `[roles.<role>]` table that names no role of
    /// `roles` (those of the scripts directory `dir`): `orrery.toml:3:
    /// setting roles.nobody: no role 'nobody' in scripts (roles: alpha,
    /// beta), ...`. A warning, not an error: one config file may serve
    /// tasks whose scripts directories hold different roles, and a role may
    /// be added while a task runs.
    pub fn grants_to_unknown_roles(&self, dir: &Path, roles: &[String]) -> Vec<String> {
        self.roles
            .keys()
            .filter(|role| !roles.contains(role))
            .map(|role| {
                let name = role_setting(role);
                let at = self
                    .origin(&name)
                    .map(|at| format!("{at}: "))
                    .unwrap_or_default();
                format!(
                    "{at}setting {name}: no role '{role}' in {} (roles: {}), \
                     so its capabilities are granted to no agent",
                    dir.display(),
                    roles.join(", ")
                )
            })
            .collect()
    }

    fn validate(&self) -> Result<()> {
        let positive = [
            ("max_agents", self.max_agents as u64),
            ("max_value_bytes", self.max_value_bytes as u64),
            ("spawn_timeout", self.spawn_timeout),
            ("metrics_interval", self.metrics_interval),
            ("blackboard_ttl", self.blackboard_ttl),
            ("max_attempts", self.max_attempts as u64),
            ("callback_timeout", self.callback_timeout),
            ("connect_timeout", self.connect_timeout),
            ("agent_timeout", self.agent_timeout),
            ("heartbeat_interval", self.heartbeat_interval),
            ("retention", self.retention),
        ];
        let q = &self.quotas;
        let quotas = [
            ("max_blackboard_keys", q.max_blackboard_keys),
            ("max_blackboard_bytes", q.max_blackboard_bytes),
            ("max_queue_depth", q.max_queue_depth),
            ("max_queued_bytes", q.max_queued_bytes),
            ("max_spawns", q.max_spawns),
            ("max_spawn_conditions", q.max_spawn_conditions),
            ("max_metrics", q.max_metrics),
            ("max_locks", q.max_locks),
        ];
        let positive = positive
            .into_iter()
            .chain(quotas.map(|(name, value)| (name, value as u64)));
        let llm = &self.llm;
        let llm_positive = [
            ("llm.timeout_ms", Some(llm.timeout_ms)),
            ("llm.max_concurrent", Some(llm.max_concurrent as u64)),
            ("llm.token_budget", llm.token_budget),
        ];
        let llm_positive = llm_positive
            .into_iter()
            .filter_map(|(name, value)| value.map(|v| (name, v)));
        for (name, value) in positive.into_iter().chain(llm_positive) {
            if value == 0 {
                return Err(self.bad_setting(name, "must be greater than 0"));
            }
        }
        // Past a year the clock arithmetic of the waits overflows.
        const YEAR_MS: u64 = 365 * 24 * 3600 * 1000;
        let durations = [
            ("spawn_timeout", self.spawn_timeout),
            ("message_timeout", self.message_timeout),
            ("redelivery_backoff", self.redelivery_backoff),
            ("metrics_interval", self.metrics_interval),
            ("blackboard_ttl", self.blackboard_ttl.saturating_mul(1000)),
            ("callback_timeout", self.callback_timeout),
            ("connect_timeout", self.connect_timeout),
            ("agent_timeout", self.agent_timeout),
            ("heartbeat_interval", self.heartbeat_interval),
            ("retention", self.retention.saturating_mul(1000)),
        ];
        for (name, ms) in durations {
            if ms > YEAR_MS {
                return Err(self.bad_setting(name, "must be at most a year"));
            }
        }
        if self.memory_limit < 1024 * 1024 {
            return Err(self.bad_setting("memory_limit", "must be at least 1048576 bytes (1 MiB)"));
        }
        crate::store::check_url(&self.store).map_err(|m| self.bad_setting("store", m))?;
        // The default stdlib directory may be missing (only the built-in
        // modules then); one asked for by name must be there, or its
        // modules would be silently the built-in ones.
        if self.origin("stdlib").is_some() && !self.stdlib.is_dir() {
            return Err(self.bad_setting(
                "stdlib",
                format!("{} is not a directory", self.stdlib.display()),
            ));
        }
        for (role, settings) in &self.roles {
            if !crate::task::is_role_name(role) {
                return Err(self.bad_setting(
                    &role_setting(role),
                    "a role name is letters, digits and '_'",
                ));
            }
            if let Err((field, why)) = settings.capabilities.validate() {
                let name = format!("{}.capabilities.{field}", role_setting(role));
                return Err(self.bad_setting(&name, why));
            }
        }
        Ok(())
    }
}

/// What a setting's value must be, in words, for an environment variable
/// that does not parse (never a Rust type name).
fn what_it_takes(field: &str) -> &'static str {
    match field {
        "store" | "scripts" | "stdlib" => "a valid value",
        "max_agents" | "max_attempts" | "memory_limit" | "max_value_bytes" => {
            "a whole number of 0 or more"
        }
        _ => {
            "a whole number of milliseconds (or seconds, for blackboard_ttl and retention) of 0 or more"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Config, ConfigLayer, LayerOrigin, role_setting};

    #[test]
    fn a_setting_is_found_by_its_path_not_by_its_last_key() {
        let text = "timeout_ms = 1\n[llm]\ntimeout_ms = 2\n\
                    [roles.a.capabilities]\nhttp = [\"x\"]\n\
                    [roles.b.capabilities]\nhttp = [\n  \"x\",\n  \"y\",\n]\n";
        let origin = LayerOrigin::File {
            path: "o.toml".into(),
            text: text.into(),
        };
        let names = [
            "llm.timeout_ms",
            "roles.b.capabilities.http[1]",
            "roles.b",
            "roles.c",
            "roles.b.capabilities.http[7]",
        ];
        let found: Vec<String> = origin
            .of_all(names.map(String::from))
            .into_iter()
            .map(|(_, at)| at)
            .collect();
        assert_eq!(
            found,
            ["o.toml:3", "o.toml:9", "o.toml:6", "o.toml", "o.toml"]
        );
        assert_eq!(origin.of("roles.b"), "o.toml:6");
    }

    /// A role named with a dot is one key of the path, not two: an error
    /// about it names its line.
    #[test]
    fn a_quoted_role_name_is_one_key_of_its_settings_path() {
        let text = "max_agents = 2\n\n[roles.\"a.b\".capabilities]\nhttp = [\"x\"]\n\
                    [roles.a]\n[roles.'q\"\\']\n";
        let dir = std::env::temp_dir().join(format!("orrery-config-{}", rand::random::<u32>()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("o.toml");
        std::fs::write(&path, text).unwrap();
        let layer = ConfigLayer::from_file(&path).unwrap();
        let at = |name: String| layer.origin.of(&name);
        assert_eq!(role_setting("a.b"), "roles.\"a.b\"");
        assert_eq!(at(role_setting("a.b")), format!("{}:3", path.display()));
        assert_eq!(
            at(format!("{}.capabilities.http[0]", role_setting("a.b"))),
            format!("{}:4", path.display())
        );
        assert_eq!(at(role_setting("a")), format!("{}:5", path.display()));
        assert_eq!(at(role_setting("q\"\\")), format!("{}:6", path.display()));
        let e = Config::resolve(&[layer]).unwrap_err().to_string();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            e.contains(&format!("{}:3: setting roles.\"a.b\":", path.display())),
            "{e}"
        );
    }
}
