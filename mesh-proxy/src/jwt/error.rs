//! Why a request's token was refused. The text is for logs and the `www-authenticate`
//! description; it never contains the token or key material.

/// One reason a JWT is not accepted; every variant ends in a 401.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("Jwt is not in the form of Header.Payload.Signature")]
    Malformed,
    #[error("Jwt header or payload is not valid base64url JSON")]
    BadEncoding,
    #[error("Jwt algorithm {0:?} is not supported")]
    UnsupportedAlgorithm(String),
    #[error("Jwt issuer is not configured")]
    UnknownIssuer,
    #[error("Jwt verification fails")]
    BadSignature,
    #[error("Jwks doesn't have key to match kid or alg from Jwt")]
    NoMatchingKey,
    #[error("Jwks remote fetch is failed")]
    KeysUnavailable,
    #[error("Jwt is expired")]
    Expired,
    #[error("Jwt not yet valid")]
    NotYetValid,
    #[error("Audiences in Jwt are not allowed")]
    AudienceNotAllowed,
}

impl JwtError {
    /// The reply body, in Envoy's words (without the algorithm a client named).
    pub fn reply_text(&self) -> &'static str {
        match self {
            JwtError::Malformed => "Jwt is not in the form of Header.Payload.Signature",
            JwtError::BadEncoding => "Jwt header or payload is not valid base64url JSON",
            JwtError::UnsupportedAlgorithm(_) => "Jwt algorithm is not supported",
            JwtError::UnknownIssuer => "Jwt issuer is not configured",
            JwtError::BadSignature => "Jwt verification fails",
            JwtError::NoMatchingKey => "Jwks doesn't have key to match kid or alg from Jwt",
            JwtError::KeysUnavailable => "Jwks remote fetch is failed",
            JwtError::Expired => "Jwt is expired",
            JwtError::NotYetValid => "Jwt not yet valid",
            JwtError::AudienceNotAllowed => "Audiences in Jwt are not allowed",
        }
    }
}

/// A JWK set that cannot be used: the inline `jwks` of a rule or a fetched document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    #[error("not a JSON Web Key Set: {0}")]
    NotJson(String),
    #[error("the key set has no usable key")]
    NoUsableKey,
}
