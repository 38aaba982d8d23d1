//! PeerAuthentication on an accepted inbound connection: STRICT takes mTLS only, PERMISSIVE
//! tells mTLS from plaintext by the first bytes, DISABLE takes plaintext only.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::HeaderValue;
use mesh_identity::SpiffeId;
use mesh_proto::config::v1::MtlsMode;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::identity::{CurrentIdentity, IdentitySlot};
use crate::tls::{SNIFF_TIMEOUT, peer_spiffe_id, server_config_with, sniff_tls, xfcc};

/// A client that does not finish its handshake within this is cut off.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Who the verified client is, for policy and for the application.
#[derive(Debug, Clone)]
pub struct PeerIdentity {
    /// From the client certificate.
    pub spiffe_id: SpiffeId,
    /// `By=<our id>;URI=<client id>`, made once per connection.
    pub xfcc: Option<HeaderValue>,
    /// The server name the client asked for in its ClientHello (policy's `connection.sni`).
    pub sni: Option<Arc<str>>,
    /// The client proxy's metadata, when it sent some in the TCP peer exchange.
    pub metadata: Option<HeaderValue>,
}

pub enum Secured {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>, PeerIdentity),
}

/// The inbound TLS side, built once: the config reads the current certificate and roots at
/// each handshake.
pub struct InboundTls {
    acceptor: TlsAcceptor,
    identity: Arc<IdentitySlot>,
    /// STRICT without a CA refuses everything: said once, loudly, per proxy.
    warned_no_identity: AtomicBool,
}

impl InboundTls {
    pub fn new(identity: Arc<IdentitySlot>) -> Self {
        let source: Arc<dyn CurrentIdentity> = identity.clone();
        let config = server_config_with(source).expect("TLS 1.3 with ring is supported");
        Self {
            acceptor: TlsAcceptor::from(config),
            identity,
            warned_no_identity: AtomicBool::new(false),
        }
    }

    /// Whether mTLS can be offered at all (a CA is configured).
    pub fn enabled(&self) -> bool {
        self.identity.is_enabled()
    }

    /// Applies `mode` to a new connection; `None` means it was refused and is closed.
    pub async fn secure(
        &self,
        stream: TcpStream,
        mode: MtlsMode,
        peer: SocketAddr,
        listener: &str,
    ) -> Option<Secured> {
        match mode {
            MtlsMode::Disable => Some(Secured::Plain(stream)),
            MtlsMode::Strict if !self.enabled() => {
                if !self.warned_no_identity.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        listener,
                        "mTLS mode STRICT but this proxy has no identity (no --ca-addr): \
                         every connection to it is refused"
                    );
                }
                None
            }
            MtlsMode::Strict => self.handshake(stream, peer, listener).await,
            _ if !self.enabled() => Some(Secured::Plain(stream)),
            _ => match sniff_tls(&stream, SNIFF_TIMEOUT).await {
                Ok(true) => self.handshake(stream, peer, listener).await,
                Ok(false) => Some(Secured::Plain(stream)),
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "connection failed before its first bytes");
                    None
                }
            },
        }
    }

    async fn handshake(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        listener: &str,
    ) -> Option<Secured> {
        let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, self.acceptor.accept(stream)).await
        {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                tracing::debug!(listener, %peer, error = %e, "inbound mTLS handshake refused");
                return None;
            }
            Err(_) => {
                tracing::debug!(listener, %peer, "inbound mTLS handshake timed out");
                return None;
            }
        };
        // The verifier refused any certificate without a SPIFFE ID, so one is present.
        let client = peer_spiffe_id(tls.get_ref().1)?;
        let own = self.identity.current_identity()?;
        let identity = PeerIdentity {
            xfcc: xfcc(own.spiffe_id().as_str(), client.as_str()).ok(),
            spiffe_id: client,
            sni: tls.get_ref().1.server_name().map(Arc::from),
            metadata: None,
        };
        Some(Secured::Tls(Box::new(tls), identity))
    }
}
