//! The access logs of a config, compiled: per direction the logs that apply, their format
//! and their filter. A log whose filter is the constant `false` is left out, so it costs
//! nothing.

use std::sync::Arc;

use mesh_api::telemetry::{Filter, FilterError};
use mesh_proto::config::v1 as pb;
use pb::access_log::{Format, Mode};

/// One log as requests use it.
#[derive(Debug)]
pub struct CompiledLog {
    pub name: String,
    pub format: Format,
    /// `None`: every request.
    pub filter: Option<Filter>,
}

/// Why a log was refused: its index in `telemetry.accessLogging.logs` and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessLogError {
    #[error("filter {expression:?}: {error}")]
    Filter {
        index: usize,
        expression: String,
        error: FilterError,
    },
    #[error("unknown format {value}")]
    Format { index: usize, value: i32 },
    #[error("unknown mode {value}")]
    Mode { index: usize, value: i32 },
}

impl AccessLogError {
    pub fn index(&self) -> usize {
        match self {
            Self::Filter { index, .. } | Self::Format { index, .. } | Self::Mode { index, .. } => {
                *index
            }
        }
    }

    /// The field inside the log, in proto3 JSON names.
    pub fn field(&self) -> &'static str {
        match self {
            Self::Filter { .. } => "filter",
            Self::Format { .. } => "format",
            Self::Mode { .. } => "mode",
        }
    }
}

/// The logs of one config, by the side of the call a listener serves.
#[derive(Debug, Default)]
pub struct AccessLogConfig {
    /// Outbound and gateway listeners (Istio's CLIENT side).
    client: Option<Arc<[CompiledLog]>>,
    /// Inbound listeners (the SERVER side).
    server: Option<Arc<[CompiledLog]>>,
}

impl AccessLogConfig {
    pub fn compile(telemetry: Option<&pb::Telemetry>) -> Result<Self, AccessLogError> {
        let logs = telemetry
            .and_then(|t| t.access_logging.as_ref())
            .map_or(&[][..], |a| a.logs.as_slice());
        let mut client = Vec::new();
        let mut server = Vec::new();
        for (index, log) in logs.iter().enumerate() {
            let format = Format::try_from(log.format).map_err(|_| AccessLogError::Format {
                index,
                value: log.format,
            })?;
            let mode = Mode::try_from(log.mode).map_err(|_| AccessLogError::Mode {
                index,
                value: log.mode,
            })?;
            let filter = if log.filter.trim().is_empty() {
                None
            } else {
                let f = Filter::parse(&log.filter).map_err(|error| AccessLogError::Filter {
                    index,
                    expression: log.filter.clone(),
                    error,
                })?;
                match f.constant() {
                    Some(false) => continue,
                    Some(true) => None,
                    None => Some(f),
                }
            };
            let compiled = |filter| CompiledLog {
                name: log.name.clone(),
                format,
                filter,
            };
            if mode != Mode::Server {
                client.push(compiled(filter.clone()));
            }
            if mode != Mode::Client {
                server.push(compiled(filter));
            }
        }
        let shared = |v: Vec<CompiledLog>| (!v.is_empty()).then(|| Arc::from(v));
        Ok(Self {
            client: shared(client),
            server: shared(server),
        })
    }

    /// The logs for requests on a listener of `direction`; `None` when there are none.
    #[inline]
    pub fn for_direction(&self, direction: pb::Direction) -> Option<&Arc<[CompiledLog]>> {
        match direction {
            pb::Direction::Inbound => self.server.as_ref(),
            _ => self.client.as_ref(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn telemetry(logs: Vec<pb::AccessLog>) -> pb::Telemetry {
        pb::Telemetry {
            access_logging: Some(pb::AccessLogging { logs }),
            ..Default::default()
        }
    }

    fn log(mode: Mode, filter: &str) -> pb::AccessLog {
        pb::AccessLog {
            name: "envoy".into(),
            mode: mode as i32,
            filter: filter.into(),
            ..Default::default()
        }
    }

    #[test]
    fn no_telemetry_means_no_logs_on_either_side() {
        let c = AccessLogConfig::compile(None).unwrap();
        assert!(c.for_direction(pb::Direction::Inbound).is_none());
        assert!(c.for_direction(pb::Direction::Outbound).is_none());
    }

    #[test]
    fn modes_pick_the_side() {
        let c = AccessLogConfig::compile(Some(&telemetry(vec![
            log(Mode::Server, ""),
            log(Mode::ClientAndServer, "response.code >= 500"),
        ])))
        .unwrap();
        assert_eq!(c.for_direction(pb::Direction::Inbound).unwrap().len(), 2);
        let client = c.for_direction(pb::Direction::Outbound).unwrap();
        assert_eq!(client.len(), 1);
        assert!(client[0].filter.is_some());
        assert_eq!(c.for_direction(pb::Direction::Gateway).unwrap().len(), 1);
    }

    #[test]
    fn constant_filters_cost_nothing() {
        let c = AccessLogConfig::compile(Some(&telemetry(vec![
            log(Mode::Client, "false"),
            log(Mode::Server, "true"),
        ])))
        .unwrap();
        assert!(c.for_direction(pb::Direction::Outbound).is_none());
        assert!(
            c.for_direction(pb::Direction::Inbound).unwrap()[0]
                .filter
                .is_none()
        );
    }

    #[test]
    fn a_filter_that_does_not_parse_is_refused_with_its_index() {
        let err = AccessLogConfig::compile(Some(&telemetry(vec![
            log(Mode::Client, ""),
            log(Mode::Client, "response.code >>= 1"),
        ])))
        .unwrap_err();
        assert_eq!(err.index(), 1);
        assert_eq!(err.field(), "filter");
        let bad_mode = pb::AccessLog {
            mode: 9,
            ..Default::default()
        };
        assert!(matches!(
            AccessLogConfig::compile(Some(&telemetry(vec![bad_mode]))),
            Err(AccessLogError::Mode { index: 0, value: 9 })
        ));
    }
}
