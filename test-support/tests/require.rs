//! `require` in a real test process: an unmet requirement skips (saying so) without
//! `MESH_REQUIRE_PRIVILEGED_TESTS`, and fails the test with its reason under it; and `.ci/run`
//! sets the variable for the workspace's test command.

use std::process::{Command, Output};

use mesh_test_support::{REQUIRE_ALL_VAR, require};

const UNMET: &str = "an_unmet_requirement";

/// The body the tests below run in a child process (ignored in a plain run).
#[test]
#[ignore = "run by the tests below in a child process, with and without the variable"]
fn an_unmet_requirement() {
    if !require(false, "a test machine with two moons") {
        return;
    }
    panic!("went on past an unmet requirement");
}

fn run_unmet(strict: Option<&str>) -> Output {
    let mut cmd = Command::new(std::env::current_exe().expect("test executable"));
    cmd.args([
        "--exact",
        UNMET,
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]);
    match strict {
        Some(v) => cmd.env(REQUIRE_ALL_VAR, v),
        None => cmd.env_remove(REQUIRE_ALL_VAR),
    };
    cmd.output().expect("the test executable runs")
}

#[test]
fn locally_an_unmet_requirement_skips_and_says_so() {
    let out = run_unmet(None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("skipped: a test machine with two moons"),
        "{stderr}"
    );
}

#[test]
fn under_the_variable_an_unmet_requirement_fails_with_its_reason() {
    let out = run_unmet(Some("1"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("a test machine with two moons, and MESH_REQUIRE_PRIVILEGED_TESTS forbids"),
        "{stderr}"
    );
}

/// CI is `.ci/run`: it must export the variable before it runs the workspace's tests.
#[test]
fn ci_requires_every_test_to_run() {
    let script = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../.ci/run"))
        .expect(".ci/run");
    let export = script
        .lines()
        .position(|l| l.trim() == format!("export {REQUIRE_ALL_VAR}=1"))
        .unwrap_or_else(|| panic!(".ci/run does not export {REQUIRE_ALL_VAR}=1:\n{script}"));
    let tests = script
        .lines()
        .position(|l| l.contains("cargo test --workspace"))
        .expect(".ci/run runs the workspace's tests");
    assert!(export < tests, "exported after the tests run:\n{script}");
}
