//! `networking.istio.io` resources.

pub mod common;
pub mod destination_rule;
pub mod gateway;
pub mod local_rate_limit;
pub mod retry_on;
pub mod service_entry;
pub mod sidecar;
pub mod virtual_service;
pub mod workload_entry;

pub use common::*;
pub use destination_rule::*;
pub use gateway::*;
pub use local_rate_limit::*;
pub use retry_on::{RetryCondition, RetryOnEntry};
pub use service_entry::*;
pub use sidecar::*;
pub use virtual_service::*;
pub use workload_entry::*;
