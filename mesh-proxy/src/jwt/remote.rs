//! A `jwksUri` key set kept fresh by a background worker: fetched when a config that names it
//! is applied, refreshed periodically, the last good keys kept when the server fails or serves
//! garbage. A token whose `kid` no key has asks for an early refetch (the issuer rotated its
//! keys), at most once per `min_refetch`. Requests never fetch themselves; they wait, bounded
//! by the fetch timeout, for the worker's next attempt when they have no key to use.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::alg::Algorithm;
use super::fetch::{TlsRoots, fetch};
use super::jwk::KeySet;

/// How a remote key set is fetched; part of its identity, so a config that changes them
/// gets a new worker.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FetchSettings {
    pub timeout: Duration,
    pub refresh: Duration,
    pub min_refetch: Duration,
}

impl FetchSettings {
    /// Istio's defaults: 5 s fetch timeout, 20 min refresh. Early refetches for unknown
    /// key ids at most every 5 s keep a flood of forged `kid`s from hammering the issuer.
    pub const DEFAULT: FetchSettings = FetchSettings {
        timeout: Duration::from_secs(5),
        refresh: Duration::from_secs(20 * 60),
        min_refetch: Duration::from_secs(5),
    };

    /// After a failed fetch with no keys yet, retry sooner than the refresh period.
    fn retry_after_failure(&self) -> Duration {
        self.refresh.min(Duration::from_secs(1))
    }
}

pub struct RemoteJwks {
    uri: String,
    settings: FetchSettings,
    keys: ArcSwapOption<KeySet>,
    /// Number of fetch attempts finished; requests wait on it for the worker.
    attempts: watch::Receiver<u64>,
    wake: Arc<Notify>,
    last_forced: Mutex<Option<Instant>>,
    /// What the worker takes when [`RemoteJwks::start`] spawns it; `None` once started.
    pending_worker: Mutex<Option<(watch::Sender<u64>, CancellationToken, TlsRoots)>>,
    _stop_worker: DropGuard,
}

impl std::fmt::Debug for RemoteJwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteJwks")
            .field("uri", &self.uri)
            .field("settings", &self.settings)
            .field("has_keys", &self.keys.load().is_some())
            .finish_non_exhaustive()
    }
}

impl RemoteJwks {
    /// A key set not fetched yet: compiling a config does no I/O (a config that is only
    /// checked, or rejected later, never reaches the network). [`RemoteJwks::start`] begins.
    pub fn new(uri: String, settings: FetchSettings, roots: TlsRoots) -> Arc<RemoteJwks> {
        let (tx, attempts) = watch::channel(0);
        let stop = CancellationToken::new();
        Arc::new(RemoteJwks {
            uri,
            settings,
            keys: ArcSwapOption::empty(),
            attempts,
            wake: Arc::new(Notify::new()),
            last_forced: Mutex::new(None),
            pending_worker: Mutex::new(Some((tx, stop.clone(), roots))),
            _stop_worker: stop.drop_guard(),
        })
    }

    /// Spawns the fetching worker on the current tokio runtime, once; it stops when the
    /// last handle is dropped. Called when a config is applied.
    pub fn start(self: &Arc<Self>) {
        let pending = self
            .pending_worker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some((tx, stop, roots)) = pending {
            tokio::spawn(worker(
                Arc::downgrade(self),
                tx,
                self.wake.clone(),
                stop,
                roots,
            ));
        }
    }

    pub fn uri(&self) -> &str {
        &self.uri
    }

    pub fn settings(&self) -> &FetchSettings {
        &self.settings
    }

    /// The last good key set, if any fetch succeeded.
    pub fn current(&self) -> Option<Arc<KeySet>> {
        self.keys.load_full()
    }

    /// Keys that can check a token with `alg` and `kid`: the current ones when they can;
    /// otherwise, waiting for the first fetch or for an early refetch (rate-limited), the
    /// newest. `None`: no key set was ever fetched.
    pub async fn keys_for(&self, alg: Algorithm, kid: Option<&str>) -> Option<Arc<KeySet>> {
        let seen = *self.attempts.borrow();
        match self.current() {
            Some(keys) if keys.has_key_for(alg, kid) => return Some(keys),
            Some(keys) if !self.may_refetch() => return Some(keys),
            Some(_) => self.wake.notify_one(),
            // The first fetch is under way (or failed and is retried): wait for its outcome.
            None => {}
        }
        let mut attempts = self.attempts.clone();
        let target = if seen == 0 { 1 } else { seen + 1 };
        let _ =
            tokio::time::timeout(self.settings.timeout, attempts.wait_for(|n| *n >= target)).await;
        self.current()
    }

    fn may_refetch(&self) -> bool {
        let mut last = self.last_forced.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < self.settings.min_refetch) {
            return false;
        }
        *last = Some(now);
        true
    }
}

async fn worker(
    handle: Weak<RemoteJwks>,
    attempts: watch::Sender<u64>,
    wake: Arc<Notify>,
    stop: CancellationToken,
    roots: TlsRoots,
) {
    let Some((uri, settings)) = handle
        .upgrade()
        .map(|h| (h.uri.clone(), h.settings.clone()))
    else {
        return;
    };
    loop {
        let fetched = tokio::select! {
            () = stop.cancelled() => return,
            r = fetch(&uri, settings.timeout, &roots) => r,
        };
        let Some(h) = handle.upgrade() else { return };
        let parsed = fetched
            .map_err(|e| e.to_string())
            .and_then(|body| KeySet::parse(&body).map_err(|e| e.to_string()));
        match parsed {
            Ok(keys) => {
                tracing::debug!(%uri, keys = keys.keys.len(), "JWKS fetched");
                h.keys.store(Some(Arc::new(keys)));
            }
            Err(error) => {
                tracing::warn!(%uri, %error, "JWKS fetch failed; keeping the last good keys");
            }
        }
        let wait = if h.keys.load().is_some() {
            settings.refresh
        } else {
            settings.retry_after_failure()
        };
        drop(h);
        attempts.send_modify(|n| *n += 1);
        tokio::select! {
            () = stop.cancelled() => return,
            () = wake.notified() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}
