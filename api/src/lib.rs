//! The mesh's user-facing API: Istio's resources (VirtualService,
//! DestinationRule, ServiceEntry, ...), loaded from YAML and validated with
//! Istio's rules. Shared by pilot, the injector's validating webhook and meshctl.
#![forbid(unsafe_code)]

pub mod decode;
pub mod duration;
pub mod error;
pub mod load;
pub mod networking;
pub mod path;
pub mod resource;
pub mod security;
pub mod validate;
pub mod yaml;

pub use decode::decode;
pub use duration::{Duration, DurationError, parse_duration};
pub use error::{ObjectRef, ValidationError};
pub use load::{config_files, load_path, load_str, parse_str};
pub use path::FieldPath;
pub use resource::{Kind, Object, ObjectMeta, Resource, Source};
pub use validate::validate;
