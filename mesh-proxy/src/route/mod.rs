//! Routing: the pure decision from a request and a route table to an action.

pub mod cors;
pub mod fault;
pub mod headers;
pub mod matcher;
pub mod rewrite;
pub mod table;
pub mod weighted;

pub use cors::{Cors, CorsCheck};
pub use fault::{Abort, Fault, Rolls};
pub use headers::HeaderOps;
pub use matcher::{RequestView, query_param};
pub use rewrite::{PathRewrite, rewrite_path};
pub use table::{
    Action, Destination, Forward, Redirect, Route, RouteTable, TableError, strip_port,
};
