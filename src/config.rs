//! Host settings: defaults, then the config file, then `ORRERY_*` environment
//! variables, then flags (flags win).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, toml_error};

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
    /// Lua heap limit per agent (bytes).
    pub memory_limit: usize,
    /// Longest a single callback may run without yielding to the host (ms).
    pub callback_timeout: u64,
    /// Largest value (as JSON bytes) a script may store or send.
    pub max_value_bytes: usize,
    /// Time allowed to connect to the store before a Coordination error (ms).
    pub connect_timeout: u64,
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
            memory_limit: 64 * 1024 * 1024,
            callback_timeout: 10_000,
            max_value_bytes: 1024 * 1024,
            connect_timeout: 3_000,
        }
    }
}

/// One layer of settings (file, environment or flags); unset fields keep the
/// value of the layer below.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigLayer {
    #[allow(missing_docs)]
    pub max_agents: Option<usize>,
    #[allow(missing_docs)]
    pub spawn_timeout: Option<u64>,
    #[allow(missing_docs)]
    pub message_timeout: Option<u64>,
    #[allow(missing_docs)]
    pub blackboard_ttl: Option<u64>,
    #[allow(missing_docs)]
    pub metrics_interval: Option<u64>,
    #[allow(missing_docs)]
    pub store: Option<String>,
    #[allow(missing_docs)]
    pub scripts: Option<PathBuf>,
    #[allow(missing_docs)]
    pub stdlib: Option<PathBuf>,
    #[allow(missing_docs)]
    pub max_attempts: Option<u32>,
    #[allow(missing_docs)]
    pub memory_limit: Option<usize>,
    #[allow(missing_docs)]
    pub callback_timeout: Option<u64>,
    #[allow(missing_docs)]
    pub max_value_bytes: Option<usize>,
    #[allow(missing_docs)]
    pub connect_timeout: Option<u64>,
}

/// Applies `$layer`'s set fields over `$cfg`, for every listed field.
macro_rules! overlay {
    ($cfg:expr, $layer:expr, $($field:ident),*) => {
        $( if let Some(v) = $layer.$field.clone() { $cfg.$field = v; } )*
    };
}

/// Reads each listed `ORRERY_<FIELD>` variable into `$layer`, failing with the
/// variable's name on a value that does not parse.
macro_rules! from_env {
    ($layer:expr, $get:expr, $($field:ident),*) => {
        $(
            let var = concat!("ORRERY_", stringify!($field)).to_ascii_uppercase();
            if let Some(raw) = $get(&var) {
                $layer.$field = Some(raw.parse().map_err(|e| {
                    Error::bad_input(format!("environment variable {var}"), format!("'{raw}': {e}"))
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
        toml::from_str(&text).map_err(|e| toml_error(&origin, &text, &e))
    }

    /// Reads `ORRERY_*` variables through `get` (the process environment in the CLI).
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<ConfigLayer> {
        let mut layer = ConfigLayer::default();
        from_env!(
            layer,
            get,
            max_agents,
            spawn_timeout,
            message_timeout,
            blackboard_ttl,
            metrics_interval,
            store,
            scripts,
            stdlib,
            max_attempts,
            memory_limit,
            callback_timeout,
            max_value_bytes,
            connect_timeout
        );
        Ok(layer)
    }
}

impl Config {
    /// Applies `layers` over the defaults, lowest precedence first, then checks the result.
    pub fn resolve(layers: &[ConfigLayer]) -> Result<Config> {
        let mut cfg = Config::default();
        for layer in layers {
            overlay!(
                cfg,
                layer,
                max_agents,
                spawn_timeout,
                message_timeout,
                blackboard_ttl,
                metrics_interval,
                store,
                scripts,
                stdlib,
                max_attempts,
                memory_limit,
                callback_timeout,
                max_value_bytes,
                connect_timeout
            );
        }
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<()> {
        let positive = [
            ("max_agents", self.max_agents as u64),
            ("spawn_timeout", self.spawn_timeout),
            ("metrics_interval", self.metrics_interval),
            ("blackboard_ttl", self.blackboard_ttl),
            ("max_attempts", self.max_attempts as u64),
            ("callback_timeout", self.callback_timeout),
            ("connect_timeout", self.connect_timeout),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(Error::bad_input(
                    format!("setting {name}"),
                    "must be greater than 0",
                ));
            }
        }
        // Past a year the clock arithmetic of the waits overflows.
        const YEAR_MS: u64 = 365 * 24 * 3600 * 1000;
        let durations = [
            ("spawn_timeout", self.spawn_timeout),
            ("message_timeout", self.message_timeout),
            ("metrics_interval", self.metrics_interval),
            ("blackboard_ttl", self.blackboard_ttl.saturating_mul(1000)),
            ("callback_timeout", self.callback_timeout),
            ("connect_timeout", self.connect_timeout),
        ];
        for (name, ms) in durations {
            if ms > YEAR_MS {
                return Err(Error::bad_input(
                    format!("setting {name}"),
                    "must be at most a year",
                ));
            }
        }
        if self.memory_limit < 1024 * 1024 {
            return Err(Error::bad_input(
                "setting memory_limit",
                "must be at least 1048576 bytes (1 MiB)",
            ));
        }
        let store = self.store.as_str();
        if store != "memory" && !store.starts_with("redis://") && !store.starts_with("rediss://") {
            return Err(Error::bad_input(
                "setting store",
                format!("'{store}' is neither 'memory' nor a redis:// or rediss:// URL"),
            ));
        }
        Ok(())
    }
}
