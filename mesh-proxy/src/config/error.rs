//! Typed compile errors: which object of a `ProxyConfig` was refused, the field inside it,
//! and why. The object is typed so that a caller (pilot) can drop exactly that object and
//! keep the rest of the config.

use std::fmt;

/// A value that does not compile, at `field` (proto3 JSON names, relative to the object
/// being compiled; empty for the object itself).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {reason}", if field.is_empty() { "(object)" } else { field.as_str() })]
pub struct FieldError {
    pub field: String,
    pub reason: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The same error seen from the enclosing object, `prefix.field`.
    pub fn within(self, prefix: &str) -> Self {
        let field = match (prefix.is_empty(), self.field.is_empty()) {
            (true, _) => self.field,
            (false, true) => prefix.to_string(),
            (false, false) => format!("{prefix}.{}", self.field),
        };
        Self { field, ..self }
    }
}

/// The object of a `ProxyConfig` an error is in, by index in its list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConfigObject {
    Cluster {
        index: usize,
    },
    /// The table itself (its name, a virtual host's domains).
    RouteTable {
        index: usize,
    },
    Route {
        table: usize,
        virtual_host: usize,
        route: usize,
    },
    /// The listener itself (name, address, protocol, references).
    Listener {
        index: usize,
    },
    AuthorizationPolicy {
        listener: usize,
        policy: usize,
    },
    TcpRoute {
        listener: usize,
        route: usize,
    },
    /// A RequestAuthentication rule of an inbound listener.
    JwtRule {
        listener: usize,
        rule: usize,
    },
    /// A LocalRateLimit of an inbound listener.
    LocalRateLimit {
        listener: usize,
        limit: usize,
    },
    /// One of `telemetry.accessLogging.logs`.
    AccessLog {
        index: usize,
    },
    /// One of `telemetry.metrics.overrides`.
    MetricOverride {
        index: usize,
    },
}

impl fmt::Display for ConfigObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Cluster { index } => write!(f, "clusters[{index}]"),
            Self::RouteTable { index } => write!(f, "routeTables[{index}]"),
            Self::Route {
                table,
                virtual_host,
                route,
            } => write!(
                f,
                "routeTables[{table}].virtualHosts[{virtual_host}].routes[{route}]"
            ),
            Self::Listener { index } => write!(f, "listeners[{index}]"),
            Self::AuthorizationPolicy { listener, policy } => {
                write!(f, "listeners[{listener}].authorizationPolicies[{policy}]")
            }
            Self::TcpRoute { listener, route } => {
                write!(f, "listeners[{listener}].tcpRoutes[{route}]")
            }
            Self::JwtRule { listener, rule } => {
                write!(f, "listeners[{listener}].jwtRules[{rule}]")
            }
            Self::LocalRateLimit { listener, limit } => {
                write!(f, "listeners[{listener}].localRateLimits[{limit}]")
            }
            Self::AccessLog { index } => write!(f, "telemetry.accessLogging.logs[{index}]"),
            Self::MetricOverride { index } => write!(f, "telemetry.metrics.overrides[{index}]"),
        }
    }
}

/// Why a config was rejected: the object, the field inside it and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {}", self.field(), self.error.reason)]
pub struct ConfigError {
    pub object: ConfigObject,
    pub error: FieldError,
}

impl ConfigError {
    pub fn new(object: ConfigObject, error: FieldError) -> Self {
        Self { object, error }
    }

    /// The whole field path from the config's root, e.g. `clusters[2].endpoints[0].address`.
    pub fn field(&self) -> String {
        if self.error.field.is_empty() {
            self.object.to_string()
        } else {
            format!("{}.{}", self.object, self.error.field)
        }
    }

    pub fn reason(&self) -> &str {
        &self.error.reason
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_join() {
        let e = FieldError::new("address", "bad").within("endpoints[0]");
        assert_eq!(e.field, "endpoints[0].address");
        assert_eq!(FieldError::new("", "x").within("a").field, "a");
        let c = ConfigError::new(
            ConfigObject::Route {
                table: 1,
                virtual_host: 2,
                route: 3,
            },
            FieldError::new("route.retryPolicy.retryOn", "unknown"),
        );
        assert_eq!(
            c.field(),
            "routeTables[1].virtualHosts[2].routes[3].route.retryPolicy.retryOn"
        );
        assert_eq!(
            c.to_string(),
            "routeTables[1].virtualHosts[2].routes[3].route.retryPolicy.retryOn: unknown"
        );
    }
}
