//! Watching the config directory and turning changes into debounced pushes.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::discovery::Discovery;
use crate::store::DirStore;

#[derive(Debug, Clone, Copy)]
pub struct Debounce {
    /// How often the directory is scanned.
    pub poll: Duration,
    /// A push waits until changes have been quiet this long (Istio: 100 ms)...
    pub quiet: Duration,
    /// ...but no longer than this after the first change (Istio: 10 s).
    pub max: Duration,
}

impl Default for Debounce {
    fn default() -> Self {
        Self {
            poll: Duration::from_millis(100),
            quiet: Duration::from_millis(100),
            max: Duration::from_secs(10),
        }
    }
}

/// Whether a pending change should be pushed now.
pub fn due(first: Instant, last: Instant, now: Instant, d: &Debounce) -> bool {
    now.duration_since(last) >= d.quiet || now.duration_since(first) >= d.max
}

/// When a pending change falls due if nothing else changes: the loops wake then, not at the
/// next poll, so a push starts right after the quiet period.
pub fn due_at(pending: Option<(Instant, Instant)>, d: &Debounce) -> Option<Instant> {
    pending.map(|(first, last)| (last + d.quiet).min(first + d.max))
}

/// Sleeps until `deadline`, or forever without one.
pub async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

pub async fn watch(
    mut store: DirStore,
    discovery: Arc<Discovery>,
    debounce: Debounce,
    stop: CancellationToken,
) {
    let mut pending: Option<(Instant, Instant)> = None;
    let mut tick = tokio::time::interval(debounce.poll);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
            _ = sleep_until(due_at(pending, &debounce)) => {}
        }
        let now = Instant::now();
        if store.scan() {
            pending = Some(match pending {
                Some((first, _)) => (first, now),
                None => (now, now),
            });
        }
        discovery
            .metrics
            .config_errors
            .set(store.errors().len() as i64);
        if let Some((first, last)) = pending
            && due(first, last, now, &debounce)
        {
            pending = None;
            discovery.update(store.resources(), first.into_std()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_for_quiet_but_not_forever() {
        let d = Debounce::default();
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        assert!(!due(t0, ms(50), ms(120), &d), "changed 70 ms ago");
        assert!(due(t0, ms(50), ms(150), &d), "quiet for 100 ms");
        assert!(
            !due(t0, ms(9_950), ms(9_990), &d),
            "still changing, under the max"
        );
        assert!(
            due(t0, ms(9_990), ms(10_000), &d),
            "10 s after the first change"
        );
    }

    #[test]
    fn falls_due_after_the_quiet_period_or_the_maximum() {
        let d = Debounce::default();
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        assert_eq!(due_at(None, &d), None);
        assert_eq!(due_at(Some((t0, ms(30))), &d), Some(ms(130)));
        assert_eq!(due_at(Some((t0, ms(9_950))), &d), Some(ms(10_000)));
        for (first, last) in [(t0, ms(30)), (t0, ms(9_950))] {
            let at = due_at(Some((first, last)), &d).unwrap();
            assert!(due(first, last, at, &d));
        }
    }
}
