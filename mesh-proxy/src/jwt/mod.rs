//! End-user authentication: Istio's RequestAuthentication, JWTs checked on the inbound side.
//!
//! Pure parts: where a token is found ([`extract`]), how it is taken apart ([`token`]) and
//! checked ([`verify`], [`alg`], [`jwk`]), what a verified token yields ([`request_auth`], the
//! [`crate::authz::RequestAuth`] authorization reads) and
//! the rule semantics ([`Authenticator`]). The one I/O part is [`remote`]: `jwksUri` key sets
//! fetched ([`fetch`]) and refreshed by a background worker, never on the request path.

pub mod alg;
mod authenticator;
pub mod error;
pub mod extract;
pub mod fetch;
mod identity;
pub mod jwk;
pub mod remote;
pub mod token;
pub mod verify;

#[cfg(test)]
mod authenticator_tests;
#[cfg(test)]
mod remote_tests;
#[cfg(test)]
pub(crate) mod test_keys;

use std::time::{SystemTime, UNIX_EPOCH};

use base64::alphabet::URL_SAFE;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

pub use authenticator::{Authenticator, CompileError, Keys, Verified};
pub use error::{JwksError, JwtError};
pub use identity::{claim_text, request_auth};

/// base64url as issuers write it: padding optional, unused trailing bits ignored (the key
/// checks of validation count lengths only, and must accept what the proxy accepts).
pub(crate) const BASE64URL: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// The wall clock in seconds since the Unix epoch, for `exp` and `nbf`.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
