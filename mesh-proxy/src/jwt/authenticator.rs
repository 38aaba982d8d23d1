//! A workload's RequestAuthentication rules, compiled, and the check of one request against
//! them with Istio's semantics: every token the request carries at a configured location must
//! be valid for a rule whose issuer is its `iss` and which reads that location; a token no
//! such rule accepts is rejected; a request without any token passes unauthenticated.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};
use mesh_proto::config::v1 as pb;

use super::alg::Algorithm;
use super::error::JwtError;
use super::extract::Location;
use super::identity::{claim_text, request_auth};
use super::jwk::KeySet;
use super::remote::{FetchSettings, RemoteJwks};
use super::token::Token;
use super::verify;
use crate::authz::RequestAuth;
use crate::config::FieldError;

/// A JWT rule that does not compile: its index and the field inside it (proto3 JSON
/// spelling, e.g. `jwks`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("jwtRules[{rule}].{error}")]
pub struct CompileError {
    pub rule: usize,
    pub error: FieldError,
}

#[cfg(test)]
impl CompileError {
    /// `(rule index, field)`.
    pub(crate) fn field(&self) -> (usize, &str) {
        (self.rule, &self.error.field)
    }
}

/// `(field, reason)` within one rule.
type RuleError = (String, String);

#[derive(Debug, Clone)]
pub enum Keys {
    Inline(Arc<KeySet>),
    Remote(Arc<RemoteJwks>),
}

#[derive(Debug)]
struct Rule {
    name: String,
    issuer: String,
    audiences: Vec<String>,
    keys: Keys,
    locations: Vec<Location>,
    payload_header: Option<HeaderName>,
    forward_original_token: bool,
    claim_headers: Vec<(HeaderName, String)>,
    space_delimited: Vec<String>,
}

/// The verified tokens of one request, first found first.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    tokens: Vec<VerifiedToken>,
}

#[derive(Debug, Clone, PartialEq)]
struct VerifiedToken {
    rule: usize,
    location: Location,
    payload_segment: String,
    /// As in the token, for `outputClaimToHeaders`.
    claims: serde_json::Map<String, serde_json::Value>,
    auth: RequestAuth,
}

impl Verified {
    /// The identity of the request: the first verified token's, as Istio takes it.
    pub fn request_auth(&self) -> Option<&RequestAuth> {
        self.tokens.first().map(|t| &t.auth)
    }
}

#[derive(Debug, Default)]
pub struct Authenticator {
    rules: Vec<Rule>,
    /// Every rule's locations, each once, in rule order.
    locations: Vec<Location>,
    /// Headers the proxy writes from verified tokens; a client's own are always dropped, so
    /// the application can trust them.
    output_headers: Vec<HeaderName>,
}

fn header_name(path: String, name: &str) -> Result<HeaderName, RuleError> {
    HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| (path, format!("{name:?} is not a valid header name")))
}

fn ms_or(v: u32, default: Duration) -> Duration {
    if v == 0 {
        default
    } else {
        Duration::from_millis(u64::from(v))
    }
}

impl Authenticator {
    /// `reuse` gives the key set of a URI and settings when the previous config had one, so
    /// a config update neither refetches nor forgets keys. New key sets are not fetched until
    /// [`Authenticator::start_fetching`]: compiling does no I/O.
    pub fn compile(
        rules: &[pb::JwtRule],
        reuse: &dyn Fn(&str, &FetchSettings) -> Option<Arc<RemoteJwks>>,
    ) -> Result<Authenticator, CompileError> {
        let mut out = Authenticator::default();
        for (i, r) in rules.iter().enumerate() {
            out.add_rule(r, reuse)
                .map_err(|(field, reason)| CompileError {
                    rule: i,
                    error: FieldError::new(field, reason),
                })?;
        }
        Ok(out)
    }

    fn add_rule(
        &mut self,
        r: &pb::JwtRule,
        reuse: &dyn Fn(&str, &FetchSettings) -> Option<Arc<RemoteJwks>>,
    ) -> Result<(), RuleError> {
        let out = self;
        {
            let at = |f: &str| f.to_string();
            if r.issuer.is_empty() {
                return Err((at("issuer"), "must be set".into()));
            }
            let keys = if !r.jwks.is_empty() {
                let set = KeySet::parse(&r.jwks).map_err(|e| (at("jwks"), e.to_string()))?;
                Keys::Inline(Arc::new(set))
            } else if !r.jwks_uri.is_empty() {
                let settings = FetchSettings {
                    timeout: ms_or(r.jwks_fetch_timeout_ms, FetchSettings::DEFAULT.timeout),
                    refresh: ms_or(r.jwks_refresh_ms, FetchSettings::DEFAULT.refresh),
                    min_refetch: ms_or(r.jwks_min_refetch_ms, FetchSettings::DEFAULT.min_refetch),
                };
                let uri = r.jwks_uri.as_str();
                // The same rule as validation's; anything else about the URL is the fetch's
                // to report (and tokens for this issuer fail closed until keys arrive).
                let scheme_and_host = uri.split_once("://").filter(|(scheme, rest)| {
                    (scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https"))
                        && !rest.is_empty()
                        && !rest.starts_with('/')
                });
                if scheme_and_host.is_none() {
                    return Err((
                        at("jwksUri"),
                        format!("{uri:?}: expected http(s)://host/..."),
                    ));
                }
                let remote = reuse(uri, &settings).unwrap_or_else(|| {
                    RemoteJwks::new(uri.to_owned(), settings, Default::default())
                });
                Keys::Remote(remote)
            } else {
                return Err((
                    at("jwks"),
                    "one of jwks or jwksUri is required (OpenID discovery from the issuer is not supported)"
                        .into(),
                ));
            };
            let mut locations = Vec::new();
            for (j, h) in r.from_headers.iter().enumerate() {
                locations.push(Location::Header {
                    name: header_name(at(&format!("fromHeaders[{j}].name")), &h.name)?,
                    prefix: h.prefix.clone(),
                });
            }
            locations.extend(r.from_params.iter().cloned().map(Location::Param));
            locations.extend(r.from_cookies.iter().cloned().map(Location::Cookie));
            if locations.is_empty() {
                locations = Location::defaults();
            }
            let payload_header = match r.output_payload_to_header.as_str() {
                "" => None,
                h => Some(header_name(at("outputPayloadToHeader"), h)?),
            };
            let mut claim_headers = Vec::new();
            for (j, c) in r.output_claim_to_headers.iter().enumerate() {
                let name =
                    header_name(at(&format!("outputClaimToHeaders[{j}].header")), &c.header)?;
                if c.claim.is_empty() {
                    return Err((
                        at(&format!("outputClaimToHeaders[{j}].claim")),
                        "must be set".into(),
                    ));
                }
                claim_headers.push((name, c.claim.clone()));
            }
            for l in &locations {
                if !out.locations.contains(l) {
                    out.locations.push(l.clone());
                }
            }
            for h in payload_header
                .iter()
                .chain(claim_headers.iter().map(|(h, _)| h))
            {
                if !out.output_headers.contains(h) {
                    out.output_headers.push(h.clone());
                }
            }
            out.rules.push(Rule {
                name: r.name.clone(),
                issuer: r.issuer.clone(),
                audiences: r.audiences.clone(),
                keys,
                locations,
                payload_header,
                forward_original_token: r.forward_original_token,
                claim_headers,
                space_delimited: r.space_delimited_claims.clone(),
            });
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The remote key sets in use, by URI and settings, for the next config to reuse.
    pub fn remote_keys(&self) -> HashMap<(String, FetchSettings), Arc<RemoteJwks>> {
        self.rules
            .iter()
            .filter_map(|r| match &r.keys {
                Keys::Remote(k) => Some(((k.uri().to_owned(), k.settings().clone()), k.clone())),
                Keys::Inline(_) => None,
            })
            .collect()
    }

    /// Starts fetching the `jwksUri` key sets not fetched yet (when the config is applied).
    pub fn start_fetching(&self) {
        for rule in &self.rules {
            if let Keys::Remote(remote) = &rule.keys {
                remote.start();
            }
        }
    }

    /// Checks every token the request carries. `Ok` with no tokens: unauthenticated.
    /// `now` is seconds since the Unix epoch.
    pub async fn check(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
        now: u64,
    ) -> Result<Verified, JwtError> {
        let mut tokens = Vec::new();
        for location in &self.locations {
            let Some(raw) = location.find(headers, query) else {
                continue;
            };
            let token = Token::parse(&raw)?;
            let iss = token.issuer().unwrap_or_default();
            let mut result = Err(JwtError::UnknownIssuer);
            for (i, rule) in self.rules.iter().enumerate() {
                if rule.issuer != iss || !rule.locations.contains(location) {
                    continue;
                }
                result = rule.verify(&token, now).await.map(|auth| VerifiedToken {
                    rule: i,
                    location: location.clone(),
                    payload_segment: token.payload_segment.to_owned(),
                    claims: token.claims.clone(),
                    auth,
                });
                if result.is_ok() {
                    break;
                }
                tracing::debug!(rule = %rule.name, error = ?result.as_ref().err(), "token refused");
            }
            tokens.push(result?);
        }
        Ok(Verified { tokens })
    }

    /// The request headers after the check: output headers a client sent are dropped (every
    /// request), verified tokens' outputs written, and token headers removed unless their
    /// rule forwards the original token.
    pub fn rewrite_headers(&self, verified: &Verified, headers: &mut HeaderMap) {
        for h in &self.output_headers {
            headers.remove(h);
        }
        for t in &verified.tokens {
            let rule = &self.rules[t.rule];
            if !rule.forward_original_token {
                t.location.remove(headers);
            }
            if let Some(h) = &rule.payload_header
                && let Ok(v) = HeaderValue::from_str(&t.payload_segment)
            {
                headers.insert(h.clone(), v);
            }
            for (h, claim) in &rule.claim_headers {
                if let Some(v) =
                    claim_text(&t.claims, claim).and_then(|v| HeaderValue::from_str(&v).ok())
                {
                    headers.insert(h.clone(), v);
                }
            }
        }
    }
}

impl Rule {
    async fn verify(&self, token: &Token<'_>, now: u64) -> Result<RequestAuth, JwtError> {
        verify::time_window(token, now)?;
        verify::audience(token, &self.audiences)?;
        let keys = match &self.keys {
            Keys::Inline(k) => k.clone(),
            Keys::Remote(remote) => {
                let alg = Algorithm::parse(&token.header.alg)?;
                remote
                    .keys_for(alg, token.header.kid.as_deref())
                    .await
                    .ok_or(JwtError::KeysUnavailable)?
            }
        };
        verify::signature(token, &keys)?;
        Ok(request_auth(&token.claims, &self.space_delimited))
    }
}
