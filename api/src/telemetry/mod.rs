//! `telemetry.istio.io` resources: the Telemetry kind, and the access-log filter language
//! that validation and the proxy share (so a filter that validates is one the proxy runs).

pub mod filter;
pub mod resource;

pub use filter::{Filter, FilterError};
pub use resource::*;
