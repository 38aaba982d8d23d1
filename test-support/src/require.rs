//! What a test does when this machine cannot run it.
//!
//! Some tests need root (network namespaces, iptables) or a binary that another crate builds.
//! On a developer's machine they skip, saying so on stderr. In CI a skip would be a test that
//! passes by not running, so `.ci/run` sets `MESH_REQUIRE_PRIVILEGED_TESTS=1`, under which the
//! same missing requirement fails the test with its reason.
//!
//! Only that variable decides, not `CI`: many tools set `CI` on a developer's machine too, and
//! the one place that promises root and every binary is `.ci/run` (which runs
//! `tests/setup.sh` and `cargo build --workspace --bins` before the tests).

use std::ffi::OsStr;

/// Set (to `1`) where every test must run: a requirement that is not met fails the test.
pub const REQUIRE_ALL_VAR: &str = "MESH_REQUIRE_PRIVILEGED_TESTS";

/// What becomes of a test whose requirement is met or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Run,
    Skip,
    Fail,
}

/// Pure: a met requirement runs; an unmet one skips, or fails where every test must run.
pub fn verdict(met: bool, every_test_must_run: bool) -> Verdict {
    match (met, every_test_must_run) {
        (true, _) => Verdict::Run,
        (false, false) => Verdict::Skip,
        (false, true) => Verdict::Fail,
    }
}

/// Whether the variable's value asks for every test to run: set, and neither empty nor `0`.
pub fn every_test_must_run(value: Option<&OsStr>) -> bool {
    value.is_some_and(|v| !v.is_empty() && v != "0")
}

/// `true` when the test can go on. When `met` is false: under
/// `MESH_REQUIRE_PRIVILEGED_TESTS=1` panics with `why`; otherwise prints `skipped: <why>` to
/// stderr and returns `false`, and the test returns.
#[track_caller]
pub fn require(met: bool, why: &str) -> bool {
    let strict = every_test_must_run(std::env::var_os(REQUIRE_ALL_VAR).as_deref());
    match verdict(met, strict) {
        Verdict::Run => true,
        Verdict::Skip => {
            eprintln!("skipped: {why}");
            false
        }
        Verdict::Fail => panic!("{why}, and {REQUIRE_ALL_VAR} forbids skipping this test"),
    }
}

/// [`require`] that this process runs as root; `what` says what needs it.
#[track_caller]
pub fn require_root(what: &str) -> bool {
    require(
        nix::unistd::geteuid().is_root(),
        &format!("{what} need root"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unmet_requirement_skips_locally_and_fails_where_every_test_must_run() {
        assert_eq!(verdict(true, false), Verdict::Run);
        assert_eq!(verdict(true, true), Verdict::Run);
        assert_eq!(verdict(false, false), Verdict::Skip);
        assert_eq!(verdict(false, true), Verdict::Fail);
    }

    #[test]
    fn the_variable_asks_for_every_test_unless_unset_empty_or_zero() {
        assert!(!every_test_must_run(None));
        assert!(!every_test_must_run(Some(OsStr::new(""))));
        assert!(!every_test_must_run(Some(OsStr::new("0"))));
        assert!(every_test_must_run(Some(OsStr::new("1"))));
        assert!(every_test_must_run(Some(OsStr::new("true"))));
    }

    #[test]
    fn a_met_requirement_runs_whatever_the_environment() {
        assert!(require(true, "nothing"));
    }
}
