//! The key schema. Every key of a task starts with `task:{id}:`, then a fixed
//! family name; a user's key or name comes last, so `:` or glob characters in
//! it can never reach another family (task ids cannot hold `:`).
//!
//! | key | type | holds |
//! |---|---|---|
//! | `task:{id}:blackboard:{key}` | string | a JSON value, with TTL `blackboard_ttl` |
//! | `task:{id}:bbindex` | sorted set | every blackboard key, for `keys(prefix)` |
//! | `task:{id}:state:{agent}` | hash | `record` (JSON phase, history, host) and `heartbeat` |
//! | `task:{id}:agents` | set | every agent id |
//! | `task:{id}:bus:{queue}` | stream | the queue's messages, consumer group `orrery` |
//! | `task:{id}:queues` | set | every queue written to |
//! | `task:{id}:deadletter` | stream | dead-lettered messages |
//! | `task:{id}:metrics` | hash | counters, flushed with HINCRBY |
//! | `task:{id}:locks:{name}` | string | the holder's token, with the lock's TTL |
//! | `task:{id}:fences` | hash | the fencing number of each lock |
//! | `task:{id}:claims` | hash | once-only claims (spawn conditions, agent ids) |
//! | `task:{id}:meta` | string | the task record (definition, status, owner) |
//! | `task:{id}:hosts` | hash | each process's heartbeat and activity |
//! | `task:{id}:lease` | string | the member holding the task's lease (end of task, record, report, reaping), with its TTL |
//! | `task:{id}:epoch` | string | the last member epoch handed out (INCR) |
//! | `task:{id}:member:{host}` | string | a live member's epoch; `fenced` once it is declared lost |
//! | `task:{id}:sent:{sender}` | string (bitmap) | bit `n` set once the sender's `n`th send was applied, so a resend is applied once |
//! | `task:{id}:once:{token}` | string | a retried operation's done-marker (60 s) |
//! | `task:{id}:journal` | stream | the run journal, capped (`journal_max_len`) |
//!
//! Blackboard changes are published on the channel `task:{id}:events`.

/// Consumer group every queue stream is read through.
pub(super) const GROUP: &str = "orrery";

/// Pseudo-consumer holding messages given back, until a consumer claims them.
/// Agent ids are `role-N`, so no agent can be called this.
pub(super) const RETURNED: &str = "~returned";

/// The keys of one task.
pub(super) struct Keys {
    prefix: String,
}

impl Keys {
    /// Keys of `task`. Keys are joined with `concat` (one allocation, a
    /// copy), not `format!`, whose machinery cost several times as much on
    /// every write.
    pub fn new(task: &str) -> Keys {
        Keys {
            prefix: ["task:", task, ":"].concat(),
        }
    }

    fn key(&self, family: &str) -> String {
        [self.prefix.as_str(), family].concat()
    }

    /// `task:{id}:blackboard:{key}`.
    pub fn blackboard(&self, key: &str) -> String {
        [self.prefix.as_str(), "blackboard:", key].concat()
    }

    /// The index of blackboard keys.
    pub fn bb_index(&self) -> String {
        self.key("bbindex")
    }

    /// The channel blackboard changes are published on.
    pub fn events(&self) -> String {
        self.key("events")
    }

    /// `task:{id}:state:{agent}`.
    pub fn state(&self, agent: &str) -> String {
        [self.prefix.as_str(), "state:", agent].concat()
    }

    /// The set of agent ids.
    pub fn agents(&self) -> String {
        self.key("agents")
    }

    /// Set of the agents not ended (`max_agents` across processes).
    pub fn live(&self) -> String {
        self.key("live")
    }

    /// `task:{id}:bus:{queue}`.
    pub fn bus(&self, queue: &str) -> String {
        [self.prefix.as_str(), "bus:", queue].concat()
    }

    /// The queue name of a `bus` key.
    pub fn queue_of<'a>(&self, stream: &'a str) -> &'a str {
        stream
            .strip_prefix(&self.prefix)
            .and_then(|s| s.strip_prefix("bus:"))
            .unwrap_or(stream)
    }

    /// The set of queues written to.
    pub fn queues(&self) -> String {
        self.key("queues")
    }

    /// Dead-lettered messages.
    pub fn dead_letters(&self) -> String {
        self.key("deadletter")
    }

    /// The metric counters.
    pub fn metrics(&self) -> String {
        self.key("metrics")
    }

    /// `task:{id}:locks:{name}`.
    pub fn lock(&self, name: &str) -> String {
        [self.prefix.as_str(), "locks:", name].concat()
    }

    /// Fencing numbers of the locks.
    pub fn fences(&self) -> String {
        self.key("fences")
    }

    /// Once-only claims.
    pub fn claims(&self) -> String {
        self.key("claims")
    }

    /// The task record.
    pub fn meta(&self) -> String {
        self.key("meta")
    }

    /// The processes taking part.
    pub fn hosts(&self) -> String {
        self.key("hosts")
    }

    /// The run journal's stream.
    pub fn journal(&self) -> String {
        self.key("journal")
    }

    /// The lease of the task's duties.
    pub fn lease(&self) -> String {
        self.key("lease")
    }

    /// The counter of member epochs.
    pub fn epoch(&self) -> String {
        self.key("epoch")
    }

    /// The key that exists while process `host` is a live member.
    pub fn member(&self, host: &str) -> String {
        [self.prefix.as_str(), "member:", host].concat()
    }

    /// The bitmap of the sends of `sender` (a process) applied.
    pub fn sent(&self, sender: &str) -> String {
        [self.prefix.as_str(), "sent:", sender].concat()
    }

    /// The done-marker of a retried operation.
    pub fn once(&self, token: &str) -> String {
        [self.prefix.as_str(), "once:", token].concat()
    }

    /// A SCAN pattern matching every key of the task (task ids hold no glob characters).
    pub fn all(&self) -> String {
        format!("{}*", self.prefix)
    }
}

/// A random token for a done-marker or an owner.
pub(super) fn token() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// The task id of a key (`task:{id}:...`).
pub(super) fn task_of(key: &str) -> &str {
    key.strip_prefix("task:")
        .and_then(|rest| rest.split(':').next())
        .unwrap_or("")
}
