//! Config: loading the proto model from a file and compiling it into a runtime snapshot.

pub mod check;
pub mod error;
pub mod load;
pub mod security;
pub mod snapshot;

pub use check::{Report, SharedPart, check, check_shared, check_with};
pub use error::{ConfigError, ConfigObject, FieldError};
pub use load::{LoadError, load_config_file, parse_config};
pub use security::ListenerSecurity;
pub use snapshot::Snapshot;
