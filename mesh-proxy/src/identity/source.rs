//! The worker that keeps the identity fresh, and the handle everyone else reads it through.

use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::watch;

use super::fetch::fetch;
use super::schedule::jittered_renewal;
use super::{Identity, IdentityConfig};

/// Read side of the identity: cheap to clone, read at every handshake.
#[derive(Clone, Debug)]
pub struct IdentityHandle {
    rx: watch::Receiver<Arc<Identity>>,
}

impl IdentityHandle {
    /// An identity that never changes (static certificates, tests).
    pub fn fixed(identity: Identity) -> Self {
        let (_tx, rx) = watch::channel(Arc::new(identity));
        Self { rx }
    }

    /// Reads identities published on any channel (e.g. a test that rotates them by hand).
    pub fn from_watch(rx: watch::Receiver<Arc<Identity>>) -> Self {
        Self { rx }
    }

    /// The identity in force now.
    pub fn current(&self) -> Arc<Identity> {
        self.rx.borrow().clone()
    }

    /// A receiver that wakes on each renewal.
    pub fn changes(&self) -> watch::Receiver<Arc<Identity>> {
        self.rx.clone()
    }
}

/// Obtains the workload certificate from citadel and renews it.
pub struct IdentitySource;

impl IdentitySource {
    /// Waits for the first certificate (retrying with backoff while citadel is unreachable;
    /// bound it with `tokio::time::timeout` if needed), then renews it in a background task
    /// that ends when the last handle is dropped.
    pub async fn start(cfg: IdentityConfig) -> IdentityHandle {
        let first = fetch_with_backoff(&cfg, None).await;
        tracing::info!(
            spiffe_id = %first.spiffe_id(),
            serial = first.serial(),
            "workload certificate issued"
        );
        let (tx, rx) = watch::channel(Arc::new(first));
        tokio::spawn(renew_loop(cfg, tx));
        IdentityHandle { rx }
    }
}

async fn renew_loop(cfg: IdentityConfig, tx: watch::Sender<Arc<Identity>>) {
    loop {
        let current = tx.borrow().clone();
        let delay = jittered_renewal(current.not_after(), SystemTime::now());
        tokio::select! {
            () = tx.closed() => return,
            () = tokio::time::sleep(delay) => {}
        }
        let renewed = tokio::select! {
            () = tx.closed() => return,
            id = fetch_with_backoff(&cfg, Some(&current)) => id,
        };
        tracing::info!(
            spiffe_id = %renewed.spiffe_id(),
            serial = renewed.serial(),
            "workload certificate renewed"
        );
        // Handshakes from now on present the new certificate; open connections keep theirs.
        tx.send_replace(Arc::new(renewed));
    }
}

/// Retries until citadel answers. Meanwhile `current` (if any) stays published and in use.
async fn fetch_with_backoff(cfg: &IdentityConfig, current: Option<&Identity>) -> Identity {
    let mut failures = 0;
    loop {
        match fetch(cfg, current).await {
            Ok(identity) => return identity,
            Err(e) => {
                failures += 1;
                let delay = cfg.retry.delay(failures, rand::random::<f64>());
                tracing::warn!(error = %e, retry_in = ?delay, "requesting the workload certificate failed");
                tokio::time::sleep(delay).await;
            }
        }
    }
}
