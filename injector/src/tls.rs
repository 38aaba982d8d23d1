//! The webhook's serving certificate, from files a Secret mounts, swapped in place when they
//! change (cert-manager and the chart rotate them) without dropping the listener. A broken
//! pair (half-written, or a key that does not match) is reported and the last good one stays.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("certificate and key: {0}")]
    Pair(String),
}

/// Serves the current certificate; [`CertReloader::reload`] swaps it.
#[derive(Debug)]
pub struct CertReloader {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: ArcSwap<CertifiedKey>,
    /// The file contents last tried, so an unchanged (or unchanged broken) pair is not
    /// parsed again at every poll. Contents rather than mtimes: a Secret update is an
    /// atomic symlink swap whose mtime can equal the old one.
    last: Mutex<(Vec<u8>, Vec<u8>)>,
    /// Reloads that failed, so a caller can tell a rejected update from one not read yet.
    failed: AtomicU64,
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::File {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pair(format!("certificate: {e}")))?;
    if chain.is_empty() {
        return Err(TlsError::Pair(
            "no certificate in the certificate file".into(),
        ));
    }
    let key =
        PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::Pair(format!("key: {e}")))?;
    let provider = rustls::crypto::ring::default_provider();
    let ck =
        CertifiedKey::from_der(chain, key, &provider).map_err(|e| TlsError::Pair(e.to_string()))?;
    Ok(ck)
}

impl CertReloader {
    /// Loads the pair; fails when it is unusable, so a bad Secret stops the pod at start.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Arc<CertReloader>, TlsError> {
        let (cert, key) = (read(cert_path)?, read(key_path)?);
        let ck = certified_key(&cert, &key)?;
        Ok(Arc::new(CertReloader {
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            current: ArcSwap::from_pointee(ck),
            last: Mutex::new((cert, key)),
            failed: AtomicU64::new(0),
        }))
    }

    /// Re-reads the files; `Ok(true)` when a new pair is now served. On an error the previous
    /// pair stays, and [`CertReloader::failed_reloads`] counts it.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let result = self.read_and_swap();
        if result.is_err() {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    /// Reloads that failed so far (the previous pair stayed each time).
    pub fn failed_reloads(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    fn read_and_swap(&self) -> Result<bool, TlsError> {
        let (cert, key) = (read(&self.cert_path)?, read(&self.key_path)?);
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.0 == cert && last.1 == key {
            return Ok(false);
        }
        *last = (cert.clone(), key.clone());
        let ck = certified_key(&cert, &key)?;
        self.current.store(Arc::new(ck));
        Ok(true)
    }

    /// The leaf certificate served now (DER).
    pub fn current_leaf(&self) -> Vec<u8> {
        self.current.load().cert[0].to_vec()
    }

    /// Polls the files every `every` until the task is dropped.
    pub fn watch(self: Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match self.reload() {
                    Ok(true) => {
                        tracing::info!(cert = %self.cert_path.display(), "serving certificate reloaded")
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "certificate not reloaded; the previous one stays")
                    }
                }
            }
        })
    }

    /// A rustls server config (ring, TLS 1.2 and 1.3, ALPN h2 and http/1.1) that asks this
    /// reloader for its certificate at every handshake.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<ServerConfig>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Pair(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

impl ResolvesServerCert for CertReloader {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(name: &str) -> (String, String) {
        let ck = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
        (ck.cert.pem(), ck.signing_key.serialize_pem())
    }

    #[test]
    fn reload_swaps_good_pairs_and_keeps_the_last_good_one() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        let (c1, k1) = pair("one.example");
        std::fs::write(&c, &c1).unwrap();
        std::fs::write(&k, &k1).unwrap();
        let r = CertReloader::load(&c, &k).unwrap();
        let first = r.current_leaf();
        assert!(!r.reload().unwrap());

        let (c2, k2) = pair("two.example");
        std::fs::write(&c, &c2).unwrap();
        // Half-updated: the new cert with the old key does not match.
        assert!(r.reload().is_err());
        assert_eq!(r.current_leaf(), first);
        std::fs::write(&k, &k2).unwrap();
        assert!(r.reload().unwrap());
        assert_ne!(r.current_leaf(), first);

        std::fs::write(&c, "garbage").unwrap();
        assert!(r.reload().is_err());
        assert!(CertReloader::load(&c, &k).is_err());
        std::fs::remove_file(&k).unwrap();
        assert!(r.reload().is_err());
        assert_eq!(
            r.failed_reloads(),
            3,
            "the half update, the garbage, the missing key"
        );
    }
}
