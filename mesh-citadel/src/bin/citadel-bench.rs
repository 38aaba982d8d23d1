//! Certificates signed per second on one thread, through the full path a CSR takes in the CA:
//! PEM decode, CSR parse and signature check, issue and sign the leaf, PEM encode the chain.

#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use mesh_citadel::{Ca, SpiffeId};
use rcgen::{CertificateParams, KeyPair};

#[derive(Debug, Parser)]
struct Args {
    /// How long to measure, in seconds.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Distinct CSRs to cycle through (each with its own key).
    #[arg(long, default_value_t = 64)]
    csrs: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let ca = Ca::self_signed("cluster.local").context("creating the CA")?;
    let id = SpiffeId::new("cluster.local", "bench", "workload")?;
    let csrs = (0..args.csrs.max(1))
        .map(|i| {
            let key = KeyPair::generate()?;
            CertificateParams::new(vec![format!("w{i}.bench.svc")])?
                .serialize_request(&key)?
                .pem()
        })
        .collect::<Result<Vec<_>, rcgen::Error>>()?;

    // Warm-up, and a check that the path really succeeds.
    for csr in &csrs {
        ca.sign(csr, &id, None)?;
    }

    let budget = Duration::from_secs_f64(args.seconds);
    let cpu_start = thread_cpu_time();
    let start = Instant::now();
    let mut signed: u64 = 0;
    let mut bytes: usize = 0;
    while start.elapsed() < budget {
        for csr in &csrs {
            let chain = ca.sign(csr, &id, None)?;
            bytes += chain.iter().map(String::len).sum::<usize>();
            signed += 1;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = thread_cpu_time()
        .zip(cpu_start)
        .map(|(end, start)| (end - start).as_secs_f64());
    println!("| benchmark | signed | wall s | certs/s (wall) | CPU s | certs/s per CPU second |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| citadel sign (1 thread, ECDSA P-256, CSR verify + issue + PEM) | {signed} | {elapsed:.2} | {:.0} | {} | {} |",
        signed as f64 / elapsed,
        cpu.map_or("n/a".into(), |c| format!("{c:.2}")),
        cpu.map_or("n/a".into(), |c| format!("{:.0}", signed as f64 / c)),
    );
    // Keeps the output alive so the PEM encoding cannot be optimised away.
    std::hint::black_box(bytes);
    Ok(())
}

/// CPU time of this thread, so that a busy machine does not understate one core's rate:
/// the first field of schedstat is nanoseconds spent running.
fn thread_cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = stat.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}
