//! Plain HTTP/1.1 to pilot's debug port and the proxies' admin ports (both loopback or
//! in-cluster, never TLS), with one timeout per call.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;

const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{0:?} is not an address (HOST:PORT or http://HOST:PORT)")]
    Url(String),
    #[error("cannot reach {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{url}: no answer within {TIMEOUT:?}")]
    Timeout { url: String },
    #[error("{url}: HTTP {status}: {body}")]
    Status {
        url: String,
        status: StatusCode,
        body: String,
    },
    #[error("{url}: not the JSON expected: {reason}")]
    Json { url: String, reason: String },
}

/// `HOST:PORT` or a URL, without a trailing slash, as `http://HOST:PORT`.
pub fn base_url(addr: &str) -> String {
    let addr = addr.trim_end_matches('/');
    if addr.starts_with("http://") || addr.starts_with("https://") {
        addr.to_owned()
    } else {
        format!("http://{addr}")
    }
}

/// Sends one request and returns the body of a 2xx answer.
pub fn call(method: Method, url: &str) -> Result<String, HttpError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| HttpError::Unreachable {
            url: url.to_owned(),
            reason: e.to_string(),
        })?;
    runtime.block_on(call_async(method, url))
}

/// [`call`] inside a running tokio runtime.
pub async fn call_async(method: Method, url: &str) -> Result<String, HttpError> {
    let uri: http::Uri = url.parse().map_err(|_| HttpError::Url(url.to_owned()))?;
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .body(Full::new(Bytes::new()))
        .map_err(|_| HttpError::Url(url.to_owned()))?;
    let exchange = async {
        let response = client
            .request(request)
            .await
            .map_err(|e| HttpError::Unreachable {
                url: url.to_owned(),
                reason: source_chain(&e),
            })?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| HttpError::Unreachable {
                url: url.to_owned(),
                reason: e.to_string(),
            })?
            .to_bytes();
        let body = String::from_utf8_lossy(&body).into_owned();
        if status.is_success() {
            Ok(body)
        } else {
            Err(HttpError::Status {
                url: url.to_owned(),
                status,
                body: body.trim_end().to_owned(),
            })
        }
    };
    tokio::time::timeout(TIMEOUT, exchange)
        .await
        .map_err(|_| HttpError::Timeout {
            url: url.to_owned(),
        })?
}

pub fn get(url: &str) -> Result<String, HttpError> {
    call(Method::GET, url)
}

pub fn get_json<T: DeserializeOwned>(url: &str) -> Result<T, HttpError> {
    let body = get(url)?;
    serde_json::from_str(&body).map_err(|e| HttpError::Json {
        url: url.to_owned(),
        reason: e.to_string(),
    })
}

/// The innermost cause: hyper's outer error says only "client error (Connect)".
fn source_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        text = format!("{text}: {s}");
        cur = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_become_urls() {
        assert_eq!(base_url("127.0.0.1:15014"), "http://127.0.0.1:15014");
        assert_eq!(
            base_url("http://127.0.0.1:15014/"),
            "http://127.0.0.1:15014"
        );
    }

    #[test]
    fn a_closed_port_is_reported_with_its_cause() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let err = get(&format!("http://127.0.0.1:{port}/x")).unwrap_err();
        assert!(matches!(err, HttpError::Unreachable { .. }), "{err}");
        assert!(err.to_string().contains("refused"), "{err}");
    }
}
