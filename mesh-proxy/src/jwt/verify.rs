//! The checks of one token against one rule's key set: signature, then the time window and
//! the audience. Pure: the clock is an argument.

use serde_json::Value;

use super::alg::Algorithm;
use super::error::JwtError;
use super::jwk::KeySet;
use super::token::Token;

/// Envoy's default tolerance for clocks that disagree on `exp` and `nbf`.
pub const CLOCK_SKEW_SECS: u64 = 60;

/// Checks the signature of `token` with a key of `keys` that fits its `alg` and `kid`.
pub fn signature(token: &Token<'_>, keys: &KeySet) -> Result<(), JwtError> {
    let alg = Algorithm::parse(&token.header.alg)?;
    let kid = token.header.kid.as_deref();
    let mut candidates = keys.keys.iter().filter(|k| k.fits(alg, kid)).peekable();
    if candidates.peek().is_none() {
        return Err(JwtError::NoMatchingKey);
    }
    let msg = token.signing_input.as_bytes();
    if candidates.any(|k| alg.verify(&k.key, msg, &token.signature)) {
        Ok(())
    } else {
        Err(JwtError::BadSignature)
    }
}

/// `exp` and `nbf` (NumericDate, seconds) against `now`, with [`CLOCK_SKEW_SECS`]; a token
/// without them is not limited, as in Envoy.
pub fn time_window(token: &Token<'_>, now: u64) -> Result<(), JwtError> {
    let date = |name: &str| -> Result<Option<u64>, JwtError> {
        match token.claims.get(name) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .filter(|f| *f >= 0.0)
                .map(|f| Some(f as u64))
                .ok_or(JwtError::BadEncoding),
        }
    };
    if date("exp")?.is_some_and(|exp| now > exp.saturating_add(CLOCK_SKEW_SECS)) {
        return Err(JwtError::Expired);
    }
    if date("nbf")?.is_some_and(|nbf| now.saturating_add(CLOCK_SKEW_SECS) < nbf) {
        return Err(JwtError::NotYetValid);
    }
    Ok(())
}

/// The token's `aud`: a string or a list of strings.
pub fn audiences_of(token: &Token<'_>) -> Vec<String> {
    match token.claims.get("aud") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

/// One of `allowed` must be among the token's audiences; no `allowed`: no check.
pub fn audience(token: &Token<'_>, allowed: &[String]) -> Result<(), JwtError> {
    if allowed.is_empty() || audiences_of(token).iter().any(|a| allowed.contains(a)) {
        Ok(())
    } else {
        Err(JwtError::AudienceNotAllowed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt::test_keys::{Signer, now};
    use serde_json::json;

    fn check(raw: &str, keys: &KeySet) -> Result<(), JwtError> {
        signature(&Token::parse(raw).unwrap(), keys)
    }

    #[test]
    fn each_algorithm_verifies_with_its_generated_key() {
        for signer in [
            Signer::es256("ec"),
            Signer::es384("ec384"),
            Signer::ed25519("ed"),
            Signer::rs256("rsa"),
        ] {
            let keys = KeySet::parse(&signer.jwks()).unwrap();
            let raw = signer.sign(&json!({"iss": "i", "sub": "s"}));
            assert_eq!(check(&raw, &keys), Ok(()), "{}", signer.alg);
            // One flipped bit in the payload breaks the signature.
            let (head, rest) = raw.split_once('.').unwrap();
            let (payload, sig) = rest.split_once('.').unwrap();
            let mut p = payload.as_bytes().to_vec();
            p[2] ^= 1;
            let tampered = format!("{head}.{}.{sig}", String::from_utf8(p).unwrap());
            assert!(
                matches!(
                    Token::parse(&tampered).map(|t| signature(&t, &keys)),
                    Ok(Err(JwtError::BadSignature)) | Err(JwtError::BadEncoding)
                ),
                "{}",
                signer.alg
            );
        }
    }

    #[test]
    fn another_key_or_kid_does_not_verify() {
        let a = Signer::es256("a");
        let b = Signer::es256("b");
        let b_keys = KeySet::parse(&b.jwks()).unwrap();
        let raw = a.sign(&json!({"iss": "i"}));
        assert_eq!(
            check(&raw, &b_keys),
            Err(JwtError::NoMatchingKey),
            "kid a unknown"
        );
        let impostor = Signer::es256("b");
        let raw = impostor.sign(&json!({"iss": "i"}));
        assert_eq!(
            check(&raw, &b_keys),
            Err(JwtError::BadSignature),
            "same kid, other key"
        );
        let rsa = Signer::rs256("b");
        let raw = rsa.sign(&json!({"iss": "i"}));
        assert_eq!(
            check(&raw, &b_keys),
            Err(JwtError::NoMatchingKey),
            "RS256 with an EC key"
        );
    }

    #[test]
    fn time_window_with_skew() {
        let t = |claims: serde_json::Value| {
            let raw = Signer::es256("k").sign(&claims);
            time_window(&Token::parse(&raw).unwrap(), now())
        };
        let n = now();
        assert_eq!(t(json!({"exp": n + 10})), Ok(()));
        assert_eq!(t(json!({"exp": n - 30})), Ok(()), "within the skew");
        assert_eq!(t(json!({"exp": n - 120})), Err(JwtError::Expired));
        assert_eq!(t(json!({"nbf": n + 30})), Ok(()));
        assert_eq!(t(json!({"nbf": n + 3600})), Err(JwtError::NotYetValid));
        assert_eq!(t(json!({})), Ok(()));
        assert_eq!(t(json!({"exp": "tomorrow"})), Err(JwtError::BadEncoding));
    }

    #[test]
    fn audiences_string_or_list() {
        let t = |claims: serde_json::Value, allowed: &[&str]| {
            let raw = Signer::es256("k").sign(&claims);
            let allowed: Vec<String> = allowed.iter().map(|s| s.to_string()).collect();
            audience(&Token::parse(&raw).unwrap(), &allowed)
        };
        assert_eq!(t(json!({"aud": "a"}), &["a", "b"]), Ok(()));
        assert_eq!(t(json!({"aud": ["x", "b"]}), &["a", "b"]), Ok(()));
        assert_eq!(
            t(json!({"aud": "c"}), &["a"]),
            Err(JwtError::AudienceNotAllowed)
        );
        assert_eq!(t(json!({}), &["a"]), Err(JwtError::AudienceNotAllowed));
        assert_eq!(
            t(json!({"aud": "c"}), &[]),
            Ok(()),
            "no audiences: not checked"
        );
    }
}
