//! Envoy-style access logs: one line per HTTP request, in Envoy's default text format (as
//! Istio configures it) or as JSON with Istio's keys, written off the request path.
//!
//! - [`config`]: the logs a config asks for, compiled per direction (a proxy without logs
//!   pays one branch per request);
//! - [`entry`]: what a logged request captures when it starts and when it ends;
//! - [`format`]: the text and JSON lines;
//! - [`sink`]: the bounded queue to the writer thread; a full queue drops lines and counts
//!   them, a request never waits for a write.

pub mod config;
pub mod entry;
pub mod format;
pub mod sink;

pub use config::{AccessLogConfig, AccessLogError, CompiledLog};
pub use entry::{Known, Pending};
pub use format::Entry;
pub use sink::{Output, Sink};
