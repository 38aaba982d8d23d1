//! What every certificate verifier of the mesh shares.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;

/// The one crypto provider of the mesh's TLS (ring), for configs and verifiers alike.
pub fn ring_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The TLS signature checks of a certificate verifier, delegated unchanged to `self.provider`
/// (a `CryptoProvider`): the mesh's verifiers (citadel's client-certificate check, the
/// proxy's mTLS and origination verifiers) differ only in how they judge the certificate
/// itself. Expands inside an `impl ServerCertVerifier` or `impl ClientCertVerifier` block.
#[macro_export]
macro_rules! provider_signature_checks {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &$crate::__rustls::pki_types::CertificateDer<'_>,
            dss: &$crate::__rustls::DigitallySignedStruct,
        ) -> Result<
            $crate::__rustls::client::danger::HandshakeSignatureValid,
            $crate::__rustls::Error,
        > {
            $crate::__rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &$crate::__rustls::pki_types::CertificateDer<'_>,
            dss: &$crate::__rustls::DigitallySignedStruct,
        ) -> Result<
            $crate::__rustls::client::danger::HandshakeSignatureValid,
            $crate::__rustls::Error,
        > {
            $crate::__rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<$crate::__rustls::SignatureScheme> {
            self.provider
                .signature_verification_algorithms
                .supported_schemes()
        }
    };
}
