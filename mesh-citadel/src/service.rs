//! The gRPC service: authenticate, sign, answer. Status codes follow Istio's CA: no or bad
//! credentials are UNAUTHENTICATED, a CSR that cannot be signed is INVALID_ARGUMENT.

use std::sync::Arc;

use mesh_proto::ca::v1::certificate_service_server::{
    CertificateService, CertificateServiceServer,
};
use mesh_proto::ca::v1::{
    CreateCertificateRequest, CreateCertificateResponse, TrustBundle, TrustBundleRequest,
};
use tonic::{Request, Response, Status};

use crate::auth::{AuthError, Authenticator, Caller};
use crate::ca::{Ca, SignError};
use crate::conn::PeerInfo;
use crate::validity;

pub struct CaService {
    ca: Arc<Ca>,
    authenticator: Arc<dyn Authenticator>,
}

impl CaService {
    pub fn new(ca: Arc<Ca>, authenticator: Arc<dyn Authenticator>) -> Self {
        Self { ca, authenticator }
    }

    pub fn into_server(self) -> CertificateServiceServer<Self> {
        CertificateServiceServer::new(self)
    }
}

#[tonic::async_trait]
impl CertificateService for CaService {
    async fn create_certificate(
        &self,
        request: Request<CreateCertificateRequest>,
    ) -> Result<Response<CreateCertificateResponse>, Status> {
        let peer = request.extensions().get::<PeerInfo>().cloned();
        let peer_certs = peer.as_ref().and_then(|p| p.certs.clone());
        let remote_addr = peer.and_then(|p| p.remote_addr);
        let caller = Caller {
            metadata: request.metadata(),
            peer_certs: peer_certs.as_deref().map(Vec::as_slice),
            remote_addr,
        };
        let identity = match self.authenticator.authenticate(&caller).await {
            Ok(Some(id)) => id,
            Ok(None) => return Err(unauthenticated(&AuthError::NoCredentials, remote_addr)),
            Err(e) => return Err(unauthenticated(&e, remote_addr)),
        };

        let req = request.into_inner();
        let requested = validity::from_proto_seconds(req.validity_duration);
        let ca = self.ca.clone();
        let id = identity.clone();
        // ECDSA verify and sign take a few hundred microseconds: keep them off the reactor.
        let chain = tokio::task::spawn_blocking(move || ca.sign(&req.csr, &id, requested))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| sign_status(&e, &identity))?;
        tracing::info!(
            identity = %identity,
            peer = ?remote_addr,
            validity_s = self.ca.validity().effective(requested).as_secs(),
            "issued certificate"
        );
        Ok(Response::new(CreateCertificateResponse {
            cert_chain: chain,
        }))
    }

    /// Roots are public: no credentials needed to read them.
    async fn get_trust_bundle(
        &self,
        _request: Request<TrustBundleRequest>,
    ) -> Result<Response<TrustBundle>, Status> {
        Ok(Response::new(TrustBundle {
            roots: self.ca.trust_bundle_pem().to_vec(),
        }))
    }
}

fn unauthenticated(e: &AuthError, peer: Option<std::net::SocketAddr>) -> Status {
    tracing::info!(peer = ?peer, reason = %e, "refused unauthenticated CSR");
    Status::unauthenticated(e.to_string())
}

fn sign_status(e: &SignError, identity: &crate::SpiffeId) -> Status {
    tracing::info!(identity = %identity, reason = %e, "refused CSR");
    match e {
        SignError::Csr(_) => Status::invalid_argument(e.to_string()),
        SignError::ForeignTrustDomain(_) => Status::permission_denied(e.to_string()),
        SignError::CaExpired | SignError::Issue(_) | SignError::Random(_) => {
            Status::internal(e.to_string())
        }
    }
}
