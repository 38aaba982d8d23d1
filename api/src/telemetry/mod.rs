//! `telemetry.istio.io` resources: the Telemetry kind, the access-log filter language and
//! the metric tag values that validation and the proxy share (so what validates is what the
//! proxy runs).

pub mod filter;
pub mod resource;
pub mod tag_value;

pub use filter::{Filter, FilterError};
pub use resource::*;
pub use tag_value::{TagValue, TagValueError, is_label_name};
