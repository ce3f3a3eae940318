//! The Streams the workers read through the consumer group `workers`: the
//! submitted tasks, `fleet:submitted`, and the requests to join a task with
//! an agent of a role, `fleet:joins:{role}`. Each entry goes to one worker,
//! which re-claims it at every beat; an entry idle for a lease is a dead
//! worker's, for another to take. An entry holds a task id (`id`), and a
//! request to join names the agent to start (`agent`: a spawn handed over
//! by a worker that does not serve its role) or which of the task's
//! initial agents of the role it is for (`n`: 0, 1...; the worker that
//! starts it claims `initial:{role}:{n}` first, as a resume does, so it
//! starts once).

use std::time::Duration;

use redis::streams::{StreamAutoClaimReply, StreamReadReply};

use super::{Fleet, GROUP, store_error};
use crate::error::Result;

/// An entry of a worker's Stream, taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    /// The Stream entry's id.
    pub entry: String,
    /// The task it is about.
    pub task: String,
    /// For a request to join: the agent to start under its recorded id.
    pub agent: Option<String>,
    /// For a request to join with one of the task's initial agents of the
    /// role: which of them.
    pub initial: Option<usize>,
}

impl Taken {
    fn of(e: redis::streams::StreamId) -> Option<Taken> {
        let task: String = e.get("id")?;
        let agent: Option<String> = e.get("agent");
        let initial: Option<usize> = e.get("n");
        Some(Taken {
            entry: e.id,
            task,
            agent,
            initial,
        })
    }
}

/// What a request to join asks for.
#[derive(Debug, Clone, Copy)]
enum Ask<'a> {
    /// The task's initial agent of the role of this place (0, 1...).
    Initial(usize),
    /// The agent of this id, recorded by the process that asks.
    Agent(&'a str),
}

impl Fleet {
    /// New entries of `stream` for `worker`, at most `count`, waiting up to
    /// `block` (not at all when zero; a wait holds this connection).
    pub async fn take_new(
        &mut self,
        stream: &str,
        worker: &str,
        count: usize,
        block: Duration,
    ) -> Result<Vec<Taken>> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(GROUP)
            .arg(worker)
            .arg("COUNT")
            .arg(count);
        // BLOCK 0 would wait for ever, holding the shared connection.
        if !block.is_zero() {
            cmd.arg("BLOCK").arg(block.as_millis() as u64);
        }
        let reply: Option<StreamReadReply> = cmd
            .arg("STREAMS")
            .arg(stream)
            .arg(">")
            .query_async(&mut self.conn)
            .await
            .map_err(store_error)?;
        Ok(reply
            .into_iter()
            .flat_map(|r| r.keys)
            .flat_map(|k| k.ids)
            .filter_map(Taken::of)
            .collect())
    }

    /// Entries of `stream` whose worker has not re-claimed them for `idle`
    /// (it is gone), now `worker`'s, at most `count`.
    pub async fn take_abandoned(
        &mut self,
        stream: &str,
        worker: &str,
        idle: Duration,
        count: usize,
    ) -> Result<Vec<Taken>> {
        let reply: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
            .arg(stream)
            .arg(GROUP)
            .arg(worker)
            .arg(idle.as_millis() as u64)
            .arg("0-0")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut self.conn)
            .await
            .map_err(store_error)?;
        Ok(reply.claimed.into_iter().filter_map(Taken::of).collect())
    }

    /// Re-claims `entries` of `stream` to `worker`, resetting their idle
    /// time (`idle` zero: still mine), or making them look abandoned at once
    /// (`idle` large: a hand-over).
    pub async fn touch_entries(
        &mut self,
        stream: &str,
        worker: &str,
        entries: &[String],
        idle: u64,
    ) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut cmd = redis::cmd("XCLAIM");
        cmd.arg(stream).arg(GROUP).arg(worker).arg(0);
        for e in entries {
            cmd.arg(e);
        }
        cmd.arg("IDLE").arg(idle).arg("JUSTID");
        cmd.query_async::<redis::Value>(&mut self.conn)
            .await
            .map_err(store_error)?;
        Ok(())
    }

    /// Asks workers serving `role` for the `count` initial agents of it in
    /// task `id` (one entry each on `fleet:joins:{role}`).
    pub async fn ask_join(&mut self, id: &str, role: &str, count: usize) -> Result<()> {
        let asks: Vec<Ask> = (0..count).map(Ask::Initial).collect();
        self.add_joins(id, role, &asks).await
    }

    /// Asks a worker serving `role` to start agent `agent` of task `id`,
    /// already recorded (in INIT) by the process that could not start it.
    pub async fn ask_join_agent(&mut self, id: &str, role: &str, agent: &str) -> Result<()> {
        self.add_joins(id, role, &[Ask::Agent(agent)]).await
    }

    /// One request on `fleet:joins:{role}` per entry of `asks`, then a wake-up.
    async fn add_joins(&mut self, id: &str, role: &str, asks: &[Ask<'_>]) -> Result<()> {
        let stream = joins(role);
        self.ensure_group(&stream).await?;
        let mut pipe = redis::pipe();
        pipe.cmd("SADD").arg(JOIN_ROLES).arg(role).ignore();
        for ask in asks {
            let add = pipe.cmd("XADD").arg(&stream).arg("*").arg("id").arg(id);
            match ask {
                Ask::Initial(n) => add.arg("n").arg(*n),
                Ask::Agent(agent) => add.arg("agent").arg(*agent),
            };
            add.ignore();
        }
        // After the requests: a worker woken finds them.
        let mut wake = redis::cmd("XADD");
        super::wake::add_wake(&mut wake, &format!("join {role}"));
        pipe.add_command(wake).ignore();
        pipe.query_async::<()>(&mut self.conn)
            .await
            .map_err(store_error)
    }

    /// Acknowledges and deletes `entry` of `stream`: its work is done.
    pub async fn done_entry(&mut self, stream: &str, entry: &str) -> Result<()> {
        let mut pipe = redis::pipe();
        pipe.cmd("XACK").arg(stream).arg(GROUP).arg(entry).ignore();
        pipe.cmd("XDEL").arg(stream).arg(entry).ignore();
        pipe.query_async::<()>(&mut self.conn)
            .await
            .map_err(store_error)
    }
}

/// Set of the roles agents were ever asked for (whose join Streams exist).
const JOIN_ROLES: &str = "fleet:join_roles";

impl Fleet {
    /// The roles agents were asked for, for a worker serving any role.
    pub async fn join_roles(&mut self) -> Result<Vec<String>> {
        redis::cmd("SMEMBERS")
            .arg(JOIN_ROLES)
            .query_async(&mut self.conn)
            .await
            .map_err(store_error)
    }
}

/// The Stream of requests for agents of `role`.
pub fn joins(role: &str) -> String {
    format!("fleet:joins:{role}")
}
