//! Agent ids as small numbers: the journal's entries carry a number, so
//! recording one costs no reference count shared between the agent's thread
//! and the writer's (a cache line bouncing between cores on every event);
//! the writer turns the numbers back into ids.
//!
//! The table is the process's and only grows: an agent id takes a few bytes
//! for the life of the process (ids are `role-N`, so tasks that run the same
//! roles again reuse theirs).

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use parking_lot::RwLock;

/// A number standing for an agent id.
pub type Name = u32;

#[derive(Default)]
struct Names {
    ids: Vec<Arc<str>>,
    numbers: HashMap<Arc<str>, Name>,
}

static NAMES: LazyLock<RwLock<Names>> = LazyLock::new(RwLock::default);

/// The number of agent id `id`, given one on first use.
pub fn number(id: &str) -> Name {
    if let Some(n) = NAMES.read().numbers.get(id) {
        return *n;
    }
    let mut names = NAMES.write();
    if let Some(n) = names.numbers.get(id) {
        return *n;
    }
    let n = names.ids.len() as Name;
    let id: Arc<str> = Arc::from(id);
    names.ids.push(id.clone());
    names.numbers.insert(id, n);
    n
}

/// The id of number `n`.
pub fn id(n: Name) -> Option<Arc<str>> {
    NAMES.read().ids.get(n as usize).cloned()
}

/// The ids numbered `from` and up, in order (a copy: the table stays free
/// while the writer turns a batch's numbers into ids; only the new ones, so
/// a run that starts agent after agent does not copy the table each time).
pub fn ids_from(from: usize) -> Vec<Arc<str>> {
    NAMES.read().ids.get(from..).unwrap_or_default().to_vec()
}
