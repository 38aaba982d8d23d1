//! The local mesh's certificate authority: mesh-citadel with its root kept in the state
//! directory (created on the first run, reused after) and one token file per workload identity,
//! the credential a proxy presents to get its certificate.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::fleet::Fleet;
use super::gateways::LocalGateway;
use super::workloads::LocalWorkload;

/// Where a proxy finds its CA and proves who it is.
#[derive(Debug, Clone)]
pub struct ProxyCredentials {
    pub ca_addr: String,
    pub root_cert: PathBuf,
    pub token_file: PathBuf,
    pub service_account: String,
}

impl ProxyCredentials {
    /// The mesh-proxy flags that carry these credentials.
    pub fn proxy_args(&self) -> Vec<String> {
        vec![
            "--ca-addr".into(),
            self.ca_addr.clone(),
            "--root-cert-file".into(),
            self.root_cert.display().to_string(),
            "--token-file".into(),
            self.token_file.display().to_string(),
            "--service-account".into(),
            self.service_account.clone(),
        ]
    }
}

pub struct LocalCa {
    addr: SocketAddr,
    dir: PathBuf,
    tokens: PathBuf,
    /// Certificate lifetime in seconds; citadel's default when `None`.
    cert_ttl: Option<u64>,
}

impl LocalCa {
    pub fn new(state_dir: &Path, addr: SocketAddr, cert_ttl: Option<u64>) -> Self {
        Self {
            addr,
            dir: state_dir.join("ca"),
            tokens: state_dir.join("tokens"),
            cert_ttl,
        }
    }

    /// Starts citadel; its root certificate exists once it listens.
    pub fn start(&self, fleet: &mut Fleet, citadel: &Path) -> Result<(), String> {
        let mut args = vec![
            "--dir".into(),
            self.dir.display().to_string(),
            "--tokens".into(),
            self.tokens.display().to_string(),
            "--grpc-addr".into(),
            self.addr.to_string(),
        ];
        if let Some(ttl) = self.cert_ttl {
            // The cap too: a proxy asking for a longer lifetime gets this one.
            args.extend([
                "--default-validity-secs".into(),
                ttl.to_string(),
                "--max-validity-secs".into(),
                ttl.to_string(),
            ]);
        }
        fleet.spawn("mesh-citadel".into(), citadel, &args)
    }

    /// Writes a fresh token for every identity among `workloads` and `gateways` (a restart
    /// revokes the previous run's tokens).
    pub fn issue_tokens(
        &self,
        citadel: &Path,
        workloads: &[LocalWorkload],
        gateways: &[LocalGateway],
    ) -> Result<(), String> {
        let identities: BTreeSet<(&str, &str)> = workloads
            .iter()
            .map(|w| (w.namespace.as_str(), w.service_account.as_str()))
            .chain(
                gateways
                    .iter()
                    .map(|g| (g.namespace.as_str(), g.service_account.as_str())),
            )
            .collect();
        for (namespace, service_account) in identities {
            let out = Command::new(citadel)
                .args(["token", "--tokens"])
                .arg(&self.tokens)
                .args([
                    "--namespace",
                    namespace,
                    "--service-account",
                    service_account,
                ])
                .output()
                .map_err(|e| format!("cannot run {}: {e}", citadel.display()))?;
            if !out.status.success() {
                return Err(format!(
                    "token for {namespace}/{service_account}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
        }
        Ok(())
    }

    pub fn credentials(&self, w: &LocalWorkload) -> ProxyCredentials {
        self.credentials_of(&w.namespace, &w.service_account)
    }

    /// The credentials of identity `namespace/service_account`.
    pub fn credentials_of(&self, namespace: &str, service_account: &str) -> ProxyCredentials {
        ProxyCredentials {
            ca_addr: format!("https://{}", self.addr),
            root_cert: self.dir.join("root-cert.pem"),
            token_file: self.tokens.join(namespace).join(service_account),
            service_account: service_account.to_string(),
        }
    }
}
