//! Helpers shared by the workspace's tests:
//!
//! - [`require`]: what a test does when this machine cannot run it (skip locally, fail where
//!   every test must run: `MESH_REQUIRE_PRIVILEGED_TESTS=1`, set by `.ci/run`);
//! - [`RefusedAddr`]: a loopback address that refuses connections for as long as it is held.

#![forbid(unsafe_code)]

mod refused;
mod require;

pub use refused::RefusedAddr;
pub use require::{REQUIRE_ALL_VAR, Verdict, every_test_must_run, require, require_root, verdict};
