//! Checking a workload's CSR: it must parse, be signed by the key it carries, and must not ask
//! for CA rights. Everything else it asks for (subject, SANs, usages) is ignored: the CA decides.

use rcgen::SubjectPublicKeyInfo;
use rustls_pki_types::CertificateSigningRequestDer;
use rustls_pki_types::pem::PemObject;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::ParsedExtension;
use x509_parser::prelude::FromDer;

#[derive(Debug, thiserror::Error)]
pub enum CsrError {
    #[error("CSR is not a PEM certificate request: {0}")]
    Pem(String),
    #[error("CSR does not parse: {0}")]
    Parse(String),
    #[error("CSR signature does not verify")]
    Signature,
    #[error("CSR public key algorithm is not supported: {0}")]
    PublicKey(String),
    #[error("CSR asks for CA rights ({0}); workload certificates cannot sign certificates")]
    CaRequested(&'static str),
}

/// The only thing taken from a CSR: the public key its signer proved to hold.
pub fn verified_public_key(csr_pem: &str) -> Result<SubjectPublicKeyInfo, CsrError> {
    let der = CertificateSigningRequestDer::from_pem_slice(csr_pem.as_bytes())
        .map_err(|e| CsrError::Pem(e.to_string()))?;
    verified_public_key_der(&der)
}

pub fn verified_public_key_der(
    der: &CertificateSigningRequestDer<'_>,
) -> Result<SubjectPublicKeyInfo, CsrError> {
    let (_, csr) =
        X509CertificationRequest::from_der(der).map_err(|e| CsrError::Parse(e.to_string()))?;
    csr.verify_signature().map_err(|_| CsrError::Signature)?;
    refuse_ca_rights(&csr)?;
    SubjectPublicKeyInfo::from_der(csr.certification_request_info.subject_pki.raw)
        .map_err(|e| CsrError::PublicKey(e.to_string()))
}

fn refuse_ca_rights(csr: &X509CertificationRequest<'_>) -> Result<(), CsrError> {
    let Some(extensions) = csr.requested_extensions() else {
        return Ok(());
    };
    for ext in extensions {
        match ext {
            ParsedExtension::BasicConstraints(bc) if bc.ca => {
                return Err(CsrError::CaRequested("basicConstraints CA:TRUE"));
            }
            ParsedExtension::KeyUsage(ku) if ku.key_cert_sign() => {
                return Err(CsrError::CaRequested("keyUsage keyCertSign"));
            }
            ParsedExtension::KeyUsage(ku) if ku.crl_sign() => {
                return Err(CsrError::CaRequested("keyUsage cRLSign"));
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, KeyUsagePurpose};

    fn csr(params: CertificateParams) -> String {
        let key = KeyPair::generate().unwrap();
        params.serialize_request(&key).unwrap().pem().unwrap()
    }

    #[test]
    fn accepts_plain_csr() {
        let pem = csr(CertificateParams::new(vec!["anything.example".into()]).unwrap());
        verified_public_key(&pem).unwrap();
    }

    #[test]
    fn refuses_ca_constraint() {
        let mut p = CertificateParams::default();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        assert!(matches!(
            verified_public_key(&csr(p)),
            Err(CsrError::CaRequested(_))
        ));
    }

    #[test]
    fn refuses_cert_sign_usage() {
        let mut p = CertificateParams::default();
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        assert!(matches!(
            verified_public_key(&csr(p)),
            Err(CsrError::CaRequested(_))
        ));
    }

    #[test]
    fn refuses_tampered_signature() {
        let pem = csr(CertificateParams::default());
        let mut der = CertificateSigningRequestDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .as_ref()
            .to_vec();
        let last = der.len() - 1;
        der[last] ^= 0x01;
        let err = verified_public_key_der(&CertificateSigningRequestDer::from(der)).unwrap_err();
        assert!(matches!(err, CsrError::Signature | CsrError::Parse(_)));
    }

    #[test]
    fn refuses_garbage() {
        assert!(matches!(
            verified_public_key("hello"),
            Err(CsrError::Pem(_))
        ));
    }
}
