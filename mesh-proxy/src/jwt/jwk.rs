//! JSON Web Key Sets (RFC 7517) with the key types the signature algorithms need: RSA (`n`,
//! `e`), EC P-256 / P-384 (`x`, `y`) and OKP Ed25519 (`x`). Keys of other types or curves,
//! and keys meant for encryption (`use: enc`), are skipped, as Envoy skips them.

use super::BASE64URL;
use base64::Engine;
use serde::Deserialize;

use super::alg::Algorithm;
use super::error::JwksError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// Big-endian modulus and exponent.
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// The uncompressed point `04 || x || y`, as ring reads it.
    EcP256(Vec<u8>),
    EcP384(Vec<u8>),
    Ed25519(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    pub kid: Option<String>,
    /// The JWK's `alg`, when it pins one.
    pub alg: Option<String>,
    pub key: PublicKey,
}

impl Key {
    /// Whether this key may check a token signed with `alg` and naming `kid`. A token
    /// without `kid` may be checked by any key of the right type.
    pub fn fits(&self, alg: Algorithm, kid: Option<&str>) -> bool {
        kid.is_none_or(|k| self.kid.as_deref() == Some(k))
            && self.alg.as_deref().is_none_or(|a| a == alg.name())
            && alg.accepts(&self.key)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeySet {
    pub keys: Vec<Key>,
}

#[derive(Deserialize)]
struct RawSet {
    keys: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawKey {
    kty: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    alg: Option<String>,
    #[serde(default, rename = "use")]
    use_: Option<String>,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    y: Option<String>,
}

fn b64(v: &Option<String>) -> Option<Vec<u8>> {
    BASE64URL
        .decode(v.as_deref()?)
        .ok()
        .filter(|b| !b.is_empty())
}

/// An EC point from fixed-size coordinates; shorter encodings are left-padded, as some
/// issuers drop leading zero bytes.
fn ec_point(x: &[u8], y: &[u8], size: usize) -> Option<Vec<u8>> {
    if x.len() > size || y.len() > size {
        return None;
    }
    let mut out = vec![4u8];
    for c in [x, y] {
        out.extend(std::iter::repeat_n(0, size - c.len()));
        out.extend_from_slice(c);
    }
    Some(out)
}

fn key(raw: RawKey) -> Option<Key> {
    if raw.use_.as_deref().is_some_and(|u| u != "sig") {
        return None;
    }
    let key = match (raw.kty.as_str(), raw.crv.as_deref()) {
        ("RSA", _) => PublicKey::Rsa {
            n: b64(&raw.n)?,
            e: b64(&raw.e)?,
        },
        ("EC", Some("P-256")) => PublicKey::EcP256(ec_point(&b64(&raw.x)?, &b64(&raw.y)?, 32)?),
        ("EC", Some("P-384")) => PublicKey::EcP384(ec_point(&b64(&raw.x)?, &b64(&raw.y)?, 48)?),
        ("OKP", Some("Ed25519")) => {
            let x = b64(&raw.x)?;
            (x.len() == 32).then_some(PublicKey::Ed25519(x))?
        }
        _ => return None,
    };
    Some(Key {
        kid: raw.kid,
        alg: raw.alg,
        key,
    })
}

impl KeySet {
    /// Parses a JWK set document; keys that cannot be used are skipped, but a set with no
    /// usable key at all is an error, so a broken document never replaces good keys.
    pub fn parse(json: &str) -> Result<KeySet, JwksError> {
        let raw: RawSet =
            serde_json::from_str(json).map_err(|e| JwksError::NotJson(e.to_string()))?;
        let keys: Vec<Key> = raw
            .keys
            .into_iter()
            .filter_map(|v| serde_json::from_value::<RawKey>(v).ok())
            .filter_map(key)
            .collect();
        if keys.is_empty() {
            return Err(JwksError::NoUsableKey);
        }
        Ok(KeySet { keys })
    }

    /// Whether a key could check a token with this `alg` and `kid` (an unknown `kid` means
    /// the issuer rotated its keys, so a fresh set is worth fetching).
    pub fn has_key_for(&self, alg: Algorithm, kid: Option<&str>) -> bool {
        self.keys.iter().any(|k| k.fits(alg, kid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_key_type_and_skips_the_rest() {
        let set = KeySet::parse(
            r#"{"keys":[
              {"kty":"RSA","kid":"r","alg":"RS256","n":"AQAB","e":"AQAB"},
              {"kty":"EC","kid":"e","crv":"P-256","x":"AQ","y":"Ag"},
              {"kty":"EC","kid":"e384","crv":"P-384","x":"AQ","y":"Ag"},
              {"kty":"OKP","kid":"o","crv":"Ed25519","x":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"},
              {"kty":"EC","kid":"k","crv":"secp256k1","x":"AQ","y":"Ag"},
              {"kty":"RSA","kid":"enc","use":"enc","n":"AQAB","e":"AQAB"},
              {"kty":"oct","k":"c2VjcmV0"},
              {"no":"kty"}
            ]}"#,
        )
        .unwrap();
        let kids: Vec<_> = set.keys.iter().map(|k| k.kid.as_deref().unwrap()).collect();
        assert_eq!(kids, ["r", "e", "e384", "o"]);
        let PublicKey::EcP256(p) = &set.keys[1].key else {
            panic!("{:?}", set.keys[1]);
        };
        assert_eq!(p.len(), 65, "coordinates are left-padded to 32 bytes");
        assert_eq!((p[0], p[32], p[64]), (4, 1, 2));
        assert_eq!(
            set.keys[2].key,
            PublicKey::EcP384(ec_point(&[1], &[2], 48).unwrap())
        );
    }

    #[test]
    fn padding_and_trailing_bits_are_tolerated() {
        let set =
            KeySet::parse(r#"{"keys":[{"kty":"EC","crv":"P-256","x":"AR","y":"Ag=="}]}"#).unwrap();
        assert_eq!(set.keys.len(), 1);
    }

    #[test]
    fn a_set_without_usable_keys_is_an_error() {
        assert_eq!(
            KeySet::parse(r#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#),
            Err(JwksError::NoUsableKey)
        );
        assert!(matches!(
            KeySet::parse("not json"),
            Err(JwksError::NotJson(_))
        ));
        assert!(matches!(
            KeySet::parse(r#"{"kty":"RSA"}"#),
            Err(JwksError::NotJson(_))
        ));
    }

    #[test]
    fn key_fit_by_kid_alg_and_type() {
        let set = KeySet::parse(
            r#"{"keys":[{"kty":"RSA","kid":"r","alg":"RS256","n":"AQAB","e":"AQAB"},
                        {"kty":"EC","crv":"P-256","x":"AQ","y":"Ag"}]}"#,
        )
        .unwrap();
        assert!(set.has_key_for(Algorithm::Rs256, Some("r")));
        assert!(set.has_key_for(Algorithm::Rs256, None));
        assert!(!set.has_key_for(Algorithm::Rs256, Some("rotated")));
        assert!(
            !set.has_key_for(Algorithm::Rs384, Some("r")),
            "the JWK pins RS256"
        );
        assert!(set.has_key_for(Algorithm::Es256, None));
        assert!(!set.has_key_for(Algorithm::Es384, None));
        assert!(!set.has_key_for(Algorithm::EdDsa, None));
    }
}
