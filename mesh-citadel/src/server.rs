//! Serving the CA over TLS on a listener the caller bound (so tests can use `127.0.0.1:0`).
//! Handshakes run in their own tasks, so one slow client cannot hold up the accept loop.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;

use crate::auth::Authenticator;
use crate::ca::Ca;
use crate::conn::TlsConn;
use crate::service::CaService;
use crate::tls::{self, TlsError};

/// Names in the CA's serving certificate; clients verify one of them (Istio's istiod
/// answers on `istiod.istio-system.svc`, this one on `mesh-citadel...`).
pub const DEFAULT_SERVER_NAMES: &[&str] = &[
    "mesh-citadel",
    "mesh-citadel.mesh-system.svc",
    "mesh-citadel.mesh-system.svc.cluster.local",
    "localhost",
];

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

#[derive(Clone, Debug)]
pub struct ServeOptions {
    pub server_names: Vec<String>,
    pub handshake_timeout: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            server_names: DEFAULT_SERVER_NAMES
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// Serves until the process ends.
pub async fn serve(
    listener: TcpListener,
    ca: Arc<Ca>,
    authenticator: Arc<dyn Authenticator>,
) -> Result<(), ServeError> {
    serve_with_shutdown(
        listener,
        ca,
        authenticator,
        ServeOptions::default(),
        std::future::pending(),
    )
    .await
}

pub async fn serve_with_shutdown(
    listener: TcpListener,
    ca: Arc<Ca>,
    authenticator: Arc<dyn Authenticator>,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let acceptor = TlsAcceptor::from(Arc::new(tls::server_config(
        ca.clone(),
        options.server_names.clone(),
    )?));
    let (tx, mut rx) = mpsc::channel::<TlsConn>(64);
    let accept = tokio::spawn(accept_loop(
        listener,
        acceptor,
        options.handshake_timeout,
        tx,
    ));
    let incoming = futures_util::stream::poll_fn(move |cx| {
        rx.poll_recv(cx).map(|s| s.map(Ok::<_, std::io::Error>))
    });
    let result = tonic::transport::Server::builder()
        .add_service(CaService::new(ca, authenticator).into_server())
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    accept.abort();
    Ok(result?)
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    timeout: Duration,
    tx: mpsc::Sender<TlsConn>,
) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                // EMFILE and friends are transient: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    let _ = tx.send(TlsConn(tls)).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}
