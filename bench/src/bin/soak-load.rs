//! The soak run's load: a fixed rate of requests through one proxy's outbound listener, mixed
//! HTTP/1.1 (keep-alive pool), HTTP/2 (h2c, one multiplexed connection) and gRPC (unary
//! `mesh.echo.v1.Echo`). Every request counts once: success (200 / gRPC OK) or failure, with
//! its kind and the second it was sent in. Prints one `key=value` summary line per protocol,
//! then the seconds that had failures:
//!
//! `protocol=http1 sent=40000 ok=39998 failed=2 kinds=503:2`
//! `sample protocol=http1 kind=503 detail="x-envoy-overloaded upstream ..."`
//! `failures second=61 http1=2 h2=0 grpc=1`

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use mesh_proto::echo::v1::EchoRequest;
use mesh_proto::echo::v1::echo_client::EchoClient;
use tonic::transport::{Channel, Endpoint};

#[derive(Debug, Parser)]
struct Args {
    /// The outbound listener, HOST:PORT.
    #[arg(long)]
    addr: String,
    /// Service of the HTTP requests (HTTP/1.1 Host, HTTP/2 :authority), HOST:PORT.
    #[arg(long)]
    http_host: String,
    /// Authority of the gRPC calls.
    #[arg(long)]
    grpc_authority: String,
    /// Requests per second, all protocols together.
    #[arg(long, default_value_t = 1000)]
    rate: u32,
    #[arg(long, default_value_t = 600)]
    seconds: u64,
    /// Shares of HTTP/1.1, HTTP/2 and gRPC, in percent.
    #[arg(long, default_value = "40,30,30")]
    mix: String,
    /// A request not answered within this many seconds is a failure.
    #[arg(long, default_value_t = 10)]
    timeout: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Protocol {
    Http1,
    H2,
    Grpc,
}

impl Protocol {
    const ALL: [Protocol; 3] = [Protocol::Http1, Protocol::H2, Protocol::Grpc];

    fn name(self) -> &'static str {
        match self {
            Protocol::Http1 => "http1",
            Protocol::H2 => "h2",
            Protocol::Grpc => "grpc",
        }
    }
}

/// Outcomes by protocol; failures also by kind and by the second they were sent in.
#[derive(Default)]
struct Tally {
    sent: BTreeMap<Protocol, u64>,
    ok: BTreeMap<Protocol, u64>,
    kinds: BTreeMap<(Protocol, String), u64>,
    failed_at: BTreeMap<(u64, Protocol), u64>,
    /// The first detail seen of each kind (a gRPC status message, a client error), which
    /// tells apart failures that share a kind.
    samples: BTreeMap<(Protocol, String), String>,
}

/// One failed request: its kind (a status code, `grpc-Unavailable`, ...) and what the client
/// said about it.
struct Failure {
    kind: String,
    detail: String,
}

impl Failure {
    fn new(kind: impl Into<String>, detail: impl std::fmt::Display) -> Self {
        Self {
            kind: kind.into(),
            detail: detail.to_string(),
        }
    }
}

impl Tally {
    fn record(&mut self, p: Protocol, second: u64, outcome: Result<(), Failure>) {
        *self.sent.entry(p).or_default() += 1;
        match outcome {
            Ok(()) => *self.ok.entry(p).or_default() += 1,
            Err(Failure { kind, detail }) => {
                self.samples.entry((p, kind.clone())).or_insert(detail);
                *self.kinds.entry((p, kind)).or_default() += 1;
                *self.failed_at.entry((second, p)).or_default() += 1;
            }
        }
    }

    fn print(&self) {
        for p in Protocol::ALL {
            let sent = self.sent.get(&p).copied().unwrap_or(0);
            let ok = self.ok.get(&p).copied().unwrap_or(0);
            let kinds: Vec<String> = self
                .kinds
                .iter()
                .filter(|((q, _), _)| *q == p)
                .map(|((_, k), n)| format!("{k}:{n}"))
                .collect();
            println!(
                "protocol={} sent={sent} ok={ok} failed={} kinds={}",
                p.name(),
                sent - ok,
                if kinds.is_empty() {
                    "-".to_string()
                } else {
                    kinds.join(",")
                }
            );
        }
        for ((p, kind), detail) in &self.samples {
            println!("sample protocol={} kind={kind} detail={detail:?}", p.name());
        }
        let mut seconds: BTreeMap<u64, [u64; 3]> = BTreeMap::new();
        for ((second, p), n) in &self.failed_at {
            let i = Protocol::ALL.iter().position(|q| q == p).expect("known");
            seconds.entry(*second).or_default()[i] += n;
        }
        for (second, [a, b, c]) in seconds {
            println!("failures second={second} http1={a} h2={b} grpc={c}");
        }
    }
}

/// Connects every request to the proxy's listener, whatever its URI names: the URI carries
/// the service (`http://web:9080/`), which HTTP/2 sends as `:authority`, as a client behind
/// a captured outbound listener would.
#[derive(Clone)]
struct ToProxy {
    http: HttpConnector,
    proxy: http::Uri,
}

impl tower::Service<http::Uri> for ToProxy {
    type Response = <HttpConnector as tower::Service<http::Uri>>::Response;
    type Error = <HttpConnector as tower::Service<http::Uri>>::Error;
    type Future = <HttpConnector as tower::Service<http::Uri>>::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.http.poll_ready(cx)
    }

    fn call(&mut self, _service: http::Uri) -> Self::Future {
        self.http.call(self.proxy.clone())
    }
}

struct Clients {
    http1: Client<ToProxy, Empty<Bytes>>,
    h2: Client<ToProxy, Empty<Bytes>>,
    grpc: EchoClient<Channel>,
    /// `http://<service>/`: its authority is the Host header and `:authority`.
    uri: http::Uri,
}

impl Clients {
    fn new(args: &Args) -> anyhow::Result<Self> {
        let connector = ToProxy {
            http: HttpConnector::new(),
            proxy: format!("http://{}", args.addr).parse()?,
        };
        let http1 = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector.clone());
        let h2 = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build(connector);
        let channel = Endpoint::from_shared(format!("http://{}", args.addr))?
            .origin(format!("http://{}", args.grpc_authority).parse()?)
            .connect_lazy();
        Ok(Self {
            http1,
            h2,
            grpc: EchoClient::new(channel),
            uri: format!("http://{}/", args.http_host).parse()?,
        })
    }

    async fn call(&self, p: Protocol) -> Result<(), Failure> {
        match p {
            Protocol::Http1 => http_get(&self.http1, &self.uri).await,
            Protocol::H2 => http_get(&self.h2, &self.uri).await,
            Protocol::Grpc => {
                let mut client = self.grpc.clone();
                client
                    .unary(EchoRequest {
                        message: "soak".into(),
                        count: 0,
                    })
                    .await
                    .map(|_| ())
                    .map_err(|s| Failure::new(format!("grpc-{:?}", s.code()), s.message()))
            }
        }
    }
}

async fn http_get(client: &Client<ToProxy, Empty<Bytes>>, uri: &http::Uri) -> Result<(), Failure> {
    let req = http::Request::get(uri.clone())
        .body(Empty::new())
        .expect("valid request");
    let resp = client
        .request(req)
        .await
        .map_err(|e| Failure::new("connection-error", e))?;
    let status = resp.status();
    let flags = resp
        .headers()
        .get("x-envoy-overloaded")
        .map_or("", |_| "x-envoy-overloaded");
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| Failure::new("body-error", e))?
        .to_bytes();
    if status == http::StatusCode::OK {
        Ok(())
    } else {
        let body = String::from_utf8_lossy(&body[..body.len().min(120)]).into_owned();
        Err(Failure::new(
            status.as_u16().to_string(),
            format!("{flags} {body}"),
        ))
    }
}

/// Which protocol the n-th request uses: a fixed interleaving by the shares, so every second
/// carries the mix.
fn schedule(shares: [u32; 3]) -> Vec<Protocol> {
    // Each request keyed by its position within its protocol's own share, then merged.
    let mut keyed: Vec<(u64, Protocol)> = Vec::new();
    for (p, n) in Protocol::ALL.iter().zip(shares) {
        for i in 0..n {
            keyed.push((u64::from(i) * 1_000_000 / u64::from(n.max(1)), *p));
        }
    }
    keyed.sort();
    keyed.into_iter().map(|(_, p)| p).collect()
}

fn parse_mix(mix: &str) -> anyhow::Result<[u32; 3]> {
    let parts: Vec<u32> = mix
        .split(',')
        .map(|s| s.trim().parse())
        .collect::<Result<_, _>>()?;
    match parts.as_slice() {
        [a, b, c] if a + b + c > 0 => Ok([*a, *b, *c]),
        _ => anyhow::bail!("--mix takes three shares, e.g. 40,30,30"),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let order = schedule(parse_mix(&args.mix)?);
    let clients = Arc::new(Clients::new(&args)?);
    let tally = Arc::new(Mutex::new(Tally::default()));
    let timeout = Duration::from_secs(args.timeout);
    let interval = Duration::from_secs(1) / args.rate.max(1);
    let start = Instant::now();
    let end = start + Duration::from_secs(args.seconds);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = tokio::task::JoinSet::new();
    let mut n = 0usize;
    while Instant::now() < end {
        ticker.tick().await;
        let p = order[n % order.len()];
        n += 1;
        let second = start.elapsed().as_secs();
        let (clients, tally) = (clients.clone(), tally.clone());
        tasks.spawn(async move {
            let outcome = match tokio::time::timeout(timeout, clients.call(p)).await {
                Ok(r) => r,
                Err(_) => Err(Failure::new("timeout", "no answer in time")),
            };
            tally.lock().expect("tally").record(p, second, outcome);
        });
        // Finished tasks are reaped as we go, so the set stays small.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    tally.lock().expect("tally").print();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_keeps_the_shares_and_interleaves() {
        let order = schedule([40, 30, 30]);
        assert_eq!(order.len(), 100);
        let count = |p| order.iter().filter(|q| **q == p).count();
        assert_eq!(
            (
                count(Protocol::Http1),
                count(Protocol::H2),
                count(Protocol::Grpc)
            ),
            (40, 30, 30)
        );
        // Every protocol appears within the first ten requests.
        for p in Protocol::ALL {
            assert!(order[..10].contains(&p), "{p:?} in {:?}", &order[..10]);
        }
    }

    #[test]
    fn failures_are_counted_by_kind_and_second() {
        let mut t = Tally::default();
        t.record(Protocol::Http1, 0, Ok(()));
        t.record(Protocol::Http1, 3, Err(Failure::new("503", "first")));
        t.record(Protocol::Http1, 4, Err(Failure::new("503", "second")));
        t.record(
            Protocol::Grpc,
            3,
            Err(Failure::new("grpc-Unavailable", "reset")),
        );
        assert_eq!(t.sent[&Protocol::Http1], 3);
        assert_eq!(t.ok[&Protocol::Http1], 1);
        assert_eq!(t.kinds[&(Protocol::Http1, "503".to_string())], 2);
        assert_eq!(t.samples[&(Protocol::Http1, "503".to_string())], "first");
        assert_eq!(t.failed_at[&(3, Protocol::Grpc)], 1);
    }
}
