//! Integration tests of the Redis / DragonflyDB store (`orrery::store::RedisStore`)
//! against a real `redis-server` each test starts on a free port: the store
//! contract over both backends, several `orrery` processes on one task,
//! faults (server restart, unreachable server, a host killed), `inspect` and
//! `clean`, and the benchmark harness.
//!
//! One test binary; each concern is a module beside this file.

use orrery_test_support as common;

mod batches;
mod bench;
mod connections;
mod contract_blackboard;
mod contract_queues;
mod contract_records;
mod faults;
mod inspect;
mod multiprocess;
mod paused;
mod runs;
mod tls;
mod util;
mod writes;
