//! Per-workload bearer tokens for the local mesh.
//!
//! The store is either a directory laid out as `<dir>/<namespace>/<service-account>`, each file
//! holding that workload's token (the file the workload's proxy is given), or a single file of
//! `<token> <namespace> <service-account>` lines. It is read on every call, so tokens added
//! or revoked take effect without a restart; a CSR is rare enough for that to cost nothing.

use std::fs;
use std::path::{Path, PathBuf};

use mesh_identity::SpiffeId;

use super::{AuthError, Authenticator, Caller};
use crate::random;
use crate::store;

/// Shorter tokens are refused when loading, so a typo cannot become a guessable credential.
const MIN_TOKEN_LEN: usize = 16;

pub struct TokenAuthenticator {
    path: PathBuf,
    trust_domain: String,
}

impl TokenAuthenticator {
    pub fn new(path: impl Into<PathBuf>, trust_domain: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            trust_domain: trust_domain.into(),
        }
    }
}

#[tonic::async_trait]
impl Authenticator for TokenAuthenticator {
    fn name(&self) -> &'static str {
        "token"
    }

    async fn authenticate(&self, caller: &Caller<'_>) -> Result<Option<SpiffeId>, AuthError> {
        let Some(value) = caller.metadata.get("authorization") else {
            return Ok(None);
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::MalformedAuthorization)?
            .to_owned();
        let path = self.path.clone();
        let entries = tokio::task::spawn_blocking(move || load(&path))
            .await
            .map_err(|e| self.store_error(e.to_string()))?
            .map_err(|e| self.store_error(e))?;
        let (ns, sa) = find(&entries, &token).ok_or(AuthError::UnknownToken)?;
        Ok(Some(SpiffeId::new(&self.trust_domain, ns, sa)?))
    }
}

impl TokenAuthenticator {
    fn store_error(&self, reason: String) -> AuthError {
        AuthError::TokenStore {
            path: self.path.display().to_string(),
            reason,
        }
    }
}

struct Entry {
    token: String,
    namespace: String,
    service_account: String,
}

/// Every entry is compared, in constant time, so timing reveals neither a token nor its place.
fn find<'a>(entries: &'a [Entry], token: &str) -> Option<(&'a str, &'a str)> {
    let mut found = None;
    for e in entries {
        if constant_time_eq(e.token.as_bytes(), token.as_bytes()) {
            found = Some((e.namespace.as_str(), e.service_account.as_str()));
        }
    }
    found
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn load(path: &Path) -> Result<Vec<Entry>, String> {
    let entries = if path.is_dir() {
        load_dir(path)?
    } else {
        let text = fs::read_to_string(path).map_err(|e| e.to_string())?;
        parse_lines(&text)?
    };
    if let Some(short) = entries.iter().find(|e| e.token.len() < MIN_TOKEN_LEN) {
        return Err(format!(
            "token of {}/{} is shorter than {MIN_TOKEN_LEN} characters",
            short.namespace, short.service_account
        ));
    }
    Ok(entries)
}

fn load_dir(dir: &Path) -> Result<Vec<Entry>, String> {
    let mut entries = Vec::new();
    for ns in fs::read_dir(dir).map_err(|e| e.to_string())? {
        let ns = ns.map_err(|e| e.to_string())?;
        if !ns.path().is_dir() {
            continue;
        }
        let namespace = ns.file_name().to_string_lossy().into_owned();
        for sa in fs::read_dir(ns.path()).map_err(|e| e.to_string())? {
            let sa = sa.map_err(|e| e.to_string())?;
            let name = sa.file_name().to_string_lossy().into_owned();
            // Skips the temporary files of `write_token`.
            if name.starts_with('.') || !sa.path().is_file() {
                continue;
            }
            let token = fs::read_to_string(sa.path()).map_err(|e| e.to_string())?;
            entries.push(Entry {
                token: token.trim().to_owned(),
                namespace: namespace.clone(),
                service_account: name,
            });
        }
    }
    Ok(entries)
}

fn parse_lines(text: &str) -> Result<Vec<Entry>, String> {
    let mut entries = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [token, namespace, service_account] = fields.as_slice() else {
            return Err(format!(
                "line {}: expected `<token> <namespace> <service-account>`",
                i + 1
            ));
        };
        entries.push(Entry {
            token: (*token).to_owned(),
            namespace: (*namespace).to_owned(),
            service_account: (*service_account).to_owned(),
        });
    }
    Ok(entries)
}

#[derive(Debug, thiserror::Error)]
pub enum WriteTokenError {
    #[error(transparent)]
    Identity(#[from] mesh_identity::SpiffeIdError),
    #[error(transparent)]
    Random(#[from] random::RandomError),
    #[error(transparent)]
    Store(#[from] store::StoreError),
}

/// Creates (or replaces) the token of one workload in a directory store, owner-readable only,
/// and returns its path. The local mesh hands that path to the workload's proxy.
pub fn write_token(
    dir: &Path,
    namespace: &str,
    service_account: &str,
) -> Result<PathBuf, WriteTokenError> {
    // Validates the names: they become path components.
    SpiffeId::new("x", namespace, service_account)?;
    let ns_dir = dir.join(namespace);
    fs::create_dir_all(&ns_dir).map_err(|source| store::StoreError::Io {
        path: ns_dir.clone(),
        source,
    })?;
    let path = ns_dir.join(service_account);
    let token = random::hex(32)?;
    store::write_atomic(&path, format!("{token}\n").as_bytes(), 0o600)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_line_file() {
        let entries =
            parse_lines("# comment\n\ntok-aaaaaaaaaaaaaaaa default productpage\n").unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(
            find(&entries, "tok-aaaaaaaaaaaaaaaa"),
            Some(("default", "productpage"))
        );
        assert_eq!(find(&entries, "tok-aaaaaaaaaaaaaaab"), None);
        assert!(parse_lines("onlytoken default\n").is_err());
    }

    #[test]
    fn directory_store_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_token(dir.path(), "bookinfo", "reviews").unwrap();
        let token = fs::read_to_string(&path).unwrap();
        let entries = load(dir.path()).unwrap();
        assert_eq!(find(&entries, token.trim()), Some(("bookinfo", "reviews")));
        assert!(write_token(dir.path(), "../etc", "x").is_err());
    }

    #[test]
    fn refuses_short_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tokens");
        fs::write(&file, "short ns sa\n").unwrap();
        assert!(load(&file).is_err());
    }
}
