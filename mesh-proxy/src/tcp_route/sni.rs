//! Server names of `sniHosts`: exact, `*.suffix`, or `*` for any name.

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SniHost {
    Exact(String),
    /// `*.example.com`, stored as `.example.com`: names ending in it.
    Suffix(String),
    Any,
}

impl SniHost {
    pub fn parse(s: &str) -> Result<SniHost, String> {
        let lower = s.to_ascii_lowercase();
        let plain = |name: &str| {
            !name.is_empty()
                && !name.contains('*')
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
        };
        if lower == "*" {
            Ok(SniHost::Any)
        } else if let Some(suffix) = lower.strip_prefix("*.")
            && plain(suffix)
        {
            Ok(SniHost::Suffix(format!(".{suffix}")))
        } else if plain(&lower) {
            Ok(SniHost::Exact(lower))
        } else {
            Err(format!(
                "{s:?} is not a server name (exact, or a wildcard \"*.suffix\")"
            ))
        }
    }

    /// `name` is lowercase, as the ClientHello parser returns it.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            SniHost::Exact(h) => h == name,
            SniHost::Suffix(s) => name.len() > s.len() && name.ends_with(s.as_str()),
            SniHost::Any => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_wildcard_and_any() {
        let exact = SniHost::parse("DB.example.com").unwrap();
        assert!(exact.matches("db.example.com"));
        assert!(!exact.matches("x.db.example.com"));
        let wild = SniHost::parse("*.example.com").unwrap();
        assert!(wild.matches("db.example.com"));
        assert!(wild.matches("a.b.example.com"));
        assert!(!wild.matches("example.com"));
        assert!(!wild.matches("badexample.com"));
        assert!(SniHost::parse("*").unwrap().matches("anything"));
    }

    #[test]
    fn malformed_names() {
        for bad in ["", "*.", "db.*.com", "a b", "*example.com", "*.*.com"] {
            assert!(SniHost::parse(bad).is_err(), "{bad}");
        }
    }
}
