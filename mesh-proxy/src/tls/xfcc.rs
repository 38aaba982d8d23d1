//! `x-forwarded-client-cert`, as Istio's inbound sidecar passes it to the application.

use http::header::{HeaderName, HeaderValue, InvalidHeaderValue};

pub const XFCC: HeaderName = HeaderName::from_static("x-forwarded-client-cert");

/// `By=<server id>;URI=<client id>`. The caller replaces any value the client sent, since a
/// client could otherwise claim any identity. Values holding `,`, `;`, `=` or `"` are quoted
/// as Envoy does, and so are values holding `\`, escaped too: otherwise a value ending in `\`
/// would escape its own closing quote. A value that cannot be a header is an error rather
/// than mangled.
pub fn xfcc(server_id: &str, client_id: &str) -> Result<HeaderValue, InvalidHeaderValue> {
    HeaderValue::try_from(format!("By={};URI={}", quote(server_id), quote(client_id)))
}

fn quote(value: &str) -> String {
    if value.contains([',', ';', '=', '"', '\\']) {
        format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        value.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn istio_format() {
        let v = xfcc(
            "spiffe://cluster.local/ns/default/sa/reviews",
            "spiffe://cluster.local/ns/default/sa/productpage",
        )
        .unwrap();
        assert_eq!(
            v,
            "By=spiffe://cluster.local/ns/default/sa/reviews;\
             URI=spiffe://cluster.local/ns/default/sa/productpage"
        );
    }

    #[test]
    fn separators_are_quoted_and_control_bytes_refused() {
        let v = xfcc("spiffe://td/ns/a/sa/b", "spiffe://td/x;By=evil").unwrap();
        assert_eq!(v, "By=spiffe://td/ns/a/sa/b;URI=\"spiffe://td/x;By=evil\"");
        assert!(xfcc("spiffe://td/ns/a/sa/b", "spiffe://td/\r\nx: y").is_err());
        let v = xfcc("spiffe://td/ns/a/sa/b", r"spiffe://td/x\").unwrap();
        assert_eq!(v, r#"By=spiffe://td/ns/a/sa/b;URI="spiffe://td/x\\""#);
    }
}
