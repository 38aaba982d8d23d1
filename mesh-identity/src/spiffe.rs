//! SPIFFE workload identities: `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;
use std::sync::Arc;

const SCHEME: &str = "spiffe://";
const NS: &str = "/ns/";
const SA: &str = "/sa/";

/// Why a string is not a workload SPIFFE ID.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpiffeIdError {
    #[error("not a spiffe:// URI: {0:?}")]
    Scheme(String),
    #[error("expected spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>, got {0:?}")]
    Shape(String),
    #[error("invalid {what} {value:?}: only letters, digits, '.', '-' and '_' are allowed")]
    Segment { what: &'static str, value: String },
}

/// The identity of one workload, as carried in the URI SAN of its certificate.
///
/// Held as the one URI string (shared: a connection's identity is cloned into every request
/// it carries) with the positions of its names, so reading a name or the whole URI never
/// allocates.
#[derive(Clone)]
pub struct SpiffeId {
    uri: Arc<str>,
    /// End of the trust domain in `uri`.
    td_end: usize,
    /// End of the namespace in `uri`.
    ns_end: usize,
}

impl SpiffeId {
    pub fn new(
        trust_domain: impl AsRef<str>,
        namespace: impl AsRef<str>,
        service_account: impl AsRef<str>,
    ) -> Result<Self, SpiffeIdError> {
        let (td, ns, sa) = (
            trust_domain.as_ref(),
            namespace.as_ref(),
            service_account.as_ref(),
        );
        check_trust_domain(td)?;
        check_segment("namespace", ns)?;
        check_segment("service account", sa)?;
        let td_end = SCHEME.len() + td.len();
        let ns_end = td_end + NS.len() + ns.len();
        Ok(Self {
            uri: format!("{SCHEME}{td}{NS}{ns}{SA}{sa}").into(),
            td_end,
            ns_end,
        })
    }

    pub fn trust_domain(&self) -> &str {
        &self.uri[SCHEME.len()..self.td_end]
    }

    pub fn namespace(&self) -> &str {
        &self.uri[self.td_end + NS.len()..self.ns_end]
    }

    pub fn service_account(&self) -> &str {
        &self.uri[self.ns_end + SA.len()..]
    }

    /// The whole URI, `spiffe://...`.
    pub fn as_str(&self) -> &str {
        &self.uri
    }

    /// The URI without `spiffe://`, as Istio's policies name principals
    /// (`cluster.local/ns/default/sa/sleep`).
    pub fn principal(&self) -> &str {
        &self.uri[SCHEME.len()..]
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri)
    }
}

impl fmt::Debug for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SpiffeId").field(&&*self.uri).finish()
    }
}

// The offsets follow from the URI, so the URI alone decides equality.
impl PartialEq for SpiffeId {
    fn eq(&self, other: &Self) -> bool {
        self.uri == other.uri
    }
}

impl Eq for SpiffeId {}

impl Hash for SpiffeId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.uri.hash(state);
    }
}

impl PartialEq<str> for SpiffeId {
    fn eq(&self, other: &str) -> bool {
        &*self.uri == other
    }
}

impl PartialEq<&str> for SpiffeId {
    fn eq(&self, other: &&str) -> bool {
        &*self.uri == *other
    }
}

impl AsRef<str> for SpiffeId {
    fn as_ref(&self) -> &str {
        &self.uri
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s
            .strip_prefix(SCHEME)
            .ok_or_else(|| SpiffeIdError::Scheme(s.to_owned()))?;
        let parts: Vec<&str> = rest.split('/').collect();
        match parts.as_slice() {
            [td, "ns", ns, "sa", sa] => Self::new(td, ns, sa),
            _ => Err(SpiffeIdError::Shape(s.to_owned())),
        }
    }
}

/// Trust domains are lower case (SPIFFE spec), so that two spellings never name one domain.
pub fn check_trust_domain(td: &str) -> Result<(), SpiffeIdError> {
    let ok = !td.is_empty()
        && td.len() <= 255
        && td
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(SpiffeIdError::Segment {
            what: "trust domain",
            value: td.to_owned(),
        })
    }
}

/// Path segments are restricted so that a name can never add a segment or escape the path.
fn check_segment(what: &'static str, value: &str) -> Result<(), SpiffeIdError> {
    let ok = !value.is_empty()
        && value != "."
        && value != ".."
        && value.len() <= 253
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(SpiffeIdError::Segment {
            what,
            value: value.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<SpiffeId, SpiffeIdError> {
        s.parse()
    }

    #[test]
    fn round_trips() {
        let id = parse("spiffe://cluster.local/ns/default/sa/bookinfo-productpage").unwrap();
        assert_eq!(id.trust_domain(), "cluster.local");
        assert_eq!(id.namespace(), "default");
        assert_eq!(id.service_account(), "bookinfo-productpage");
        assert_eq!(
            id.to_string(),
            "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"
        );
        assert_eq!(
            id.principal(),
            "cluster.local/ns/default/sa/bookinfo-productpage"
        );
        assert_eq!(
            id,
            "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"
        );
    }

    #[test]
    fn new_and_parse_agree() {
        let built = SpiffeId::new("td-1.example_x", "a.b", "C_d-9").unwrap();
        let parsed = parse("spiffe://td-1.example_x/ns/a.b/sa/C_d-9").unwrap();
        assert_eq!(built, parsed);
        assert_eq!(built.as_str(), parsed.as_str());
        assert_eq!(
            (
                parsed.trust_domain(),
                parsed.namespace(),
                parsed.service_account()
            ),
            ("td-1.example_x", "a.b", "C_d-9")
        );
    }

    #[test]
    fn names_of_one_character_are_read_back_whole() {
        let id = parse("spiffe://t/ns/n/sa/s").unwrap();
        assert_eq!(
            (id.trust_domain(), id.namespace(), id.service_account()),
            ("t", "n", "s")
        );
    }

    #[test]
    fn other_schemes_are_refused() {
        for bad in [
            "https://cluster.local/ns/a/sa/b",
            "SPIFFE://cluster.local/ns/a/sa/b",
            "spiffe:/cluster.local/ns/a/sa/b",
            "cluster.local/ns/a/sa/b",
            "",
        ] {
            assert!(
                matches!(parse(bad), Err(SpiffeIdError::Scheme(_))),
                "{bad}: {:?}",
                parse(bad)
            );
        }
    }

    #[test]
    fn invalid_trust_domains_are_refused() {
        let long = format!("spiffe://{}/ns/a/sa/b", "d".repeat(256));
        for bad in [
            "spiffe://Cluster.local/ns/a/sa/b",
            "spiffe:///ns/a/sa/b",
            "spiffe://cluster.local:8080/ns/a/sa/b",
            "spiffe://user@cluster.local/ns/a/sa/b",
            "spiffe://cluster%2elocal/ns/a/sa/b",
            "spiffe://cluster local/ns/a/sa/b",
            long.as_str(),
        ] {
            assert!(
                matches!(
                    parse(bad),
                    Err(SpiffeIdError::Segment {
                        what: "trust domain",
                        ..
                    })
                ),
                "{bad}: {:?}",
                parse(bad)
            );
        }
    }

    #[test]
    fn missing_parts_are_refused() {
        for bad in [
            "spiffe://cluster.local",
            "spiffe://cluster.local/",
            "spiffe://cluster.local/ns/a",
            "spiffe://cluster.local/ns/a/sa",
            "spiffe://cluster.local/sa/b",
            "spiffe://cluster.local/ns/a/b",
        ] {
            assert!(
                matches!(parse(bad), Err(SpiffeIdError::Shape(_))),
                "{bad}: {:?}",
                parse(bad)
            );
        }
        for empty in [
            "spiffe://cluster.local/ns//sa/b",
            "spiffe://cluster.local/ns/a/sa/",
        ] {
            assert!(
                matches!(parse(empty), Err(SpiffeIdError::Segment { .. })),
                "{empty}"
            );
        }
    }

    #[test]
    fn extra_segments_are_refused() {
        for bad in [
            "spiffe://cluster.local/ns/a/sa/b/c",
            "spiffe://cluster.local/ns/a/sa/b/",
            "spiffe://cluster.local//ns/a/sa/b",
            "spiffe://cluster.local/x/ns/a/sa/b",
            "spiffe://cluster.local/ns/a/x/sa/b",
        ] {
            assert!(
                matches!(parse(bad), Err(SpiffeIdError::Shape(_))),
                "{bad}: {:?}",
                parse(bad)
            );
        }
    }

    #[test]
    fn percent_escapes_and_odd_characters_are_refused() {
        for bad in [
            "spiffe://cluster.local/ns/a%2Fb/sa/c",
            "spiffe://cluster.local/ns/a/sa/b%20c",
            "spiffe://cluster.local/ns/../sa/b",
            "spiffe://cluster.local/ns/./sa/b",
            "spiffe://cluster.local/ns/a b/sa/b",
            "spiffe://cluster.local/ns/a/sa/b?x=1",
            "spiffe://cluster.local/ns/a/sa/b#frag",
            "spiffe://cluster.local/ns/a;b/sa/c",
            "spiffe://cluster.local/ns/a/sa/b\r\nx",
            "spiffe://cluster.local/ns/é/sa/b",
            "spiffe://cluster.local/ns/a\0/sa/b",
        ] {
            assert!(
                matches!(parse(bad), Err(SpiffeIdError::Segment { .. })),
                "{bad}: {:?}",
                parse(bad)
            );
        }
        let long = "n".repeat(254);
        assert!(SpiffeId::new("td", &long, "sa").is_err());
        assert!(SpiffeId::new("td", &long[..253], "sa").is_ok());
    }

    #[test]
    fn equal_ids_hash_alike() {
        use std::collections::HashSet;
        let a = parse("spiffe://td/ns/a/sa/b").unwrap();
        let b = SpiffeId::new("td", "a", "b").unwrap();
        let set: HashSet<SpiffeId> = [a, b].into_iter().collect();
        assert_eq!(set.len(), 1);
    }
}
