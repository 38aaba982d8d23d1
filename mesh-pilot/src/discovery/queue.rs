//! The push queue: proxies waiting for a push, first come first served, each at most once.
//! A proxy queued again before its turn keeps its place and the earliest change time; when
//! its turn comes it gets the newest generation.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

#[derive(Default)]
pub struct PushQueue {
    inner: Mutex<Inner>,
    ready: Notify,
}

#[derive(Default)]
struct Inner {
    order: VecDeque<u64>,
    /// Queued connections and when the oldest change they wait for was seen.
    pending: HashMap<u64, Option<Instant>>,
    /// When each queued connection was first queued (for the queue time metric).
    queued_at: HashMap<u64, Instant>,
}

impl PushQueue {
    /// Queues connection `id`; `changed_at` is set for a push caused by a config change.
    pub fn push(&self, id: u64, changed_at: Option<Instant>) {
        {
            let mut q = self.inner.lock().expect("queue lock");
            match q.pending.get_mut(&id) {
                Some(at) => {
                    *at = match (*at, changed_at) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                }
                None => {
                    q.pending.insert(id, changed_at);
                    q.queued_at.insert(id, Instant::now());
                    q.order.push_back(id);
                }
            }
        }
        self.ready.notify_one();
    }

    fn try_pop(&self) -> Option<(u64, Option<Instant>, Duration)> {
        let mut q = self.inner.lock().expect("queue lock");
        let id = q.order.pop_front()?;
        let at = q.pending.remove(&id).flatten();
        let waited = q
            .queued_at
            .remove(&id)
            .map_or(Duration::ZERO, |t| t.elapsed());
        Some((id, at, waited))
    }

    /// The next connection to push to, waiting for one.
    pub async fn pop(&self) -> (u64, Option<Instant>) {
        let (id, changed_at, _) = self.pop_waited().await;
        (id, changed_at)
    }

    /// As [`Self::pop`], with how long the connection waited since it was first queued.
    pub async fn pop_waited(&self) -> (u64, Option<Instant>, Duration) {
        loop {
            let ready = self.ready.notified();
            if let Some(next) = self.try_pop() {
                return next;
            }
            ready.await;
        }
    }

    pub fn len(&self) -> usize {
        self.inner.lock().expect("queue lock").order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_wait_counts_from_the_first_queueing() {
        let q = PushQueue::default();
        q.push(4, None);
        tokio::time::sleep(Duration::from_millis(30)).await;
        q.push(4, Some(Instant::now()));
        let (id, _, waited) = q.pop_waited().await;
        assert_eq!(id, 4);
        assert!(waited >= Duration::from_millis(30), "{waited:?}");
        q.push(4, None);
        let (_, _, again) = q.pop_waited().await;
        assert!(
            again < Duration::from_millis(30),
            "a new turn starts a new wait"
        );
    }

    #[tokio::test]
    async fn first_come_first_served_once_with_the_earliest_change() {
        let q = PushQueue::default();
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_millis(5);
        q.push(1, None);
        q.push(2, Some(t1));
        q.push(3, None);
        q.push(2, Some(t0));
        q.push(1, Some(t1));
        assert_eq!(q.len(), 3);
        assert_eq!(q.pop().await, (1, Some(t1)));
        assert_eq!(q.pop().await, (2, Some(t0)));
        assert_eq!(q.pop().await, (3, None));
        assert!(q.is_empty());
        q.push(2, None);
        assert_eq!(q.pop().await, (2, None), "queued again after its turn");
    }

    #[tokio::test]
    async fn pop_waits_for_a_push() {
        let q = std::sync::Arc::new(PushQueue::default());
        let waiter = tokio::spawn({
            let q = q.clone();
            async move { q.pop().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        q.push(7, None);
        let got = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .unwrap();
        assert_eq!(got, (7, None));
    }
}
