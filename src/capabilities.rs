//! What a role may do beyond the sandbox, granted in the config file:
//!
//! ```toml
//! [roles.beta.capabilities]
//! read_files = "data/"                 # fs.read / fs.list below this directory
//! commands = ["echo", "date"]           # exec.run of exactly these programs
//! http = ["127.0.0.1:8080", "api.example.com"]  # http.get / http.post to these hosts
//! ```
//!
//! Everything is off by default. A relative `read_files` is relative to the
//! config file's directory.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The settings of one role.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleConfig {
    /// Capabilities granted to every agent of the role.
    #[serde(default)]
    pub capabilities: Capabilities,
}

/// Capabilities of a role; all off by default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capabilities {
    /// Directory whose files `fs.read` and `fs.list` may read.
    #[serde(default)]
    pub read_files: Option<PathBuf>,
    /// Programs `exec.run` may start (by name on PATH, or by exact path).
    #[serde(default)]
    pub commands: Vec<String>,
    /// `host` or `host:port` entries `http.get` / `http.post` may reach; a
    /// bare host allows the scheme's default port only.
    #[serde(default)]
    pub http: Vec<String>,
}

impl Capabilities {
    /// Makes a relative `read_files` relative to `base` (the config file's directory).
    pub fn resolve_paths(&mut self, base: &Path) {
        if let Some(root) = &self.read_files
            && root.is_relative()
        {
            self.read_files = Some(base.join(root));
        }
    }

    /// The names of the settings this grants, for `role`
    /// (`roles.beta.capabilities.http[1]`), as errors name them.
    pub fn settings(&self, role: &str) -> Vec<String> {
        let table = crate::config::role_setting(role);
        let name = |field: String| format!("{table}.capabilities.{field}");
        let read = self.read_files.iter().map(|_| "read_files".to_string());
        let commands = (0..self.commands.len()).map(|i| format!("commands[{i}]"));
        let http = (0..self.http.len()).map(|i| format!("http[{i}]"));
        read.chain(commands).chain(http).map(name).collect()
    }

    /// Checks the grants; a refused one is `Err((field, why))`, the field
    /// as [`Capabilities::settings`] names it after the role's prefix
    /// (`http[1]`), for the caller to say where it was written.
    pub fn validate(&self) -> std::result::Result<(), (String, String)> {
        if let Some(root) = &self.read_files {
            if !root.is_dir() {
                return Err((
                    "read_files".into(),
                    format!("'{}' is not a directory", root.display()),
                ));
            }
            let real = root.canonicalize().unwrap_or_else(|_| root.clone());
            crate::secrets::refuse_file(&real, None).map_err(|why| ("read_files".into(), why))?;
        }
        for (i, cmd) in self.commands.iter().enumerate() {
            if cmd.trim().is_empty() || cmd.chars().any(char::is_whitespace) {
                return Err((
                    format!("commands[{i}]"),
                    format!("'{cmd}' must be a program name or path, without spaces or arguments"),
                ));
            }
        }
        for (i, entry) in self.http.iter().enumerate() {
            if let Err(why) = parse_host(entry) {
                return Err((format!("http[{i}]"), format!("'{entry}': {why}")));
            }
        }
        Ok(())
    }

    /// True when `host:port` (a URL's host and effective port) is allowed;
    /// `default_port` is the URL scheme's.
    pub fn allows_host(&self, host: &str, port: u16, default_port: u16) -> bool {
        // A URL's IPv6 host comes in brackets (`[::1]`); grants are compared without.
        let host = host.trim_start_matches('[').trim_end_matches(']');
        self.http.iter().any(|entry| match parse_host(entry) {
            Ok((h, p)) => h.eq_ignore_ascii_case(host) && p.unwrap_or(default_port) == port,
            Err(_) => false,
        })
    }
}

/// Splits `host[:port]`.
fn parse_host(entry: &str) -> std::result::Result<(&str, Option<u16>), String> {
    const FORM: &str = "expected host or host:port (no scheme, no path)";
    if entry.contains('/') {
        return Err(FORM.into());
    }
    let (host, port) = match entry.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') || h.ends_with(']') => {
            let port = p
                .parse::<u16>()
                .map_err(|_| format!("port '{p}' is not a number from 0 to 65535"))?;
            (h, Some(port))
        }
        _ => (entry, None),
    };
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(FORM.into());
    }
    Ok((host.trim_start_matches('[').trim_end_matches(']'), port))
}

#[cfg(test)]
mod tests {
    use super::Capabilities;

    fn grants(http: &[&str]) -> Capabilities {
        Capabilities {
            http: http.iter().map(|s| s.to_string()).collect(),
            ..Capabilities::default()
        }
    }

    #[test]
    fn hosts_match_by_name_and_port_with_or_without_ipv6_brackets() {
        let caps = grants(&["127.0.0.1:8080", "[::1]:9000", "api.example.com"]);
        assert!(caps.allows_host("127.0.0.1", 8080, 80));
        assert!(!caps.allows_host("127.0.0.1", 8081, 80));
        assert!(
            caps.allows_host("[::1]", 9000, 80),
            "as Url::host_str gives it"
        );
        assert!(caps.allows_host("::1", 9000, 80));
        assert!(!caps.allows_host("[::1]", 9001, 80));
        assert!(
            caps.allows_host("API.example.com", 443, 443),
            "a bare host: the default port"
        );
        assert!(!caps.allows_host("api.example.com", 8443, 443));
    }
}
