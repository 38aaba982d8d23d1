//! `meshctl up DIR`: a local mesh on this machine, no root and no Kubernetes.
//!
//! Pilot serves DIR and citadel signs every proxy's certificate. Every WorkloadEntry that
//! carries `local.mesh.dev/app-port` gets a sample app (mesh-echo, named after its `app` and
//! `version` labels, or `local.mesh.dev/app-name`) on that port and a proxy whose inbound
//! listener is the WorkloadEntry's address and port; `local.mesh.dev/outbound-port` adds an
//! explicit outbound listener and `local.mesh.dev/admin-port` places the admin port. The app
//! speaks HTTP, or answers lines of plain TCP when a ServiceEntry declares the workload's port
//! as TCP. Sidecar egress listeners with a `port` and `captureMode: NONE` are listed with
//! their address, for clients to connect to. Proxies speak mTLS to each other; the
//! PeerAuthentication objects of DIR decide whether plaintext is still accepted.
//! A WorkloadEntry annotated `local.mesh.dev/gateway-ports` (`80=18080`) runs as an ingress
//! gateway (`mesh-proxy --gateway`, no app) serving the Gateways that select its labels.

mod app_mode;
mod ca;
mod egress;
mod fleet;
mod gateways;
mod prometheus;
mod workloads;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use app_mode::AppMode;
use ca::LocalCa;
use fleet::{Fleet, RestartPolicy, sibling, wait_listening};
use gateways::{LocalGateway, local_gateways};
pub use workloads::{LocalWorkload, local_workloads};

#[derive(clap::Args)]
pub struct Args {
    /// Directory of Istio YAML describing the mesh (e.g. examples/bookinfo).
    pub dir: PathBuf,
    /// Pilot's discovery address.
    #[arg(long, default_value = "127.0.0.1:15010")]
    pub grpc_addr: SocketAddr,
    /// Pilot's debug address (/debug/syncz, /metrics).
    #[arg(long, default_value = "127.0.0.1:15014")]
    pub http_addr: SocketAddr,
    /// Citadel's address (the CA, gRPC over TLS).
    #[arg(long, default_value = "127.0.0.1:15012")]
    pub ca_addr: SocketAddr,
    /// Where the CA keeps its root and the workloads' tokens between runs.
    #[arg(long, default_value = ".mesh")]
    pub state_dir: PathBuf,
    /// Start everything, wait until it is ready, print the summary and exit (stopping it all).
    #[arg(long)]
    pub check: bool,
    /// Start a component that exits again after a second, instead of stopping the mesh (as
    /// Kubernetes restarts a pod's containers); used by the soak run.
    #[arg(long)]
    pub restart: bool,
    /// Lifetime of the workload certificates citadel signs, in seconds (citadel's default
    /// when not given); proxies renew at half of it.
    #[arg(long, value_parser = clap::value_parser!(u64).range(10..))]
    pub cert_ttl: Option<u64>,
    /// An OTLP gRPC collector (e.g. http://127.0.0.1:4317) every proxy and gateway reports
    /// its spans to; without it no spans are made.
    #[arg(long, value_name = "URL")]
    pub tracing_otlp_endpoint: Option<String>,
    /// Also run Prometheus (the `prometheus` binary on PATH) on localhost, scraping every
    /// proxy and pilot; its data goes under the state directory.
    #[arg(long)]
    pub prometheus: bool,
    /// The port of Prometheus's web UI and query API (127.0.0.1), with --prometheus.
    #[arg(long, default_value_t = 9090, requires = "prometheus")]
    pub prometheus_port: u16,
}

/// The proxy flags every proxy and gateway of the local mesh shares.
fn shared_proxy_args(args: &Args) -> Vec<String> {
    match &args.tracing_otlp_endpoint {
        Some(url) => vec!["--tracing-otlp-endpoint".into(), url.clone()],
        None => Vec::new(),
    }
}

pub fn run(args: &Args) -> ExitCode {
    match up(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("meshctl up: {e}");
            ExitCode::FAILURE
        }
    }
}

fn up(args: &Args) -> Result<(), String> {
    let (resources, errors) = mesh_api::load_path(&args.dir);
    for e in &errors {
        eprintln!("{e}");
    }
    if !errors.is_empty() {
        return Err(format!(
            "{} invalid object(s) in {}",
            errors.len(),
            args.dir.display()
        ));
    }
    let workloads = local_workloads(&resources)?;
    if workloads.is_empty() {
        return Err(format!(
            "no WorkloadEntry with {} in {}",
            workloads::APP_PORT,
            args.dir.display()
        ));
    }
    let (gateways, gateway_warnings) = local_gateways(&resources)?;
    for w in &gateway_warnings {
        eprintln!("warning: {w}");
    }
    let (pilot, proxy, echo, citadel) = (
        sibling("mesh-pilot")?,
        sibling("mesh-proxy")?,
        sibling("mesh-echo")?,
        sibling("mesh-citadel")?,
    );
    let prometheus = args.prometheus.then(prometheus::binary).transpose()?;
    // Stopped by a signal (Ctrl-C, `kill`, a service manager), the children are stopped with
    // it when `fleet` drops; the default action would leave them running.
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [SIGTERM, SIGINT, SIGHUP] {
        signal_hook::flag::register(signal, stop.clone())
            .map_err(|e| format!("cannot handle signal {signal}: {e}"))?;
    }
    let mut fleet = Fleet::default();
    let ca = LocalCa::new(&args.state_dir, args.ca_addr, args.cert_ttl);
    ca.issue_tokens(&citadel, &workloads, &gateways)?;
    ca.start(&mut fleet, &citadel)?;
    if !wait_listening(args.ca_addr, Duration::from_secs(10)) {
        return Err(format!("citadel is not listening on {}", args.ca_addr));
    }
    fleet.spawn(
        "mesh-pilot".into(),
        &pilot,
        &[
            "--config-dir".into(),
            args.dir.display().to_string(),
            "--grpc-addr".into(),
            args.grpc_addr.to_string(),
            "--http-addr".into(),
            args.http_addr.to_string(),
        ],
    )?;
    if !wait_listening(args.grpc_addr, Duration::from_secs(10)) {
        return Err(format!("pilot is not listening on {}", args.grpc_addr));
    }
    for w in &workloads {
        let mut app_args = vec![
            "--addr".into(),
            w.app_addr.to_string(),
            "--name".into(),
            w.app.clone(),
            "--version".into(),
            w.version.clone(),
        ];
        if w.app_mode == AppMode::TcpLines {
            app_args.push("--tcp".into());
        }
        fleet.spawn(format!("{} app", w.name), &echo, &app_args)?;
        let mut proxy_args = vec![
            "--discovery-addr".into(),
            format!("http://{}", args.grpc_addr),
            "--workload".into(),
            format!("{}.{}", w.name, w.namespace),
            "--inbound-addr".into(),
            w.inbound.to_string(),
            "--app-addr".into(),
            w.app_addr.to_string(),
            // The labels Istio's metrics name the workload by (source_app, source_version).
            "--workload-labels".into(),
            format!("app={},version={}", w.app, w.version),
        ];
        proxy_args.extend(ca.credentials(w).proxy_args());
        proxy_args.extend(shared_proxy_args(args));
        if let Some(o) = w.outbound {
            proxy_args.extend(["--outbound-addr".into(), o.to_string()]);
        }
        if let Some(a) = w.admin {
            proxy_args.extend(["--admin-addr".into(), a.to_string()]);
        }
        fleet.spawn(format!("{} proxy", w.name), &proxy, &proxy_args)?;
    }
    for g in &gateways {
        fleet.spawn(
            format!("{} gateway", g.name),
            &proxy,
            &gateway_args(args, &ca, g),
        )?;
    }
    for w in &workloads {
        for addr in [Some(w.inbound), w.outbound].into_iter().flatten() {
            if !wait_listening(addr, Duration::from_secs(20)) {
                return Err(format!("{}: proxy is not listening on {addr}", w.name));
            }
        }
        // Egress listeners come with the proxy's first config from pilot; one that never
        // opens (a port already taken, a rejected Sidecar) is pilot's or the proxy's to log.
        for e in &w.egress {
            if !wait_listening(e.addr, Duration::from_secs(10)) {
                eprintln!(
                    "warning: {}: nothing listens on its egress port {} yet (see the proxy's and pilot's log)",
                    w.name, e.addr
                );
            }
        }
    }
    for g in &gateways {
        // Listeners come with the gateway's first config; a Gateway that does not select
        // it leaves its ports closed (said above).
        for addr in g.ports.values() {
            if !wait_listening(*addr, Duration::from_secs(20)) {
                eprintln!(
                    "warning: {}: nothing listens on gateway port {addr} yet (see the proxy's and pilot's log)",
                    g.name
                );
            }
        }
    }
    if let Some(binary) = &prometheus {
        let listen = prometheus_addr(args);
        prometheus::start(
            &mut fleet,
            binary,
            &args.state_dir,
            listen,
            &scrape_targets(&workloads, &gateways),
            args.http_addr,
        )?;
        if !wait_listening(listen, Duration::from_secs(20)) {
            return Err(format!("prometheus is not listening on {listen}"));
        }
    }
    print_summary(args, &workloads, &gateways);
    if args.check {
        return Ok(());
    }
    let policy = if args.restart {
        RestartPolicy::After(Duration::from_secs(1))
    } else {
        RestartPolicy::Never
    };
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        fleet.supervise(policy)?;
    }
    eprintln!("meshctl up: stopping the mesh");
    Ok(())
}

fn prometheus_addr(args: &Args) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], args.prometheus_port))
}

/// Every proxy's admin address (the proxy's default where the entry does not place it).
fn scrape_targets(
    workloads: &[LocalWorkload],
    gateways: &[LocalGateway],
) -> Vec<prometheus::ProxyTarget> {
    let workload_proxies = workloads.iter().map(|w| (&w.name, &w.namespace, w.admin));
    let gateway_proxies = gateways.iter().map(|g| (&g.name, &g.namespace, g.admin));
    workload_proxies
        .chain(gateway_proxies)
        .map(|(name, namespace, admin)| prometheus::ProxyTarget {
            workload: name.clone(),
            namespace: namespace.clone(),
            admin: admin.unwrap_or(DEFAULT_ADMIN),
        })
        .collect()
}

/// `mesh-proxy`'s own admin address when none is given.
const DEFAULT_ADMIN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 15000);

/// `mesh-proxy --gateway` for `g`: its server ports mapped, the others on its address.
fn gateway_args(args: &Args, ca: &LocalCa, g: &LocalGateway) -> Vec<String> {
    let mut out = vec![
        "--discovery-addr".into(),
        format!("http://{}", args.grpc_addr),
        "--workload".into(),
        format!("{}.{}", g.name, g.namespace),
        "--gateway".into(),
        "--gateway-bind-host".into(),
        g.address.to_string(),
    ];
    out.extend(
        ca.credentials_of(&g.namespace, &g.service_account)
            .proxy_args(),
    );
    for (port, addr) in &g.ports {
        out.extend(["--gateway-port".into(), format!("{port}={addr}")]);
    }
    out.extend(credential_dir_args(&args.dir));
    out.extend(shared_proxy_args(args));
    if let Some(a) = g.admin {
        out.extend(["--admin-addr".into(), a.to_string()]);
    }
    out
}

/// The directory of the certificates Gateway servers name by `credentialName`: the config
/// directory's `credentials/` (one folder per credential with `tls.crt` and `tls.key`, as a
/// mounted Kubernetes TLS Secret), when it has one.
pub const CREDENTIALS_DIR: &str = "credentials";

fn credential_dir_args(config_dir: &std::path::Path) -> Vec<String> {
    let dir = config_dir.join(CREDENTIALS_DIR);
    if dir.is_dir() {
        vec![
            "--credential-dir".into(),
            dir.to_string_lossy().into_owned(),
        ]
    } else {
        Vec::new()
    }
}

fn print_gateways(gateways: &[LocalGateway]) {
    if gateways.is_empty() {
        return;
    }
    // Ingress and egress gateways alike: the same proxy, told apart by their Gateways.
    println!(
        "
gateways:"
    );
    for g in gateways {
        let ports: Vec<String> = g
            .ports
            .iter()
            .map(|(port, addr)| format!("{port} -> {addr}"))
            .collect();
        println!(
            "  {:<24} {:<28} {}",
            g.name,
            ports.join(", "),
            g.gateways.join(", ")
        );
    }
    if let Some(addr) = gateways.iter().find_map(|g| g.ports.get(&80)) {
        println!(
            "
try:  curl http://{addr}/productpage"
        );
    }
}

fn print_summary(args: &Args, workloads: &[LocalWorkload], gateways: &[LocalGateway]) {
    println!(
        "local mesh up: pilot {} (debug http://{}), citadel {} (state in {})",
        args.grpc_addr,
        args.http_addr,
        args.ca_addr,
        args.state_dir.display()
    );
    println!(
        "{:<16} {:<8} {:<18} {:<24} {:<18} {:<18}",
        "workload", "version", "inbound", "app", "outbound", "admin"
    );
    for w in workloads {
        let outbound = w
            .outbound
            .map(|o| o.to_string())
            .unwrap_or_else(|| "-".into());
        let app = format!("{} ({})", w.app_addr, w.app_mode.label());
        // The proxy's own default when the WorkloadEntry does not place it.
        let admin = w.admin.unwrap_or(DEFAULT_ADMIN).to_string();
        println!(
            "{:<16} {:<8} {:<18} {:<24} {:<18} {:<18}",
            w.name, w.version, w.inbound, app, outbound, admin
        );
    }
    let egress: Vec<_> = workloads
        .iter()
        .flat_map(|w| w.egress.iter().map(move |e| (w, e)))
        .collect();
    if !egress.is_empty() {
        println!("\negress listeners (Sidecar, captureMode NONE):");
        for (w, e) in &egress {
            println!(
                "  {:<16} {:<18} {:<5} {}",
                w.name,
                e.addr,
                e.protocol,
                e.hosts.join(", ")
            );
        }
    }
    if let Some((client, o)) = workloads.iter().find_map(|w| w.outbound.map(|o| (w, o))) {
        println!("\ntry:  curl -x http://{o} http://reviews:9080/");
        println!("      curl http://{}/debug/syncz", args.http_addr);
        println!(
            "      meshctl proxy-status --pilot {}; meshctl proxy-config routes {} --pilot {}",
            args.http_addr, client.name, args.http_addr
        );
    }
    if let Some((_, e)) = egress.iter().find(|(_, e)| e.protocol == "TCP") {
        let (ip, port) = (e.addr.ip(), e.addr.port());
        println!("\ntry:  exec 3<>/dev/tcp/{ip}/{port}; echo hello >&3; head -n1 <&3; exec 3>&-");
    }
    print_gateways(gateways);
    if args.prometheus {
        print!(
            "{}",
            prometheus::banner(
                prometheus_addr(args),
                workloads.len() + gateways.len(),
                &args.state_dir
            )
        );
    }
    println!(
        "edit the YAML in {} and the change reaches every proxy within a second; Ctrl-C stops the mesh",
        args.dir.display()
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        up: Args,
    }

    #[test]
    fn the_tracing_endpoint_is_passed_to_every_proxy() {
        let cli = Cli::parse_from([
            "up",
            "examples/bookinfo",
            "--tracing-otlp-endpoint",
            "http://127.0.0.1:4317",
        ]);
        assert_eq!(
            shared_proxy_args(&cli.up),
            ["--tracing-otlp-endpoint", "http://127.0.0.1:4317"]
        );
        let cli = Cli::parse_from(["up", "examples/bookinfo"]);
        assert!(shared_proxy_args(&cli.up).is_empty());
    }

    #[test]
    fn gateways_get_the_credentials_folder_when_the_directory_has_one() {
        let dir = tempfile::tempdir().unwrap();
        assert!(credential_dir_args(dir.path()).is_empty());
        std::fs::create_dir(dir.path().join("credentials")).unwrap();
        let creds = dir
            .path()
            .join("credentials")
            .to_string_lossy()
            .into_owned();
        assert_eq!(
            credential_dir_args(dir.path()),
            ["--credential-dir".to_string(), creds]
        );
    }
}
