//! Faults of a task shared through a real `redis-server` the tests start:
//! the server's own reasons in errors, how an ended or interrupted run is
//! stored, and what the store keeps after it.
//!
//! One test binary; each concern is a module beside this file.

use orrery_test_support as common;

mod members;
mod resume;
mod rounds;
mod sends;
mod truths;
mod util;
