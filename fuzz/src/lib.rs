//! The body of every fuzz target, shared by the cargo-fuzz binaries (`fuzz/targets/fuzz_targets`, on
//! nightly) and the stable replay test (`tests/replay.rs`), so a saved input is judged the same
//! way in both places.
//!
//! Each entry takes arbitrary bytes, feeds them to a parser of untrusted input through its
//! crate's public API, and panics when a property the rest of the mesh relies on breaks
//! (a panic inside the parser is a finding too).

#![forbid(unsafe_code)]

pub mod admission_review;
pub mod client_hello;
pub mod first_bytes;
pub mod iptables_args;
pub mod istio_yaml;
pub mod override_headers;
pub mod proxy_config;
pub mod request_head;
pub mod xfcc_spiffe;

/// One fuzz target: its name (the directory of its corpus and regressions) and its entry.
pub struct Target {
    pub name: &'static str,
    pub run: fn(&[u8]),
}

/// Every target, in the order `.ci/fuzz` runs them.
pub const TARGETS: &[Target] = &[
    Target {
        name: "override_headers",
        run: override_headers::run,
    },
    Target {
        name: "istio_yaml",
        run: istio_yaml::run,
    },
    Target {
        name: "proxy_config",
        run: proxy_config::run,
    },
    Target {
        name: "client_hello",
        run: client_hello::run,
    },
    Target {
        name: "xfcc_spiffe",
        run: xfcc_spiffe::run,
    },
    Target {
        name: "first_bytes",
        run: first_bytes::run,
    },
    Target {
        name: "admission_review",
        run: admission_review::run,
    },
    Target {
        name: "iptables_args",
        run: iptables_args::run,
    },
    Target {
        name: "request_head",
        run: request_head::run,
    },
];

/// Splits `data` into lines (`\n`), the shape of the text-based targets' inputs.
pub(crate) fn lines(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    data.split(|b| *b == b'\n')
}
