//! Tests of `orrery test` (issue 15): the project's own specs of the default
//! agents and the stdlib pass through the binary; a deliberately broken Beta
//! fails them with a useful message; the runner's outputs, its fixtures'
//! guarantees (test clock, scripted LLM, determinism) and its bad input.

use orrery_test_support as common;

mod bad_input;
mod project;
mod runner;
mod watch;
