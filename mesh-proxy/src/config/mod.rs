//! Config: loading the proto model from a file and compiling it into a runtime snapshot.

pub mod load;
pub mod security;
pub mod snapshot;

pub use load::{LoadError, load_config_file, parse_config};
pub use security::ListenerSecurity;
pub use snapshot::{ConfigError, Snapshot};
