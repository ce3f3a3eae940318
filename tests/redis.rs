//! Integration tests of the Redis / DragonflyDB store (`orrery::store::RedisStore`)
//! against a real `redis-server` each test starts on a free port: the store
//! contract over both backends, several `orrery` processes on one task,
//! faults (server restart, unreachable server, a host killed), `inspect` and
//! `clean`, and the benchmark harness.
//!
//! One test binary; each concern is a module under `tests/redis/`.

#[path = "common/mod.rs"]
mod common;

#[path = "redis/bench.rs"]
mod bench;
#[path = "redis/contract_blackboard.rs"]
mod contract_blackboard;
#[path = "redis/contract_queues.rs"]
mod contract_queues;
#[path = "redis/contract_records.rs"]
mod contract_records;
#[path = "redis/faults.rs"]
mod faults;
#[path = "redis/inspect.rs"]
mod inspect;
#[path = "redis/multiprocess.rs"]
mod multiprocess;
#[path = "redis/runs.rs"]
mod runs;
#[path = "redis/tls.rs"]
mod tls;
#[path = "redis/util.rs"]
mod util;
