//! The JSON echo: every plain HTTP request is answered with a description of itself.

use std::borrow::Cow;
use std::collections::BTreeMap;

use http::{HeaderValue, Request, Response, header};
use hyper::body::Incoming;
use serde::Serialize;

use crate::EchoConfig;
use crate::body::{self, BoxError, ResponseBody};
use crate::headers;
use crate::route::{self, Action};

/// How much of the request body is copied into the answer.
pub const BODY_ECHO_LIMIT: usize = 64 * 1024;

/// The JSON document sent back.
#[derive(Debug, Serialize)]
struct Echo<'a> {
    name: &'a str,
    version: &'a str,
    method: &'a str,
    path: &'a str,
    /// HTTP/2 carries the host in `:authority`, not in a header: report it for both versions,
    /// so host rewriting through a proxy is visible whatever the upstream protocol.
    authority: Option<&'a str>,
    protocol: String,
    /// The caller's mesh identity, as the sidecar vouched for it in `x-forwarded-client-cert`.
    client_identity: Option<Cow<'a, str>>,
    headers: BTreeMap<String, String>,
    body_bytes: u64,
    body: Cow<'a, str>,
}

/// Answers a plain HTTP request, honouring `/status/CODE`, `/delay/MS` and the fail status.
pub async fn respond(
    req: Request<Incoming>,
    cfg: &EchoConfig,
) -> Result<Response<ResponseBody>, BoxError> {
    let action = route::action(req.uri().path());
    let (parts, incoming) = req.into_parts();
    let (kept, body_bytes) = body::read_capped(incoming, BODY_ECHO_LIMIT).await?;

    if let Action::Delay(delay) = action {
        // tokio's clock, so tests with a paused clock stay fast.
        tokio::time::sleep(delay).await;
    }

    let status = route::status(action, cfg.fail_status);
    let mut builder = Response::builder().status(status);
    builder = identity_headers(builder, cfg);
    if !route::has_body(status) {
        return Ok(builder.body(body::empty())?);
    }

    let path = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let echo = Echo {
        name: &cfg.name,
        version: &cfg.version,
        method: parts.method.as_str(),
        path,
        authority: parts.uri.authority().map(|a| a.as_str()).or_else(|| {
            parts
                .headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
        }),
        protocol: format!("{:?}", parts.version),
        client_identity: parts
            .headers
            .get("x-forwarded-client-cert")
            .and_then(|v| v.to_str().ok())
            .and_then(xfcc_uri),
        headers: headers::flatten(&parts.headers),
        body_bytes,
        body: String::from_utf8_lossy(&kept),
    };
    let json = serde_json::to_vec(&echo)?;
    Ok(builder
        .header(header::CONTENT_TYPE, "application/json")
        .body(body::full(json))?)
}

/// The `URI=` element of the last (nearest) certificate in an XFCC header value. Elements are
/// separated by `,` and pairs by `;` outside double quotes; a quoted value escapes `"` and `\`
/// with a backslash, so an identity holding separators is read whole, never cut short.
pub fn xfcc_uri(xfcc: &str) -> Option<Cow<'_, str>> {
    let nearest = split_unquoted(xfcc, ',').pop()?;
    split_unquoted(nearest, ';')
        .into_iter()
        .find_map(|pair| pair.trim().strip_prefix("URI="))
        .map(unquote)
}

/// `s` split at every `sep` that is outside double quotes.
fn split_unquoted(s: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            _ if c == sep && !quoted => {
                parts.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

/// A value as written: bare, or quoted with `\"` and `\\` escapes.
fn unquote(value: &str) -> Cow<'_, str> {
    let Some(inner) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) else {
        return Cow::Borrowed(value);
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        out.push(match c {
            '\\' => chars.next().unwrap_or('\\'),
            c => c,
        });
    }
    Cow::Owned(out)
}

/// `x-echo-name` and `x-echo-version`, so a client can tell which replica answered without
/// parsing the body.
pub fn identity_headers(
    mut builder: http::response::Builder,
    cfg: &EchoConfig,
) -> http::response::Builder {
    for (name, value) in [("x-echo-name", &cfg.name), ("x-echo-version", &cfg.version)] {
        if let Ok(value) = HeaderValue::from_str(value) {
            builder = builder.header(name, value);
        }
    }
    builder
}

#[cfg(test)]
mod tests {
    use super::xfcc_uri;

    #[test]
    fn client_identity_is_the_uri_of_the_nearest_element() {
        let id = "spiffe://cluster.local/ns/default/sa/productpage";
        assert_eq!(
            xfcc_uri(&format!(
                "By=spiffe://cluster.local/ns/default/sa/reviews;URI={id}"
            ))
            .as_deref(),
            Some(id)
        );
        assert_eq!(
            xfcc_uri(&format!(
                "By=a;URI=spiffe://x/ns/a/sa/b,By=b;Hash=00;URI=\"{id}\""
            ))
            .as_deref(),
            Some(id)
        );
        assert_eq!(
            xfcc_uri("By=spiffe://cluster.local/ns/default/sa/reviews"),
            None
        );
    }

    #[test]
    fn quoted_values_are_read_whole() {
        // Separators inside quotes belong to the value: the identity is not cut at `;`.
        let read = |v: &str| xfcc_uri(v).map(|c| c.into_owned());
        assert_eq!(
            read(r#"By=spiffe://td/ns/a/sa/b;URI="spiffe://td/x;By=evil""#).as_deref(),
            Some("spiffe://td/x;By=evil")
        );
        assert_eq!(
            read(r#"By=a;URI="spiffe://td/a,b""#).as_deref(),
            Some("spiffe://td/a,b")
        );
        assert_eq!(
            read(r#"By=a;URI="spiffe://td/q\"x\\""#).as_deref(),
            Some(r#"spiffe://td/q"x\"#)
        );
    }
}
