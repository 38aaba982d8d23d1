//! The mesh-proxy binary.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use clap::Parser;
use mesh_identity::SpiffeId;
use mesh_proto::discovery::v1::{GatewayAddresses, Node, ProxyAddresses};
use mesh_proxy::config::load_config_file;
use mesh_proxy::discovery::DiscoveryClient;
use mesh_proxy::health::{self, Probers, Readiness};
use mesh_proxy::identity::{IdentityConfig, IdentitySource};
use mesh_proxy::telemetry::WorkloadMetadata;
use mesh_proxy::{Server, admin};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

// `--features system-allocator` leaves the C allocator in place so heap profilers that hook
// malloc (heaptrack, valgrind's massif) can attribute every allocation.
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// How long freed memory may stay with the allocator before it goes back to the OS (jemalloc's
/// default is 10 s). A burst of connections frees their buffers when they go idle and again
/// when they close; half the default returns it sooner, and purging is done off the request
/// path.
#[cfg(not(feature = "system-allocator"))]
const DIRTY_DECAY_MS: isize = 5_000;

/// Freed memory goes back to the OS within the decay time even when the proxy is idle: a
/// background thread purges, not the next allocation.
#[cfg(not(feature = "system-allocator"))]
fn return_freed_memory() {
    if let Err(e) = tikv_jemalloc_ctl::background_thread::write(true) {
        tracing::warn!(error = %e, "allocator: no background purging");
    }
    if let Err(e) = set_dirty_decay(DIRTY_DECAY_MS) {
        tracing::warn!(error = %e, "allocator: decay time unchanged");
    }
}

/// Sets the decay time of the arenas there are and of those made later.
#[cfg(not(feature = "system-allocator"))]
fn set_dirty_decay(ms: isize) -> tikv_jemalloc_ctl::Result<()> {
    use tikv_jemalloc_ctl::{Access, AsName};
    b"arenas.dirty_decay_ms\0".name().write(ms)?;
    let mut arena = b"arena.0.dirty_decay_ms\0".name().mib::<[usize; 3]>()?;
    for i in 0..tikv_jemalloc_ctl::arenas::narenas::read()? {
        arena[1] = i as usize;
        // Arenas not made yet refuse it; they take the default set above when they are.
        let _ = arena.write(ms);
    }
    Ok(())
}

#[derive(Parser, Debug)]
#[command(
    name = "mesh-proxy",
    version,
    about = "The mesh's sidecar proxy",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: Args,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Installs (or with --cleanup removes) the iptables rules that capture a pod's traffic;
    /// run as the init container.
    Iptables(mesh_proxy::iptables::IptablesArgs),
    /// Waits until the proxy reports ready on its health port, or fails after the timeout;
    /// the start hook that keeps the app from starting before its proxy.
    Wait {
        /// How long to wait: seconds, or with a unit (500ms, 60s, 2m).
        #[arg(long, default_value = "60s", value_parser = parse_wait_timeout)]
        timeout: Duration,
        #[arg(long, default_value = mesh_proxy::wait::DEFAULT_URL)]
        url: String,
    },
}

fn parse_idle_timeout(text: &str) -> Result<Duration, String> {
    match parse_wait_timeout(text)? {
        Duration::ZERO => Err("the idle timeout must be longer than zero".to_string()),
        t => Ok(t),
    }
}

fn parse_gateway_port(text: &str) -> Result<(u32, SocketAddr), String> {
    let (port, addr) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?}: expected PORT=HOST:PORT"))?;
    let port = port
        .parse::<u16>()
        .map_err(|_| format!("{port:?} is not a port"))?;
    let addr = addr
        .parse()
        .map_err(|_| format!("{addr:?} is not HOST:PORT"))?;
    Ok((u32::from(port), addr))
}

fn parse_wait_timeout(text: &str) -> Result<Duration, String> {
    mesh_proxy::wait::parse_timeout(text).map_err(|e| e.to_string())
}

#[derive(clap::Args, Debug)]
struct Args {
    /// Static config file (YAML or JSON in the proxy's config model); re-read when it changes.
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with = "discovery_addr",
        required_unless_present = "discovery_addr"
    )]
    config: Option<PathBuf>,
    /// Pilot's discovery address, e.g. http://127.0.0.1:15010: config is streamed from there.
    #[arg(long, value_name = "URL", requires = "workload")]
    discovery_addr: Option<String>,
    /// NAME.NAMESPACE of the workload this proxy serves (a WorkloadEntry, or a Pod).
    #[arg(long, value_name = "NAME.NAMESPACE")]
    workload: Option<String>,
    /// Explicit outbound listener that the application sends its requests to.
    #[arg(long, value_name = "HOST:PORT")]
    outbound_addr: Option<SocketAddr>,
    /// Inbound listener that other proxies reach this workload at.
    #[arg(long, value_name = "HOST:PORT")]
    inbound_addr: Option<SocketAddr>,
    /// The local application that inbound requests go on to.
    #[arg(long, value_name = "HOST:PORT")]
    app_addr: Option<SocketAddr>,
    /// The DNS server that names of DNS clusters (ServiceEntry `resolution: DNS`) are asked
    /// (UDP, TCP for long answers); unset: the servers of /etc/resolv.conf.
    #[arg(long, env = "MESH_DNS_SERVER", value_name = "IP:PORT")]
    dns_server: Option<SocketAddr>,
    /// Run as a standalone gateway (Istio's ingress gateway): pilot gives this proxy one
    /// listener per server port of the Gateways whose selector matches its workload's labels.
    #[arg(long, requires = "discovery_addr")]
    gateway: bool,
    /// Gateway: where a server port's listener binds, PORT=HOST:PORT (repeatable), e.g.
    /// 80=127.0.0.1:18080 (the gateway Service's port to the pod's port).
    #[arg(long, value_name = "PORT=HOST:PORT", requires = "gateway", value_parser = parse_gateway_port)]
    gateway_port: Vec<(u32, SocketAddr)>,
    /// Gateway: the host of server ports without --gateway-port (bound at the server's port
    /// number). Pilot's default is 0.0.0.0.
    #[arg(long, value_name = "IP", requires = "gateway")]
    gateway_bind_host: Option<std::net::IpAddr>,
    /// Gateway: the directory of the certificates Gateway servers name by `credentialName`
    /// (NAME/tls.crt, NAME/tls.key, NAME/ca.crt or NAME-cacert/ca.crt: Kubernetes TLS Secrets
    /// mounted as volumes). Read here, re-read when they change; never sent through pilot.
    #[arg(long, value_name = "DIR", requires = "gateway")]
    credential_dir: Option<std::path::PathBuf>,
    /// The listeners receive connections redirected by `mesh-proxy iptables` and read each
    /// one's original destination (Kubernetes pods; 15001 outbound, 15006 inbound).
    #[arg(long, env = "MESH_TRANSPARENT")]
    transparent: bool,
    /// Health port for the kubelet (Istio's 15021): /healthz/ready and the app's rewritten
    /// probes (MESH_KUBE_APP_PROBERS or ISTIO_KUBE_APP_PROBERS). Off when unset.
    #[arg(long, env = "MESH_HEALTH_ADDR", value_name = "HOST:PORT")]
    health_addr: Option<SocketAddr>,
    /// Prometheus stats for scraping from outside the pod (Istio's 15090). Off when unset.
    #[arg(long, env = "MESH_METRICS_ADDR", value_name = "HOST:PORT")]
    metrics_addr: Option<SocketAddr>,
    /// Admin endpoint (/ready, /config_dump, /certs, /logging, /stats/prometheus,
    /// /quitquitquit); loopback only. Reported to pilot, where `meshctl proxy-config` finds it.
    #[arg(long, default_value = "127.0.0.1:15000")]
    admin_addr: SocketAddr,
    /// How long a drain (SIGTERM, /quitquitquit) lets in-flight requests finish.
    #[arg(long, default_value_t = 5000)]
    drain_timeout_ms: u64,
    /// A downstream connection with no request in flight is closed after this long: seconds,
    /// or with a unit (500ms, 60s, 2m). Istio's default is one hour.
    #[arg(long, env = "MESH_DOWNSTREAM_IDLE_TIMEOUT", default_value = "3600s", value_parser = parse_idle_timeout)]
    downstream_idle_timeout: Duration,
    /// Open downstream connections allowed per listener; more are closed at accept and
    /// counted in mesh_proxy_downstream_cx_overflow_total. Unlimited when unset.
    #[arg(long, env = "MESH_MAX_DOWNSTREAM_CONNECTIONS", value_parser = clap::value_parser!(u32).range(1..))]
    max_downstream_connections: Option<u32>,
    /// How often the config file is checked for changes.
    #[arg(long, default_value_t = 1000)]
    config_poll_ms: u64,
    /// OTLP gRPC collector for spans, e.g. http://127.0.0.1:4317: each proxy reports a span
    /// per sampled request (sampling by the Telemetry resource's percentage, 1% by default)
    /// and propagates W3C and B3 trace headers. Unset: no spans, headers pass through.
    #[arg(long, env = "MESH_TRACING_OTLP_ENDPOINT", value_name = "URL")]
    tracing_otlp_endpoint: Option<String>,
    /// Log as JSON lines instead of text.
    #[arg(long)]
    log_json: bool,
    /// Where access logs go when a Telemetry resource turns them on (providers `envoy`,
    /// Envoy's text format, and `envoy-json`, Istio's JSON keys): stdout unless a file is
    /// given here (appended to, created if absent; `/dev/stdout` is stdout, as Istio's
    /// meshConfig.accessLogFile). Lines are queued to a writer thread and never delay a
    /// request: when the writer falls behind they are dropped and counted in
    /// mesh_proxy_access_log_dropped_total. The proxy's own log goes to stderr.
    #[arg(long, env = "MESH_ACCESS_LOG_FILE", value_name = "PATH")]
    access_log_file: Option<std::path::PathBuf>,
    #[command(flatten)]
    identity: IdentityArgs,
    #[command(flatten)]
    workload_metadata: WorkloadArgs,
}

/// Who the workload is, for Istio's standard metrics and the peer metadata announced to other
/// proxies over mTLS. The namespace comes from --workload (or POD_NAMESPACE).
#[derive(clap::Args, Debug)]
struct WorkloadArgs {
    /// The workload's name in metrics (a Deployment's name rather than a pod's); defaults
    /// to the NAME of --workload.
    #[arg(long, env = "ISTIO_META_WORKLOAD_NAME", value_name = "NAME")]
    workload_name: Option<String>,
    /// The workload's labels, `key=value` separated by commas; `app` and `version` (or
    /// their Kubernetes and canonical-service equivalents) become source/destination app
    /// and version.
    #[arg(
        long,
        env = "MESH_WORKLOAD_LABELS",
        value_name = "KEY=VALUE,...",
        value_delimiter = ','
    )]
    workload_labels: Vec<String>,
    /// Istio's standard HTTP metrics and the peer metadata exchange; `false` turns both off
    /// (metadata headers are still stripped).
    #[arg(long, env = "MESH_STANDARD_METRICS", default_value_t = true, action = clap::ArgAction::Set)]
    standard_metrics: bool,
    /// The cluster the workload runs in (Istio's default name is "Kubernetes").
    #[arg(long, env = "ISTIO_META_CLUSTER_ID", default_value = "Kubernetes")]
    cluster_id: String,
}

/// Where the workload certificate comes from. Kubernetes sets these through the environment.
#[derive(clap::Args, Debug)]
struct IdentityArgs {
    /// Citadel's gRPC-over-TLS address, `host:port` or `https://host:port`. Without it the
    /// proxy has no identity and speaks plaintext only (STRICT listeners refuse everything).
    #[arg(long, env = "CA_ADDR", value_name = "URL")]
    ca_addr: Option<String>,
    /// Trust domain of the mesh; the issued identity must belong to it.
    #[arg(long, env = "TRUST_DOMAIN", default_value = "cluster.local")]
    trust_domain: String,
    /// Token proving the workload's identity to citadel; read again at each CSR, so a rotated
    /// (projected) token is picked up.
    #[arg(long, env = "MESH_TOKEN_FILE", value_name = "PATH")]
    token_file: Option<PathBuf>,
    /// PEM roots (one or more) that verify citadel's TLS certificate. The mesh trust bundle
    /// then comes from citadel with each certificate.
    #[arg(long, env = "MESH_ROOT_CERT_FILE", value_name = "PATH")]
    root_cert_file: Option<PathBuf>,
    /// When set, the issued certificate must carry exactly
    /// spiffe://<trust-domain>/ns/<namespace of --workload or POD_NAMESPACE>/sa/<this>.
    #[arg(long, env = "SERVICE_ACCOUNT")]
    service_account: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let args = match cli.command {
        Some(Command::Iptables(ipt)) => return mesh_proxy::iptables::run(&ipt),
        Some(Command::Wait { timeout, url }) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(mesh_proxy::wait::run(&url, timeout))?;
            return Ok(());
        }
        None => cli.run,
    };
    let logging = init_logging(args.log_json);
    #[cfg(not(feature = "system-allocator"))]
    return_freed_memory();
    // One core by default: a sidecar shares its node with the application.
    let workers = std::env::var("MESH_PROXY_WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1usize);
    // One worker is one thread running everything: tokio's current-thread scheduler, which
    // keeps none of the multi-thread scheduler's work-stealing bookkeeping per task switch.
    let runtime = if workers <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()?
    };
    runtime.block_on(run(args, logging))
}

/// Stderr whose write errors are dropped: a closed stderr (its reader gone) must not take the
/// proxy down, and the default writer's fallback `eprintln!` would panic there.
struct LossyStderr;

impl std::io::Write for LossyStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}

/// Installs the subscriber with its filter behind a reload handle, so the admin endpoint can
/// change the level of the running process (`POST /logging?level=debug`).
fn init_logging(json: bool) -> Arc<admin::LogControl> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, fmt, reload};

    let initial = std::env::var(EnvFilter::DEFAULT_ENV)
        .ok()
        .filter(|v| EnvFilter::try_new(v).is_ok())
        .unwrap_or_else(|| "info".to_owned());
    let (filter, handle) = reload::Layer::new(EnvFilter::new(&initial));
    let registry = tracing_subscriber::registry().with(filter);
    let format = fmt::layer().with_writer(|| LossyStderr);
    if json {
        registry.with(format.json()).init();
    } else {
        registry.with(format).init();
    }
    Arc::new(admin::LogControl::new(&initial, handle))
}

async fn run(args: Args, logging: Arc<admin::LogControl>) -> anyhow::Result<()> {
    let server = Server::with_options(mesh_proxy::server::Options {
        idle_timeout: args.downstream_idle_timeout,
        max_connections_per_listener: args.max_downstream_connections.map(|n| n as usize),
        credential_dir: args.credential_dir.clone(),
        dns: mesh_proxy::dns::DnsSettings {
            server: args.dns_server,
            ..Default::default()
        },
        ..Default::default()
    });
    if !args.workload_metadata.standard_metrics {
        tracing::info!("standard metrics off");
        server.set_standard_metrics(false);
    }
    if let Some(path) = &args.access_log_file
        && path.as_os_str() != "/dev/stdout"
    {
        tracing::info!(path = %path.display(), "access logs go to a file");
        server.set_access_log_output(mesh_proxy::access_log::Output::File(path.clone()));
    }
    if let Some(workload) = workload_metadata(&args)? {
        tracing::info!(workload = %workload.name, namespace = %workload.namespace, app = %workload.app, version = %workload.version, "workload metadata");
        server.set_workload(workload);
    }
    if let Some(endpoint) = &args.tracing_otlp_endpoint {
        let opts = mesh_proxy::telemetry::trace::ExportOptions::new(endpoint, node_id(&args));
        server.start_tracing(&opts)?;
        tracing::info!(%endpoint, node = %opts.node_id, "spans go to the OTLP collector");
    }
    match identity_config(&args)? {
        Some(cfg) => {
            tracing::info!(ca = %cfg.citadel_addr, "workload certificate comes from citadel");
            server.expect_identity();
            let server = server.clone();
            tokio::spawn(async move {
                let handle = IdentitySource::start(cfg).await;
                server.set_identity(handle);
            });
        }
        None => tracing::info!("no --ca-addr: no workload identity, plaintext only"),
    }
    let admin_listener = admin::bind(args.admin_addr).await?;
    let admin_addr = admin_listener.local_addr()?;
    tracing::info!(addr = %admin_addr, "admin listening");
    tokio::spawn(admin::serve_admin(
        admin_listener,
        admin::Admin {
            server: server.clone(),
            logging: Some(logging),
        },
    ));
    if let Some(addr) = args.health_addr {
        // Malformed probers are a startup error: the kubelet would otherwise see every probe fail.
        let probers = Probers::from_env().context("app probers")?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("health port {addr}"))?;
        tracing::info!(%addr, probes = probers.len(), "health port listening");
        let ready = server.clone();
        let readiness: Readiness = Arc::new(move || ready.waiting_for().is_none());
        tokio::spawn(health::serve(listener, readiness, Arc::new(probers)));
    }
    if let Some(addr) = args.metrics_addr {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("metrics port {addr}"))?;
        tracing::info!(%addr, "metrics port listening");
        tokio::spawn(admin::serve_metrics(listener, server.clone()));
    }

    match (&args.config, &args.discovery_addr) {
        (Some(path), _) => {
            let cfg = load_config_file(path)?;
            server
                .apply(cfg)
                .await
                .with_context(|| format!("{}: config rejected", path.display()))?;
            tokio::spawn(watch_config(
                server.clone(),
                path.clone(),
                Duration::from_millis(args.config_poll_ms),
            ));
        }
        (None, Some(pilot)) => {
            let node = node(&args, admin_addr)?;
            tracing::info!(%pilot, node = %node.id, "config comes from pilot");
            let client = DiscoveryClient::new(server.clone(), pilot.clone(), node);
            tokio::spawn(client.run(server.shutdown.clone()));
        }
        (None, None) => anyhow::bail!("either --config or --discovery-addr is required"),
    }

    wait_for_shutdown(&server).await;
    tracing::info!("draining");
    server
        .drain(Duration::from_millis(args.drain_timeout_ms))
        .await;
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_shutdown(server: &Server) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
        _ = server.shutdown.cancelled() => {}
    }
}

/// Envoy's node id as Istio makes it, `sidecar~IP~POD.NAMESPACE~NAMESPACE.svc.cluster.local`
/// (`router~...` for a gateway), for the `node_id` span tag.
fn node_id(args: &Args) -> String {
    let kind = if args.gateway { "router" } else { "sidecar" };
    let ip = args
        .inbound_addr
        .or(args.app_addr)
        .map_or_else(|| "127.0.0.1".to_owned(), |a| a.ip().to_string());
    let workload = args.workload.as_deref().unwrap_or("unknown.default");
    let namespace = workload.split_once('.').map_or("default", |(_, ns)| ns);
    format!("{kind}~{ip}~{workload}~{namespace}.svc.cluster.local")
}

/// The identity, listener and admin addresses this proxy announces to pilot.
fn node(args: &Args, admin: SocketAddr) -> anyhow::Result<Node> {
    let workload = args
        .workload
        .as_deref()
        .context("--workload is required with --discovery-addr")?;
    let (name, namespace) = workload
        .split_once('.')
        .with_context(|| format!("--workload {workload:?}: expected NAME.NAMESPACE"))?;
    let addr = |a: Option<SocketAddr>| a.map(|a| a.to_string()).unwrap_or_default();
    Ok(Node {
        id: workload.to_string(),
        workload: name.to_string(),
        namespace: namespace.to_string(),
        addresses: Some(ProxyAddresses {
            outbound: addr(args.outbound_addr),
            inbound: addr(args.inbound_addr),
            application: addr(args.app_addr),
            transparent: args.transparent,
            gateway: args.gateway.then(|| GatewayAddresses {
                ports: args
                    .gateway_port
                    .iter()
                    .map(|(port, addr)| (*port, addr.to_string()))
                    .collect(),
                bind_host: args
                    .gateway_bind_host
                    .map(|h| h.to_string())
                    .unwrap_or_default(),
            }),
        }),
        admin: admin.to_string(),
    })
}

/// The workload's metadata from the flags; `None` when neither --workload nor
/// --workload-name with POD_NAMESPACE names it.
fn workload_metadata(args: &Args) -> anyhow::Result<Option<WorkloadMetadata>> {
    let w = &args.workload_metadata;
    let (pod, namespace) = match args.workload.as_deref().map(|w| w.split_once('.')) {
        Some(Some((name, ns))) => (Some(name.to_owned()), Some(ns.to_owned())),
        Some(None) => anyhow::bail!("--workload: expected NAME.NAMESPACE"),
        None => (None, std::env::var("POD_NAMESPACE").ok()),
    };
    let (Some(name), Some(namespace)) = (w.workload_name.clone().or(pod), namespace) else {
        return Ok(None);
    };
    let mut labels = Vec::new();
    for pair in w.workload_labels.iter().filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .with_context(|| format!("--workload-labels {pair:?}: expected KEY=VALUE"))?;
        labels.push((k.trim(), v.trim()));
    }
    Ok(Some(WorkloadMetadata::from_labels(
        &name,
        &namespace,
        &w.cluster_id,
        labels,
    )))
}

/// The identity request from the flags; `None` without a CA address.
fn identity_config(args: &Args) -> anyhow::Result<Option<IdentityConfig>> {
    let id = &args.identity;
    let Some(addr) = id.ca_addr.as_deref() else {
        return Ok(None);
    };
    let addr = addr
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let roots_path = id
        .root_cert_file
        .as_deref()
        .context("--ca-addr needs --root-cert-file (MESH_ROOT_CERT_FILE) to verify citadel")?;
    let roots = read_roots(roots_path)?;
    let mut cfg = match &id.service_account {
        Some(sa) => {
            let namespace = args
                .workload
                .as_deref()
                .and_then(|w| w.split_once('.').map(|(_, ns)| ns.to_owned()))
                .or_else(|| std::env::var("POD_NAMESPACE").ok())
                .context(
                    "--service-account needs the namespace: \
                     --workload NAME.NAMESPACE or POD_NAMESPACE",
                )?;
            let spiffe = SpiffeId::new(&id.trust_domain, namespace, sa)
                .context("--service-account: not a valid identity")?;
            IdentityConfig::new(addr, spiffe, roots)
        }
        None => IdentityConfig::for_token_identity(addr, &id.trust_domain, roots),
    };
    // Citadel's certificate names its service; an IP address gives no name to check.
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.parse::<std::net::IpAddr>().is_err() {
        cfg.citadel_server_name = host.to_owned();
    }
    cfg.token_path = id.token_file.clone();
    Ok(Some(cfg))
}

fn read_roots(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem = std::fs::read(path).with_context(|| format!("{}", path.display()))?;
    let roots = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{}: not PEM certificates", path.display()))?;
    anyhow::ensure!(
        !roots.is_empty(),
        "{}: holds no certificate",
        path.display()
    );
    Ok(roots)
}

fn fingerprint(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Re-applies the config file when it changes. A bad file is reported and the running config
/// stays in force.
async fn watch_config(server: Arc<Server>, path: PathBuf, every: Duration) {
    let mut last = fingerprint(&path);
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let now = fingerprint(&path);
        if now == last {
            continue;
        }
        last = now;
        let result = match load_config_file(&path) {
            Ok(cfg) => server
                .apply(cfg)
                .await
                .map_err(|e| format!("{}: {e}", path.display())),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = result {
            tracing::error!(error = %e, "config rejected; the previous config stays in force");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The thread cache sizes from the workspace's `.cargo/config.toml` reach the allocator
    /// the proxy is built with (a build outside the workspace would lose them silently).
    #[cfg(not(feature = "system-allocator"))]
    #[test]
    fn the_allocator_caches_blocks_for_the_requests_in_flight() {
        use tikv_jemalloc_ctl::{Access, AsName};
        let slots: u32 = b"opt.tcache_nslots_small_min\0".name().read().unwrap();
        let sweep: usize = b"opt.tcache_gc_incr_bytes\0".name().read().unwrap();
        assert_eq!((slots, sweep), (64, 4 << 20));
    }

    #[test]
    fn node_ids_are_istios() {
        let cli = Cli::parse_from([
            "mesh-proxy",
            "--config",
            "c.yaml",
            "--workload",
            "reviews-v1.default",
            "--inbound-addr",
            "127.0.0.7:15006",
        ]);
        assert_eq!(
            node_id(&cli.run),
            "sidecar~127.0.0.7~reviews-v1.default~default.svc.cluster.local"
        );
        let gateway = Cli::parse_from([
            "mesh-proxy",
            "--discovery-addr",
            "http://127.0.0.1:15010",
            "--workload",
            "ingressgateway.istio-system",
            "--gateway",
        ]);
        assert_eq!(
            node_id(&gateway.run),
            "router~127.0.0.1~ingressgateway.istio-system~istio-system.svc.cluster.local"
        );
    }
}
