//! The running proxy: config state, listeners, metrics registry, and the drain on shutdown.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use mesh_proto::config::v1::ProxyConfig;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::config::{ConfigError, Snapshot};
use crate::dns::{Dns, DnsSettings};
use crate::identity::{IdentityHandle, IdentitySlot};
use crate::listener::{Listeners, Timeouts};
use crate::metrics::Metrics;

pub struct Server {
    state: Arc<ArcSwap<Snapshot>>,
    metrics: Arc<Metrics>,
    registry: Registry,
    listeners: Listeners,
    /// The workload certificate, once citadel issued it (none without a CA).
    identity: Arc<IdentitySlot>,
    ready: AtomicBool,
    /// Serialises config updates; requests never take it.
    updating: tokio::sync::Mutex<()>,
    /// Cancelled to ask the process to shut down (SIGTERM, `/quitquitquit`).
    pub shutdown: CancellationToken,
    dns_settings: DnsSettings,
    /// The resolver of DNS clusters, made with the first config that has one (None: it could
    /// not be made; the clusters then have no endpoints).
    dns: OnceLock<Option<Dns>>,
}

/// Settings of the data path that are not part of the pushed config.
#[derive(Debug, Clone)]
pub struct Options {
    /// A downstream client must send its request headers within this time.
    pub header_read_timeout: Duration,
    /// A downstream connection with no request in flight is closed after this long.
    pub idle_timeout: Duration,
    /// Open downstream connections allowed per listener; more are closed at accept and
    /// counted. None: unlimited, as Envoy's default.
    pub max_connections_per_listener: Option<usize>,
    /// Where a gateway finds the certificates its Gateway servers name by `credentialName`:
    /// DIR/NAME/tls.crt, tls.key and ca.crt (mounted Kubernetes TLS Secrets).
    pub credential_dir: Option<std::path::PathBuf>,
    /// The resolver of DNS clusters.
    pub dns: DnsSettings,
}

/// Istio's default downstream idle timeout.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

impl Default for Options {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_connections_per_listener: None,
            credential_dir: None,
            dns: DnsSettings::default(),
        }
    }
}

impl Server {
    pub fn new() -> Arc<Self> {
        Self::with_options(Options::default())
    }

    pub fn with_options(options: Options) -> Arc<Self> {
        let state = Arc::new(ArcSwap::from_pointee(Snapshot::empty()));
        let metrics = Arc::new(Metrics::default());
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let identity = Arc::new(IdentitySlot::default());
        crate::cert_expiry::register(&mut registry, &identity);
        let listeners = Listeners::new(
            state.clone(),
            metrics.clone(),
            Timeouts {
                header_read: options.header_read_timeout,
                idle: options.idle_timeout,
            },
            options.max_connections_per_listener,
            identity.clone(),
            options.credential_dir.clone(),
        );
        Arc::new(Self {
            state,
            metrics,
            registry,
            listeners,
            identity,
            ready: AtomicBool::new(false),
            updating: tokio::sync::Mutex::new(()),
            shutdown: CancellationToken::new(),
            dns_settings: options.dns,
            dns: OnceLock::new(),
        })
    }

    /// Validates and applies a config atomically: requests see the old snapshot or the new
    /// one, never a mix. A rejected config changes nothing.
    pub async fn apply(&self, cfg: ProxyConfig) -> Result<(), ConfigError> {
        let _one_at_a_time = self.updating.lock().await;
        let result = async {
            let previous = self.state.load();
            let snapshot = Snapshot::compile(cfg, Some(&previous), &self.metrics, &self.identity)?;
            let prepared = self.listeners.prepare(&snapshot.source.listeners)?;
            let version = snapshot.source.version.clone();
            let inbound_services: Vec<String> = snapshot
                .source
                .listeners
                .iter()
                .filter(|l| l.direction() == mesh_proto::config::v1::Direction::Inbound)
                .flat_map(|l| l.services.iter().cloned())
                .collect();
            snapshot.start_key_fetching();
            if snapshot.has_dns_clusters()
                && let Some(dns) = self.dns()
            {
                snapshot.start_resolving(dns);
            }
            self.state.store(Arc::new(snapshot));
            self.listeners.commit(prepared).await;
            self.metrics
                .istio
                .set_inbound_services(inbound_services.iter().map(String::as_str));
            self.metrics.config_applied(&version);
            tracing::info!(%version, "config applied");
            Ok(())
        }
        .await;
        self.metrics.config_update(result.is_ok());
        if result.is_ok() {
            self.ready.store(true, Ordering::Release);
        }
        result
    }

    fn dns(&self) -> Option<&Dns> {
        self.dns
            .get_or_init(|| {
                Dns::new(&self.dns_settings, self.metrics.dns_failures.clone())
                    .inspect_err(|e| tracing::error!(error = %e, "no resolver for DNS clusters"))
                    .ok()
            })
            .as_ref()
    }

    /// Announces that a workload certificate is coming (a CA is configured): auto mTLS picks
    /// mTLS for sidecar endpoints from the next config on, and readiness waits for it. Call
    /// before the first config is applied.
    pub fn expect_identity(&self) {
        self.identity.enable();
    }

    /// Serves mTLS with this identity from now on (renewals flow through the handle). Set
    /// once; call before the first config so auto mTLS sees it.
    pub fn set_identity(&self, handle: IdentityHandle) {
        let principal = handle.current().spiffe_id().as_str().to_owned();
        self.metrics.istio.set_principal(&principal);
        self.identity.set(handle);
    }

    /// Istio's standard HTTP metrics and the peer metadata exchange on (the default) or off.
    pub fn set_standard_metrics(&self, on: bool) {
        self.metrics.istio.set_enabled(on);
    }

    /// Where access-log lines go (stdout unless set); only before the first line is logged.
    pub fn set_access_log_output(&self, output: crate::access_log::Output) -> bool {
        self.metrics.access_log.set_output(output)
    }

    /// Who this proxy's workload is, for the standard metrics and the peer metadata it
    /// announces to other proxies over mTLS.
    pub fn set_workload(&self, workload: crate::telemetry::WorkloadMetadata) {
        self.metrics.istio.set_workload(workload);
    }

    /// Reports a span per request to an OTLP collector from now on, under this proxy's
    /// workload (set it first). Call inside the runtime. Without this, trace headers pass
    /// through untouched.
    pub fn start_tracing(
        &self,
        opts: &crate::telemetry::trace::ExportOptions,
    ) -> Result<(), crate::telemetry::trace::ExportError> {
        let workload = self.metrics.istio.workload();
        self.metrics.tracer.start_export(opts, workload.as_ref())
    }

    /// The workload identity, when there is one.
    pub fn identity(&self) -> Option<&IdentityHandle> {
        self.identity.handle()
    }

    /// True once a config has been applied and, when a CA is configured, the first
    /// certificate has arrived.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && self.waiting_for().is_none()
    }

    /// What readiness still waits for, for the admin page.
    pub fn waiting_for(&self) -> Option<&'static str> {
        if !self.ready.load(Ordering::Acquire) {
            Some("no config yet")
        } else if self.identity.is_enabled() && self.identity.handle().is_none() {
            Some("no workload certificate yet")
        } else {
            None
        }
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.state.load_full()
    }

    /// The proxy's own counters (and, under `istio`, the standard metrics).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.listeners.addr(name)
    }

    /// Stops accepting, lets in-flight requests finish for up to `deadline`, then returns.
    pub async fn drain(&self, deadline: Duration) {
        self.ready.store(false, Ordering::Release);
        self.listeners.stop_all();
        self.listeners.drain.cancel();
        self.listeners.connections.close();
        if tokio::time::timeout(deadline, self.listeners.connections.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                remaining = self.listeners.connections.len(),
                "drain deadline reached with connections still open"
            );
        }
        // Access-log lines of the last requests are still buffered.
        self.metrics().access_log.flush(Duration::from_secs(1));
    }
}
