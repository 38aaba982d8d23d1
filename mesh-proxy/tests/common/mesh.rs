//! Helpers for mTLS and authorization tests: a real citadel served in-process on 127.0.0.1,
//! test CAs made with rcgen (for certificates citadel would never issue), sidecars with an
//! identity, and configs for their inbound and outbound listeners.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mesh_citadel::auth::{
    AnyOf, Authenticator, CertAuthenticator, TokenAuthenticator, write_token,
};
use mesh_citadel::{Ca, ServeOptions, ValidityPolicy};
use mesh_proto::config::v1::ProxyConfig;
use mesh_proxy::Server;
use mesh_proxy::identity::{Identity, IdentityConfig, IdentityHandle, IdentitySource};
use mesh_proxy::retry::{Backoff, Jitter};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use super::config;

pub const TD: &str = "cluster.local";

pub fn spiffe(sa: &str) -> String {
    format!("spiffe://{TD}/ns/default/sa/{sa}")
}

/// A citadel with token and certificate authentication and a token per service account.
pub struct Citadel {
    pub ca: Arc<Ca>,
    pub addr: SocketAddr,
    tokens: PathBuf,
    _stop: oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

impl Citadel {
    /// `validity`: lifetime of every certificate it issues (short ones make renewals happen
    /// during a test); `None` is citadel's default.
    pub async fn start(validity: Option<Duration>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens");
        let mut ca = Ca::self_signed(TD).unwrap();
        if let Some(v) = validity {
            ca = ca.with_validity(ValidityPolicy { default: v, max: v });
        }
        let ca = Arc::new(ca);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let auth: Vec<Arc<dyn Authenticator>> = vec![
            Arc::new(CertAuthenticator::new(ca.clone())),
            Arc::new(TokenAuthenticator::new(&tokens, TD)),
        ];
        let (stop, stopped) = oneshot::channel();
        tokio::spawn(mesh_citadel::serve_with_shutdown(
            listener,
            ca.clone(),
            Arc::new(AnyOf::new(auth)),
            ServeOptions::default(),
            async {
                let _ = stopped.await;
            },
        ));
        Self {
            ca,
            addr,
            tokens,
            _stop: stop,
            _dir: dir,
        }
    }

    /// Writes the token of `default/<sa>` and returns its path.
    pub fn token(&self, sa: &str) -> PathBuf {
        write_token(&self.tokens, "default", sa).unwrap()
    }

    /// The identity request a proxy of `default/<sa>` makes (token authentication).
    pub fn identity_config(&self, sa: &str) -> IdentityConfig {
        let mut cfg =
            IdentityConfig::for_token_identity(self.addr.to_string(), TD, self.ca.roots().to_vec());
        cfg.token_path = Some(self.token(sa));
        cfg.retry = Backoff::new(
            Duration::from_millis(100),
            Duration::from_millis(400),
            Jitter::None,
        );
        cfg.request_timeout = Duration::from_secs(3);
        cfg
    }

    /// The first certificate of `default/<sa>`, renewed in the background.
    pub async fn identity(&self, sa: &str) -> IdentityHandle {
        tokio::time::timeout(
            Duration::from_secs(10),
            IdentitySource::start(self.identity_config(sa)),
        )
        .await
        .expect("citadel issues a certificate")
    }
}

/// A CA made with rcgen, for certificates citadel would never issue (expired, wrong root).
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self { issuer }
    }

    pub fn root(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    /// A workload certificate as citadel makes them, valid from `from` until `until` (both
    /// relative to now), for `spiffe_id`.
    pub fn leaf(
        &self,
        spiffe_id: &str,
        from: time::Duration,
        until: time::Duration,
    ) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![SanType::URI(spiffe_id.try_into().unwrap())];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now + from;
        params.not_after = now + until;
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (
            vec![cert.der().clone(), self.root()],
            PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
    }

    pub fn root_pem(&self) -> String {
        self.issuer.pem()
    }

    /// A certificate for a service outside the mesh, named by DNS: chain PEM and key PEM.
    pub fn dns_leaf_pem(&self, dns_name: &str) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![dns_name.to_owned()]).unwrap();
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// A fixed identity: a certificate of this CA, trusting `roots`.
    pub fn identity_valid(
        &self,
        spiffe_id: &str,
        from: time::Duration,
        until: time::Duration,
        roots: &[&TestCa],
    ) -> IdentityHandle {
        let (chain, key) = self.leaf(spiffe_id, from, until);
        let bundle = roots.iter().map(|ca| ca.root()).collect();
        IdentityHandle::fixed(Identity::from_parts(chain, key, bundle).unwrap())
    }

    /// A fixed identity valid now, trusting `roots`.
    pub fn identity(&self, spiffe_id: &str, roots: &[&TestCa]) -> IdentityHandle {
        self.identity_valid(
            spiffe_id,
            -time::Duration::minutes(1),
            time::Duration::hours(1),
            roots,
        )
    }
}

/// A proxy with `identity` (or none) serving `cfg`.
pub async fn sidecar(identity: Option<IdentityHandle>, cfg: ProxyConfig) -> Arc<Server> {
    let server = Server::new();
    if let Some(id) = identity {
        server.set_identity(id);
    }
    server.apply(cfg).await.expect("test config is valid");
    server
}

/// An inbound HTTP listener "in" on `address` to the application at `app`, with the given
/// mTLS mode, port overrides and authorization policies (proto3 JSON).
pub fn inbound_json(address: &str, app: SocketAddr, security: Value) -> Value {
    let mut listener = json!({
        "name": "in", "address": address, "direction": "INBOUND",
        "protocol": "HTTP", "routeTable": "in"
    });
    for (k, v) in security.as_object().cloned().unwrap_or_default() {
        listener[k] = v;
    }
    json!({
        "version": "1",
        "listeners": [listener],
        "routeTables": [{ "name": "in", "virtualHosts": [{
            "name": "app", "domains": ["*"],
            "routes": [{ "route": { "clusters": [{ "cluster": "app", "weight": 100 }] } }]
        }]}],
        "clusters": [{ "name": "app", "endpoints": [{ "address": app.to_string() }] }],
    })
}

pub fn inbound(app: SocketAddr, security: Value) -> ProxyConfig {
    config(inbound_json("127.0.0.1:0", app, security))
}

/// An inbound TCP listener "in" to `app`, with the given security fields.
pub fn inbound_tcp(app: SocketAddr, security: Value) -> ProxyConfig {
    let mut listener = json!({
        "name": "in", "address": "127.0.0.1:0", "direction": "INBOUND",
        "protocol": "TCP", "tcpCluster": "app"
    });
    for (k, v) in security.as_object().cloned().unwrap_or_default() {
        listener[k] = v;
    }
    config(json!({
        "version": "1",
        "listeners": [listener],
        "clusters": [{ "name": "app", "endpoints": [{ "address": app.to_string() }] }],
    }))
}

/// One upstream endpoint as pilot describes it.
pub fn endpoint(addr: SocketAddr, sidecar: bool, identities: &[&str]) -> Value {
    json!({ "address": addr.to_string(), "sidecar": sidecar, "identities": identities })
}

/// An outbound HTTP listener "out": every host goes to cluster "app" of `endpoints`, with
/// `cluster_extra` merged into the cluster (e.g. `tls`, `protocol`).
pub fn outbound(endpoints: Vec<Value>, cluster_extra: Value) -> ProxyConfig {
    let mut cluster = json!({ "name": "app", "endpoints": endpoints });
    for (k, v) in cluster_extra.as_object().cloned().unwrap_or_default() {
        cluster[k] = v;
    }
    config(json!({
        "version": "1",
        "listeners": [{
            "name": "out", "address": "127.0.0.1:0", "direction": "OUTBOUND",
            "protocol": "HTTP", "routeTable": "out"
        }],
        "routeTables": [{ "name": "out", "virtualHosts": [{
            "name": "app", "domains": ["*"],
            "routes": [{ "route": {
                "clusters": [{ "cluster": "app", "weight": 100 }],
                "retryPolicy": { "numRetries": 0 }
            } }]
        }]}],
        "clusters": [cluster],
    }))
}

/// An outbound TCP listener "out" to cluster "app".
pub fn outbound_tcp(endpoints: Vec<Value>, cluster_extra: Value) -> ProxyConfig {
    let mut cluster = json!({ "name": "app", "endpoints": endpoints });
    for (k, v) in cluster_extra.as_object().cloned().unwrap_or_default() {
        cluster[k] = v;
    }
    config(json!({
        "version": "1",
        "listeners": [{
            "name": "out", "address": "127.0.0.1:0", "direction": "OUTBOUND",
            "protocol": "TCP", "tcpCluster": "app"
        }],
        "clusters": [cluster],
    }))
}

pub fn in_addr(server: &Server) -> SocketAddr {
    server.listener_addr("in").expect("listener in is bound")
}

/// A TCP server that echoes every byte back.
pub async fn tcp_echo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// Writes `msg` on a new connection to `addr`; true when the same bytes come back.
pub async fn tcp_round_trip(addr: SocketAddr, msg: &[u8]) -> bool {
    let Ok(mut s) = TcpStream::connect(addr).await else {
        return false;
    };
    if s.write_all(msg).await.is_err() {
        return false;
    }
    let mut buf = Vec::new();
    let read = async {
        let mut chunk = [0u8; 1024];
        while buf.len() < msg.len() {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .expect("no answer and no close within 5 s");
    buf == msg
}

/// Sends a plaintext HTTP/1.1 request on a raw socket and reads until the server closes or
/// a response head arrives. `None` when no HTTP response came (closed, or only a TLS alert).
pub async fn raw_plaintext_get(addr: SocketAddr) -> Option<String> {
    let mut s = TcpStream::connect(addr).await.ok()?;
    s.write_all(b"GET / HTTP/1.1\r\nhost: app\r\n\r\n")
        .await
        .ok()?;
    let mut buf = Vec::new();
    let read = async {
        let mut chunk = [0u8; 4096];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .expect("no answer and no close within 5 s");
    buf.starts_with(b"HTTP/")
        .then(|| String::from_utf8_lossy(&buf).into_owned())
}

/// A port that was free a moment ago, for listeners whose port a test must know in advance.
pub async fn free_port() -> u16 {
    mesh_echo::ports::free_loopback_port()
}
