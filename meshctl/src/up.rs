//! `meshctl up DIR`: a local mesh on this machine, no root and no Kubernetes.
//!
//! Pilot serves DIR. Every WorkloadEntry that carries `local.mesh.dev/app-port` gets a sample
//! app (mesh-echo, named after its `app` and `version` labels) on that port and a proxy whose
//! inbound listener is the WorkloadEntry's address and port; `local.mesh.dev/outbound-port`
//! adds an explicit outbound listener and `local.mesh.dev/admin-port` places the admin port.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use mesh_api::Resource;

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
    /// Start everything, wait until it is ready, print the summary and exit (stopping it all).
    #[arg(long)]
    pub check: bool,
}

/// One workload to run locally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalWorkload {
    pub name: String,
    pub namespace: String,
    pub app: String,
    pub version: String,
    pub inbound: SocketAddr,
    pub app_addr: SocketAddr,
    pub outbound: Option<SocketAddr>,
    pub admin: Option<SocketAddr>,
}

const APP_PORT: &str = "local.mesh.dev/app-port";
const OUTBOUND_PORT: &str = "local.mesh.dev/outbound-port";
const ADMIN_PORT: &str = "local.mesh.dev/admin-port";

/// The workloads of `resources` that describe a local process.
pub fn local_workloads(resources: &[Resource]) -> Result<Vec<LocalWorkload>, String> {
    let mut out = Vec::new();
    for r in resources {
        let Resource::WorkloadEntry(we) = r else {
            continue;
        };
        let annotations = &we.metadata.annotations;
        let Some(app_port) = annotations.get(APP_PORT) else {
            continue;
        };
        let at = |what: &str| {
            format!(
                "WorkloadEntry {}/{}: {what}",
                r.namespace().unwrap_or("default"),
                r.name()
            )
        };
        let port = |key: &str, value: &str| -> Result<u16, String> {
            value
                .parse()
                .map_err(|_| at(&format!("annotation {key}: {value:?} is not a port")))
        };
        let ip: std::net::IpAddr = we
            .spec
            .address
            .parse()
            .map_err(|_| at("spec.address must be an IP address for a local workload"))?;
        let inbound_port = we
            .spec
            .ports
            .values()
            .next()
            .copied()
            .ok_or_else(|| at("spec.ports must name the proxy's inbound port"))?;
        let label = |k: &str| {
            we.spec
                .labels
                .get(k)
                .cloned()
                .unwrap_or_else(|| r.name().to_string())
        };
        out.push(LocalWorkload {
            name: r.name().to_string(),
            namespace: r.namespace().unwrap_or("default").to_string(),
            app: label("app"),
            version: we
                .spec
                .labels
                .get("version")
                .cloned()
                .unwrap_or_else(|| "v1".into()),
            inbound: SocketAddr::new(ip, inbound_port as u16),
            app_addr: SocketAddr::new(ip, port(APP_PORT, app_port)?),
            outbound: annotations
                .get(OUTBOUND_PORT)
                .map(|v| port(OUTBOUND_PORT, v).map(|p| SocketAddr::new(ip, p)))
                .transpose()?,
            admin: annotations
                .get(ADMIN_PORT)
                .map(|v| port(ADMIN_PORT, v).map(|p| SocketAddr::new([127, 0, 0, 1].into(), p)))
                .transpose()?,
        });
    }
    Ok(out)
}

/// Child processes, stopped together.
struct Fleet(Vec<(String, Child)>);

impl Fleet {
    fn spawn(&mut self, name: String, program: &Path, args: &[String]) -> Result<(), String> {
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
        self.0.push((name, child));
        Ok(())
    }

    fn exited(&mut self) -> Option<String> {
        self.0
            .iter_mut()
            .find_map(|(name, c)| matches!(c.try_wait(), Ok(Some(_))).then(|| name.clone()))
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for (_, c) in &mut self.0 {
            let _ = c.kill();
        }
        for (_, c) in &mut self.0 {
            let _ = c.wait();
        }
    }
}

/// The mesh's binaries sit next to meshctl (one `cargo build --bins`).
fn sibling(name: &str) -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let path = exe.with_file_name(name);
    path.exists().then_some(path.clone()).ok_or_else(|| {
        format!(
            "{} not found: build it with `cargo build --bins`",
            path.display()
        )
    })
}

fn wait_listening(addr: SocketAddr, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
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
            "no WorkloadEntry with {APP_PORT} in {}",
            args.dir.display()
        ));
    }
    let (pilot, proxy, echo) = (
        sibling("mesh-pilot")?,
        sibling("mesh-proxy")?,
        sibling("mesh-echo")?,
    );
    let mut fleet = Fleet(Vec::new());
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
        fleet.spawn(
            format!("{} app", w.name),
            &echo,
            &[
                "--addr".into(),
                w.app_addr.to_string(),
                "--name".into(),
                w.app.clone(),
                "--version".into(),
                w.version.clone(),
            ],
        )?;
        let mut proxy_args = vec![
            "--discovery-addr".into(),
            format!("http://{}", args.grpc_addr),
            "--workload".into(),
            format!("{}.{}", w.name, w.namespace),
            "--inbound-addr".into(),
            w.inbound.to_string(),
            "--app-addr".into(),
            w.app_addr.to_string(),
        ];
        if let Some(o) = w.outbound {
            proxy_args.extend(["--outbound-addr".into(), o.to_string()]);
        }
        if let Some(a) = w.admin {
            proxy_args.extend(["--admin-addr".into(), a.to_string()]);
        }
        fleet.spawn(format!("{} proxy", w.name), &proxy, &proxy_args)?;
    }
    for w in &workloads {
        for addr in [Some(w.inbound), w.outbound].into_iter().flatten() {
            if !wait_listening(addr, Duration::from_secs(20)) {
                return Err(format!("{}: proxy is not listening on {addr}", w.name));
            }
        }
    }
    print_summary(args, &workloads);
    if args.check {
        return Ok(());
    }
    loop {
        std::thread::sleep(Duration::from_millis(500));
        if let Some(name) = fleet.exited() {
            return Err(format!("{name} exited; stopping the mesh"));
        }
    }
}

fn print_summary(args: &Args, workloads: &[LocalWorkload]) {
    println!(
        "local mesh up: pilot {} (debug http://{})",
        args.grpc_addr, args.http_addr
    );
    println!(
        "{:<16} {:<8} {:<18} {:<18} {:<18}",
        "workload", "version", "inbound", "app", "outbound"
    );
    for w in workloads {
        let outbound = w
            .outbound
            .map(|o| o.to_string())
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<16} {:<8} {:<18} {:<18} {:<18}",
            w.name, w.version, w.inbound, w.app_addr, outbound
        );
    }
    if let Some(o) = workloads.iter().find_map(|w| w.outbound) {
        println!("\ntry:  curl -x http://{o} http://reviews:9080/");
        println!("      curl http://{}/debug/syncz", args.http_addr);
    }
    println!(
        "edit the YAML in {} and the change reaches every proxy within a second; Ctrl-C stops the mesh",
        args.dir.display()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_workloads_come_from_annotated_workload_entries() {
        let (resources, errors) = mesh_api::load_str(
            "w.yaml",
            r#"
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: reviews-v2
  namespace: default
  annotations: { local.mesh.dev/app-port: "29083", local.mesh.dev/outbound-port: "15002" }
spec:
  address: 127.0.0.1
  ports: { http: 19083 }
  labels: { app: reviews, version: v2 }
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: { name: elsewhere, namespace: default }
spec: { address: 127.0.0.1, ports: { http: 1 } }
"#,
        );
        assert!(errors.is_empty(), "{errors:?}");
        let w = local_workloads(&resources).unwrap();
        assert_eq!(w.len(), 1, "only annotated entries run locally");
        assert_eq!(w[0].app, "reviews");
        assert_eq!(w[0].version, "v2");
        assert_eq!(w[0].inbound, "127.0.0.1:19083".parse().unwrap());
        assert_eq!(w[0].app_addr, "127.0.0.1:29083".parse().unwrap());
        assert_eq!(w[0].outbound, Some("127.0.0.1:15002".parse().unwrap()));
        assert_eq!(w[0].admin, None);
    }
}
