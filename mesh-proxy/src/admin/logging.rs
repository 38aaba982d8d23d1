//! The log level of a running proxy, changed through the admin endpoint as Envoy's
//! `POST /logging?level=debug`: the tracing filter sits behind a reload handle.

use std::sync::Mutex;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::reload;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LogLevelError {
    #[error(
        "unknown log level {0:?}; expected trace, debug, info, warning, error, critical or off"
    )]
    UnknownLevel(String),
    #[error("missing ?level=LEVEL")]
    MissingLevel,
    #[error("the log filter cannot be changed: {0}")]
    Reload(String),
}

/// Envoy's level names (and tracing's) to a tracing filter directive.
pub fn parse_level(name: &str) -> Result<&'static str, LogLevelError> {
    match name.to_ascii_lowercase().as_str() {
        "trace" => Ok("trace"),
        "debug" => Ok("debug"),
        "info" => Ok("info"),
        "warn" | "warning" => Ok("warn"),
        // Envoy's "critical" has no tracing equivalent above error.
        "error" | "critical" => Ok("error"),
        "off" => Ok("off"),
        _ => Err(LogLevelError::UnknownLevel(name.to_owned())),
    }
}

/// The `level` parameter of a query string (`level=debug&...`).
pub fn level_param(query: Option<&str>) -> Result<&str, LogLevelError> {
    query
        .unwrap_or_default()
        .split('&')
        .filter_map(|p| p.split_once('='))
        .find_map(|(k, v)| (k == "level").then_some(v))
        .ok_or(LogLevelError::MissingLevel)
}

type Reload = Box<dyn Fn(EnvFilter) -> Result<(), reload::Error> + Send + Sync>;

/// The filter in force and the handle that replaces it.
pub struct LogControl {
    current: Mutex<String>,
    reload: Reload,
}

impl LogControl {
    /// `initial` is the filter the subscriber was built with, as text (`info`, or `RUST_LOG`).
    pub fn new<S>(initial: &str, handle: reload::Handle<EnvFilter, S>) -> Self
    where
        S: 'static,
    {
        Self {
            current: Mutex::new(initial.to_owned()),
            reload: Box::new(move |filter| handle.reload(filter)),
        }
    }

    /// The filter in force, e.g. `info`.
    pub fn current(&self) -> String {
        self.current.lock().expect("log level lock").clone()
    }

    /// Sets every logger to `level` (an Envoy or tracing level name); returns the new filter.
    pub fn set_level(&self, level: &str) -> Result<String, LogLevelError> {
        let directive = parse_level(level)?;
        let mut current = self.current.lock().expect("log level lock");
        (self.reload)(EnvFilter::new(directive))
            .map_err(|e| LogLevelError::Reload(e.to_string()))?;
        *current = directive.to_owned();
        Ok(directive.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envoy_level_names_map_to_tracing_directives() {
        assert_eq!(parse_level("debug"), Ok("debug"));
        assert_eq!(parse_level("WARNING"), Ok("warn"));
        assert_eq!(parse_level("critical"), Ok("error"));
        assert_eq!(parse_level("off"), Ok("off"));
        assert_eq!(
            parse_level("verbose"),
            Err(LogLevelError::UnknownLevel("verbose".into()))
        );
    }

    #[test]
    fn the_level_parameter_is_read_from_the_query() {
        assert_eq!(level_param(Some("level=debug")), Ok("debug"));
        assert_eq!(level_param(Some("x=1&level=info")), Ok("info"));
        assert_eq!(level_param(Some("x=1")), Err(LogLevelError::MissingLevel));
        assert_eq!(level_param(None), Err(LogLevelError::MissingLevel));
    }

    #[test]
    fn set_level_replaces_the_filter_and_reports_it() {
        let (layer, handle) =
            reload::Layer::<EnvFilter, tracing_subscriber::Registry>::new(EnvFilter::new("info"));
        // The subscriber owns the layer; the handle works while it lives.
        let subscriber = tracing_subscriber::layer::SubscriberExt::with(
            tracing_subscriber::Registry::default(),
            layer,
        );
        let control = LogControl::new("info", handle);
        let _guard = tracing::subscriber::set_default(subscriber);
        assert_eq!(control.current(), "info");
        assert_eq!(control.set_level("debug"), Ok("debug".into()));
        assert_eq!(control.current(), "debug");
        assert!(tracing::enabled!(tracing::Level::DEBUG));
        assert!(control.set_level("loud").is_err());
        assert_eq!(
            control.current(),
            "debug",
            "a refused level changes nothing"
        );
    }
}
