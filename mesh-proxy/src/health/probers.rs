//! The application's original probes, as the injector hands them to the proxy: a JSON object
//! from the kubelet's rewritten path (`/app-health/<container>/<livez|readyz|startupz>`) to the
//! probe it replaced, `{"httpGet": {...}, "timeoutSeconds": N}` or `{"tcpSocket": {...}}`.
//! This is Istio's `ISTIO_KUBE_APP_PROBERS` format; the mesh's own variable name is
//! [`PROBERS_ENV`] and both are accepted. Parsing happens once, at startup, so a malformed
//! value stops the proxy with a reason instead of failing every kubelet probe later.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use serde::Deserialize;

/// The mesh's variable (what `mesh-injector` writes).
pub const PROBERS_ENV: &str = "MESH_KUBE_APP_PROBERS";
/// Istio's variable, for pods injected by Istio's injector or templates written for it.
pub const ISTIO_PROBERS_ENV: &str = "ISTIO_KUBE_APP_PROBERS";
/// The kubelet's default probe timeout, used when `timeoutSeconds` is absent.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);

/// Why the prober configuration was rejected: where it came from, which entry, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{source_name}: {reason}")]
pub struct ProbersError {
    pub source_name: String,
    pub reason: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

/// What to do against the app for one rewritten probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Http {
        /// Connect here instead of the app host (the probe's `host` field).
        host: Option<String>,
        port: u16,
        path: String,
        scheme: Scheme,
        headers: Vec<(String, String)>,
    },
    Tcp {
        host: Option<String>,
        port: u16,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prober {
    pub action: Action,
    pub timeout: Duration,
}

/// All rewritten probes of the pod, keyed by the path the kubelet now calls.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probers {
    by_path: BTreeMap<String, Prober>,
    app_host: IpAddr,
}

impl Default for Probers {
    fn default() -> Self {
        Probers {
            by_path: BTreeMap::new(),
            app_host: IpAddr::V4(Ipv4Addr::LOCALHOST),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawProber {
    http_get: Option<RawHttpGet>,
    tcp_socket: Option<RawTcpSocket>,
    grpc: Option<serde_json::Value>,
    timeout_seconds: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawHttpGet {
    path: Option<String>,
    port: serde_json::Value,
    scheme: Option<String>,
    host: Option<String>,
    #[serde(default)]
    http_headers: Vec<RawHeader>,
}

#[derive(Deserialize)]
struct RawHeader {
    name: String,
    #[serde(default)]
    value: String,
}

#[derive(Deserialize)]
struct RawTcpSocket {
    port: serde_json::Value,
    host: Option<String>,
}

impl Probers {
    /// Parses the JSON value of the prober variable; `source_name` names it in errors.
    pub fn parse(source_name: &str, text: &str) -> Result<Probers, ProbersError> {
        let err = |reason: String| ProbersError {
            source_name: source_name.to_string(),
            reason,
        };
        if text.trim().is_empty() {
            return Ok(Probers::default());
        }
        let raw: BTreeMap<String, RawProber> =
            serde_json::from_str(text).map_err(|e| err(format!("not a prober map: {e}")))?;
        let mut by_path = BTreeMap::new();
        for (path, raw) in raw {
            check_path(&path).map_err(|r| err(format!("{path:?}: {r}")))?;
            let prober = prober(raw).map_err(|r| err(format!("{path:?}: {r}")))?;
            by_path.insert(path, prober);
        }
        Ok(Probers {
            by_path,
            ..Probers::default()
        })
    }

    /// Reads the probers from the environment: the mesh's variable, else Istio's.
    pub fn from_env() -> Result<Probers, ProbersError> {
        Probers::from_lookup(|name| std::env::var(name).ok())
    }

    /// As [`Probers::from_env`], with the variables looked up by `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Probers, ProbersError> {
        for name in [PROBERS_ENV, ISTIO_PROBERS_ENV] {
            if let Some(text) = lookup(name) {
                return Probers::parse(name, &text);
            }
        }
        Ok(Probers::default())
    }

    /// Where the app listens when a probe names no host: loopback unless the app binds only
    /// its pod IP. The proxy's own connections are exempt from capture, so either reaches
    /// the app directly.
    pub fn with_app_host(mut self, host: IpAddr) -> Probers {
        self.app_host = host;
        self
    }

    pub fn app_host(&self) -> IpAddr {
        self.app_host
    }

    pub fn get(&self, path: &str) -> Option<&Prober> {
        self.by_path.get(path)
    }

    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.by_path.keys().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.by_path.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_path.is_empty()
    }
}

/// `/app-health/<container>/<livez|readyz|startupz>`, the only paths the injector writes.
fn check_path(path: &str) -> Result<(), String> {
    let rest = path
        .strip_prefix("/app-health/")
        .ok_or("expected /app-health/<container>/<livez|readyz|startupz>")?;
    match rest.split('/').collect::<Vec<_>>().as_slice() {
        [container, "livez" | "readyz" | "startupz"] if !container.is_empty() => Ok(()),
        _ => Err("expected /app-health/<container>/<livez|readyz|startupz>".into()),
    }
}

fn prober(raw: RawProber) -> Result<Prober, String> {
    let timeout = match raw.timeout_seconds {
        None | Some(0) => DEFAULT_TIMEOUT,
        Some(s) if s > 0 => Duration::from_secs(s as u64),
        Some(s) => return Err(format!("timeoutSeconds {s} is negative")),
    };
    let action = match (raw.http_get, raw.tcp_socket, raw.grpc) {
        (Some(get), None, None) => {
            let scheme = match get
                .scheme
                .as_deref()
                .map(str::to_ascii_uppercase)
                .as_deref()
            {
                None | Some("HTTP") => Scheme::Http,
                Some("HTTPS") => Scheme::Https,
                Some(other) => {
                    return Err(format!("httpGet.scheme {other:?} is not HTTP or HTTPS"));
                }
            };
            let path = get.path.unwrap_or_else(|| "/".into());
            if !path.starts_with('/') {
                return Err(format!("httpGet.path {path:?} does not start with /"));
            }
            for h in &get.http_headers {
                http::HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| {
                    format!("httpGet.httpHeaders: {:?} is not a header name", h.name)
                })?;
                http::HeaderValue::from_str(&h.value).map_err(|_| {
                    format!(
                        "httpGet.httpHeaders: value of {:?} is not a header value",
                        h.name
                    )
                })?;
            }
            Action::Http {
                host: get.host.filter(|h| !h.is_empty()),
                port: port(&get.port, "httpGet.port")?,
                path,
                scheme,
                headers: get
                    .http_headers
                    .into_iter()
                    .map(|h| (h.name, h.value))
                    .collect(),
            }
        }
        (None, Some(tcp), None) => Action::Tcp {
            host: tcp.host.filter(|h| !h.is_empty()),
            port: port(&tcp.port, "tcpSocket.port")?,
        },
        (None, None, Some(_)) => return Err("grpc probes are not supported by this proxy".into()),
        (None, None, None) => return Err("has none of httpGet, tcpSocket".into()),
        _ => return Err("has more than one of httpGet, tcpSocket, grpc".into()),
    };
    Ok(Prober { action, timeout })
}

/// The injector resolves named ports; what arrives must be a number (or a numeric string).
fn port(value: &serde_json::Value, field: &str) -> Result<u16, String> {
    let n = match value {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.parse().ok(),
        _ => None,
    };
    match n {
        Some(p @ 1..=65535) => Ok(p as u16),
        _ => Err(format!("{field} {value} is not a port number 1-65535")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn istio_format_parses() {
        let p = Probers::parse(
            PROBERS_ENV,
            r#"{"/app-health/app/livez":{"httpGet":{"path":"/health","port":8080,"scheme":"HTTPS",
                 "httpHeaders":[{"name":"x-probe","value":"1"}]},"timeoutSeconds":4},
                "/app-health/db/readyz":{"tcpSocket":{"port":"5432"}}}"#,
        )
        .unwrap();
        assert_eq!(
            p.get("/app-health/app/livez"),
            Some(&Prober {
                action: Action::Http {
                    host: None,
                    port: 8080,
                    path: "/health".into(),
                    scheme: Scheme::Https,
                    headers: vec![("x-probe".into(), "1".into())],
                },
                timeout: Duration::from_secs(4),
            })
        );
        assert_eq!(
            p.get("/app-health/db/readyz"),
            Some(&Prober {
                action: Action::Tcp {
                    host: None,
                    port: 5432
                },
                timeout: DEFAULT_TIMEOUT,
            })
        );
        assert!(p.get("/app-health/app/readyz").is_none());
    }

    #[test]
    fn malformed_entries_are_named() {
        let cases = [
            ("[1]", "not a prober map"),
            (
                r#"{"/healthz":{"httpGet":{"port":1}}}"#,
                "\"/healthz\": expected",
            ),
            (
                r#"{"/app-health//livez":{"httpGet":{"port":1}}}"#,
                "expected",
            ),
            (
                r#"{"/app-health/a/alive":{"httpGet":{"port":1}}}"#,
                "expected",
            ),
            (
                r#"{"/app-health/a/livez":{"httpGet":{"port":"http"}}}"#,
                "httpGet.port \"http\"",
            ),
            (
                r#"{"/app-health/a/livez":{"httpGet":{"port":70000}}}"#,
                "not a port",
            ),
            (
                r#"{"/app-health/a/livez":{"httpGet":{"port":1,"scheme":"FTP"}}}"#,
                "FTP",
            ),
            (r#"{"/app-health/a/livez":{"timeoutSeconds":1}}"#, "none of"),
            (r#"{"/app-health/a/livez":{"grpc":{"port":1}}}"#, "grpc"),
            (
                r#"{"/app-health/a/livez":{"httpGet":{"port":1},"timeoutSeconds":-1}}"#,
                "negative",
            ),
        ];
        for (text, want) in cases {
            let e = Probers::parse(PROBERS_ENV, text).unwrap_err();
            assert_eq!(e.source_name, PROBERS_ENV);
            assert!(e.to_string().contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn mesh_variable_wins_over_istio_and_absent_is_empty() {
        let mesh = r#"{"/app-health/a/livez":{"tcpSocket":{"port":1}}}"#;
        let istio = r#"{"/app-health/b/livez":{"tcpSocket":{"port":2}}}"#;
        let both = Probers::from_lookup(|n| match n {
            PROBERS_ENV => Some(mesh.into()),
            ISTIO_PROBERS_ENV => Some(istio.into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(both.paths().collect::<Vec<_>>(), ["/app-health/a/livez"]);
        let istio_only =
            Probers::from_lookup(|n| (n == ISTIO_PROBERS_ENV).then(|| istio.into())).unwrap();
        assert_eq!(
            istio_only.paths().collect::<Vec<_>>(),
            ["/app-health/b/livez"]
        );
        let e = Probers::from_lookup(|n| (n == ISTIO_PROBERS_ENV).then(|| "{".into())).unwrap_err();
        assert_eq!(e.source_name, ISTIO_PROBERS_ENV);
        assert!(Probers::from_lookup(|_| None).unwrap().is_empty());
    }
}
