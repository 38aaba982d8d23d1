//! TLS terminated for clients outside the mesh, at a gateway listener (Gateway servers with
//! `tls.mode` SIMPLE, MUTUAL or OPTIONAL_MUTUAL): certificates from files, one server config
//! per Gateway server, chosen by the server name of the client's ClientHello before the
//! handshake goes on (so each server keeps its own certificate and client CA). The files are
//! checked for changes at most once per [`RELOAD_CHECK`], at accept, so a renewed certificate
//! (a Kubernetes Secret mount updated in place) is served without a config change; a renewal
//! that does not load is logged and the previous certificate stays in use. A server named by
//! its credential (a Gateway's `credentialName`) reads the files of that name in the
//! proxy's credential directory, laid out as a mounted Kubernetes TLS Secret.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;

use mesh_proto::config::v1 as pb;
use rustls::RootCertStore;
use rustls::server::{Acceptor, ServerConfig, WebPkiClientVerifier};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpStream;
use tokio_rustls::LazyConfigAcceptor;
use tokio_rustls::server::TlsStream;

use super::{ALPN_H2, ALPN_HTTP11, provider};

/// A client that does not finish its handshake within this is cut off.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often, at most, the certificate files are checked for changes.
pub const RELOAD_CHECK: Duration = Duration::from_secs(1);

/// Modification time and length of each file of a server, to notice a renewal.
type Fingerprint = Vec<Option<(SystemTime, u64)>>;

/// Why a listener's TLS settings cannot be used. Messages name files, never key material.
#[derive(Debug, thiserror::Error)]
pub enum TerminationError {
    #[error("certificates: at least one is required")]
    Empty,
    #[error("certificates[{index}].{field}: {path}: {reason}")]
    File {
        index: usize,
        field: &'static str,
        path: String,
        reason: String,
    },
    #[error("certificates[{index}]: {reason}")]
    Config { index: usize, reason: String },
    #[error("certificates[{index}].credentialName: {name:?}: {reason}")]
    Credential {
        index: usize,
        name: String,
        reason: String,
    },
}

/// The file names of a Kubernetes TLS Secret mounted as a volume.
pub const CREDENTIAL_CERT: &str = "tls.crt";
pub const CREDENTIAL_KEY: &str = "tls.key";
pub const CREDENTIAL_CA: &str = "ca.crt";
/// Istio's Secret for a credential's client CA when it is not in the credential itself.
pub const CREDENTIAL_CA_SUFFIX: &str = "-cacert";

/// `c` with the files of its credential in `dir` (`DIR/NAME/tls.crt`, `tls.key`, and for a
/// client CA `DIR/NAME/ca.crt` or else `DIR/NAME-cacert/ca.crt`); `c` itself when it names
/// files.
pub fn resolve_credential(
    index: usize,
    c: &pb::ServerCertificate,
    dir: Option<&Path>,
) -> Result<pb::ServerCertificate, TerminationError> {
    let name = &c.credential_name;
    if name.is_empty() {
        return Ok(c.clone());
    }
    let err = |reason: &str| TerminationError::Credential {
        index,
        name: name.clone(),
        reason: reason.to_owned(),
    };
    if name.contains(['/', '\\']) || name.starts_with('.') {
        return Err(err("not a plain name"));
    }
    let Some(dir) = dir else {
        return Err(err(
            "the proxy has no credential directory (--credential-dir)",
        ));
    };
    let path = |parts: &[&str]| -> String {
        let p: PathBuf = parts.iter().fold(dir.to_path_buf(), |p, part| p.join(part));
        p.to_string_lossy().into_owned()
    };
    let ca_certificates = if c.credential_client_ca {
        let own = path(&[name, CREDENTIAL_CA]);
        if Path::new(&own).exists() {
            own
        } else {
            path(&[&format!("{name}{CREDENTIAL_CA_SUFFIX}"), CREDENTIAL_CA])
        }
    } else {
        String::new()
    };
    Ok(pb::ServerCertificate {
        certificate_chain: path(&[name, CREDENTIAL_CERT]),
        private_key: path(&[name, CREDENTIAL_KEY]),
        ca_certificates,
        ..c.clone()
    })
}

/// One Gateway server's TLS: the names it answers and its server config.
#[derive(Debug)]
struct ServerEntry {
    sni_hosts: Vec<String>,
    index: usize,
    source: pb::ServerCertificate,
    config: ArcSwap<ServerConfig>,
    /// The files as they were when `config` was (last tried to be) loaded.
    files: Mutex<Fingerprint>,
}

impl ServerEntry {
    fn fingerprint(&self) -> Fingerprint {
        let s = &self.source;
        [&s.certificate_chain, &s.private_key, &s.ca_certificates]
            .into_iter()
            .filter(|p| !p.is_empty())
            .map(|p| {
                let meta = std::fs::metadata(p).ok()?;
                Some((meta.modified().ok()?, meta.len()))
            })
            .collect()
    }

    /// Loads the files again when they changed since the last load.
    fn reload_if_changed(&self, listener: &str) {
        let now = self.fingerprint();
        let mut seen = self.files.lock().expect("files lock");
        if *seen == now {
            return;
        }
        // Remembered even when the load fails: a half-written renewal is tried again when
        // the files change again, not at every check.
        *seen = now;
        match server_config(self.index, &self.source) {
            Ok(config) => {
                self.config.store(config);
                tracing::info!(listener, certificate = %self.source.certificate_chain, "certificate reloaded");
            }
            Err(e) => tracing::warn!(
                listener,
                error = %e,
                "changed certificate files do not load; the previous certificate stays in use"
            ),
        }
    }
}

/// The TLS side of one gateway listener, loaded when the listener is bound.
#[derive(Debug)]
pub struct Termination {
    servers: Vec<ServerEntry>,
    /// When the files were last checked for changes.
    checked: Mutex<Instant>,
}

impl Termination {
    /// Reads every certificate, key and client CA file now (a credential's in
    /// `credential_dir`); an unreadable or mismatched one rejects the whole listener.
    pub fn load(
        spec: &pb::DownstreamTls,
        credential_dir: Option<&Path>,
    ) -> Result<Self, TerminationError> {
        if spec.certificates.is_empty() {
            return Err(TerminationError::Empty);
        }
        let servers = spec
            .certificates
            .iter()
            .enumerate()
            .map(|(index, c)| {
                let c = &resolve_credential(index, c, credential_dir)?;
                let entry = ServerEntry {
                    sni_hosts: c.sni_hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
                    index,
                    source: c.clone(),
                    config: ArcSwap::new(server_config(index, c)?),
                    files: Mutex::new(Vec::new()),
                };
                *entry.files.lock().expect("files lock") = entry.fingerprint();
                Ok(entry)
            })
            .collect::<Result<_, TerminationError>>()?;
        Ok(Self {
            servers,
            checked: Mutex::new(Instant::now()),
        })
    }

    /// Reloads the servers whose files changed, at most once per [`RELOAD_CHECK`].
    fn refresh(&self, listener: &str) {
        {
            let mut checked = self.checked.lock().expect("checked lock");
            if checked.elapsed() < RELOAD_CHECK {
                return;
            }
            *checked = Instant::now();
        }
        for server in &self.servers {
            server.reload_if_changed(listener);
        }
    }

    /// The config for a ClientHello naming `sni`: an exact name first, then the longest
    /// wildcard suffix, then a server for any name (`*` or no names). `None`: no server
    /// takes it, and the handshake is refused (Envoy finds no filter chain).
    fn config_for(&self, sni: Option<&str>) -> Option<Arc<ServerConfig>> {
        let sni = sni.map(str::to_ascii_lowercase);
        let mut best: Option<(usize, &ServerEntry)> = None;
        for server in &self.servers {
            let score = server
                .sni_hosts
                .iter()
                .filter_map(|h| match_score(h, sni.as_deref()))
                .max()
                .or_else(|| server.sni_hosts.is_empty().then_some(0));
            if let Some(s) = score
                && best.is_none_or(|(b, _)| s > b)
            {
                best = Some((s, server));
            }
        }
        best.map(|(_, s)| s.config.load_full())
    }

    /// Reads the ClientHello, picks the server by its name and completes the handshake.
    /// `None`: the client was refused or gave up (logged at debug).
    pub async fn accept(&self, stream: TcpStream, listener: &str) -> Option<TlsStream<TcpStream>> {
        self.refresh(listener);
        let handshake = async {
            let start = LazyConfigAcceptor::new(Acceptor::default(), stream)
                .await
                .map_err(|e| e.to_string())?;
            let sni = start.client_hello().server_name().map(str::to_owned);
            let Some(config) = self.config_for(sni.as_deref()) else {
                return Err(format!(
                    "no server for server name {:?}",
                    sni.unwrap_or_default()
                ));
            };
            start.into_stream(config).await.map_err(|e| e.to_string())
        };
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
            Ok(Ok(tls)) => Some(tls),
            Ok(Err(reason)) => {
                tracing::debug!(listener, %reason, "downstream TLS handshake refused");
                None
            }
            Err(_) => {
                tracing::debug!(listener, "downstream TLS handshake timed out");
                None
            }
        }
    }
}

/// How well `pattern` names `sni`: exact beats any wildcard, a longer wildcard beats a
/// shorter one, `*` (any name, and no name) comes last. `None`: no match.
fn match_score(pattern: &str, sni: Option<&str>) -> Option<usize> {
    if pattern == "*" {
        return Some(1);
    }
    let sni = sni?;
    if let Some(suffix) = pattern.strip_prefix('*') {
        // `*.example.com` covers `a.example.com` but not `example.com`.
        return (sni.len() > suffix.len() && sni.ends_with(suffix)).then_some(1 + suffix.len());
    }
    (pattern == sni).then_some(usize::MAX)
}

fn read(index: usize, field: &'static str, path: &str) -> Result<Vec<u8>, TerminationError> {
    std::fs::read(Path::new(path)).map_err(|e| TerminationError::File {
        index,
        field,
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

fn read_certs(
    index: usize,
    field: &'static str,
    path: &str,
) -> Result<Vec<CertificateDer<'static>>, TerminationError> {
    let pem = read(index, field, path)?;
    let file_error = |reason: String| TerminationError::File {
        index,
        field,
        path: path.to_owned(),
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(e.to_string()))?;
    if certs.is_empty() {
        return Err(file_error("holds no certificate".to_owned()));
    }
    Ok(certs)
}

/// TLS 1.2 and 1.3 (clients outside the mesh may not speak 1.3 only), ALPN `h2` and
/// `http/1.1`, and with `ca_certificates` a client certificate asked for and verified.
fn server_config(
    index: usize,
    c: &pb::ServerCertificate,
) -> Result<Arc<ServerConfig>, TerminationError> {
    let chain = read_certs(index, "certificateChain", &c.certificate_chain)?;
    let key_pem = read(index, "privateKey", &c.private_key)?;
    // The error names the file only: nothing of the key reaches a message.
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TerminationError::File {
        index,
        field: "privateKey",
        path: c.private_key.clone(),
        reason: e.to_string(),
    })?;
    let config_error = |reason: String| TerminationError::Config { index, reason };
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| config_error(e.to_string()))?;
    let builder = if c.ca_certificates.is_empty() {
        builder.with_no_client_auth()
    } else {
        let mut roots = RootCertStore::empty();
        let (added, _) = roots.add_parsable_certificates(read_certs(
            index,
            "caCertificates",
            &c.ca_certificates,
        )?);
        if added == 0 {
            return Err(TerminationError::File {
                index,
                field: "caCertificates",
                path: c.ca_certificates.clone(),
                reason: "no usable root".to_owned(),
            });
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
        let verifier = if c.require_client_certificate {
            verifier.build()
        } else {
            verifier.allow_unauthenticated().build()
        }
        .map_err(|e| config_error(e.to_string()))?;
        builder.with_client_cert_verifier(verifier)
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| TerminationError::File {
            index,
            field: "privateKey",
            path: c.private_key.clone(),
            reason: format!("does not match the certificate: {e}"),
        })?;
    config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_names_beat_wildcards_and_any() {
        assert_eq!(
            match_score("a.example.com", Some("a.example.com")),
            Some(usize::MAX)
        );
        assert_eq!(match_score("a.example.com", Some("b.example.com")), None);
        let wild = match_score("*.example.com", Some("a.example.com")).unwrap();
        let wider = match_score("*.com", Some("a.example.com")).unwrap();
        let any = match_score("*", Some("a.example.com")).unwrap();
        assert!(wild > wider && wider > any);
        assert_eq!(match_score("*.example.com", Some("example.com")), None);
        assert_eq!(match_score("*", None), Some(1));
        assert_eq!(match_score("a.example.com", None), None);
    }

    fn entry(hosts: &[&str], config: &Arc<ServerConfig>) -> ServerEntry {
        ServerEntry {
            sni_hosts: hosts.iter().map(|h| h.to_string()).collect(),
            index: 0,
            source: pb::ServerCertificate::default(),
            config: ArcSwap::new(config.clone()),
            files: Mutex::new(Vec::new()),
        }
    }

    fn config() -> Arc<ServerConfig> {
        let cert = rcgen::generate_simple_self_signed(vec!["x".to_owned()]).unwrap();
        let key = PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
        Arc::new(
            ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(vec![cert.cert.der().clone()], key)
                .unwrap(),
        )
    }

    #[test]
    fn the_best_server_for_a_name_is_picked() {
        let (a, b, any) = (config(), config(), config());
        let t = Termination {
            checked: Mutex::new(Instant::now()),
            servers: vec![
                entry(&["*"], &any),
                entry(&["*.example.com"], &b),
                entry(&["a.example.com"], &a),
            ],
        };
        assert!(Arc::ptr_eq(
            &t.config_for(Some("a.example.com")).unwrap(),
            &a
        ));
        assert!(Arc::ptr_eq(
            &t.config_for(Some("A.Example.com")).unwrap(),
            &a
        ));
        assert!(Arc::ptr_eq(
            &t.config_for(Some("b.example.com")).unwrap(),
            &b
        ));
        assert!(Arc::ptr_eq(&t.config_for(Some("other.org")).unwrap(), &any));
        assert!(Arc::ptr_eq(&t.config_for(None).unwrap(), &any));
        let only_named = Termination {
            checked: Mutex::new(Instant::now()),
            servers: vec![entry(&["a.example.com"], &a)],
        };
        assert!(only_named.config_for(Some("b.example.com")).is_none());
        assert!(only_named.config_for(None).is_none());
    }

    #[test]
    fn a_credential_names_the_files_of_a_mounted_tls_secret() {
        let dir = tempfile::tempdir().unwrap();
        let c = pb::ServerCertificate {
            sni_hosts: vec!["a.example.com".into()],
            credential_name: "site-a".into(),
            credential_client_ca: true,
            require_client_certificate: true,
            ..Default::default()
        };
        let at = |p: &str| dir.path().join(p).to_string_lossy().into_owned();
        // No ca.crt in the credential: Istio's NAME-cacert Secret.
        let r = resolve_credential(0, &c, Some(dir.path())).unwrap();
        assert_eq!(r.certificate_chain, at("site-a/tls.crt"));
        assert_eq!(r.private_key, at("site-a/tls.key"));
        assert_eq!(r.ca_certificates, at("site-a-cacert/ca.crt"));
        assert!(r.require_client_certificate);
        std::fs::create_dir_all(dir.path().join("site-a")).unwrap();
        std::fs::write(dir.path().join("site-a/ca.crt"), "x").unwrap();
        let r = resolve_credential(0, &c, Some(dir.path())).unwrap();
        assert_eq!(r.ca_certificates, at("site-a/ca.crt"));
        // A server without client CA gets none, even when the credential has one.
        let simple = pb::ServerCertificate {
            credential_client_ca: false,
            ..c.clone()
        };
        let r = resolve_credential(0, &simple, Some(dir.path())).unwrap();
        assert!(r.ca_certificates.is_empty());

        let e = resolve_credential(2, &c, None).unwrap_err().to_string();
        assert_eq!(
            e,
            "certificates[2].credentialName: \"site-a\": the proxy has no credential directory (--credential-dir)"
        );
        for bad in ["../etc", "a/b", ".hidden"] {
            let c = pb::ServerCertificate {
                credential_name: bad.into(),
                ..Default::default()
            };
            assert!(
                resolve_credential(0, &c, Some(dir.path())).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn unreadable_files_are_named_and_keys_never_shown() {
        let spec = pb::DownstreamTls {
            certificates: vec![pb::ServerCertificate {
                certificate_chain: "/nonexistent/cert.pem".into(),
                private_key: "/nonexistent/key.pem".into(),
                ..Default::default()
            }],
        };
        let e = Termination::load(&spec, None).unwrap_err().to_string();
        assert!(
            e.starts_with("certificates[0].certificateChain: /nonexistent/cert.pem"),
            "{e}"
        );
        assert!(matches!(
            Termination::load(&pb::DownstreamTls::default(), None),
            Err(TerminationError::Empty)
        ));
    }
}
