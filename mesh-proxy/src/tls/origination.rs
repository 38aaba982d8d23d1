//! TLS origination to services outside the mesh (DestinationRule `tls.mode` SIMPLE and
//! MUTUAL): roots and client certificate from files, the server checked against
//! `subjectAltNames` or else the SNI, as Envoy's upstream TLS context does.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, verify_server_name};
use rustls::crypto::CryptoProvider;
use rustls::server::ParsedCertificate;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use x509_parser::extensions::GeneralName;

use super::provider;

/// Where the system's CA bundle usually is (Debian/Ubuntu/Alpine, RHEL/Fedora, others).
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// What SIMPLE or MUTUAL needs, read from the DestinationRule's fields.
pub struct Origination<'a> {
    /// PEM roots; empty: the system bundle.
    pub ca_certificates: &'a str,
    /// MUTUAL only: PEM chain and key.
    pub client_certificate: Option<(&'a str, &'a str)>,
    pub subject_alt_names: &'a [String],
    pub insecure_skip_verify: bool,
}

/// `(field, reason)` of a setting that cannot be used; field names are the proto3 JSON ones.
pub type OriginationError = (String, String);

/// Builds the client config (TLS 1.2 and 1.3, as external servers may not speak 1.3 only).
/// Files are read now, once per config update, never per connection.
pub fn origination_config(o: &Origination<'_>) -> Result<Arc<ClientConfig>, OriginationError> {
    let provider = provider();
    let roots = if o.insecure_skip_verify {
        RootCertStore::empty()
    } else {
        load_roots(o.ca_certificates)?
    };
    let verifier = OriginationVerifier {
        roots: Arc::new(roots),
        subject_alt_names: o.subject_alt_names.to_vec(),
        insecure: o.insecure_skip_verify,
        provider: provider.clone(),
    };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ("mode".to_owned(), e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let config = match o.client_certificate {
        None => builder.with_no_client_auth(),
        Some((cert_path, key_path)) => {
            let chain = read_certs("clientCertificate", cert_path)?;
            let key_pem = read("privateKey", key_path)?;
            // Errors name the file only: nothing of the key reaches a message.
            let key = PrivateKeyDer::from_pem_slice(&key_pem)
                .map_err(|e| ("privateKey".to_owned(), format!("{key_path}: {e}")))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| ("privateKey".to_owned(), format!("{key_path}: {e}")))?
        }
    };
    Ok(Arc::new(config))
}

fn read(field: &str, path: &str) -> Result<Vec<u8>, OriginationError> {
    std::fs::read(path).map_err(|e| (field.to_owned(), format!("{path}: {e}")))
}

fn read_certs(field: &str, path: &str) -> Result<Vec<CertificateDer<'static>>, OriginationError> {
    let pem = read(field, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| (field.to_owned(), format!("{path}: {e}")))?;
    if certs.is_empty() {
        return Err((field.to_owned(), format!("{path}: holds no certificate")));
    }
    Ok(certs)
}

fn load_roots(ca_certificates: &str) -> Result<RootCertStore, OriginationError> {
    let (field, path) = if ca_certificates.is_empty() {
        let found = SYSTEM_BUNDLES.iter().find(|p| Path::new(p).exists());
        let path = found.ok_or_else(|| {
            (
                "caCertificates".to_owned(),
                "empty, and no system CA bundle was found".to_owned(),
            )
        })?;
        ("caCertificates", *path)
    } else {
        ("caCertificates", ca_certificates)
    };
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(read_certs(field, path)?);
    if added == 0 {
        return Err((field.to_owned(), format!("{path}: no usable root")));
    }
    Ok(roots)
}

struct OriginationVerifier {
    roots: Arc<RootCertStore>,
    subject_alt_names: Vec<String>,
    insecure: bool,
    provider: Arc<CryptoProvider>,
}

impl fmt::Debug for OriginationVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OriginationVerifier")
            .field("subject_alt_names", &self.subject_alt_names)
            .field("insecure", &self.insecure)
            .finish_non_exhaustive()
    }
}

/// Whether the certificate carries one of `wanted` as a DNS name or URI SAN.
fn has_any_san(cert: &CertificateDer<'_>, wanted: &[String]) -> bool {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(cert) else {
        return false;
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return false;
    };
    san.value.general_names.iter().any(|n| match n {
        GeneralName::DNSName(d) => wanted.iter().any(|w| w.eq_ignore_ascii_case(d)),
        GeneralName::URI(u) => wanted.iter().any(|w| w == u),
        _ => false,
    })
}

impl ServerCertVerifier for OriginationVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.insecure {
            return Ok(ServerCertVerified::assertion());
        }
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        if self.subject_alt_names.is_empty() {
            verify_server_name(&cert, server_name)?;
        } else if !has_any_san(end_entity, &self.subject_alt_names) {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName,
            ));
        }
        Ok(ServerCertVerified::assertion())
    }

    mesh_identity::provider_signature_checks!();
}
