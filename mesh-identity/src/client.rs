//! A client of the CA for proxies and tests: TLS to the CA (verified against the mesh roots),
//! and the caller's credential, a bearer token or a client certificate (renewal).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use mesh_proto::ca::v1::certificate_service_client::CertificateServiceClient;
use mesh_proto::ca::v1::{CreateCertificateRequest, TrustBundleRequest};
use rustls::{ClientConfig as TlsClientConfig, RootCertStore};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::{Channel, Endpoint};

use crate::ring_provider;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid server name {0:?}")]
    ServerName(String),
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("connecting: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("token cannot be sent as metadata")]
    Token,
}

/// A certificate chain and its key, presented to prove the caller's identity.
pub struct ClientIdentity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("chain_len", &self.chain.len())
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
pub struct ClientConfig {
    /// `host:port` of the CA.
    pub addr: String,
    /// The name the CA's certificate must carry, e.g. `mesh-citadel`.
    pub server_name: String,
    pub roots: Vec<CertificateDer<'static>>,
    pub client_identity: Option<ClientIdentity>,
    pub token: Option<String>,
}

#[derive(Clone)]
pub struct CitadelClient {
    inner: CertificateServiceClient<Channel>,
    token: Option<AsciiMetadataValue>,
}

impl CitadelClient {
    pub async fn connect(config: ClientConfig) -> Result<Self, ClientError> {
        let mut roots = RootCertStore::empty();
        for root in config.roots {
            roots.add(root)?;
        }
        let builder = TlsClientConfig::builder_with_provider(ring_provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots);
        let mut tls = match config.client_identity {
            Some(id) => builder.with_client_auth_cert(id.chain, id.key)?,
            None => builder.with_no_client_auth(),
        };
        tls.alpn_protocols = vec![b"h2".to_vec()];
        let connector = TlsConnector::from(Arc::new(tls));
        let server_name = ServerName::try_from(config.server_name.clone())
            .map_err(|_| ClientError::ServerName(config.server_name))?;
        let addr = config.addr.clone();

        // The URI only names the endpoint; the connector below makes the TLS connection.
        let channel = Endpoint::from_shared(format!("http://{}", config.addr))?
            .connect_timeout(Duration::from_secs(5))
            .connect_with_connector(tower::service_fn(move |_uri| {
                let (connector, server_name, addr) =
                    (connector.clone(), server_name.clone(), addr.clone());
                async move {
                    let tcp = TcpStream::connect(&addr).await?;
                    let tls = connector.connect(server_name, tcp).await?;
                    Ok::<_, std::io::Error>(TokioIo::new(tls))
                }
            }))
            .await?;
        let token = config
            .token
            .map(|t| {
                format!("Bearer {t}")
                    .parse()
                    .map_err(|_| ClientError::Token)
            })
            .transpose()?;
        Ok(Self {
            inner: CertificateServiceClient::new(channel),
            token,
        })
    }

    /// Sends a CSR; returns the chain, PEM, leaf first and root last.
    pub async fn create_certificate(
        &mut self,
        csr_pem: &str,
        validity: Option<Duration>,
    ) -> Result<Vec<String>, tonic::Status> {
        let seconds = validity.map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let mut request = tonic::Request::new(CreateCertificateRequest {
            csr: csr_pem.to_owned(),
            validity_duration: seconds,
        });
        if let Some(token) = &self.token {
            request
                .metadata_mut()
                .insert("authorization", token.clone());
        }
        Ok(self
            .inner
            .create_certificate(request)
            .await?
            .into_inner()
            .cert_chain)
    }

    pub async fn trust_bundle(&mut self) -> Result<Vec<String>, tonic::Status> {
        Ok(self
            .inner
            .get_trust_bundle(TrustBundleRequest {})
            .await?
            .into_inner()
            .roots)
    }

    /// The raw generated client, for callers that set their own metadata.
    pub fn raw(&mut self) -> &mut CertificateServiceClient<Channel> {
        &mut self.inner
    }
}
