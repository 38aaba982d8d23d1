//! Following one kind with kube's watcher: list, then watch from the list's resourceVersion,
//! resuming from the last event or bookmark, relisting when the API server says the version
//! is gone (410) whether as an ERROR event or as the watch request's HTTP status.

use std::fmt::Debug;
use std::time::Duration;

use futures_util::StreamExt;
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

/// What a watch reports, in the order it happened.
#[derive(Debug)]
pub enum Change<K> {
    /// The complete set after a (re)list; anything not in it is gone.
    Replace(Vec<K>),
    Apply(K),
    Delete(K),
}

/// Pause before relisting after the API server refused a watch's resourceVersion.
const RELIST_DELAY: Duration = Duration::from_millis(200);

/// Runs until `stop`, calling `on_change` for every change and `on_error` for every failure
/// (the watcher retries with kube's backoff: 0.8 s doubling up to 30 s).
pub async fn follow<K>(
    api: Api<K>,
    config: watcher::Config,
    stop: CancellationToken,
    mut on_change: impl FnMut(Change<K>) + Send,
    mut on_error: impl FnMut(&watcher::Error) + Send,
) where
    K: kube::Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    loop {
        let mut events = watcher::watcher(api.clone(), config.clone())
            .default_backoff()
            .boxed();
        let mut listing: Vec<K> = Vec::new();
        loop {
            let event = tokio::select! {
                _ = stop.cancelled() => return,
                e = events.next() => e,
            };
            match event {
                None => break,
                Some(Ok(Event::Init)) => listing.clear(),
                Some(Ok(Event::InitApply(o))) => listing.push(o),
                Some(Ok(Event::InitDone)) => {
                    on_change(Change::Replace(std::mem::take(&mut listing)))
                }
                Some(Ok(Event::Apply(o))) => on_change(Change::Apply(o)),
                Some(Ok(Event::Delete(o))) => on_change(Change::Delete(o)),
                Some(Err(e)) => {
                    on_error(&e);
                    if is_gone(&e) {
                        // kube's watcher relists on a 410 ERROR event but retries the same
                        // version when the watch request itself is answered 410: start over.
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = tokio::time::sleep(RELIST_DELAY) => {}
                        }
                        break;
                    }
                }
            }
        }
    }
}

/// The watch request was refused with `410 Gone`: its resourceVersion is too old.
fn is_gone(e: &watcher::Error) -> bool {
    matches!(e, watcher::Error::WatchStartFailed(kube::Error::Api(s)) if s.code == 410)
}

/// The resource does not exist on this API server (a CRD that is not installed).
pub fn is_not_found(e: &watcher::Error) -> bool {
    matches!(
        e,
        watcher::Error::InitialListFailed(kube::Error::Api(s))
            | watcher::Error::WatchStartFailed(kube::Error::Api(s)) if s.code == 404
    )
}
