//! The signature algorithms of JWS (RFC 7518 §3, RFC 8037) that Istio's proxies accept for
//! asymmetric keys, checked with ring. HMAC (`HS*`) needs a shared secret, which a JWK set
//! published for everyone cannot hold, so it is refused like `none`.

use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey, VerificationAlgorithm};

use super::error::JwtError;
use super::jwk::PublicKey;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Rs256,
    Rs384,
    Rs512,
    Ps256,
    Ps384,
    Ps512,
    Es256,
    Es384,
    EdDsa,
}

impl Algorithm {
    pub fn parse(alg: &str) -> Result<Algorithm, JwtError> {
        Ok(match alg {
            "RS256" => Algorithm::Rs256,
            "RS384" => Algorithm::Rs384,
            "RS512" => Algorithm::Rs512,
            "PS256" => Algorithm::Ps256,
            "PS384" => Algorithm::Ps384,
            "PS512" => Algorithm::Ps512,
            "ES256" => Algorithm::Es256,
            "ES384" => Algorithm::Es384,
            "EdDSA" => Algorithm::EdDsa,
            other => return Err(JwtError::UnsupportedAlgorithm(other.to_owned())),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Rs256 => "RS256",
            Algorithm::Rs384 => "RS384",
            Algorithm::Rs512 => "RS512",
            Algorithm::Ps256 => "PS256",
            Algorithm::Ps384 => "PS384",
            Algorithm::Ps512 => "PS512",
            Algorithm::Es256 => "ES256",
            Algorithm::Es384 => "ES384",
            Algorithm::EdDsa => "EdDSA",
        }
    }

    /// Whether `key` is of the type this algorithm signs with.
    pub fn accepts(self, key: &PublicKey) -> bool {
        matches!(
            (self, key),
            (
                Algorithm::Rs256
                    | Algorithm::Rs384
                    | Algorithm::Rs512
                    | Algorithm::Ps256
                    | Algorithm::Ps384
                    | Algorithm::Ps512,
                PublicKey::Rsa { .. }
            ) | (Algorithm::Es256, PublicKey::EcP256(_))
                | (Algorithm::Es384, PublicKey::EcP384(_))
                | (Algorithm::EdDsa, PublicKey::Ed25519(_))
        )
    }

    /// Checks `sig` over `msg` with `key`; a key of the wrong type never verifies.
    pub fn verify(self, key: &PublicKey, msg: &[u8], sig: &[u8]) -> bool {
        if !self.accepts(key) {
            return false;
        }
        match key {
            PublicKey::Rsa { n, e } => {
                let params = match self {
                    Algorithm::Rs256 => &signature::RSA_PKCS1_2048_8192_SHA256,
                    Algorithm::Rs384 => &signature::RSA_PKCS1_2048_8192_SHA384,
                    Algorithm::Rs512 => &signature::RSA_PKCS1_2048_8192_SHA512,
                    Algorithm::Ps256 => &signature::RSA_PSS_2048_8192_SHA256,
                    Algorithm::Ps384 => &signature::RSA_PSS_2048_8192_SHA384,
                    _ => &signature::RSA_PSS_2048_8192_SHA512,
                };
                RsaPublicKeyComponents { n, e }
                    .verify(params, msg, sig)
                    .is_ok()
            }
            PublicKey::EcP256(point) => {
                unparsed(&signature::ECDSA_P256_SHA256_FIXED, point, msg, sig)
            }
            PublicKey::EcP384(point) => {
                unparsed(&signature::ECDSA_P384_SHA384_FIXED, point, msg, sig)
            }
            PublicKey::Ed25519(x) => unparsed(&signature::ED25519, x, msg, sig),
        }
    }
}

fn unparsed(alg: &'static dyn VerificationAlgorithm, key: &[u8], msg: &[u8], sig: &[u8]) -> bool {
    UnparsedPublicKey::new(alg, key).verify(msg, sig).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_symmetric_algorithms_are_refused() {
        for a in [
            Algorithm::Rs256,
            Algorithm::Rs384,
            Algorithm::Rs512,
            Algorithm::Ps256,
            Algorithm::Ps384,
            Algorithm::Ps512,
            Algorithm::Es256,
            Algorithm::Es384,
            Algorithm::EdDsa,
        ] {
            assert_eq!(Algorithm::parse(a.name()), Ok(a));
        }
        for refused in ["HS256", "none", "ES512", ""] {
            assert_eq!(
                Algorithm::parse(refused),
                Err(JwtError::UnsupportedAlgorithm(refused.into()))
            );
        }
    }

    #[test]
    fn a_key_of_another_type_never_verifies() {
        let ed = PublicKey::Ed25519(vec![0; 32]);
        assert!(!Algorithm::Es256.verify(&ed, b"m", &[0; 64]));
        assert!(!Algorithm::Es256.accepts(&PublicKey::EcP384(vec![4; 97])));
    }
}
