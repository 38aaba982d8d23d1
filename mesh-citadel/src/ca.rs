//! The certificate authority: a signing certificate and key, the chain up to the root, the
//! trust bundle, and the one operation that matters, turning a CSR into a workload certificate.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use mesh_identity::{SpiffeId, SpiffeIdError, check_trust_domain};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType, SerialNumber,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;

use crate::csr::{self, CsrError};
use crate::random::{self, RandomError};
use crate::store::{self, StoreError};
use crate::validity::ValidityPolicy;

/// A self-signed root lives ten years, as Istio's does.
const ROOT_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Issued certificates start a little in the past so that a peer whose clock is slightly
/// behind does not reject a certificate fresh from the CA.
const BACKDATE: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    TrustDomain(#[from] SpiffeIdError),
    #[error("CA key: {0}")]
    Key(String),
    #[error("{} does not hold the key of {}", store::CA_KEY, store::CA_CERT)]
    KeyMismatch,
    #[error("{file} is not a CA certificate: {0}", file = store::CA_CERT)]
    NotCa(String),
    #[error("CA chain: {0}")]
    Chain(String),
    #[error("{dir}: holds {file} but no {key}; refusing to replace an operator's CA", file = store::CA_CERT, key = store::CA_KEY)]
    Incomplete { dir: String },
    #[error("creating the root: {0}")]
    Create(#[from] rcgen::Error),
    #[error(transparent)]
    Random(#[from] RandomError),
}

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error(transparent)]
    Csr(#[from] CsrError),
    #[error("identity {0} is outside this CA's trust domain")]
    ForeignTrustDomain(SpiffeId),
    #[error("the CA certificate has expired")]
    CaExpired,
    #[error("issuing: {0}")]
    Issue(#[from] rcgen::Error),
    #[error(transparent)]
    Random(#[from] RandomError),
}

/// A ready-to-serve CA. Immutable: a new root or trust bundle means a new `Ca`.
pub struct Ca {
    trust_domain: String,
    issuer: Issuer<'static, KeyPair>,
    issuer_not_after: OffsetDateTime,
    /// From the signing certificate up to the root, appended after every leaf.
    chain_der: Vec<CertificateDer<'static>>,
    chain_pem: Vec<String>,
    roots: Vec<CertificateDer<'static>>,
    roots_pem: Vec<String>,
    validity: ValidityPolicy,
}

// Hand-written: the signing key must never reach a log through `{:?}`.
impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca")
            .field("trust_domain", &self.trust_domain)
            .field("chain_len", &self.chain_der.len())
            .field("roots", &self.roots.len())
            .field("issuer_not_after", &self.issuer_not_after)
            .field("validity", &self.validity)
            .finish_non_exhaustive()
    }
}

/// A workload-style certificate with its key, for the CA's own TLS endpoint.
pub struct ServingCert {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivatePkcs8KeyDer<'static>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl Ca {
    /// Loads the CA kept in `dir`, creating a self-signed root there on first start.
    pub fn load_or_create(dir: &Path, trust_domain: &str) -> Result<Self, CaError> {
        check_trust_domain(trust_domain)?;
        if !store::key_exists(dir) {
            if dir.join(store::CA_CERT).exists() {
                return Err(CaError::Incomplete {
                    dir: dir.display().to_string(),
                });
            }
            let (root_pem, key_pem) = new_root(trust_domain)?;
            store::write_new(dir, &root_pem, &key_pem)?;
            tracing::info!(dir = %dir.display(), "created a self-signed root CA");
        }
        Self::load(dir, trust_domain)
    }

    /// Loads an operator's plug-in CA (Istio's `cacerts` layout) or a previously created root.
    pub fn load(dir: &Path, trust_domain: &str) -> Result<Self, CaError> {
        check_trust_domain(trust_domain)?;
        let files = store::read(dir)?;
        let key = key_pair(&files.ca_key)?;
        Self::assemble(trust_domain, files.ca_cert, key, files.chain, files.roots)
    }

    /// A self-signed CA that exists in memory only (tests, benchmarks).
    pub fn self_signed(trust_domain: &str) -> Result<Self, CaError> {
        check_trust_domain(trust_domain)?;
        let (root_pem, key_pem) = new_root(trust_domain)?;
        let root = CertificateDer::from_pem_slice(root_pem.as_bytes())
            .map_err(|e| CaError::Chain(e.to_string()))?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| CaError::Key(e.to_string()))?;
        Self::assemble(trust_domain, root, key, Vec::new(), Vec::new())
    }

    pub fn with_validity(mut self, validity: ValidityPolicy) -> Self {
        self.validity = validity;
        self
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    pub fn validity(&self) -> ValidityPolicy {
        self.validity
    }

    /// The roots workloads trust, PEM.
    pub fn trust_bundle_pem(&self) -> &[String] {
        &self.roots_pem
    }

    pub fn roots(&self) -> &[CertificateDer<'static>] {
        &self.roots
    }

    /// The signing certificate up to the root, PEM (what follows the leaf in an issued chain).
    pub fn chain_pem(&self) -> &[String] {
        &self.chain_pem
    }

    /// Signs `csr_pem` for `identity`, whatever names the CSR asks for. Returns the chain, PEM,
    /// leaf first and root last. `validity` is capped by the CA's policy and its own expiry.
    pub fn sign(
        &self,
        csr_pem: &str,
        identity: &SpiffeId,
        validity: Option<Duration>,
    ) -> Result<Vec<String>, SignError> {
        if identity.trust_domain() != self.trust_domain {
            return Err(SignError::ForeignTrustDomain(identity.clone()));
        }
        let public_key = csr::verified_public_key(csr_pem)?;
        let uri = rcgen::string::Ia5String::try_from(identity.as_str())?;
        let params = self.leaf_params(
            vec![SanType::URI(uri)],
            DistinguishedName::new(),
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            self.validity.effective(validity),
        )?;
        let leaf = params.signed_by(&public_key, &self.issuer)?;
        let mut chain = Vec::with_capacity(1 + self.chain_pem.len());
        chain.push(leaf.pem());
        chain.extend(self.chain_pem.iter().cloned());
        Ok(chain)
    }

    /// A server certificate for the CA's own gRPC endpoint, with a key made here.
    pub fn issue_serving_cert(
        &self,
        dns_names: &[String],
        validity: Duration,
    ) -> Result<ServingCert, SignError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let sans = dns_names
            .iter()
            .map(|n| Ok(SanType::DnsName(n.as_str().try_into()?)))
            .collect::<Result<Vec<_>, rcgen::Error>>()?;
        let mut dn = DistinguishedName::new();
        if let Some(first) = dns_names.first() {
            dn.push(DnType::CommonName, first.as_str());
        }
        let params = self.leaf_params(
            sans,
            dn,
            vec![ExtendedKeyUsagePurpose::ServerAuth],
            validity,
        )?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let mut chain = vec![cert.der().clone()];
        chain.extend(self.chain_der.iter().cloned());
        Ok(ServingCert {
            chain,
            key: PrivatePkcs8KeyDer::from(key.serialize_der()),
            not_before: params.not_before,
            not_after: params.not_after,
        })
    }

    fn leaf_params(
        &self,
        sans: Vec<SanType>,
        subject: DistinguishedName,
        ekus: Vec<ExtendedKeyUsagePurpose>,
        validity: Duration,
    ) -> Result<CertificateParams, SignError> {
        let now = OffsetDateTime::now_utc();
        if now >= self.issuer_not_after {
            return Err(SignError::CaExpired);
        }
        let mut params = CertificateParams::default();
        params.distinguished_name = subject;
        params.subject_alt_names = sans;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = ekus;
        params.not_before = now - BACKDATE;
        // A certificate never outlives the CA that vouches for it.
        params.not_after = (now + validity).min(self.issuer_not_after);
        params.serial_number = Some(random_serial()?);
        params.use_authority_key_identifier_extension = true;
        Ok(params)
    }

    fn assemble(
        trust_domain: &str,
        ca_cert: CertificateDer<'static>,
        key: KeyPair,
        chain: Vec<CertificateDer<'static>>,
        roots: Vec<CertificateDer<'static>>,
    ) -> Result<Self, CaError> {
        let parsed = parse(&ca_cert)?;
        check_signing_cert(&parsed, &key)?;
        let issuer_not_after =
            OffsetDateTime::from_unix_timestamp(parsed.validity().not_after.timestamp())
                .map_err(|e| CaError::NotCa(e.to_string()))?;
        let self_signed = parsed.subject().as_raw() == parsed.issuer().as_raw();
        let roots = if roots.is_empty() && self_signed {
            vec![ca_cert.clone()]
        } else if roots.is_empty() {
            return Err(CaError::Chain(format!(
                "{} is missing and {} is not self-signed",
                store::ROOT_CERT,
                store::CA_CERT
            )));
        } else {
            roots
        };
        let chain_der = build_chain(&ca_cert, chain, &roots)?;
        let issuer =
            Issuer::from_ca_cert_der(&ca_cert, key).map_err(|e| CaError::NotCa(e.to_string()))?;
        Ok(Self {
            trust_domain: trust_domain.to_owned(),
            issuer,
            issuer_not_after,
            chain_pem: chain_der.iter().map(pem_of).collect(),
            chain_der,
            roots_pem: roots.iter().map(pem_of).collect(),
            roots,
            validity: ValidityPolicy::default(),
        })
    }
}

/// A P-256 root, returned as (certificate PEM, PKCS#8 key PEM).
fn new_root(trust_domain: &str) -> Result<(String, String), CaError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, trust_domain);
    dn.push(DnType::CommonName, "mesh-citadel root CA");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + ROOT_VALIDITY;
    params.serial_number = Some(random_serial()?);
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn key_pair(der: &PrivateKeyDer<'_>) -> Result<KeyPair, CaError> {
    match der {
        PrivateKeyDer::Pkcs8(_) => KeyPair::try_from(der).map_err(|e| CaError::Key(e.to_string())),
        // ring loads PKCS#8 only; say how to convert rather than fail obscurely.
        _ => Err(CaError::Key(format!(
            "{} must be PKCS#8 (BEGIN PRIVATE KEY); convert it with \
             `openssl pkcs8 -topk8 -nocrypt -in {0} -out {0}.pk8`",
            store::CA_KEY
        ))),
    }
}

fn check_signing_cert(cert: &X509Certificate<'_>, key: &KeyPair) -> Result<(), CaError> {
    use rcgen::PublicKeyData;
    if cert.public_key().raw != key.subject_public_key_info().as_slice() {
        return Err(CaError::KeyMismatch);
    }
    match cert.basic_constraints() {
        Ok(Some(bc)) if bc.value.ca => {}
        _ => return Err(CaError::NotCa("basicConstraints CA:TRUE is missing".into())),
    }
    if let Ok(Some(ku)) = cert.key_usage()
        && !ku.value.key_cert_sign()
    {
        return Err(CaError::NotCa("keyUsage lacks keyCertSign".into()));
    }
    Ok(())
}

/// From the signing certificate to a root of the bundle, each link's signature checked.
fn build_chain(
    ca_cert: &CertificateDer<'static>,
    mut chain: Vec<CertificateDer<'static>>,
    roots: &[CertificateDer<'static>],
) -> Result<Vec<CertificateDer<'static>>, CaError> {
    if chain.first() != Some(ca_cert) {
        chain.insert(0, ca_cert.clone());
    }
    let last = chain.last().cloned().unwrap_or_else(|| ca_cert.clone());
    if !roots.contains(&last) {
        let last_issuer = parse(&last)?.issuer().as_raw().to_vec();
        let root = roots
            .iter()
            .find(|r| parse(r).is_ok_and(|r| r.subject().as_raw() == last_issuer))
            .ok_or_else(|| {
                CaError::Chain(format!(
                    "{} does not end at a root of {}",
                    store::CERT_CHAIN,
                    store::ROOT_CERT
                ))
            })?;
        chain.push(root.clone());
    }
    for pair in chain.windows(2) {
        let (child, parent) = (parse(&pair[0])?, parse(&pair[1])?);
        child
            .verify_signature(Some(parent.public_key()))
            .map_err(|_| {
                CaError::Chain(format!(
                    "{} is not signed by {}",
                    child.subject(),
                    parent.subject()
                ))
            })?;
    }
    Ok(chain)
}

fn parse<'a>(der: &'a CertificateDer<'_>) -> Result<X509Certificate<'a>, CaError> {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, c)| c)
        .map_err(|e| CaError::Chain(format!("certificate does not parse: {e}")))
}

fn random_serial() -> Result<SerialNumber, RandomError> {
    let mut bytes = [0u8; 16];
    random::fill(&mut bytes)?;
    // Positive and of full length, as RFC 5280 asks of serial numbers.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

pub(crate) fn pem_of(der: &CertificateDer<'_>) -> String {
    let pem = pem::Pem::new("CERTIFICATE", der.as_ref());
    pem::encode_config(
        &pem,
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}
