//! Secure random bytes from the workspace's one crypto provider (ring, through rustls).

use std::sync::LazyLock;

use rustls::crypto::SecureRandom;

static RNG: LazyLock<&'static dyn SecureRandom> =
    LazyLock::new(|| rustls::crypto::ring::default_provider().secure_random);

#[derive(Debug, thiserror::Error)]
#[error("the system random number generator failed")]
pub struct RandomError;

pub fn fill(buf: &mut [u8]) -> Result<(), RandomError> {
    RNG.fill(buf).map_err(|_| RandomError)
}

/// Lower-case hex of `n` random bytes (tokens, file name suffixes).
pub fn hex(n: usize) -> Result<String, RandomError> {
    let mut buf = vec![0u8; n];
    fill(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}
