//! Which live agent runs which code: its role, and the modules its VM required.
//!
//! The orchestrator records agents as they start and end; each agent records
//! the modules it loaded. A reload reads this to name the agents it affects.

use std::collections::{BTreeMap, BTreeSet};

use parking_lot::Mutex;

/// The code of every live agent, by agent id.
#[derive(Debug, Default)]
pub struct CodeUsers {
    agents: Mutex<BTreeMap<String, AgentCode>>,
}

#[derive(Debug, Default)]
struct AgentCode {
    role: String,
    modules: BTreeSet<String>,
}

impl CodeUsers {
    /// Agent `id` of `role` started.
    pub fn started(&self, id: &str, role: &str) {
        self.agents.lock().insert(
            id.to_string(),
            AgentCode {
                role: role.to_string(),
                modules: BTreeSet::new(),
            },
        );
    }

    /// Agent `id` now has exactly `modules` loaded.
    pub fn loaded(&self, id: &str, modules: BTreeSet<String>) {
        if let Some(code) = self.agents.lock().get_mut(id) {
            code.modules = modules;
        }
    }

    /// Agent `id` ended.
    pub fn ended(&self, id: &str) {
        self.agents.lock().remove(id);
    }

    /// Live agents of `role`, sorted.
    pub fn of_role(&self, role: &str) -> Vec<String> {
        self.agents
            .lock()
            .iter()
            .filter(|(_, c)| c.role == role)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// The role of live agent `id`.
    pub fn role_of(&self, id: &str) -> Option<String> {
        self.agents.lock().get(id).map(|c| c.role.clone())
    }

    /// Live agents whose VM loaded module `name`, sorted.
    pub fn of_module(&self, name: &str) -> Vec<String> {
        self.agents
            .lock()
            .iter()
            .filter(|(_, c)| c.modules.contains(name))
            .map(|(id, _)| id.clone())
            .collect()
    }
}
