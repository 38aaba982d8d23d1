//! The mesh's sidecar injector.
//!
//! - The injection engine: [`Injector`] renders one [`Template`] with mesh-wide [`Values`] and
//!   a pod's annotations, and injects a Pod or the pod template of a Deployment, StatefulSet,
//!   DaemonSet, ReplicaSet, Job or CronJob ([`Injector::inject_object`]), answering with the
//!   injected object and the RFC 6902 patch from the original to it. `meshctl kube-inject`
//!   uses it on files.
//! - The admission webhooks ([`review`], [`server`]): `POST /inject` (mutating, Pods) and
//!   `POST /validate` (the mesh's config objects) over HTTPS with a reloading certificate.
//!
//! ```
//! use mesh_injector::{Injector, NamespaceScope, Outcome, Template, Values};
//!
//! let injector = Injector::new(Values::default(), Template::default_template()).unwrap();
//! let pod = serde_json::json!({
//!     "apiVersion": "v1", "kind": "Pod",
//!     "metadata": {"name": "web", "labels": {"app": "web"}},
//!     "spec": {"containers": [{"name": "web", "image": "nginx", "ports": [{"containerPort": 80}]}]},
//! });
//! let Outcome::Injected { object, .. } =
//!     injector.inject_object(&pod, Some("shop"), NamespaceScope::Selected).unwrap()
//! else { panic!() };
//! assert_eq!(object["spec"]["containers"][0]["name"], "mesh-proxy");
//! assert_eq!(object["spec"]["initContainers"][0]["name"], "mesh-init");
//! ```
#![forbid(unsafe_code)]

pub mod annotations;
pub mod config;
pub mod inject;
pub mod manifest;
pub mod patch;
pub mod policy;
pub mod probes;
pub mod review;
pub mod server;
pub mod template;
pub mod tls;
pub mod values;
pub mod workload;

pub use inject::{InjectError, Injector, Status};
pub use policy::{NamespaceScope, Skip};
pub use template::{DEFAULT_TEMPLATE, Template, TemplateError};
pub use values::{Values, ValuesError};
pub use workload::{ObjectError, Outcome};
