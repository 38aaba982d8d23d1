//! New mTLS connections per second to a proxy's inbound listener: each connection is a full
//! TLS 1.3 handshake with a mesh certificate (the proxies' own client TLS setup), one
//! `GET /` with `Connection: close`, and the close. Reports connections per second and the
//! handshake-plus-request latency percentiles.
//!
//! The client's certificate comes from the benchmark's own CA directory (the one its citadel
//! serves from); its key is made here and stays in this process.
//!
//! With `--server-ca` it is a client from outside the mesh instead: server-authenticated TLS
//! to a gateway's HTTPS server (its certificate checked against that CA for `--sni`), no
//! client certificate.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use mesh_citadel::{Ca, SpiffeId};
use mesh_proxy::identity::{Identity, IdentityHandle};
use rcgen::{CertificateParams, KeyPair};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

#[derive(Debug, Parser)]
struct Args {
    /// The inbound listener, HOST:PORT.
    #[arg(long)]
    addr: String,
    /// The CA directory of the mesh under test (ca-cert.pem, ca-key.pem, root-cert.pem).
    #[arg(long, required_unless_present = "server_ca")]
    ca_dir: Option<PathBuf>,
    #[arg(long, default_value = "cluster.local")]
    trust_domain: String,
    /// The SPIFFE ID the server must present.
    #[arg(long, required_unless_present = "server_ca")]
    server_id: Option<String>,
    /// Plain server-authenticated TLS: the PEM CA the server's certificate chains to.
    #[arg(long, conflicts_with_all = ["ca_dir", "server_id"], requires = "sni")]
    server_ca: Option<PathBuf>,
    /// The server name sent and checked, with `--server-ca`.
    #[arg(long)]
    sni: Option<String>,
    /// Host header of the request.
    #[arg(long, default_value = "bench")]
    host: String,
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Connections in flight at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (tls, name) = match (&args.server_ca, &args.sni) {
        (Some(ca), Some(sni)) => (server_auth_config(ca)?, ServerName::try_from(sni.clone())?),
        _ => {
            let identity = client_identity(&args)?;
            let server_id = args.server_id.clone().context("--server-id")?;
            let tls =
                mesh_proxy::tls::client_config(IdentityHandle::fixed(identity), vec![server_id])?;
            // SPIFFE IDs replace host names: the name is SNI only.
            (tls, ServerName::try_from("outbound.mesh")?)
        }
    };
    let connector = TlsConnector::from(tls);
    let request = Arc::new(format!(
        "GET / HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        args.host
    ));

    // One connection first, so a setup mistake fails loudly instead of measuring errors.
    connect_once(&connector, &args.addr, &name, &request)
        .await
        .context("first connection")?;

    let deadline = Instant::now() + Duration::from_secs_f64(args.seconds);
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..args.concurrency.max(1) {
        let (connector, addr, request) = (connector.clone(), args.addr.clone(), request.clone());
        let name = name.clone();
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                match connect_once(&connector, &addr, &name, &request).await {
                    Ok(()) => latencies.push(t.elapsed()),
                    Err(_) => errors += 1,
                }
            }
            (latencies, errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for w in workers {
        let (l, e) = w.await?;
        latencies.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    println!(
        "connections={} errors={} conns_per_sec={:.0} p50_ms={:.3} p99_ms={:.3}",
        latencies.len(),
        errors,
        latencies.len() as f64 / elapsed,
        pct(0.50),
        pct(0.99)
    );
    if latencies.is_empty() {
        bail!("no connection succeeded");
    }
    Ok(())
}

/// A certificate for `spiffe://<td>/ns/bench/sa/mtls-connect`, signed by the CA of `ca_dir`.
fn client_identity(args: &Args) -> anyhow::Result<Identity> {
    let dir = args.ca_dir.as_ref().context("--ca-dir")?;
    let ca = Ca::load(dir, &args.trust_domain)
        .with_context(|| format!("loading the CA in {}", dir.display()))?;
    let key = KeyPair::generate()?;
    let csr = CertificateParams::new(Vec::<String>::new())?
        .serialize_request(&key)?
        .pem()?;
    let id = SpiffeId::new(&args.trust_domain, "bench", "mtls-connect")?;
    let chain = ca
        .sign(&csr, &id, None)?
        .iter()
        .map(|pem| der_of(pem))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    Ok(Identity::from_parts(chain, key, ca.roots().to_vec())?)
}

/// A client trusting the PEM certificates of `ca`, without a certificate of its own.
fn server_auth_config(ca: &std::path::Path) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).with_context(|| format!("{}", ca.display()))? {
        roots.add(cert?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn der_of(pem: &str) -> anyhow::Result<CertificateDer<'static>> {
    use rustls_pki_types::pem::PemObject;
    Ok(CertificateDer::from_pem_slice(pem.as_bytes())?)
}

async fn connect_once(
    connector: &TlsConnector,
    addr: &str,
    name: &ServerName<'static>,
    request: &str,
) -> anyhow::Result<()> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let mut tls = connector.connect(name.clone(), tcp).await?;
    tls.write_all(request.as_bytes()).await?;
    let mut reply = Vec::with_capacity(2048);
    tls.read_to_end(&mut reply).await?;
    if !reply.starts_with(b"HTTP/1.1 200") {
        bail!(
            "unexpected reply: {}",
            String::from_utf8_lossy(&reply[..reply.len().min(80)])
        );
    }
    Ok(())
}
