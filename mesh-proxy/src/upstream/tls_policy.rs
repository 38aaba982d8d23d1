//! A cluster's `tls` setting (DestinationRule `trafficPolicy.tls`, merged by pilot) turned
//! into one [`Transport`] per endpoint, at config time.

use crate::fast_map::FastMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;

use mesh_proto::config::v1 as pb;
use pb::upstream_tls::Mode;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;

use super::transport::{Connectors, TlsTransport, Transport};
use crate::config::FieldError;
use crate::identity::IdentitySlot;
use crate::tls::{Origination, client_config_with, origination_config};

/// Fields are under the cluster.
type TlsError = FieldError;

/// What a compile is for: a proxy applying its config, or a check of the config elsewhere
/// (pilot), where the certificate files named by `tls` are the proxy's, not local. A check
/// runs the same compile code but reads no files and starts no background work; what it
/// builds is never used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompileFor {
    Proxy,
    Check,
}

/// Builds transports for the endpoints of one cluster, sharing TLS configs between endpoints
/// that are checked the same way.
pub struct TransportPlan<'a> {
    spec: Option<&'a pb::UpstreamTls>,
    identity: &'a Arc<IdentitySlot>,
    /// SIMPLE / MUTUAL: one config for the cluster, with a key covering the files' contents.
    origination: Option<(Arc<ClientConfig>, u64)>,
    /// Connectors by key, so endpoints checked the same way share them.
    connectors: FastMap<u64, Arc<Connectors>>,
}

impl<'a> TransportPlan<'a> {
    pub fn new(
        spec: Option<&'a pb::UpstreamTls>,
        identity: &'a Arc<IdentitySlot>,
        purpose: CompileFor,
    ) -> Result<Self, TlsError> {
        let mut plan = Self {
            spec,
            identity,
            origination: None,
            connectors: FastMap::default(),
        };
        if let Some(tls) = spec {
            let mode = Mode::try_from(tls.mode)
                .map_err(|_| FieldError::new("tls.mode", format!("unknown mode {}", tls.mode)))?;
            if matches!(mode, Mode::Simple | Mode::Mutual) {
                mutual_needs_a_key_pair(tls, mode)?;
                if purpose == CompileFor::Proxy {
                    plan.origination = Some(origination(tls, mode)?);
                }
            }
        }
        Ok(plan)
    }

    pub fn for_endpoint(
        &mut self,
        endpoint: &pb::Endpoint,
        address: SocketAddr,
    ) -> Result<Transport, TlsError> {
        let mode = self.spec.map_or(Mode::Auto, |t| t.mode());
        let sans = self.spec.map_or(&[][..], |t| &t.subject_alt_names[..]);
        match mode {
            Mode::Disable => Ok(Transport::Plain),
            // Without a CA there is no identity to speak mTLS with: plaintext to everyone.
            Mode::Auto if !(endpoint.sidecar && self.identity.is_enabled()) => Ok(Transport::Plain),
            Mode::Auto | Mode::IstioMutual => {
                let expected = if sans.is_empty() {
                    endpoint.identities.clone()
                } else {
                    sans.to_vec()
                };
                self.mesh(expected, address)
            }
            Mode::Simple | Mode::Mutual => {
                let Some((config, key)) = self.origination.clone() else {
                    // Only in a check: nothing connects through this plan.
                    return Ok(Transport::Plain);
                };
                let sni = self.spec.map(|t| t.sni.as_str()).unwrap_or_default();
                let mut h = DefaultHasher::new();
                (key, sni).hash(&mut h);
                let connectors = self.connectors(h.finish(), || {
                    Ok((config, format!("{mode:?} sni={sni:?} sans={sans:?}")))
                })?;
                let transport = TlsTransport::new(connectors, server_name(sni, address)?);
                let auto_sni = self.spec.is_some_and(|t| t.auto_sni);
                Ok(Transport::Tls(Arc::new(if auto_sni {
                    transport.with_auto_sni()
                } else {
                    transport
                })))
            }
        }
    }

    fn mesh(&mut self, expected: Vec<String>, address: SocketAddr) -> Result<Transport, TlsError> {
        let sni = self.spec.map(|t| t.sni.as_str()).unwrap_or_default();
        let mut h = DefaultHasher::new();
        ("mesh", &expected, sni).hash(&mut h);
        let identity = self.identity.clone();
        let key = h.finish();
        if let Some(c) = self.connectors.get(&key) {
            return Ok(tls(c.clone(), server_name(sni, address)?));
        }
        let describe = format!("mesh mTLS expecting {expected:?}");
        let config = client_config_with(identity, expected.clone())
            .map_err(|e| FieldError::new("tls", e.to_string()))?;
        let connectors = Connectors::mesh(key, &config, describe, expected);
        self.connectors.insert(key, connectors.clone());
        Ok(tls(connectors, server_name(sni, address)?))
    }

    fn connectors(
        &mut self,
        key: u64,
        build: impl FnOnce() -> Result<(Arc<ClientConfig>, String), TlsError>,
    ) -> Result<Arc<Connectors>, TlsError> {
        if let Some(c) = self.connectors.get(&key) {
            return Ok(c.clone());
        }
        let (config, describe) = build()?;
        let c = Connectors::new(key, &config, describe);
        self.connectors.insert(key, c.clone());
        Ok(c)
    }
}

fn tls(connectors: Arc<Connectors>, server_name: ServerName<'static>) -> Transport {
    Transport::Tls(Arc::new(TlsTransport::new(connectors, server_name)))
}

/// The SNI to send: the configured one, else the endpoint's IP (for which rustls sends none;
/// mesh peers are identified by SPIFFE ID, not by name).
fn server_name(sni: &str, address: SocketAddr) -> Result<ServerName<'static>, TlsError> {
    if sni.is_empty() {
        return Ok(ServerName::IpAddress(address.ip().into()));
    }
    ServerName::try_from(sni.to_owned())
        .map_err(|_| FieldError::new("tls.sni", format!("{sni:?} is not a valid server name")))
}

fn mutual_needs_a_key_pair(tls: &pb::UpstreamTls, mode: Mode) -> Result<(), TlsError> {
    if mode == Mode::Mutual && (tls.client_certificate.is_empty() || tls.private_key.is_empty()) {
        return Err(FieldError::new(
            "tls.clientCertificate",
            "MUTUAL needs clientCertificate and privateKey",
        ));
    }
    Ok(())
}

fn origination(tls: &pb::UpstreamTls, mode: Mode) -> Result<(Arc<ClientConfig>, u64), TlsError> {
    let at = |e: FieldError| e.within("tls");
    let client_certificate = match mode {
        Mode::Mutual => Some((tls.client_certificate.as_str(), tls.private_key.as_str())),
        _ => None,
    };
    let config = origination_config(&Origination {
        ca_certificates: &tls.ca_certificates,
        client_certificate,
        subject_alt_names: &tls.subject_alt_names,
        insecure_skip_verify: tls.insecure_skip_verify,
    })
    .map_err(|(field, reason)| at(FieldError::new(field, reason)))?;
    // Changed files mean new connections: their contents are part of the key.
    let mut h = DefaultHasher::new();
    (tls.mode, &tls.subject_alt_names, tls.insecure_skip_verify).hash(&mut h);
    for path in [&tls.ca_certificates, &tls.client_certificate] {
        std::fs::read(path).unwrap_or_default().hash(&mut h);
    }
    Ok((config, h.finish()))
}
