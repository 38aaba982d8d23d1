//! Running one of the app's original probes over loopback, the way the kubelet would have:
//! an HTTP(S) GET whose status is handed back, or a TCP connect. HTTPS probes, like the
//! kubelet's, do not verify the app's certificate: the app is in the same pod.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, StatusCode, header};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::probers::{Action, Prober, Scheme};

/// What the kubelet is told when the probe could not be run (refused, timed out, bad TLS).
pub const PROBE_FAILED: StatusCode = StatusCode::INTERNAL_SERVER_ERROR;

/// Runs `prober` against the app; `user_agent` is the kubelet's, passed on as Istio does.
pub async fn run(
    prober: &Prober,
    app_host: IpAddr,
    user_agent: Option<&HeaderValue>,
) -> StatusCode {
    let attempt = async {
        match &prober.action {
            Action::Tcp { host, port } => {
                let addr = resolve(host.as_deref(), app_host, *port).await?;
                TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
                Ok(StatusCode::OK)
            }
            Action::Http {
                host,
                port,
                path,
                scheme,
                headers,
            } => {
                let addr = resolve(host.as_deref(), app_host, *port).await?;
                let mut req = Request::get(path.as_str());
                // The kubelet sends Host as <host>:<port>; a probe header may override it.
                let authority = match host {
                    Some(h) => format!("{h}:{port}"),
                    None => SocketAddr::new(app_host, *port).to_string(),
                };
                req = req.header(header::HOST, authority);
                if let Some(ua) = user_agent {
                    req = req.header(header::USER_AGENT, ua);
                }
                let mut req = req.body(Empty::<Bytes>::new()).map_err(|e| e.to_string())?;
                for (name, value) in headers {
                    // Validated when the probers were parsed.
                    if let (Ok(n), Ok(v)) = (
                        HeaderName::from_bytes(name.as_bytes()),
                        HeaderValue::from_str(value),
                    ) {
                        req.headers_mut().insert(n, v);
                    }
                }
                http_get(addr, *scheme, req).await
            }
        }
    };
    match tokio::time::timeout(prober.timeout, attempt).await {
        Ok(Ok(status)) => status,
        Ok(Err(reason)) => {
            tracing::debug!(%reason, "app probe failed");
            PROBE_FAILED
        }
        Err(_) => {
            tracing::debug!(timeout = ?prober.timeout, "app probe timed out");
            PROBE_FAILED
        }
    }
}

async fn resolve(host: Option<&str>, app_host: IpAddr, port: u16) -> Result<SocketAddr, String> {
    let Some(host) = host else {
        return Ok(SocketAddr::new(app_host, port));
    };
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("{host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host}: no address"))
}

/// One GET on a fresh connection; the response body is not read.
pub(crate) async fn http_get(
    addr: SocketAddr,
    scheme: Scheme,
    req: Request<Empty<Bytes>>,
) -> Result<StatusCode, String> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    match scheme {
        Scheme::Http => send(tcp, req).await,
        Scheme::Https => {
            let connector = tokio_rustls::TlsConnector::from(insecure_client_config()?);
            let name = ServerName::IpAddress(addr.ip().into());
            let tls = connector
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS with {addr}: {e}"))?;
            send(tls, req).await
        }
    }
}

async fn send<S>(stream: S, req: Request<Empty<Bytes>>) -> Result<StatusCode, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    let driver = tokio::spawn(conn);
    let result = sender.send_request(req).await.map_err(|e| e.to_string());
    driver.abort();
    Ok(result?.status())
}

fn insecure_client_config() -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServerCert(provider)))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Accepts any certificate (as the kubelet does for HTTPS probes) but still checks the
/// handshake signatures, so the connection is a real TLS session with whoever answered.
#[derive(Debug)]
struct AnyServerCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
