//! `mesh-proxy wait`: the start hook of a proxy that runs as the first ordinary container.
//! The kubelet runs `postStart` to completion before it starts the next container, so
//! polling the proxy's readiness here keeps the app from starting before its proxy is ready
//! (Istio's `pilot-agent wait`). A non-zero exit (an `Err`) fails the hook and the kubelet
//! restarts the container.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Uri, header};
use http_body_util::Empty;
use tokio::time::Instant;

use crate::health::probe::http_get;
use crate::health::probers::Scheme;

/// What is polled unless `--url` says otherwise.
pub const DEFAULT_URL: &str = "http://127.0.0.1:15021/healthz/ready";
/// Pause between two attempts.
pub const PERIOD: Duration = Duration::from_millis(200);
/// Longest single attempt, so a proxy that accepts but never answers is asked again.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    #[error("--url {url}: {reason}")]
    Url { url: String, reason: String },
    #[error("--timeout {0:?}: expected seconds, e.g. 60 or 60s, 500ms, 2m")]
    Timeout(String),
    #[error("{url} was not ready after {after:?} ({attempts} attempts, last: {last})")]
    NotReady {
        url: String,
        after: Duration,
        attempts: u32,
        last: String,
    },
}

/// Parses `--timeout`: plain seconds (`60`), or with a unit (`60s`, `500ms`, `2m`), as the
/// injected hook writes it (`--timeout 60s`).
pub fn parse_timeout(text: &str) -> Result<Duration, WaitError> {
    let t = text.trim();
    let bad = || WaitError::Timeout(text.to_string());
    let (number, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let n: u64 = number.parse().map_err(|_| bad())?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n.checked_mul(60).ok_or_else(bad)?)),
        _ => Err(bad()),
    }
}

/// Polls `url` (plain `http://IP:PORT/path`) until it answers 200, or fails after `timeout`.
pub async fn run(url: &str, timeout: Duration) -> Result<(), WaitError> {
    let (addr, path) = target(url)?;
    let deadline = Instant::now() + timeout;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let req = Request::get(path.as_str())
            .header(header::HOST, addr.to_string())
            .header(header::USER_AGENT, "mesh-proxy-wait")
            .body(Empty::<Bytes>::new())
            .map_err(|e| WaitError::Url {
                url: url.to_string(),
                reason: e.to_string(),
            })?;
        let limit = ATTEMPT_TIMEOUT.min(deadline.saturating_duration_since(Instant::now()));
        let last = match tokio::time::timeout(limit, http_get(addr, Scheme::Http, req)).await {
            Ok(Ok(StatusCode::OK)) => {
                tracing::info!(%url, attempts, "proxy is ready");
                return Ok(());
            }
            Ok(Ok(status)) => format!("status {status}"),
            Ok(Err(e)) => e,
            Err(_) => format!("no answer within {limit:?}"),
        };
        let now = Instant::now();
        if now + PERIOD >= deadline {
            return Err(WaitError::NotReady {
                url: url.to_string(),
                after: timeout,
                attempts,
                last,
            });
        }
        tokio::time::sleep(PERIOD).await;
    }
}

/// Only plain HTTP to an address: the health port is on the pod's own loopback.
fn target(url: &str) -> Result<(SocketAddr, String), WaitError> {
    let err = |reason: &str| WaitError::Url {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    let uri: Uri = url.parse().map_err(|_| err("not a URL"))?;
    if uri.scheme_str() != Some("http") {
        return Err(err("expected an http:// URL"));
    }
    let authority = uri.authority().ok_or_else(|| err("no host"))?;
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let ip = host
        .parse()
        .map_err(|_| err("the host must be an IP address, e.g. 127.0.0.1"))?;
    let port = authority.port_u16().unwrap_or(80);
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    Ok((SocketAddr::new(ip, port), path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts() {
        assert_eq!(parse_timeout("60").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_timeout("60s").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_timeout("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_timeout("2m").unwrap(), Duration::from_secs(120));
        for bad in ["", "s", "1h", "-1", "1.5s"] {
            assert!(parse_timeout(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn urls() {
        let (addr, path) = target(DEFAULT_URL).unwrap();
        assert_eq!(addr, "127.0.0.1:15021".parse().unwrap());
        assert_eq!(path, "/healthz/ready");
        let (addr, path) = target("http://[::1]:9").unwrap();
        assert_eq!(addr, "[::1]:9".parse().unwrap());
        assert_eq!(path, "/");
        assert!(target("https://127.0.0.1:15021/").is_err());
        assert!(target("http://localhost:15021/").is_err());
        assert!(target("not a url").is_err());
    }
}
