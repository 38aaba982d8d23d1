//! The compact JWS form of a JWT (RFC 7515 §7.1), split and decoded without any check of the
//! signature: that is [`super::verify`]'s job.

use super::BASE64URL;
use base64::Engine;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::error::JwtError;

/// A token taken apart. The signing input and the payload segment keep their original bytes:
/// the first is what the signature covers, the second is what `outputPayloadToHeader` forwards.
#[derive(Debug, Clone)]
pub struct Token<'a> {
    pub header: Header,
    pub claims: Map<String, Value>,
    pub signing_input: &'a str,
    pub payload_segment: &'a str,
    pub signature: Vec<u8>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Header {
    pub alg: String,
    #[serde(default)]
    pub kid: Option<String>,
}

impl<'a> Token<'a> {
    pub fn parse(raw: &'a str) -> Result<Token<'a>, JwtError> {
        let mut parts = raw.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtError::Malformed);
        };
        let decode = |seg: &str| {
            // Some issuers pad their segments; RFC 7515 says they must not, Envoy tolerates it.
            BASE64URL.decode(seg).map_err(|_| JwtError::BadEncoding)
        };
        let header: Header =
            serde_json::from_slice(&decode(h)?).map_err(|_| JwtError::BadEncoding)?;
        let claims = match serde_json::from_slice(&decode(p)?) {
            Ok(Value::Object(m)) => m,
            _ => return Err(JwtError::BadEncoding),
        };
        Ok(Token {
            header,
            claims,
            signing_input: &raw[..h.len() + 1 + p.len()],
            payload_segment: p,
            signature: decode(s)?,
        })
    }

    /// The `iss` claim, which picks the rule that verifies the token.
    pub fn issuer(&self) -> Option<&str> {
        self.claims.get("iss").and_then(Value::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(json: &str) -> String {
        BASE64URL.encode(json)
    }

    #[test]
    fn splits_and_decodes() {
        let raw = format!(
            "{}.{}.{}",
            seg(r#"{"alg":"ES256","kid":"k1"}"#),
            seg(r#"{"iss":"a","sub":"b"}"#),
            BASE64URL.encode([1u8, 2, 3])
        );
        let t = Token::parse(&raw).unwrap();
        assert_eq!(t.header.alg, "ES256");
        assert_eq!(t.header.kid.as_deref(), Some("k1"));
        assert_eq!(t.issuer(), Some("a"));
        assert_eq!(t.signature, [1, 2, 3]);
        assert_eq!(t.signing_input, raw.rsplit_once('.').unwrap().0);
        assert_eq!(t.payload_segment, seg(r#"{"iss":"a","sub":"b"}"#));
    }

    #[test]
    fn rejects_what_is_not_a_jws() {
        assert_eq!(Token::parse("a.b").unwrap_err(), JwtError::Malformed);
        assert_eq!(Token::parse("a.b.c.d").unwrap_err(), JwtError::Malformed);
        assert_eq!(Token::parse("!!.b.c").unwrap_err(), JwtError::BadEncoding);
        let array_payload = format!("{}.{}.", seg(r#"{"alg":"RS256"}"#), seg("[1]"));
        assert_eq!(
            Token::parse(&array_payload).unwrap_err(),
            JwtError::BadEncoding
        );
        let no_alg = format!("{}.{}.", seg("{}"), seg("{}"));
        assert_eq!(Token::parse(&no_alg).unwrap_err(), JwtError::BadEncoding);
    }
}
