//! The SPIFFE ID a certificate carries: its one `spiffe://` URI SAN (X.509-SVID).

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

use crate::{SpiffeId, SpiffeIdError};

/// Why a certificate names no workload.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CertIdentityError {
    #[error("certificate does not parse: {0}")]
    Parse(String),
    #[error("subjectAltName: {0}")]
    SubjectAltName(String),
    #[error("certificate carries no spiffe:// URI SAN")]
    NoSpiffeUri,
    /// The SPIFFE spec allows one: several would make the identity ambiguous.
    #[error("certificate carries {0} spiffe:// URI SANs, expected one")]
    SeveralSpiffeUris(usize),
    #[error("URI SAN: {0}")]
    Invalid(#[from] SpiffeIdError),
}

/// The SPIFFE ID of a DER certificate. URIs of other schemes are not identities and are left
/// alone; the one `spiffe://` URI must be a workload's.
pub fn spiffe_id_of(der: &[u8]) -> Result<SpiffeId, CertIdentityError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| CertIdentityError::Parse(e.to_string()))?;
    spiffe_id_in(&cert)
}

/// [`spiffe_id_of`] for a certificate the caller has parsed already.
pub fn spiffe_id_in(cert: &X509Certificate<'_>) -> Result<SpiffeId, CertIdentityError> {
    let san = cert
        .subject_alternative_name()
        .map_err(|e| CertIdentityError::SubjectAltName(e.to_string()))?
        .ok_or(CertIdentityError::NoSpiffeUri)?;
    let uris: Vec<&str> = san
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::URI(u) if is_spiffe_uri(u) => Some(*u),
            _ => None,
        })
        .collect();
    match uris.as_slice() {
        [] => Err(CertIdentityError::NoSpiffeUri),
        [uri] => Ok(uri.parse()?),
        several => Err(CertIdentityError::SeveralSpiffeUris(several.len())),
    }
}

/// URI schemes are case-insensitive (RFC 3986), so `SPIFFE://` counts as one too, and is then
/// refused by the parser rather than skipped as another scheme.
fn is_spiffe_uri(uri: &str) -> bool {
    uri.get(..SCHEME.len())
        .is_some_and(|s| s.eq_ignore_ascii_case(SCHEME))
}

const SCHEME: &str = "spiffe://";

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair, SanType};

    fn cert_with_uris(uris: &[&str]) -> Vec<u8> {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["ignored.example".to_owned()]).unwrap();
        for uri in uris {
            params
                .subject_alt_names
                .push(SanType::URI((*uri).try_into().unwrap()));
        }
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn the_one_spiffe_uri_is_the_identity() {
        let der = cert_with_uris(&["https://x.example", "spiffe://td/ns/a/sa/b"]);
        assert_eq!(spiffe_id_of(&der).unwrap(), "spiffe://td/ns/a/sa/b");
    }

    #[test]
    fn none_or_several_name_no_one() {
        assert_eq!(
            spiffe_id_of(&cert_with_uris(&[])),
            Err(CertIdentityError::NoSpiffeUri)
        );
        assert_eq!(
            spiffe_id_of(&cert_with_uris(&["https://x.example"])),
            Err(CertIdentityError::NoSpiffeUri)
        );
        assert_eq!(
            spiffe_id_of(&cert_with_uris(&[
                "spiffe://td/ns/a/sa/b",
                "spiffe://td/ns/a/sa/c"
            ])),
            Err(CertIdentityError::SeveralSpiffeUris(2))
        );
    }

    #[test]
    fn a_spiffe_uri_that_is_no_workload_id_is_refused() {
        for uri in [
            "spiffe://td/ns/a/sa/b/extra",
            "spiffe://td/workload",
            "SPIFFE://td/ns/a/sa/b",
        ] {
            let got = spiffe_id_of(&cert_with_uris(&[uri]));
            assert!(
                matches!(got, Err(CertIdentityError::Invalid(_))),
                "{uri}: {got:?}"
            );
        }
    }

    #[test]
    fn garbage_does_not_parse() {
        assert!(matches!(
            spiffe_id_of(b"not a certificate"),
            Err(CertIdentityError::Parse(_))
        ));
    }
}
