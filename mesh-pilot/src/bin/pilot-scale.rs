//! Scale benchmark: pilot in a process of its own (this binary re-run with `--serve`, which
//! starts pilot exactly as `mesh-pilot --config-dir` does), N services of M endpoints, and P
//! simulated proxies in this process that ACK like real ones. Prints pilot's memory and CPU
//! (read from /proc of its process, so the clients do not count), the time to serve every
//! proxy, and convergence after a VirtualService change and after an endpoint change, next to
//! the targets of issue 3.
//!
//! `cargo run --release -p mesh-pilot --bin pilot-scale -- --services 1000 --endpoints 10 --proxies 2000`

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use clap::Parser;
use http_body_util::BodyExt;
use mesh_pilot::server::Pilot;
use mesh_pilot::watch::Debounce;
use mesh_proto::discovery::v1::{
    ClusterEndpoints, DiscoveryRequest, Node, ProxyAddresses, ResourceType,
};
use prost::Message;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

#[derive(Parser, Debug)]
#[command(name = "pilot-scale", about = "Pilot scale benchmark (issue 3)")]
struct Args {
    /// ServiceEntries, each selecting its own WorkloadEntries.
    #[arg(long, default_value_t = 1000)]
    services: usize,
    /// Endpoints (WorkloadEntries) per service.
    #[arg(long, default_value_t = 10)]
    endpoints: usize,
    /// Simulated proxies, all connecting at once.
    #[arg(long, default_value_t = 2000)]
    proxies: usize,
    /// Proxy streams sharing one HTTP/2 connection.
    #[arg(long, default_value_t = 50)]
    streams_per_connection: usize,
    /// Services per YAML file (the config directory is rescanned every 100 ms).
    #[arg(long, default_value_t = 50)]
    services_per_file: usize,
    /// Namespaces the proxies are spread over.
    #[arg(long, default_value_t = 10)]
    namespaces: usize,
    /// Endpoint changes in the churn phase, each to another service, one every
    /// `--churn-interval-ms`.
    #[arg(long, default_value_t = 20)]
    churn_changes: usize,
    #[arg(long, default_value_t = 200)]
    churn_interval_ms: u64,
    /// Limit of every wait, in seconds.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    /// Run pilot on this config directory and report its addresses (the benchmark starts
    /// itself this way, so pilot has a process of its own).
    #[arg(long, value_name = "DIR", hide = true)]
    serve: Option<PathBuf>,
}

const SERVICE_NS: &str = "mesh";
/// Benchmarking range (RFC 2544): endpoints from 198.18.0.0, proxies from 198.19.0.0.
const ENDPOINT_BASE: u32 = u32::from_be_bytes([198, 18, 0, 0]);
const PROXY_BASE: u32 = u32::from_be_bytes([198, 19, 0, 0]);

fn ip(base: u32, n: usize) -> Ipv4Addr {
    Ipv4Addr::from(base + n as u32)
}

fn service_name(s: usize) -> String {
    format!("svc-{s:04}")
}

fn host(s: usize) -> String {
    format!("{}.{SERVICE_NS}.svc.cluster.local", service_name(s))
}

/// One service's file: its ServiceEntry and its `count` WorkloadEntries.
fn service_yaml(s: usize, endpoints: usize, count: usize) -> String {
    let name = service_name(s);
    let mut docs = vec![format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{ name: {name}, namespace: {SERVICE_NS} }}\nspec:\n  hosts: [{}]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{{ number: 80, name: http, protocol: HTTP }}]\n  workloadSelector: {{ labels: {{ app: {name} }} }}\n",
        host(s)
    )];
    for e in 0..count {
        // Endpoints past the initial ones take addresses after every initial endpoint.
        let n = if e < endpoints {
            s * endpoints + e
        } else {
            usize::MAX
        };
        docs.push(format!(
            "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{ name: {name}-{e}, namespace: {SERVICE_NS} }}\nspec:\n  address: {}\n  ports: {{ http: 8080 }}\n  labels: {{ app: {name} }}\n  serviceAccount: {name}\n",
            if n == usize::MAX {
                ip(ENDPOINT_BASE, 0xfff0 + e - endpoints)
            } else {
                ip(ENDPOINT_BASE, n)
            }
        ));
    }
    docs.join("---\n")
}

fn services_file_name(group: usize) -> String {
    format!("services-{group:04}.yaml")
}

/// The services of file `group`; the first service of the file gets `extra` endpoints.
fn services_yaml(
    group: usize,
    per_file: usize,
    services: usize,
    endpoints: usize,
    extra: usize,
) -> String {
    let first = group * per_file;
    (first..(first + per_file).min(services))
        .map(|s| {
            let extra = if s == first { extra } else { 0 };
            service_yaml(s, endpoints, endpoints + extra)
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

/// The proxies' own workloads in one namespace.
fn proxies_yaml(ns: usize, ids: impl Iterator<Item = usize>) -> String {
    ids.map(|i| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{ name: client-{i}, namespace: ns-{ns} }}\nspec:\n  address: {}\n  ports: {{ http: 8080 }}\n  labels: {{ app: client-{i} }}\n  serviceAccount: client\n",
            ip(PROXY_BASE, i)
        )
    })
    .collect::<Vec<_>>()
    .join("---\n")
}

/// A weighted split of the first service's traffic over the first two services.
fn virtual_service_yaml(services: usize, first_weight: u32) -> String {
    let other = if services > 1 { 1 } else { 0 };
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{ name: {name}, namespace: {SERVICE_NS} }}\nspec:\n  hosts: [{h0}]\n  http:\n  - route:\n    - destination: {{ host: {h0} }}\n      weight: {first_weight}\n    - destination: {{ host: {h1} }}\n      weight: {rest}\n",
        name = service_name(0),
        h0 = host(0),
        h1 = host(other),
        rest = 100 - first_weight,
    )
}

/// Replaces a file in one step, so the watcher never reads it half written.
fn write_atomic(dir: &Path, name: &str, text: &str) -> anyhow::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, dir.join(name))?;
    Ok(())
}

/// What one simulated proxy holds, with receipt times.
#[derive(Debug, Default)]
struct Seen {
    config: String,
    config_at: Option<Instant>,
    endpoints: String,
    endpoints_at: Option<Instant>,
    first_config_at: Option<Instant>,
    largest_config: usize,
    /// Clusters of every ENDPOINTS response, with its receipt time.
    endpoint_updates: Vec<(Instant, Vec<String>)>,
    error: Option<String>,
}

type Fleet = Arc<Vec<Mutex<Seen>>>;

fn lock(fleet: &Fleet, i: usize) -> std::sync::MutexGuard<'_, Seen> {
    fleet[i].lock().expect("seen lock")
}

/// The fields of a `DiscoveryResponse` a simulated proxy reads.
#[derive(Debug, Default)]
struct Head {
    kind: i32,
    version_info: String,
    nonce: String,
    endpoints_version: String,
    /// Bytes of the config (field 4), counted, not kept.
    config_len: usize,
    /// Cluster names of the endpoint updates (field 5; small, unlike configs).
    clusters: Vec<String>,
}

#[derive(Debug, Clone, Copy)]
enum Step {
    /// The 5-byte gRPC message prefix.
    Prefix,
    Key,
    Varint {
        tag: u32,
    },
    Len {
        tag: u32,
    },
    Collect {
        tag: u32,
        left: usize,
    },
    Skip {
        left: usize,
    },
}

/// Reads gRPC-framed `DiscoveryResponse`s from a response body as it streams in, keeping only
/// the head fields: the config and endpoints are counted and skipped, never buffered. The
/// clients share this process with pilot; buffering and decoding thousands of full configs
/// would measure the clients rather than pilot.
struct HeadReader {
    step: Step,
    prefix: [u8; 5],
    prefix_len: usize,
    varint: u64,
    shift: u32,
    message_left: usize,
    head: Head,
    text: Vec<u8>,
}

impl Default for HeadReader {
    fn default() -> Self {
        Self {
            step: Step::Prefix,
            prefix: [0; 5],
            prefix_len: 0,
            varint: 0,
            shift: 0,
            message_left: 0,
            head: Head::default(),
            text: Vec::new(),
        }
    }
}

impl HeadReader {
    fn consume(&mut self, n: usize) -> Result<(), String> {
        self.message_left = self
            .message_left
            .checked_sub(n)
            .ok_or("a field runs past its message")?;
        Ok(())
    }

    /// Feeds body bytes; complete messages are appended to `out`.
    fn feed(&mut self, mut data: &[u8], out: &mut Vec<Head>) -> Result<(), String> {
        loop {
            match self.step {
                Step::Collect { tag: 5, left: 0 } => {
                    let update = ClusterEndpoints::decode(self.text.as_slice())
                        .map_err(|e| format!("an endpoint update does not decode: {e}"))?;
                    self.head.clusters.push(update.cluster);
                    self.text.clear();
                    self.step = Step::Key;
                }
                Step::Collect { tag, left: 0 } => {
                    let text = String::from_utf8(std::mem::take(&mut self.text))
                        .map_err(|_| "a string field is not UTF-8")?;
                    match tag {
                        2 => self.head.version_info = text,
                        3 => self.head.nonce = text,
                        _ => self.head.endpoints_version = text,
                    }
                    self.step = Step::Key;
                }
                Step::Skip { left: 0 } => self.step = Step::Key,
                _ => {}
            }
            if matches!(self.step, Step::Key) && self.message_left == 0 {
                out.push(std::mem::take(&mut self.head));
                self.step = Step::Prefix;
                self.prefix_len = 0;
            }
            let Some(&byte) = data.first() else {
                return Ok(());
            };
            match self.step {
                Step::Prefix => {
                    self.prefix[self.prefix_len] = byte;
                    self.prefix_len += 1;
                    data = &data[1..];
                    if self.prefix_len == 5 {
                        if self.prefix[0] != 0 {
                            return Err("compressed responses are not expected".into());
                        }
                        let len = u32::from_be_bytes([
                            self.prefix[1],
                            self.prefix[2],
                            self.prefix[3],
                            self.prefix[4],
                        ]);
                        self.message_left = len as usize;
                        self.step = Step::Key;
                    }
                }
                Step::Key | Step::Varint { .. } | Step::Len { .. } => {
                    data = &data[1..];
                    self.consume(1)?;
                    self.varint |= u64::from(byte & 0x7f) << self.shift;
                    self.shift += 7;
                    if byte & 0x80 != 0 {
                        if self.shift > 63 {
                            return Err("varint too long".into());
                        }
                        continue;
                    }
                    let value = std::mem::take(&mut self.varint);
                    self.shift = 0;
                    self.step = match self.step {
                        Step::Key => {
                            let tag = (value >> 3) as u32;
                            match value & 7 {
                                0 => Step::Varint { tag },
                                1 => Step::Skip { left: 8 },
                                2 => Step::Len { tag },
                                5 => Step::Skip { left: 4 },
                                w => return Err(format!("unexpected wire type {w}")),
                            }
                        }
                        Step::Varint { tag } => {
                            if tag == 1 {
                                self.head.kind = value as i32;
                            }
                            Step::Key
                        }
                        Step::Len { tag } => {
                            let left = value as usize;
                            if tag == 4 {
                                self.head.config_len = left;
                            }
                            if matches!(tag, 2 | 3 | 5 | 6) {
                                self.text.clear();
                                Step::Collect { tag, left }
                            } else {
                                Step::Skip { left }
                            }
                        }
                        other => other,
                    };
                }
                Step::Collect { tag, left } => {
                    let n = left.min(data.len());
                    self.text.extend_from_slice(&data[..n]);
                    data = &data[n..];
                    self.consume(n)?;
                    self.step = Step::Collect {
                        tag,
                        left: left - n,
                    };
                }
                Step::Skip { left } => {
                    let n = left.min(data.len());
                    data = &data[n..];
                    self.consume(n)?;
                    self.step = Step::Skip { left: left - n };
                }
            }
        }
    }
}

const STREAM_PATH: &str = "/mesh.discovery.v1.AggregatedDiscovery/Stream";

/// A request as one gRPC message frame.
fn grpc_frame(request: &DiscoveryRequest) -> bytes::Bytes {
    let len = request.encoded_len();
    let mut out = Vec::with_capacity(5 + len);
    out.push(0);
    out.extend_from_slice(&(len as u32).to_be_bytes());
    request.encode(&mut out).expect("vec grows");
    out.into()
}

/// One proxy's stream: the two initial requests, then an ACK for every response (it keeps only
/// the versions, not the config).
async fn run_proxy(mut channel: Channel, node: Node, i: usize, fleet: Fleet) {
    let result: anyhow::Result<()> = async {
        let (tx, rx) = mpsc::channel(4);
        let first = |kind: ResourceType, node: Option<Node>| DiscoveryRequest {
            node,
            r#type: kind as i32,
            ..Default::default()
        };
        let _ = tx.send(first(ResourceType::Config, Some(node))).await;
        let _ = tx.send(first(ResourceType::Endpoints, None)).await;
        let frames = ReceiverStream::new(rx).map(|r: DiscoveryRequest| {
            Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(grpc_frame(&r)))
        });
        let request = http::Request::builder()
            .method(http::Method::POST)
            .uri(STREAM_PATH)
            .header(http::header::CONTENT_TYPE, "application/grpc")
            .header("te", "trailers")
            .body(tonic::body::Body::new(http_body_util::StreamBody::new(
                frames,
            )))?;
        std::future::poll_fn(|cx| tonic::codegen::Service::poll_ready(&mut channel, cx)).await?;
        let response = tonic::codegen::Service::call(&mut channel, request).await?;
        ensure!(
            response.status() == http::StatusCode::OK,
            "HTTP {}",
            response.status()
        );
        let mut body = response.into_body();
        let mut reader = HeadReader::default();
        let mut heads = Vec::new();
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame?.into_data() else {
                break; // trailers: the stream is over
            };
            reader.feed(&data, &mut heads).map_err(anyhow::Error::msg)?;
            for resp in heads.drain(..) {
                let at = Instant::now();
                let kind = ResourceType::try_from(resp.kind).unwrap_or_default();
                {
                    let mut s = lock(&fleet, i);
                    match kind {
                        ResourceType::Endpoints => {
                            s.endpoints = resp.version_info.clone();
                            s.endpoints_at = Some(at);
                            s.endpoint_updates.push((at, resp.clusters));
                        }
                        _ => {
                            s.config = resp.version_info.clone();
                            s.config_at = Some(at);
                            s.first_config_at.get_or_insert(at);
                            // A whole config carries its endpoints too.
                            if !resp.endpoints_version.is_empty() {
                                s.endpoints = resp.endpoints_version.clone();
                                s.endpoints_at = Some(at);
                            }
                            s.largest_config = s.largest_config.max(resp.config_len);
                        }
                    }
                }
                let ack = DiscoveryRequest {
                    r#type: resp.kind,
                    version_info: resp.version_info,
                    response_nonce: resp.nonce,
                    ..Default::default()
                };
                if tx.send(ack).await.is_err() {
                    bail!("request stream closed");
                }
            }
        }
        bail!("stream ended by pilot")
    }
    .await;
    if let Err(e) = result {
        lock(&fleet, i).error = Some(e.to_string());
    }
}

/// Polls until `done` holds, or fails after `timeout` naming `what` and any stream errors.
async fn wait_for(
    what: &str,
    timeout: Duration,
    fleet: &Fleet,
    mut done: impl FnMut() -> Option<usize>,
) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let left = match done() {
            None => return Ok(()),
            Some(left) => left,
        };
        if start.elapsed() > timeout {
            let errors: Vec<_> = fleet
                .iter()
                .filter_map(|s| s.lock().expect("seen lock").error.clone())
                .collect();
            bail!(
                "timed out after {timeout:?} waiting for {what}: {left} not there; {} streams failed{}",
                errors.len(),
                errors
                    .first()
                    .map(|e| format!(" (first: {e})"))
                    .unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until pilot has nothing unacknowledged and every proxy is at the current generation.
async fn wait_settled(
    pilot: &PilotProcess,
    proxies: usize,
    timeout: Duration,
) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let syncz = pilot.syncz().await?;
        let list = syncz["proxies"].as_array().cloned().unwrap_or_default();
        let synced = list.iter().filter(|p| p["synced"] == true).count();
        if list.len() == proxies && synced == proxies {
            break;
        }
        ensure!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for pilot to see every proxy in sync: {} of {proxies} are",
            synced
        );
        // The listing is large at scale; asking often would load pilot.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Quiet for longer than the debounce, so the next change starts a push of its own.
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(())
}

/// Per-proxy latencies from `t0` until the version read by `version` moved past `before`.
async fn convergence(
    what: &str,
    timeout: Duration,
    fleet: &Fleet,
    t0: Instant,
    before: &[String],
    version: fn(&Seen) -> (&str, Option<Instant>),
) -> anyhow::Result<Vec<Duration>> {
    wait_for(what, timeout, fleet, || {
        let left = (0..fleet.len())
            .filter(|&i| version(&lock(fleet, i)).0 == before[i])
            .count();
        (left > 0).then_some(left)
    })
    .await?;
    let mut out: Vec<Duration> = (0..fleet.len())
        .map(|i| {
            let s = lock(fleet, i);
            version(&s)
                .1
                .map(|at| at.saturating_duration_since(t0))
                .unwrap_or_default()
        })
        .collect();
    out.sort();
    Ok(out)
}

/// Per (proxy, change) latencies from each change's write to the first update of its cluster
/// at that proxy, once every proxy has seen every changed cluster.
async fn churn_convergence(
    timeout: Duration,
    fleet: &Fleet,
    changes: &[(Instant, String)],
) -> anyhow::Result<Vec<Duration>> {
    let latency = |seen: &Seen, (t, cluster): &(Instant, String)| {
        seen.endpoint_updates
            .iter()
            .find(|(at, clusters)| at >= t && clusters.contains(cluster))
            .map(|(at, _)| at.saturating_duration_since(*t))
    };
    wait_for(
        "every churned cluster at every proxy",
        timeout,
        fleet,
        || {
            let left = (0..fleet.len())
                .filter(|&i| {
                    let s = lock(fleet, i);
                    changes.iter().any(|c| latency(&s, c).is_none())
                })
                .count();
            (left > 0).then_some(left)
        },
    )
    .await?;
    let mut out: Vec<Duration> = (0..fleet.len())
        .flat_map(|i| {
            let s = lock(fleet, i);
            changes
                .iter()
                .filter_map(|c| latency(&s, c))
                .collect::<Vec<_>>()
        })
        .collect();
    out.sort();
    Ok(out)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    // Nearest rank.
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// A field of /proc/PID/status in kB (VmRSS, VmHWM).
fn status_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

/// utime + stime of a process, from /proc/PID/stat (in clock ticks of 1/100 s on Linux).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which may hold spaces, start at field 3.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |n: usize| {
        fields
            .get(n - 3)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (ticks(14) + ticks(15)) as f64 / 100.0
}

/// Pilot in a child process, reached over its HTTP debug port like an operator would.
struct PilotProcess {
    child: tokio::process::Child,
    pid: u32,
    grpc: SocketAddr,
    http: SocketAddr,
    resources: usize,
    load_time: Duration,
}

impl PilotProcess {
    async fn start(dir: &Path, timeout: Duration) -> anyhow::Result<Self> {
        let mut child = tokio::process::Command::new(std::env::current_exe()?)
            .arg("--serve")
            .arg(dir)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting pilot")?;
        let pid = child.id().context("pilot exited at once")?;
        let stdout = child.stdout.take().context("pilot stdout")?;
        let mut line = String::new();
        tokio::time::timeout(
            timeout,
            tokio::io::BufReader::new(stdout).read_line(&mut line),
        )
        .await
        .context("pilot did not start in time")??;
        let mut words = line.split_whitespace();
        let mut next = |what: &str| {
            words
                .next()
                .with_context(|| format!("pilot reported no {what}: {line:?}"))
        };
        Ok(Self {
            grpc: next("gRPC address")?.parse()?,
            http: next("HTTP address")?.parse()?,
            resources: next("resource count")?.parse()?,
            load_time: Duration::from_millis(next("load time")?.parse()?),
            child,
            pid,
        })
    }

    async fn get(&self, path: &str) -> anyhow::Result<String> {
        let mut stream = tokio::net::TcpStream::connect(self.http).await?;
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: pilot\r\n\r\n").as_bytes())
            .await?;
        let mut text = String::new();
        stream.read_to_string(&mut text).await?;
        let (head, body) = text.split_once("\r\n\r\n").context("no HTTP body")?;
        ensure!(
            head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
            "GET {path}: {head}"
        );
        Ok(body.to_string())
    }

    async fn syncz(&self) -> anyhow::Result<serde_json::Value> {
        Ok(serde_json::from_str(&self.get("/debug/syncz").await?)?)
    }

    /// A counter of pilot's /metrics by resource type.
    async fn counter(&self, name: &str, kind: &str) -> anyhow::Result<u64> {
        let metrics = self.get("/metrics").await?;
        let series = format!("{name}_total{{type=\"{kind}\"}} ");
        Ok(metrics
            .lines()
            .find_map(|l| l.strip_prefix(&series))
            .map_or(Ok(0), str::parse)?)
    }

    fn rss_mb(&self) -> f64 {
        mb(status_kb(self.pid, "VmRSS:"))
    }

    fn cpu_seconds(&self) -> f64 {
        cpu_seconds(self.pid)
    }

    /// Closes its stdin, which stops it.
    async fn stop(mut self) {
        drop(self.child.stdin.take());
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
    }
}

/// The child process: pilot on `dir` as `mesh-pilot --config-dir` runs it, its addresses,
/// resource count and load time on stdout, until stdin closes.
async fn serve(dir: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    let grpc = TcpListener::bind("127.0.0.1:0").await?;
    let http = TcpListener::bind("127.0.0.1:0").await?;
    let pilot = Pilot::start(dir, grpc, http, Debounce::default()).await?;
    let resources = pilot.discovery.mesh().resource_count;
    println!(
        "{} {} {resources} {}",
        pilot.grpc_addr,
        pilot.http_addr,
        started.elapsed().as_millis()
    );
    let mut sink = Vec::new();
    let _ = tokio::io::stdin().read_to_end(&mut sink).await;
    let _ = tokio::time::timeout(Duration::from_secs(3), pilot.shutdown()).await;
    Ok(())
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

struct Row {
    metric: String,
    value: String,
    target: &'static str,
    met: Option<bool>,
}

fn row(metric: impl Into<String>, value: impl Into<String>) -> Row {
    Row {
        metric: metric.into(),
        value: value.into(),
        target: "",
        met: None,
    }
}

fn target(
    metric: impl Into<String>,
    value: impl Into<String>,
    target: &'static str,
    met: bool,
) -> Row {
    Row {
        metric: metric.into(),
        value: value.into(),
        target,
        met: Some(met),
    }
}

fn main() {
    // As mesh-pilot's main does, for the pilot process.
    mesh_pilot::memory::limit_malloc_arenas();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(start());
}

async fn start() {
    let args = Args::parse();
    // Pilot's own log (e.g. RUST_LOG=mesh_pilot=info for the build time of each generation).
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Some(dir) = &args.serve {
        if let Err(e) = serve(dir).await {
            eprintln!("pilot-scale pilot failed: {e:#}");
            std::process::exit(1);
        }
        return;
    }
    let dir = std::env::temp_dir().join(format!("pilot-scale-{}", std::process::id()));
    let result = run(&args, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = result {
        eprintln!("pilot-scale failed: {e:#}");
        std::process::exit(1);
    }
}

async fn run(args: &Args, dir: &PathBuf) -> anyhow::Result<()> {
    ensure!(
        args.services >= 1 && args.endpoints >= 1 && args.proxies >= 1,
        "sizes must be at least 1"
    );
    ensure!(
        args.namespaces >= 1 && args.streams_per_connection >= 1 && args.services_per_file >= 1,
        "namespaces, streams per connection and services per file must be at least 1"
    );
    // Initial endpoints must stay below the addresses of added ones (198.18.255.240 up).
    ensure!(
        args.services * args.endpoints < 0xfff0,
        "at most 65519 endpoints fit 198.18.0.0/16"
    );
    ensure!(
        args.proxies <= 0x10000,
        "at most 65536 proxies fit 198.19.0.0/16"
    );
    let timeout = Duration::from_secs(args.timeout);
    let (services, endpoints, proxies) = (args.services, args.endpoints, args.proxies);

    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let per_file = args.services_per_file;
    for group in 0..services.div_ceil(per_file) {
        std::fs::write(
            dir.join(services_file_name(group)),
            services_yaml(group, per_file, services, endpoints, 0),
        )?;
    }
    for ns in 0..args.namespaces {
        let ids = (0..proxies).filter(|i| i % args.namespaces == ns);
        std::fs::write(
            dir.join(format!("proxies-ns-{ns}.yaml")),
            proxies_yaml(ns, ids),
        )?;
    }
    std::fs::write(
        dir.join("virtual-service.yaml"),
        virtual_service_yaml(services, 90),
    )?;

    eprintln!(
        "wrote {} files to {}",
        services.div_ceil(per_file) + args.namespaces + 1,
        dir.display()
    );
    let pilot = PilotProcess::start(dir, timeout).await?;
    let (load_time, loaded) = (pilot.load_time, pilot.resources);
    ensure!(
        loaded > services * (endpoints + 1) + proxies,
        "pilot loaded {loaded} resources, fewer than were written"
    );
    eprintln!("pilot loaded {loaded} resources in {}", ms(load_time));
    let rss_loaded = pilot.rss_mb();
    let cpu_loaded = pilot.cpu_seconds();

    // Connect all proxies at once: one HTTP/2 connection per group, a stream per proxy.
    let addr: SocketAddr = pilot.grpc;
    let fleet: Fleet = Arc::new((0..proxies).map(|_| Mutex::new(Seen::default())).collect());
    let connect_start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for group in 0..proxies.div_ceil(args.streams_per_connection) {
        // Each real proxy has a connection of its own; one shared by many streams needs a
        // larger connection window to not serialize their configs.
        let channel = Endpoint::from_shared(format!("http://{addr}"))?
            .initial_connection_window_size(Some(16 << 20))
            .initial_stream_window_size(Some(4 << 20))
            .connect_lazy();
        let first = group * args.streams_per_connection;
        for i in first..(first + args.streams_per_connection).min(proxies) {
            let ns = i % args.namespaces;
            let node = Node {
                id: format!("client-{i}.ns-{ns}"),
                workload: format!("client-{i}"),
                namespace: format!("ns-{ns}"),
                addresses: Some(ProxyAddresses {
                    outbound: "127.0.0.1:15001".into(),
                    ..Default::default()
                }),
                ..Default::default()
            };
            tasks.spawn(run_proxy(channel.clone(), node, i, fleet.clone()));
        }
    }
    wait_for("every proxy's first config", timeout, &fleet, || {
        let left = fleet
            .iter()
            .filter(|s| s.lock().expect("seen lock").first_config_at.is_none())
            .count();
        (left > 0).then_some(left)
    })
    .await?;
    let all_served = fleet
        .iter()
        .filter_map(|s| s.lock().expect("seen lock").first_config_at)
        .max()
        .map(|at| at.saturating_duration_since(connect_start))
        .unwrap_or_default();
    let mut first_served: Vec<Duration> = fleet
        .iter()
        .filter_map(|s| s.lock().expect("seen lock").first_config_at)
        .map(|at| at.saturating_duration_since(connect_start))
        .collect();
    first_served.sort();
    eprintln!("all {proxies} served in {}", ms(all_served));
    wait_settled(&pilot, proxies, timeout).await?;
    let rss_served = pilot.rss_mb();
    let cpu_served = pilot.cpu_seconds();
    let largest_config = fleet
        .iter()
        .map(|s| s.lock().expect("seen lock").largest_config)
        .max()
        .unwrap_or(0);
    let pushes = |kind| pilot.counter("pilot_xds_pushes", kind);
    let (configs_0, endpoints_0) = (pushes("CONFIG").await?, pushes("ENDPOINTS").await?);

    // VirtualService change: every proxy's routes change, so each gets a whole CONFIG.
    let before: Vec<String> = (0..proxies)
        .map(|i| lock(&fleet, i).config.clone())
        .collect();
    let t0 = Instant::now();
    write_atomic(
        dir,
        "virtual-service.yaml",
        &virtual_service_yaml(services, 80),
    )?;
    let vs = convergence(
        "the VirtualService change at every proxy",
        timeout,
        &fleet,
        t0,
        &before,
        |s| (&s.config, s.config_at),
    )
    .await?;
    eprintln!("VirtualService change converged");
    wait_settled(&pilot, proxies, timeout).await?;
    let cpu_vs = pilot.cpu_seconds();
    let (configs_1, endpoints_1) = (pushes("CONFIG").await?, pushes("ENDPOINTS").await?);

    // Endpoint change: the first service gets one more endpoint.
    let before: Vec<String> = (0..proxies)
        .map(|i| lock(&fleet, i).endpoints.clone())
        .collect();
    let t0 = Instant::now();
    write_atomic(
        dir,
        &services_file_name(0),
        &services_yaml(0, per_file, services, endpoints, 1),
    )?;
    let ep = convergence(
        "the endpoint change at every proxy",
        timeout,
        &fleet,
        t0,
        &before,
        |s| (&s.endpoints, s.endpoints_at),
    )
    .await?;
    eprintln!("endpoint change converged");
    wait_settled(&pilot, proxies, timeout).await?;
    let cpu_ep = pilot.cpu_seconds();
    let (configs_2, endpoints_2) = (pushes("CONFIG").await?, pushes("ENDPOINTS").await?);

    // Churn: endpoint changes to other services in quick succession, each measured from its
    // write to the first update of that service's cluster at each proxy.
    let files = services.div_ceil(per_file);
    let churned: Vec<usize> = (1..files).take(args.churn_changes).collect();
    let mut changes = Vec::new();
    for &group in &churned {
        let t = Instant::now();
        write_atomic(
            dir,
            &services_file_name(group),
            &services_yaml(group, per_file, services, endpoints, 1),
        )?;
        changes.push((t, format!("outbound|80||{}", host(group * per_file))));
        tokio::time::sleep(Duration::from_millis(args.churn_interval_ms)).await;
    }
    let churn = churn_convergence(timeout, &fleet, &changes).await?;
    eprintln!("churn converged");
    wait_settled(&pilot, proxies, timeout).await?;
    let cpu_churn = pilot.cpu_seconds();
    let (configs_3, endpoints_3) = (pushes("CONFIG").await?, pushes("ENDPOINTS").await?);
    let rss_end = pilot.rss_mb();
    let hwm = mb(status_kb(pilot.pid, "VmHWM:"));
    let clients_hwm = mb(status_kb(std::process::id(), "VmHWM:"));
    let failed = fleet
        .iter()
        .filter(|s| s.lock().expect("seen lock").error.is_some())
        .count();

    let push_errors_config = pilot.counter("pilot_xds_push_errors", "CONFIG").await?;
    let push_errors_endpoints = pilot.counter("pilot_xds_push_errors", "ENDPOINTS").await?;
    let rss_peak_ok = hwm < 300.0;
    let syncz = pilot.syncz().await?;
    let scopes = syncz["encoded_outbound_configs"].as_u64().unwrap_or(0);
    let scope_bytes = syncz["encoded_outbound_bytes"].as_u64().unwrap_or(0);
    let rows = vec![
        row(
            "services x endpoints, proxies",
            format!("{services} x {endpoints}, {proxies}"),
        ),
        row("config load (pilot start to serving)", ms(load_time)),
        row(
            "encoded outbound configs shared at end",
            format!("{scopes} ({:.1} MB)", scope_bytes as f64 / 1e6),
        ),
        row(
            "largest CONFIG response",
            format!("{:.1} MB", largest_config as f64 / 1e6),
        ),
        row(
            "pilot RSS: config loaded / all served / at end",
            format!("{rss_loaded:.0} MB / {rss_served:.0} MB / {rss_end:.0} MB"),
        ),
        target(
            "pilot peak RSS (VmHWM)",
            format!("{hwm:.0} MB"),
            "< 300 MB",
            rss_peak_ok,
        ),
        row(
            "simulated proxies' process peak RSS (not pilot)",
            format!("{clients_hwm:.0} MB"),
        ),
        row(
            "pilot CPU s: load / connect / VS change / endpoint change / churn",
            format!(
                "{:.1} / {:.1} / {:.1} / {:.1} / {:.1}",
                cpu_loaded,
                cpu_served - cpu_loaded,
                cpu_vs - cpu_served,
                cpu_ep - cpu_vs,
                cpu_churn - cpu_ep
            ),
        ),
        row("pilot CPU s total", format!("{:.1}", pilot.cpu_seconds())),
        row(
            "first config p50 / p99",
            format!(
                "{} / {}",
                ms(percentile(&first_served, 0.5)),
                ms(percentile(&first_served, 0.99))
            ),
        ),
        target(
            format!("all {proxies} served"),
            ms(all_served),
            "< 10 s",
            all_served < Duration::from_secs(10),
        ),
        row(
            "VS change convergence p50 / p99 / max",
            format!(
                "{} / {} / {}",
                ms(percentile(&vs, 0.5)),
                ms(percentile(&vs, 0.99)),
                ms(percentile(&vs, 1.0))
            ),
        ),
        target(
            "endpoint change convergence p50 / p99 / max",
            format!(
                "{} / {} / {}",
                ms(percentile(&ep, 0.5)),
                ms(percentile(&ep, 0.99)),
                ms(percentile(&ep, 1.0))
            ),
            "p99 < 1 s",
            percentile(&ep, 0.99) < Duration::from_secs(1),
        ),
        target(
            format!(
                "churn: {} endpoint changes {} ms apart, convergence p50 / p99 / max",
                churned.len(),
                args.churn_interval_ms
            ),
            format!(
                "{} / {} / {}",
                ms(percentile(&churn, 0.5)),
                ms(percentile(&churn, 0.99)),
                ms(percentile(&churn, 1.0))
            ),
            "p99 < 1 s",
            percentile(&churn, 0.99) < Duration::from_secs(1),
        ),
        row(
            "responses CONFIG / ENDPOINTS: connect",
            format!("{configs_0} / {endpoints_0}"),
        ),
        row(
            "responses CONFIG / ENDPOINTS: VS change",
            format!("{} / {}", configs_1 - configs_0, endpoints_1 - endpoints_0),
        ),
        row(
            "responses CONFIG / ENDPOINTS: endpoint change",
            format!("{} / {}", configs_2 - configs_1, endpoints_2 - endpoints_1),
        ),
        row(
            "responses CONFIG / ENDPOINTS: churn",
            format!("{} / {}", configs_3 - configs_2, endpoints_3 - endpoints_2),
        ),
        row(
            "push errors CONFIG / ENDPOINTS, failed streams",
            format!("{push_errors_config} / {push_errors_endpoints}, {failed}"),
        ),
    ];
    println!("| metric | measured | target | met |");
    println!("|---|---|---|---|");
    for r in &rows {
        let met = match r.met {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "",
        };
        println!("| {} | {} | {} | {met} |", r.metric, r.value, r.target);
    }

    tasks.abort_all();
    pilot.stop().await;
    Ok(())
}
