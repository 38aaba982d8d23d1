//! The proxy's config (the proto model the pilot sends, or the YAML/JSON file a local proxy
//! reads) compiled into a snapshot. Input: protobuf bytes of `ProxyConfig`, or the text of a
//! config file; both are tried.

use std::sync::Arc;

use mesh_proto::config::v1::ProxyConfig;
use mesh_proxy::config::{Snapshot, parse_config};
use mesh_proxy::identity::IdentitySlot;
use mesh_proxy::metrics::Metrics;
use prost::Message;

pub fn run(data: &[u8]) {
    if let Ok(cfg) = ProxyConfig::decode(data) {
        compile(cfg);
    }
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(cfg) = parse_config("fuzz.yaml", text)
    {
        compile(cfg);
    }
}

fn compile(cfg: ProxyConfig) {
    let metrics = Metrics::default();
    let identity = Arc::new(IdentitySlot::default());
    match Snapshot::compile(cfg.clone(), None, &metrics, &identity) {
        Ok(first) => {
            // An update with the same config (pools carried over) is accepted too.
            let again = Snapshot::compile(cfg, Some(&first), &metrics, &identity);
            assert!(again.is_ok(), "accepted once, then {again:?}");
        }
        Err(e) => assert!(!e.field().is_empty() && !e.reason().is_empty(), "{e:?}"),
    }
}
