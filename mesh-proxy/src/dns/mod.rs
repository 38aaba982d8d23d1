//! Names of DNS clusters (ServiceEntry `resolution: DNS` / `DNS_ROUND_ROBIN`), resolved off
//! the request path: one background task per name, shared by every cluster that names it and
//! kept across config updates, publishes the latest answer on a `watch`. A name is asked again
//! when its TTL runs out (within [`Timing`]'s floor and ceiling); a failed lookup keeps the
//! last answer, is counted, and is retried with a backoff. The task ends when no cluster
//! watches the name any more.

mod name;
pub mod refresh;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::sync::watch;

pub use refresh::Timing;

/// The latest addresses of a name, in the order the server gave them; `None` until the
/// first lookup ends (empty when it failed).
pub type Answer = Option<Arc<[IpAddr]>>;

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("the system resolver configuration could not be read: {0}")]
    SystemConfig(String),
    #[error("the resolver could not be built: {0}")]
    Build(String),
}

/// Where names are sent.
#[derive(Debug, Clone, Default)]
pub struct DnsSettings {
    /// One server (UDP, then TCP for truncated answers); None: `/etc/resolv.conf`.
    pub server: Option<SocketAddr>,
    pub timing: Timing,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NameLabels {
    pub name: String,
}

/// The proxy's resolver and its name tasks. Cheap to clone.
#[derive(Clone)]
pub struct Dns {
    inner: Arc<Inner>,
}

struct Inner {
    resolver: TokioResolver,
    timing: Timing,
    /// The sender of every name with a task; the task removes its entry when it ends.
    names: Mutex<HashMap<String, watch::Sender<Answer>>>,
    failures: Family<NameLabels, Counter>,
}

impl std::fmt::Debug for Dns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dns")
            .field("timing", &self.inner.timing)
            .finish_non_exhaustive()
    }
}

impl Dns {
    /// A resolver as `settings` say (`/etc/resolv.conf` without a server), counting failed
    /// lookups in `failures`.
    pub fn new(
        settings: &DnsSettings,
        failures: Family<NameLabels, Counter>,
    ) -> Result<Self, DnsError> {
        let provider = TokioRuntimeProvider::default();
        let mut builder = match settings.server {
            Some(server) => {
                let mut udp = ConnectionConfig::udp();
                udp.port = server.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = server.port();
                let mut ns = NameServerConfig::udp(server.ip());
                ns.connections = vec![udp, tcp];
                let config = ResolverConfig::from_parts(None, Vec::new(), vec![ns]);
                TokioResolver::builder_with_config(config, provider)
            }
            None => TokioResolver::builder(provider)
                .map_err(|e| DnsError::SystemConfig(e.to_string()))?,
        };
        let options = builder.options_mut();
        // The name tasks keep the answers and decide when to ask again: a cache below them
        // would only hand back answers whose TTL is running out.
        options.cache_size = 0;
        options.timeout = settings.timing.query_timeout.min(options.timeout);
        let resolver = builder
            .build()
            .map_err(|e| DnsError::Build(e.to_string()))?;
        Ok(Self {
            inner: Arc::new(Inner {
                resolver,
                timing: settings.timing,
                names: Mutex::new(HashMap::new()),
                failures,
            }),
        })
    }

    pub fn timing(&self) -> Timing {
        self.inner.timing
    }

    /// The answers of `name`, starting its task when no one watched it yet.
    pub fn watch(&self, name: &str) -> watch::Receiver<Answer> {
        let mut names = self.inner.names.lock().expect("dns names lock");
        if let Some(tx) = names.get(name) {
            return tx.subscribe();
        }
        let (tx, rx) = watch::channel(None);
        names.insert(name.to_string(), tx.clone());
        drop(names);
        tokio::spawn(name::run(self.inner.clone(), name.to_string(), tx));
        rx
    }
}

impl Inner {
    /// Removes `name`'s task when nobody watches it; false when a watcher came back (the
    /// check and the removal hold the lock `watch` subscribes under).
    fn forget(&self, name: &str, tx: &watch::Sender<Answer>) -> bool {
        let mut names = self.names.lock().expect("dns names lock");
        if tx.receiver_count() > 0 {
            return false;
        }
        names.remove(name);
        true
    }
}
