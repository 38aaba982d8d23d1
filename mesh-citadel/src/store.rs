//! The CA's files on disk, in Istio's plug-in layout: `ca-cert.pem` (the signing certificate),
//! `ca-key.pem` (its key, owner-only), `root-cert.pem` (the roots workloads trust, possibly
//! several during a rotation) and `cert-chain.pem` (from the signing certificate to the root).

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

pub const CA_CERT: &str = "ca-cert.pem";
pub const CA_KEY: &str = "ca-key.pem";
pub const ROOT_CERT: &str = "root-cert.pem";
pub const CERT_CHAIN: &str = "cert-chain.pem";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Pem { path: PathBuf, reason: String },
    #[error("{0}: holds no certificate")]
    Empty(PathBuf),
}

/// What the directory holds. The key stays DER here and is turned into a signer by the CA.
pub struct CaFiles {
    pub ca_cert: CertificateDer<'static>,
    pub ca_key: PrivateKeyDer<'static>,
    /// Empty when `root-cert.pem` is absent.
    pub roots: Vec<CertificateDer<'static>>,
    /// Empty when `cert-chain.pem` is absent or empty.
    pub chain: Vec<CertificateDer<'static>>,
}

// Hand-written so that the key can never be printed by a `{:?}`.
impl std::fmt::Debug for CaFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaFiles")
            .field("roots", &self.roots.len())
            .field("chain", &self.chain.len())
            .finish_non_exhaustive()
    }
}

pub fn key_exists(dir: &Path) -> bool {
    dir.join(CA_KEY).exists()
}

pub fn read(dir: &Path) -> Result<CaFiles, StoreError> {
    let ca_cert = read_certs(&dir.join(CA_CERT))?
        .into_iter()
        .next()
        .ok_or_else(|| StoreError::Empty(dir.join(CA_CERT)))?;
    let key_path = dir.join(CA_KEY);
    warn_if_key_readable_by_others(&key_path);
    let key_pem = read_file(&key_path)?;
    let ca_key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| StoreError::Pem {
        path: key_path,
        reason: e.to_string(),
    })?;
    Ok(CaFiles {
        ca_cert,
        ca_key,
        roots: read_optional_certs(&dir.join(ROOT_CERT))?,
        chain: read_optional_certs(&dir.join(CERT_CHAIN))?,
    })
}

/// Writes a freshly created self-signed CA. The key is renamed into place last, so a crash
/// half way leaves no `ca-key.pem` and the next start creates the CA again.
pub fn write_new(dir: &Path, root_pem: &str, key_pem: &str) -> Result<(), StoreError> {
    fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    for name in [CA_CERT, ROOT_CERT, CERT_CHAIN] {
        write_atomic(&dir.join(name), root_pem.as_bytes(), 0o644)?;
    }
    write_atomic(&dir.join(CA_KEY), key_pem.as_bytes(), 0o600)
}

/// Writes through a temporary file created with `mode` from the start, so the secret is never
/// readable by others, not even for an instant.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), StoreError> {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.tmp"));
    let _ = fs::remove_file(&tmp);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| io(&tmp, e))?;
    file.write_all(contents).map_err(|e| io(&tmp, e))?;
    file.sync_all().map_err(|e| io(&tmp, e))?;
    // The umask may have cleared bits of `mode`; set them exactly.
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode)).map_err(|e| io(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| io(path, e))
}

pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, StoreError> {
    let pem = read_file(path)?;
    parse_certs(path, &pem)
}

fn read_optional_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, StoreError> {
    if path.exists() {
        read_certs(path)
    } else {
        Ok(Vec::new())
    }
}

fn parse_certs(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, StoreError> {
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| StoreError::Pem {
            path: path.to_owned(),
            reason: e.to_string(),
        })
}

fn read_file(path: &Path) -> Result<Vec<u8>, StoreError> {
    fs::read(path).map_err(|e| io(path, e))
}

fn warn_if_key_readable_by_others(path: &Path) {
    if let Ok(meta) = fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            path = %path.display(),
            mode = format!("{:o}", meta.permissions().mode() & 0o777),
            "CA key file is readable by group or others; it should be mode 0600"
        );
    }
}

fn io(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_written_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        write_atomic(&path, b"x", 0o600).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // Overwriting keeps the mode.
        write_atomic(&path, b"y", 0o600).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"y");
    }
}
