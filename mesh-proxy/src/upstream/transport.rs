//! How a connection to one endpoint is secured: plaintext, mesh mTLS or TLS origination. Built
//! when the config (not the request) changes; a renewed certificate needs no rebuild because
//! the TLS configs read the identity at each handshake.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::connect::Counted;

/// The application protocol a connection will carry, offered in ALPN over TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    Http1,
    Http2,
    /// Raw TCP: the peer metadata exchange offered to a mesh peer, nothing to others.
    Tcp,
}

/// Plaintext, or TLS with a prepared config. Cheap to clone.
#[derive(Clone, Default)]
pub enum Transport {
    #[default]
    Plain,
    Tls(Arc<TlsTransport>),
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Plain => f.write_str("Plain"),
            Self::Tls(t) => write!(f, "Tls({})", t.describe),
        }
    }
}

impl Transport {
    /// Pools key connections by address and this, so a plaintext and a TLS connection (or two
    /// TLS connections checked against different identities) are never mixed. 0 is plaintext.
    pub fn key(&self) -> u64 {
        match self {
            Self::Plain => 0,
            Self::Tls(t) => t.key,
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Self::Tls(_))
    }

    /// For TLS origination with automatic SNI, the transport of a request to `authority`:
    /// its host is the server name, and its connections are pooled apart from other hosts'.
    /// None for every other transport (and a host that is no server name): use `self`.
    pub fn for_authority(&self, authority: &http::HeaderValue) -> Option<Transport> {
        let Self::Tls(t) = self else {
            return None;
        };
        let auto = t.auto_sni.as_ref()?;
        let host = authority_host(authority.to_str().ok()?)?;
        auto.for_host(t, host)
    }

    /// Mesh mTLS: the identities the peer's certificate is checked against. `None` for
    /// plaintext and TLS origination (the peer is outside the mesh).
    pub fn mesh_identities(&self) -> Option<&[String]> {
        match self {
            Self::Tls(t) => t.connectors.mesh_identities.as_deref(),
            Self::Plain => None,
        }
    }
}

/// One TLS setting's connectors, one per ALPN choice; shared by the endpoints using it.
pub struct Connectors {
    key: u64,
    http1: TlsConnector,
    http2: TlsConnector,
    /// Raw TCP: offers the peer metadata exchange on mesh mTLS, nothing otherwise.
    tcp: TlsConnector,
    /// For logs: what is checked on the server.
    describe: String,
    /// Mesh mTLS: the peer identities accepted (telemetry names the peer by them).
    mesh_identities: Option<Vec<String>>,
}

impl Connectors {
    /// `key` must differ for settings that must not share connections.
    pub fn new(key: u64, base: &ClientConfig, describe: String) -> Arc<Self> {
        let with_alpn = |alpn: &[&[u8]]| {
            let mut c = base.clone();
            c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            TlsConnector::from(Arc::new(c))
        };
        Arc::new(Self {
            key: key.max(1),
            http1: with_alpn(&[crate::tls::ALPN_HTTP11]),
            http2: with_alpn(&[crate::tls::ALPN_H2]),
            tcp: with_alpn(&[]),
            describe,
            mesh_identities: None,
        })
    }

    /// Connectors for mesh mTLS to a peer that must present one of `identities`.
    pub fn mesh(
        key: u64,
        base: &ClientConfig,
        describe: String,
        identities: Vec<String>,
    ) -> Arc<Self> {
        let mut c = Arc::into_inner(Self::new(key, base, describe)).expect("just made");
        let mut tcp = base.clone();
        tcp.alpn_protocols = vec![crate::tls::peer_exchange::ALPN_PEER_EXCHANGE.to_vec()];
        c.tcp = TlsConnector::from(Arc::new(tcp));
        c.mesh_identities = Some(identities);
        Arc::new(c)
    }
}

/// TLS to one endpoint: the shared connectors and the server name to send.
pub struct TlsTransport {
    key: u64,
    server_name: ServerName<'static>,
    connectors: Arc<Connectors>,
    describe: String,
    /// Set: each request's host is the server name (`server_name` is for TCP).
    auto_sni: Option<AutoSni>,
}

impl TlsTransport {
    pub fn new(connectors: Arc<Connectors>, server_name: ServerName<'static>) -> Self {
        Self {
            key: connectors.key,
            describe: connectors.describe.clone(),
            server_name,
            connectors,
            auto_sni: None,
        }
    }

    /// Sends each HTTP request's host as the server name (Envoy's `auto_sni`).
    pub fn with_auto_sni(mut self) -> Self {
        self.auto_sni = Some(AutoSni::default());
        self
    }

    pub async fn connect(
        &self,
        tcp: Counted,
        alpn: Alpn,
        addr: SocketAddr,
    ) -> io::Result<Box<TlsStream<Counted>>> {
        let connector = match alpn {
            Alpn::Http1 => &self.connectors.http1,
            Alpn::Http2 => &self.connectors.http2,
            Alpn::Tcp => &self.connectors.tcp,
        };
        connector
            .connect(self.server_name.clone(), tcp)
            .await
            .map(Box::new)
            .map_err(|e| {
                tracing::debug!(
                    %addr,
                    tls = %self.describe,
                    error = %e,
                    "upstream TLS handshake failed"
                );
                e
            })
    }
}

/// Hosts remembered per auto-SNI transport; beyond them a transport is made per request.
const AUTO_SNI_HOSTS: usize = 256;

/// The transports of an auto-SNI transport by request host, made on first use.
#[derive(Default)]
struct AutoSni {
    by_host: std::sync::Mutex<std::collections::HashMap<Box<str>, Transport>>,
}

impl AutoSni {
    fn for_host(&self, base: &TlsTransport, host: &str) -> Option<Transport> {
        let mut by_host = self.by_host.lock().expect("auto sni lock");
        if let Some(t) = by_host.get(host) {
            return Some(t.clone());
        }
        let server_name = ServerName::try_from(host.to_owned()).ok()?;
        let mut h = DefaultHasher::new();
        (base.key, host).hash(&mut h);
        let made = Transport::Tls(Arc::new(TlsTransport {
            key: h.finish().max(1),
            server_name,
            connectors: base.connectors.clone(),
            describe: format!("{} sni={host:?}", base.describe),
            auto_sni: None,
        }));
        if by_host.len() < AUTO_SNI_HOSTS {
            by_host.insert(host.into(), made.clone());
        }
        Some(made)
    }
}

/// The host of an authority, without port or IPv6 brackets.
fn authority_host(authority: &str) -> Option<&str> {
    let host = if let Some(rest) = authority.strip_prefix('[') {
        rest.split_once(']')?.0
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
            _ => authority,
        }
    };
    (!host.is_empty()).then_some(host)
}

/// An upstream connection, plaintext or TLS.
pub enum Upstream {
    Plain(Counted),
    Tls(Box<TlsStream<Counted>>),
}

impl Upstream {
    /// Whether the peer agreed to the TCP peer metadata exchange (mesh mTLS only).
    pub fn exchanges_peer_metadata(&self) -> bool {
        match self {
            Self::Plain(_) => false,
            Self::Tls(s) => crate::tls::peer_exchange::negotiated(s.get_ref().1),
        }
    }

    /// The TCP connection under any TLS.
    pub fn tcp_mut(&mut self) -> &mut Counted {
        match self {
            Self::Plain(c) => c,
            Self::Tls(s) => s.get_mut().0,
        }
    }
}

impl AsyncRead for Upstream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Upstream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_of_an_authority() {
        assert_eq!(
            authority_host("api.example.com:443"),
            Some("api.example.com")
        );
        assert_eq!(authority_host("api.example.com"), Some("api.example.com"));
        assert_eq!(authority_host("[2001:db8::1]:8443"), Some("2001:db8::1"));
        assert_eq!(authority_host(":80"), None);
    }

    #[test]
    fn auto_sni_gives_each_host_its_own_server_name_and_pool_key() {
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
        let connectors = Connectors::new(7, &config, "SIMPLE".into());
        let base = Transport::Tls(Arc::new(
            TlsTransport::new(
                connectors.clone(),
                ServerName::try_from("svc.example").unwrap(),
            )
            .with_auto_sni(),
        ));
        let name = |t: &Transport| match t {
            Transport::Tls(t) => t.server_name.to_str().into_owned(),
            Transport::Plain => String::new(),
        };
        let a = base
            .for_authority(&http::HeaderValue::from_static("a.example:443"))
            .unwrap();
        let b = base
            .for_authority(&http::HeaderValue::from_static("b.example"))
            .unwrap();
        assert_eq!(name(&a), "a.example");
        assert_eq!(name(&b), "b.example");
        assert_ne!(a.key(), b.key());
        assert_ne!(a.key(), base.key());
        let again = base
            .for_authority(&http::HeaderValue::from_static("a.example:8443"))
            .unwrap();
        assert_eq!(again.key(), a.key(), "the port is not part of the name");
        // Without auto SNI the transport is used as it is.
        let fixed = Transport::Tls(Arc::new(TlsTransport::new(
            connectors,
            ServerName::try_from("svc.example").unwrap(),
        )));
        assert!(
            fixed
                .for_authority(&http::HeaderValue::from_static("a.example"))
                .is_none()
        );
    }
}
