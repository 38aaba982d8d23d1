//! `/certs`: what the proxy presents and trusts, as Envoy's admin `/certs` shows it. Built from
//! the certificates only: the private key is not reachable from here.

use rustls_pki_types::CertificateDer;
use serde::Serialize;
use x509_parser::extensions::GeneralName;

use crate::identity::Identity;

/// One certificate's identity and validity.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct CertificateView {
    pub subject: String,
    pub issuer: String,
    /// Colon-separated hex, as `openssl x509 -serial` prints it (with colons).
    pub serial: String,
    /// URI and DNS subject alternative names.
    pub subject_alt_names: Vec<String>,
    /// Seconds since the Unix epoch.
    pub not_before: i64,
    pub not_after: i64,
    pub is_ca: bool,
}

/// The workload identity in force: leaf first, then intermediates; the roots it trusts.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct CertsView {
    pub identity: String,
    pub chain: Vec<CertificateView>,
    pub trust_bundle: Vec<CertificateView>,
}

impl CertsView {
    pub fn of(identity: &Identity) -> Self {
        Self {
            identity: identity.spiffe_id().as_str().to_owned(),
            chain: identity.chain().iter().filter_map(describe).collect(),
            trust_bundle: identity
                .trust_bundle()
                .iter()
                .filter_map(describe)
                .collect(),
        }
    }
}

/// The public facts of one DER certificate; `None` when it does not parse.
pub fn describe(der: &CertificateDer<'_>) -> Option<CertificateView> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject_alt_names = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::URI(u) => Some((*u).to_owned()),
                    GeneralName::DNSName(d) => Some((*d).to_owned()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    Some(CertificateView {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        serial: cert.raw_serial_as_string(),
        subject_alt_names,
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        is_ca: cert.is_ca(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};
    use rustls_pki_types::PrivateKeyDer;

    #[test]
    fn shows_identity_serial_validity_and_roots_but_never_the_key() {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "mesh root");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);

        let leaf_key = KeyPair::generate().unwrap();
        let mut leaf_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        leaf_params.subject_alt_names.push(SanType::URI(
            "spiffe://cluster.local/ns/default/sa/reviews"
                .try_into()
                .unwrap(),
        ));
        leaf_params.serial_number = Some(rcgen::SerialNumber::from(vec![0x0a, 0x1b]));
        let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
        let key_der = leaf_key.serialize_der();
        let identity = Identity::from_parts(
            vec![leaf.der().clone()],
            PrivateKeyDer::Pkcs8(key_der.clone().into()),
            vec![ca.der().clone()],
        )
        .unwrap();

        let view = CertsView::of(&identity);
        assert_eq!(
            view.identity,
            "spiffe://cluster.local/ns/default/sa/reviews"
        );
        assert_eq!(view.chain.len(), 1);
        assert_eq!(view.chain[0].serial, "0a:1b");
        assert_eq!(
            view.chain[0].subject_alt_names,
            ["spiffe://cluster.local/ns/default/sa/reviews"]
        );
        assert!(view.chain[0].not_before < view.chain[0].not_after);
        assert!(!view.chain[0].is_ca);
        assert_eq!(view.trust_bundle.len(), 1);
        assert!(view.trust_bundle[0].is_ca);
        assert!(view.trust_bundle[0].subject.contains("mesh root"));

        let json = serde_json::to_string(&view).unwrap();
        assert!(!json.to_lowercase().contains("key"), "{json}");
        let key_pem = leaf_key.serialize_pem();
        let key_body = key_pem.lines().nth(1).unwrap();
        assert!(!json.contains(key_body), "{json}");
    }
}
