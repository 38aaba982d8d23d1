//! One GET of a JWK set document over HTTP or HTTPS (`jwksUri`). HTTPS servers are checked
//! against the system CA bundle (or the roots the caller gives), by host name.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// A key set document larger than this is refused (real ones are a few KiB).
const MAX_DOCUMENT: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("invalid jwksUri: {0}")]
    BadUri(String),
    #[error("no TLS roots for https: {0}")]
    NoRoots(String),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("TLS: {0}")]
    Tls(std::io::Error),
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("status {0}")]
    Status(StatusCode),
    #[error("body: {0}")]
    Body(String),
}

/// Where HTTPS server certificates are checked: the system bundle unless given.
#[derive(Clone, Default)]
pub struct TlsRoots(Option<Arc<ClientConfig>>);

impl TlsRoots {
    pub fn with_config(config: Arc<ClientConfig>) -> Self {
        Self(Some(config))
    }

    fn config(&self) -> Result<Arc<ClientConfig>, FetchError> {
        if let Some(c) = &self.0 {
            return Ok(c.clone());
        }
        crate::tls::origination_config(&crate::tls::Origination {
            ca_certificates: "",
            client_certificate: None,
            subject_alt_names: &[],
            insecure_skip_verify: false,
        })
        .map_err(|(_, reason)| FetchError::NoRoots(reason))
    }
}

impl std::fmt::Debug for TlsRoots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "TlsRoots(given)"
        } else {
            "TlsRoots(system)"
        })
    }
}

/// Fetches `uri` within `timeout` and returns the body as text.
pub async fn fetch(uri: &str, timeout: Duration, roots: &TlsRoots) -> Result<String, FetchError> {
    tokio::time::timeout(timeout, fetch_unbounded(uri, roots))
        .await
        .map_err(|_| FetchError::Timeout(timeout))?
}

async fn fetch_unbounded(uri: &str, roots: &TlsRoots) -> Result<String, FetchError> {
    let parsed: Uri = uri
        .parse()
        .map_err(|e| FetchError::BadUri(format!("{e}")))?;
    let https = match parsed.scheme_str() {
        Some(s) if s.eq_ignore_ascii_case("https") => true,
        Some(s) if s.eq_ignore_ascii_case("http") => false,
        _ => return Err(FetchError::BadUri("scheme must be http or https".into())),
    };
    let authority = parsed
        .authority()
        .ok_or_else(|| FetchError::BadUri("missing host".into()))?
        .clone();
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
    let tcp = TcpStream::connect((host, port))
        .await
        .map_err(FetchError::Connect)?;
    let path = parsed.path_and_query().map_or("/", |p| p.as_str());
    let req = Request::get(path)
        .header(header::HOST, authority.as_str())
        .header(header::ACCEPT, "application/json")
        .body(Empty::<Bytes>::new())
        .map_err(|e| FetchError::BadUri(e.to_string()))?;
    if https {
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| FetchError::BadUri(format!("host {host:?}: {e}")))?;
        let tls = TlsConnector::from(roots.config()?)
            .connect(name, tcp)
            .await
            .map_err(FetchError::Tls)?;
        get(tls, req).await
    } else {
        get(tcp, req).await
    }
}

async fn get<S>(io: S, req: Request<Empty<Bytes>>) -> Result<String, FetchError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    // The connection task ends with this one request: the sender is dropped below.
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "JWKS connection ended");
        }
    });
    let resp = sender.send_request(req).await?;
    if resp.status() != StatusCode::OK {
        return Err(FetchError::Status(resp.status()));
    }
    let body = Limited::new(resp.into_body(), MAX_DOCUMENT)
        .collect()
        .await
        .map_err(|e| FetchError::Body(e.to_string()))?
        .to_bytes();
    String::from_utf8(body.to_vec()).map_err(|_| FetchError::Body("not UTF-8".into()))
}
