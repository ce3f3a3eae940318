//! The server-side Lua scripts. Each declares in KEYS every key it touches (as
//! Dragonfly requires) and uses only commands Dragonfly supports; channel
//! names are not keys. Scripts run with EVALSHA; every connection loads them
//! all when it opens, and again after a NOSCRIPT (a server restart).

use std::sync::LazyLock;

/// A script's source and its SHA1, for EVALSHA and SCRIPT LOAD.
pub(super) struct ServerScript {
    source: &'static str,
    hash: String,
}

/// The membership check every write script starts with: the last key is
/// the calling process's member key and the last argument says whether it is
/// a member (`1`) or a tool that never joined (`0`: `inspect`, `clean`, the
/// reaper's own look). A member declared lost has `fenced` there: the write
/// is refused with the error code `FENCED`. One GET of a small key. A
/// member key that is missing altogether means the server lost the task's
/// data (a restart without persistence): the write goes on, and the
/// heartbeat reports it (see [`HEARTBEAT`]).
fn fence_check() -> String {
    format!(
        "\nif ARGV[#ARGV] == '1' and redis.call('GET', KEYS[#KEYS]) == 'fenced' then\n  \
         return redis.error_reply('{FENCED_REPLY}')\nend\n"
    )
}

/// The refusal of a fenced member's write (its first word the error code).
const FENCED_REPLY: &str = "FENCED this process was declared lost: the task goes on without it";

/// The refusal a script gives a fenced member, for a refusal found without
/// one (a look that finds its member key says `fenced`).
pub(super) fn fenced_error() -> redis::RedisError {
    match redis::parse_redis_value(format!("-{FENCED_REPLY}\r\n").as_bytes()) {
        Ok(redis::Value::ServerError(e)) => e.into(),
        _ => unreachable!("an error line parses as a server error"),
    }
}

impl ServerScript {
    fn new(source: &'static str) -> ServerScript {
        ServerScript {
            source,
            hash: redis::Script::new(source).get_hash().to_string(),
        }
    }

    /// A write script refused to fenced members: [`fence_check`] first, so
    /// the caller adds the member key last to KEYS and the flag last to ARGV.
    fn fenced(body: &'static str) -> ServerScript {
        Self::fenced_with("", body)
    }

    /// A write script refused to fenced members whose body uses the Lua
    /// functions `functions` defines.
    fn fenced_with(functions: &str, body: &str) -> ServerScript {
        let source: &'static str =
            Box::leak(format!("{functions}{}{body}", fence_check()).into_boxed_str());
        Self::new(source)
    }

    /// The SHA1 EVALSHA names the script by.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// The Lua source.
    pub fn source(&self) -> &'static str {
        self.source
    }
}

/// Every script, to load on a new connection.
pub(super) fn all() -> [&'static ServerScript; 23] {
    [
        &BATCH,
        &GIVE_BACK,
        &BB_SET,
        &BB_DELETE,
        &BB_CAS,
        &CLAIM_RETURNED,
        &NACK,
        &RELEASE,
        &LOCK_ACQUIRE,
        &LOCK_RELEASE,
        &LOCK_EXTEND,
        &METRICS_ADD,
        &CLAIM,
        &REVIVE,
        &RETAIN,
        &SEND,
        &ACK,
        &HEARTBEAT,
        &AGENT_PUT,
        &JOIN,
        &LEASE,
        &FENCE,
        &CHECKPOINT,
    ]
}

/// Whether a write's deadline (server time, ms; `0`: none) has passed,
/// shared by the write scripts: the server's clock is read once per call
/// (`TIME`), however many writes the call holds. A write carries the moment
/// its sender stops waiting for it (see [`super::clock`]), so one that
/// reaches the server later (held by a paused server, or on a connection
/// the sender left) is refused (`LATE`) rather than applied after the
/// sender reported it failed.
const LATE_OP: &str = r#"
local clock
local function late(deadline)
  if deadline == '0' then return false end
  if not clock then
    local now = redis.call('TIME')
    clock = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  end
  return clock > tonumber(deadline)
end
"#;

/// A blackboard set as a Lua function of the offsets of its keys (`k`) and
/// arguments (`a`) in KEYS and ARGV, shared by [`BB_SET`] and [`BATCH`]:
/// sets the key, indexes it, and publishes the change; refused (`LATE`,
/// nothing written) past its deadline (see [`LATE_OP`]). The index lives at
/// least as long as its entries: with an index ttl > 0 its TTL is raised to
/// that many ms (the process asks once in a while, not every write).
/// KEYS: value, index. ARGV: json, ttl ms, key, channel, event prefix,
/// index ttl ms, deadline.
const SET_OP: &str = r#"
local function bb_set(k, a)
  if late(ARGV[a + 6]) then
    return redis.error_reply('LATE not applied: the write reached the server after connect_timeout')
  end
  redis.call('SET', KEYS[k], ARGV[a], 'PX', ARGV[a + 1])
  redis.call('ZADD', KEYS[k + 1], 0, ARGV[a + 2])
  local index_ttl = tonumber(ARGV[a + 5])
  if index_ttl > 0 and redis.call('PTTL', KEYS[k + 1]) < index_ttl then
    redis.call('PEXPIRE', KEYS[k + 1], index_ttl)
  end
  redis.call('PUBLISH', ARGV[a + 3], ARGV[a + 4] .. ARGV[a] .. '}')
  return 1
end
"#;

/// Sets a blackboard key (see [`SET_OP`]) in a script call of its own.
/// KEYS: value, index, member. ARGV: as [`SET_OP`], member flag.
pub(super) static BB_SET: LazyLock<ServerScript> =
    LazyLock::new(|| ServerScript::fenced_with(&[LATE_OP, SET_OP].concat(), "return bb_set(1, 1)"));

/// Deletes a blackboard key and publishes the change if it existed.
/// KEYS: value, index. ARGV: key, channel, event.
pub(super) static BB_DELETE: LazyLock<ServerScript> = LazyLock::new(|| {
    ServerScript::fenced(
        r#"
local n = redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if n == 1 then redis.call('PUBLISH', ARGV[2], ARGV[3]) end
return n
"#,
    )
});

/// Compare-and-set: values are compared as canonical JSON text. A retry of a
/// swap that already happened finds its done-marker and reports success.
/// KEYS: value, index, once. ARGV: has expected, expected, has new, new,
/// ttl ms, key, channel, event prefix (set) or event (delete).
pub(super) static BB_CAS: LazyLock<ServerScript> = LazyLock::new(|| {
    ServerScript::fenced(
        r#"
if redis.call('EXISTS', KEYS[3]) == 1 then return 1 end
local current = redis.call('GET', KEYS[1])
if ARGV[1] == '1' then
  if current ~= ARGV[2] then return 0 end
elseif current then
  return 0
end
if ARGV[3] == '1' then
  redis.call('SET', KEYS[1], ARGV[4], 'PX', ARGV[5])
  redis.call('ZADD', KEYS[2], 0, ARGV[6])
  if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[5]) then
    redis.call('PEXPIRE', KEYS[2], ARGV[5])
  end
  redis.call('PUBLISH', ARGV[7], ARGV[8] .. ARGV[4] .. '}')
else
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[6])
  redis.call('PUBLISH', ARGV[7], ARGV[8])
end
redis.call('SET', KEYS[3], '1', 'PX', 60000)
return 1
"#,
    )
});

/// Puts the entries given that a consumer still holds back in their
/// stream as new entries (a fenced member's last read, see `Server::fetch`:
/// never handed out, they go to whoever reads the queue next, woken as by
/// a send); returns how many. KEYS: stream. ARGV: group, consumer, entry ids.
pub(super) static GIVE_BACK: LazyLock<ServerScript> = LazyLock::new(|| {
    ServerScript::new(
        r#"
local n = 0
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if #p > 0 and p[1][2] == ARGV[2] then
    local e = redis.call('XRANGE', KEYS[1], ARGV[i], ARGV[i])
    if e[1] then redis.call('XADD', KEYS[1], '*', (table.unpack or unpack)(e[1][2])) end
    redis.call('XACK', KEYS[1], ARGV[1], ARGV[i])
    redis.call('XDEL', KEYS[1], ARGV[i])
    n = n + 1
  end
end
return n
"#,
    )
});

/// Claims the oldest message given back (parked on the `~returned` consumer)
/// of the first stream that has one, refused to a fenced member (it would
/// take the message into a pending list its agents' adopter never reads). Returns {stream index, entry id, fields, deliveries} or false.
/// KEYS: streams, member. ARGV: group, consumer, returned-consumer, member flag.
pub(super) static CLAIM_RETURNED: LazyLock<ServerScript> = LazyLock::new(|| {
    ServerScript::fenced(
        r#"
for i = 1, #KEYS - 1 do
  local parked = redis.call('XPENDING', KEYS[i], ARGV[1], '-', '+', 1, ARGV[3])
  if #parked > 0 then
    local id = parked[1][1]
    local claimed = redis.call('XCLAIM', KEYS[i], ARGV[1], ARGV[2], 0, id)
    if claimed[1] and claimed[1][2] then
      return {i, id, claimed[1][2], parked[1][4] + 1}
    end
  end
end
return false
"#,
    )
});

/// Gives a message back: parked for redelivery, or dead-lettered once it has
/// been delivered max-attempts times. Returns 1 dead-lettered, 0 parked, -1
/// when the consumer no longer holds it (acknowledged, or handed to another).
/// KEYS: stream, dead letters. ARGV: group, entry id, consumer, returned-consumer,
/// max attempts, queue, envelope json.
pub(super) static NACK: LazyLock<ServerScript> = LazyLock::new(|| {
    ServerScript::fenced(
        r#"
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if #p == 0 or p[1][2] ~= ARGV[3] then return -1 end
local deliveries = p[1][4]
if deliveries >= tonumber(ARGV[5]) then
  redis.call('XADD', KEYS[2], '*', 'q', ARGV[6], 'm', ARGV[7], 'a', deliveries)
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
  redis.call('XDEL', KEYS[1], ARGV[2])
  return 1
end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[4], 0, ARGV[2], 'JUSTID')
return 0
"#,
    )
});

/// Moves the dead letters of one queue back to its stream as new entries
/// (their delivery count starts over); returns how many.
/// KEYS: dead letters, stream, queues. ARGV: queue, group.
pub(super) static REVIVE: LazyLock<ServerScript> = LazyLock::new(|| {
    ServerScript::new(
        r#"
local n = 0
for _, e in ipairs(redis.call('XRANGE', KEYS[1], '-', '+')) do
  local q, m
  local f = e[2]
  for i = 1, #f, 2 do
    if f[i] == 'q' then q = f[i + 1] elseif f[i] == 'm' then m = f[i + 1] end
  end
  if q == ARGV[1] and m then
    redis.call('XADD', KEYS[2], '*', 'm', m)
    redis.call('XDEL', KEYS[1], e[1])
    n = n + 1
  end
end
if n > 0 then
  redis.pcall('XGROUP', 'CREATE', KEYS[2], ARGV[2], '0', 'MKSTREAM')
  redis.call('SADD', KEYS[3], ARGV[1])
end
return n
"#,
    )
});

/// Parks every message a consumer holds on one queue; returns how many.
/// KEYS: stream. ARGV: group, consumer, returned-consumer.
pub(super) static RELEASE: LazyLock<ServerScript> = LazyLock::new(|| {
    ServerScript::new(
        r#"
local p = redis.pcall('XPENDING', KEYS[1], ARGV[1], '-', '+', 100000, ARGV[2])
if p.err then return 0 end
for _, e in ipairs(p) do
  redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0, e[1], 'JUSTID')
end
return #p
"#,
    )
});

/// Grants a lock: SET NX PX with the owner's token, and a fencing number that
/// grows with every grant. A retry by the same owner gets its grant back.
/// KEYS: lock, fences. ARGV: token, ttl ms, name.
pub(super) static LOCK_ACQUIRE: LazyLock<ServerScript> = LazyLock::new(|| {
    ServerScript::fenced(
        r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return tonumber(redis.call('HGET', KEYS[2], ARGV[3]))
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return redis.call('HINCRBY', KEYS[2], ARGV[3], 1)
end
return false
"#,
    )
});

/// Releases a lock only for its owner (compare-and-delete).
/// KEYS: lock. ARGV: token.
pub(super) static LOCK_RELEASE: LazyLock<ServerScript> = LazyLock::new(|| {
    ServerScript::fenced(
        r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#,
    )
});

/// Extends a lock only for its owner. KEYS: lock. ARGV: token, ttl ms.
pub(super) static LOCK_EXTEND: LazyLock<ServerScript> = LazyLock::new(|| {
    ServerScript::fenced(
        r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"#,
    )
});

/// Adds counter deltas with HINCRBY, once. KEYS: metrics, once. ARGV: name, delta, ...
pub(super) static METRICS_ADD: LazyLock<ServerScript> = LazyLock::new(|| {
    ServerScript::new(
        r#"
if not redis.call('SET', KEYS[2], '1', 'NX', 'PX', 60000) then return 0 end
for i = 1, #ARGV, 2 do redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1]) end
return 1
"#,
    )
});

/// Claims a name for the first caller; a retry by that caller still wins.
/// KEYS: claims. ARGV: name, token.
pub(super) static CLAIM: LazyLock<ServerScript> = LazyLock::new(|| {
    ServerScript::new(
        r#"
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 1 then return 1 end
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then return 1 end
return 0
"#,
    )
});

/// Gives each key an expiry of at most ARGV[1] ms (one that expires sooner
/// keeps its own); returns how many were changed. KEYS: the keys.
///
/// One `PEXPIRE ... LT` per key where the server has it (Redis 7: a key
/// without expiry counts as expiring never, so it gets one): the end of a
/// run read each key's TTL first, a quarter of the server's commands per
/// operation of the bench's workload. A server without the option (an
/// error on the first key) gets the two-command way.
pub(super) static RETAIN: LazyLock<ServerScript> = LazyLock::new(|| {
    ServerScript::new(
        r#"
local n = 0
local first = redis.pcall('PEXPIRE', KEYS[1], ARGV[1], 'LT')
if type(first) == 'number' then
  n = first
  for i = 2, #KEYS do
    n = n + redis.call('PEXPIRE', KEYS[i], ARGV[1], 'LT')
  end
  return n
end
for i = 1, #KEYS do
  local ttl = redis.call('PTTL', KEYS[i])
  if ttl == -1 or ttl > tonumber(ARGV[1]) then
    redis.call('PEXPIRE', KEYS[i], ARGV[1])
    n = n + 1
  end
end
return n
"#,
    )
});

/// A send as a Lua function of the offsets of its keys (`k`) and arguments
/// (`a`), and its deadline, shared by [`SEND`] and [`BATCH`]: XADD, and the
/// first time this process sends to the queue also records the queue (record
/// = '1'). Applied once: each process numbers its sends to a task (0, 1,
/// 2...) and the script sets that bit of the process's bitmap; a bit already
/// set means this send was applied before (a resend after its connection
/// broke with the outcome unknown), and nothing is added: returns 0, else 1.
/// Each number is checked on its own, so the order resends and later sends
/// arrive in does not matter. Applied in time or not at all: every attempt
/// of a send carries its deadline (see [`LATE_OP`]) and one that reaches the
/// script later is refused with `LATE`, so a send the sender reported failed
/// is never delivered later. A refusal clears the bit again, so a retry is
/// not taken for done.
/// KEYS: stream, queues, sent bitmap. ARGV: envelope json, record, queue,
/// send number.
const SEND_OP: &str = r#"
local function send(k, a, deadline)
  if redis.call('SETBIT', KEYS[k + 2], ARGV[a + 3], 1) == 1 then return 0 end
  if late(deadline) then
    redis.call('SETBIT', KEYS[k + 2], ARGV[a + 3], 0)
    return redis.error_reply('LATE not delivered: the send reached the server after connect_timeout')
  end
  local added = redis.pcall('XADD', KEYS[k], '*', 'm', ARGV[a])
  if type(added) == 'table' and added.err then
    redis.call('SETBIT', KEYS[k + 2], ARGV[a + 3], 0)
    return added
  end
  if ARGV[a + 1] == '1' then redis.call('SADD', KEYS[k + 1], ARGV[a + 2]) end
  return 1
end
"#;

/// Sends a message (see [`SEND_OP`]) in a script call of its own.
/// KEYS: stream, queues, sent bitmap, member. ARGV: envelope json, record,
/// queue, send number, deadline, member flag.
pub(super) static SEND: LazyLock<ServerScript> = LazyLock::new(|| {
    ServerScript::fenced_with(&[LATE_OP, SEND_OP].concat(), "return send(1, 1, ARGV[5])")
});

/// Writes of one member in one call (see [`super::batch`]): the membership
/// check once, then each write as its own script call would apply it, in
/// order. A write that fails is that write's error (in the reply's place),
/// and the writes after it are applied all the same, as separate calls
/// would be; a fenced member's batch is refused whole. Returns one reply per
/// write. KEYS: member, then the keys of each write. ARGV: member flag, then
/// each write: `s` and the arguments of [`SET_OP`], or `m` and those of
/// [`SEND_OP`] and its deadline. The server's clock is read once per call.
pub(super) static BATCH: LazyLock<ServerScript> = LazyLock::new(|| {
    let source = format!(
        r#"{LATE_OP}{SET_OP}{SEND_OP}
if ARGV[1] == '1' and redis.call('GET', KEYS[1]) == 'fenced' then
  return redis.error_reply('{FENCED_REPLY}')
end
local out, k, a = {{}}, 2, 2
while a <= #ARGV do
  local ok, r
  if ARGV[a] == 's' then
    ok, r = pcall(bb_set, k, a + 1)
    k, a = k + 2, a + 8
  else
    ok, r = pcall(send, k, a + 1, ARGV[a + 5])
    k, a = k + 3, a + 6
  end
  if not ok and type(r) ~= 'table' then r = {{err = 'ERR ' .. tostring(r)}} end
  out[#out + 1] = r
end
return out
"#
    );
    ServerScript::new(Box::leak(source.into_boxed_str()))
});

/// Acknowledges and removes entries of one stream. KEYS: stream, member.
/// ARGV: group, ids..., member flag.
pub(super) static ACK: LazyLock<ServerScript> = LazyLock::new(|| {
    ServerScript::fenced(
        r#"
local ids = {}
for i = 2, #ARGV - 1 do ids[#ids + 1] = ARGV[i] end
local n = redis.call('XACK', KEYS[1], ARGV[1], unpack(ids))
redis.call('XDEL', KEYS[1], unpack(ids))
return n
"#,
    )
});

/// A process's heartbeat: its record, and the heartbeat of its agents.
/// Returns 1, or 2 when the member's key is missing: the server lost the
/// task's data. KEYS: hosts, agent states..., member. ARGV: host id, record
/// json, heartbeat ms, member flag.
pub(super) static HEARTBEAT: LazyLock<ServerScript> = LazyLock::new(|| {
    ServerScript::fenced(
        r#"
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
for i = 2, #KEYS - 1 do redis.call('HSET', KEYS[i], 'heartbeat', ARGV[3]) end
if ARGV[#ARGV] == '1' and redis.call('EXISTS', KEYS[#KEYS]) == 0 then return 2 end
return 1
"#,
    )
});

/// Writes an agent's record and keeps the set of the task's agents not
/// ended (whichever process runs them). With a limit (ARGV[5] > 0) an agent
/// not in that set yet is refused (0) when the set has that many already:
/// `max_agents` across every process of the task. KEYS: state, agents,
/// live, member. ARGV: record json, heartbeat ms, agent id, live flag,
/// limit, member flag.
pub(super) static AGENT_PUT: LazyLock<ServerScript> = LazyLock::new(|| {
    ServerScript::fenced(
        r#"
local limit = tonumber(ARGV[5])
if limit > 0 and redis.call('SISMEMBER', KEYS[3], ARGV[3]) == 0
    and redis.call('SCARD', KEYS[3]) >= limit then
  return 0
end
redis.call('HSET', KEYS[1], 'record', ARGV[1], 'heartbeat', ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
if ARGV[4] == '1' then
  redis.call('SADD', KEYS[3], ARGV[3])
else
  redis.call('SREM', KEYS[3], ARGV[3])
end
return 1
"#,
    )
});

/// Joins a task as a new member: the next epoch of the task (INCR), kept
/// in the member's key. KEYS: epoch counter, member. Returns the epoch.
pub(super) static JOIN: LazyLock<ServerScript> = LazyLock::new(|| {
    ServerScript::new(
        r#"
local epoch = redis.call('INCR', KEYS[1])
redis.call('SET', KEYS[2], epoch)
return epoch
"#,
    )
});

/// Takes or renews the task's lease for its holder: renewed when the holder
/// has it, taken when nobody does (it expired with a holder that stopped
/// renewing). Returns 1 when the caller holds it now. KEYS: lease, member.
/// ARGV: holder, ttl ms, member flag.
pub(super) static LEASE: LazyLock<ServerScript> = LazyLock::new(|| {
    ServerScript::fenced(
        r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
"#,
    )
});

/// Fences a member: its key says `fenced` from now on. Returns 1 for the
/// caller that fenced it, 0 when it already was. KEYS: member.
pub(super) static FENCE: LazyLock<ServerScript> = LazyLock::new(|| {
    ServerScript::new(
        r#"
if redis.call('GET', KEYS[1]) == 'fenced' then return 0 end
redis.call('SET', KEYS[1], 'fenced')
return 1
"#,
    )
});

/// Keeps an agent's checkpoint in its state hash. KEYS: state, member.
/// ARGV: json, member flag.
pub(super) static CHECKPOINT: LazyLock<ServerScript> = LazyLock::new(|| {
    ServerScript::fenced(
        r#"
redis.call('HSET', KEYS[1], 'checkpoint', ARGV[1])
return 1
"#,
    )
});

#[cfg(test)]
mod tests {
    //! The write scripts' contract on a real server: a send's number
    //! applied once in any order, a late attempt refused and not taken for
    //! done; a late set refused, alone and in a batch, the others applied.

    use orrery_test_support::RedisServer;
    use redis::{Commands, Value};

    use super::{BATCH, BB_SET, SEND};

    /// The arguments of a set of `task:t:blackboard:k` to `json` (see
    /// `SET_OP`), with `deadline`.
    fn set_args(cmd: &mut redis::Cmd, json: &str, deadline: i64) {
        cmd.arg(json)
            .arg(60_000)
            .arg("k")
            .arg("task:t:events")
            .arg("{\"set\":")
            .arg(0)
            .arg(deadline);
    }

    /// Runs BB_SET of `json` with `deadline`.
    fn set(c: &mut redis::Connection, json: &str, deadline: i64) -> redis::RedisResult<Value> {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(BB_SET.source())
            .arg(3)
            .arg(&["task:t:blackboard:k", "task:t:bbindex", "task:t:member:m"][..]);
        set_args(&mut cmd, json, deadline);
        cmd.arg("1").query(c)
    }

    #[test]
    fn a_late_set_is_refused_alone_and_in_a_batch() {
        let server = RedisServer::start();
        let mut c = redis::Client::open(server.url())
            .unwrap()
            .get_connection()
            .unwrap();
        let value =
            |c: &mut redis::Connection| -> Option<String> { c.get("task:t:blackboard:k").unwrap() };
        let past = server_ms(&mut c) - 1;
        let future = server_ms(&mut c) + 60_000;
        let late = set(&mut c, "1", past).unwrap_err();
        assert_eq!(late.code(), Some("LATE"), "{late}");
        assert_eq!(value(&mut c), None);
        assert_eq!(set(&mut c, "2", future).unwrap(), Value::Int(1));
        assert_eq!(value(&mut c).as_deref(), Some("2"));
        // In a batch: the late write fails alone, in its place.
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(BATCH.source()).arg(5).arg(
            &[
                "task:t:member:m",
                "task:t:blackboard:k",
                "task:t:bbindex",
                "task:t:blackboard:k",
                "task:t:bbindex",
            ][..],
        );
        cmd.arg("1").arg("s");
        set_args(&mut cmd, "3", future);
        cmd.arg("s");
        set_args(&mut cmd, "4", past);
        let Value::Array(replies) = redis::ConnectionLike::req_command(&mut c, &cmd).unwrap()
        else {
            panic!("the batch answers one reply per write");
        };
        assert_eq!(replies[0], Value::Int(1));
        assert!(
            matches!(&replies[1], Value::ServerError(e) if e.code() == "LATE"),
            "{replies:?}"
        );
        assert_eq!(value(&mut c).as_deref(), Some("3"));
    }

    /// Runs SEND for send `number` with `deadline` (0: none).
    fn send(c: &mut redis::Connection, number: u64, deadline: i64) -> redis::RedisResult<Value> {
        redis::cmd("EVAL")
            .arg(SEND.source())
            .arg(4)
            .arg(
                &[
                    "task:t:bus:q",
                    "task:t:queues",
                    "task:t:sent:s",
                    "task:t:member:m",
                ][..],
            )
            .arg(format!("{{\"n\":{number}}}"))
            .arg("0")
            .arg("q")
            .arg(number)
            .arg(deadline)
            .arg("1")
            .query(c)
    }

    fn server_ms(c: &mut redis::Connection) -> i64 {
        let (secs, micros): (i64, i64) = redis::cmd("TIME").query(c).unwrap();
        secs * 1000 + micros / 1000
    }

    #[test]
    fn a_send_is_applied_once_whatever_the_order_and_a_late_one_not_at_all() {
        let server = RedisServer::start();
        let mut c = redis::Client::open(server.url())
            .unwrap()
            .get_connection()
            .unwrap();
        let len = |c: &mut redis::Connection| -> u64 { c.xlen("task:t:bus:q").unwrap() };
        assert_eq!(send(&mut c, 5, 0).unwrap(), Value::Int(1));
        // A resend of 5 is not added again; 3, arriving after 5, is.
        assert_eq!(send(&mut c, 5, 0).unwrap(), Value::Int(0));
        assert_eq!(send(&mut c, 3, 0).unwrap(), Value::Int(1));
        assert_eq!(len(&mut c), 2);
        // A retry that reaches the server after its deadline is refused...
        let past = server_ms(&mut c) - 1;
        let late = send(&mut c, 7, past).unwrap_err();
        assert_eq!(late.code(), Some("LATE"), "{late}");
        assert!(late.to_string().contains("not delivered"), "{late}");
        assert_eq!(len(&mut c), 2);
        // ...and not taken for done: one in time is applied.
        let future = server_ms(&mut c) + 60_000;
        assert_eq!(send(&mut c, 7, future).unwrap(), Value::Int(1));
        assert_eq!(len(&mut c), 3);
        // A number already applied is done even when its retry is late.
        assert_eq!(send(&mut c, 7, past).unwrap(), Value::Int(0));
        assert_eq!(len(&mut c), 3);
    }
}
