//! The fleet through the binary on a real `redis-server` the tests start:
//! workers that share submitted tasks, one killed and one drained mid-run,
//! and the errors of bad input to `submit`, `status` and `cancel`.
//!
//! One test binary; each concern is a module beside this file.

use orrery_test_support as common;

mod adopt;
mod bad_input;
mod bundles;
mod drain;
mod leave;
mod limits;
mod metrics;
mod records;
mod reload;
mod spread;
mod survive;
mod util;
mod wake;
