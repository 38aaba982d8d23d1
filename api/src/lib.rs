//! The mesh's user-facing API: Istio's resources (VirtualService,
//! DestinationRule, ServiceEntry, ...), loaded from YAML and validated with
//! Istio's rules. Shared by pilot, the injector's validating webhook and meshctl.
//!
//! ```
//! use mesh_api::{Resource, load_str};
//!
//! let yaml = "\
//! apiVersion: networking.istio.io/v1
//! kind: VirtualService
//! metadata: {name: reviews}
//! spec:
//!   hosts: [reviews]
//!   http:
//!   - route:
//!     - destination: {host: reviews, subset: v1}
//!       weight: 80
//!     - destination: {host: reviews, subset: v2}
//!       weight: 30
//! ";
//! let (valid, errors) = load_str("reviews.yaml", yaml);
//! assert!(valid.is_empty());
//! assert_eq!(errors[0].to_string(), "reviews.yaml:7: spec.http[0].route: total destination weight 110 != 100");
//!
//! let (valid, errors) = load_str("reviews.yaml", &yaml.replace("30", "20"));
//! assert!(errors.is_empty());
//! let Resource::VirtualService(vs) = &valid[0] else { unreachable!() };
//! assert_eq!(vs.spec.http[0].route[1].weight, 20);
//! ```
#![forbid(unsafe_code)]

pub mod analysis;
pub mod decode;
pub mod duration;
pub mod error;
pub mod load;
pub mod networking;
pub mod path;
pub mod resource;
pub mod security;
pub mod telemetry;
pub mod validate;
pub mod yaml;

pub use decode::{decode, decode_value};
pub use duration::{Duration, DurationError, parse_duration};
pub use error::{ObjectRef, ValidationError};
pub use load::{config_files, load_path, load_str, parse_str};
pub use path::FieldPath;
pub use resource::{Kind, Object, ObjectMeta, Resource, Source};
pub use validate::validate;
