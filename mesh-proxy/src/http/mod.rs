//! The HTTP data path: request handling, forwarding with retries, bodies and local replies.

pub mod admitted;
pub mod body;
pub mod decide;
pub mod edge;
pub mod fed_body;
pub mod forward;
pub mod headers;
pub mod inbound;
pub mod local;
pub mod mirror;
pub mod proxy;
pub mod scan;
pub mod upgrade;

pub use proxy::Proxy;
