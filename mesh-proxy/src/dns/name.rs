//! The task of one name: look it up, publish what changed, sleep as the TTL says.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::{Answer, Inner, NameLabels};

pub(super) async fn run(dns: Arc<Inner>, name: String, tx: watch::Sender<Answer>) {
    let mut failures_in_a_row = 0u32;
    loop {
        let wait = match lookup(&dns, &name).await {
            Ok((addresses, ttl)) => {
                failures_in_a_row = 0;
                tx.send_if_modified(|current| {
                    let changed = current.as_deref() != Some(&addresses[..]);
                    if changed {
                        tracing::info!(%name, ?addresses, "dns answer changed");
                        *current = Some(addresses.into());
                    }
                    changed
                });
                dns.timing.after_answer(ttl)
            }
            Err(reason) => {
                failures_in_a_row += 1;
                dns.failures
                    .get_or_create(&NameLabels { name: name.clone() })
                    .inc();
                tracing::warn!(%name, %reason, "dns lookup failed; the last answer stays in use");
                // A first lookup that fails is an answer without address: requests stop
                // waiting for one (503 at once) until a lookup succeeds.
                tx.send_if_modified(|current| {
                    let first = current.is_none();
                    if first {
                        *current = Some(Arc::from([]));
                    }
                    first
                });
                dns.timing.after_failure(failures_in_a_row)
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = tx.closed() => {
                if dns.forget(&name, &tx) {
                    return;
                }
            }
        }
    }
}

/// The addresses of `name` and how long they live; an answer without address is a failure.
async fn lookup(dns: &Inner, name: &str) -> Result<(Vec<IpAddr>, Duration), String> {
    let found = tokio::time::timeout(dns.timing.query_timeout, dns.resolver.lookup_ip(name))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let addresses: Vec<IpAddr> = found.iter().collect();
    if addresses.is_empty() {
        return Err("no address in the answer".into());
    }
    let ttl = found
        .valid_until()
        .saturating_duration_since(Instant::now());
    Ok((addresses, ttl))
}
