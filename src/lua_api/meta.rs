//! The host API as `stdlib/meta/*.lua` declares it: every table, its
//! functions with their parameter names, and its fields. The annotations are
//! the one list of the real API (a test checks them against a running agent);
//! errors name a function's parameters from here, and `orrery check` finds
//! calls of functions that do not exist with it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;

/// The annotation files, by table name.
const FILES: &[(&str, &str)] = &[
    ("agent", include_str!("../../stdlib/meta/agent.lua")),
    (
        "blackboard",
        include_str!("../../stdlib/meta/blackboard.lua"),
    ),
    ("bus", include_str!("../../stdlib/meta/bus.lua")),
    ("exec", include_str!("../../stdlib/meta/exec.lua")),
    ("fs", include_str!("../../stdlib/meta/fs.lua")),
    ("http", include_str!("../../stdlib/meta/http.lua")),
    ("json", include_str!("../../stdlib/meta/json.lua")),
    ("llm", include_str!("../../stdlib/meta/llm.lua")),
    ("lock", include_str!("../../stdlib/meta/lock.lua")),
    ("log", include_str!("../../stdlib/meta/log.lua")),
    ("metrics", include_str!("../../stdlib/meta/metrics.lua")),
    ("spawn", include_str!("../../stdlib/meta/spawn.lua")),
    ("state", include_str!("../../stdlib/meta/state.lua")),
    ("task", include_str!("../../stdlib/meta/task.lua")),
    ("time", include_str!("../../stdlib/meta/time.lua")),
];

/// What the annotations declare.
#[derive(Debug, Default)]
pub struct Api {
    /// Every function, `table.name` or a global name, with its parameter names.
    pub functions: BTreeMap<String, Vec<String>>,
    /// Every non-function field, `table.name`.
    pub fields: BTreeSet<String>,
    /// The API tables (`blackboard`, `bus`, ...).
    pub tables: BTreeSet<String>,
}

static API: LazyLock<Api> = LazyLock::new(|| {
    let mut api = Api::default();
    for (table, text) in FILES {
        api.tables.insert(table.to_string());
        declare(&mut api, table, text);
    }
    api
});

/// The API the annotations declare.
pub fn api() -> &'static Api {
    &API
}

impl Api {
    /// The parameter names of function `name` (`blackboard.set`).
    pub fn params(&self, name: &str) -> Option<&[String]> {
        self.functions.get(name).map(Vec::as_slice)
    }

    /// True when `table.member` is a declared function or field.
    pub fn has(&self, table: &str, member: &str) -> bool {
        let name = format!("{table}.{member}");
        self.functions.contains_key(&name) || self.fields.contains(&name)
    }

    /// The declared member of `table` nearest to `member` (by edit
    /// distance), when one is near enough to be a likely typo.
    pub fn nearest(&self, table: &str, member: &str) -> Option<String> {
        let prefix = format!("{table}.");
        self.functions
            .keys()
            .chain(self.fields.iter())
            .filter_map(|n| n.strip_prefix(&prefix))
            .map(|m| (edit_distance(m, member), m))
            .filter(|(d, m)| *d <= (m.len().max(member.len()) / 2).max(2))
            .min()
            .map(|(_, m)| format!("{table}.{m}"))
    }
}

/// The `---@field`s of the annotated class `class` (`orrery.LockOptions`),
/// in the order written; empty when no file declares it.
pub fn class_fields(class: &str) -> Vec<String> {
    let mut fields = Vec::new();
    for (_, text) in FILES {
        let mut inside = false;
        for line in text.lines().map(str::trim) {
            if let Some(name) = line.strip_prefix("---@class ") {
                inside = name.split_whitespace().next() == Some(class);
            } else if let Some(field) = line.strip_prefix("---@field ").filter(|_| inside) {
                let name = field.split_whitespace().next().unwrap_or_default();
                fields.push(name.trim_end_matches('?').to_string());
            } else if !line.starts_with("---") {
                inside = false;
            }
        }
    }
    fields
}

/// What the annotation file `text` of `table` declares (see [`declare`]).
pub fn parse(table: &str, text: &str) -> Api {
    let mut api = Api::default();
    api.tables.insert(table.to_string());
    declare(&mut api, table, text);
    api
}

/// Reads `function t.f(a, b)`, `t.x = `, and the `---@field`s of the class
/// declared right before `t = {}`, plus global `function g(a)`.
fn declare(api: &mut Api, table: &str, text: &str) {
    let mut class_fields = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with("---@class") {
            class_fields.clear();
        } else if let Some(field) = line.strip_prefix("---@field ") {
            let name = field.split_whitespace().next().unwrap_or_default();
            class_fields.push(name.trim_end_matches('?').to_string());
        } else if line == format!("{table} = {{}}") {
            for f in class_fields.drain(..) {
                api.fields.insert(format!("{table}.{f}"));
            }
        } else if let Some(rest) = line.strip_prefix("function ") {
            let Some((name, args)) = rest.split_once('(') else {
                continue;
            };
            let params = args
                .split(')')
                .next()
                .unwrap_or_default()
                .split(',')
                .map(|p| p.trim().to_string())
                .filter(|p| !p.is_empty())
                .collect();
            api.functions.insert(name.trim().to_string(), params);
        } else if let Some((field, _)) = line
            .strip_prefix(&format!("{table}."))
            .and_then(|rest| rest.split_once(" = "))
        {
            api.fields.insert(format!("{table}.{}", field.trim()));
        }
    }
}

/// Levenshtein distance between two short names.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let current = row[j + 1];
            row[j + 1] = if ca == *cb {
                previous
            } else {
                1 + previous.min(row[j]).min(current)
            };
            previous = current;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::api;

    #[test]
    fn the_annotations_give_functions_parameters_and_fields() {
        let api = api();
        assert_eq!(api.params("blackboard.set").unwrap(), ["key", "value"]);
        assert_eq!(api.params("sleep").unwrap(), ["ms"]);
        assert!(api.has("task", "id") && api.has("json", "null") && api.has("bus", "send"));
        assert!(!api.has("blackboard", "put"));
    }

    #[test]
    fn the_nearest_name_is_suggested_for_a_typo() {
        let api = api();
        assert_eq!(api.nearest("bus", "sendd").as_deref(), Some("bus.send"));
        assert_eq!(
            api.nearest("blackboard", "put").as_deref(),
            Some("blackboard.get")
        );
        assert_eq!(api.nearest("bus", "completely_unrelated"), None);
    }
}
