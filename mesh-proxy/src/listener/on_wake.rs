//! A future polled only after it asked to be. In a `select!` beside a connection, the idle
//! watcher and the drain signal are otherwise polled on every wake of the connection's task
//! (twice or more per request), each poll a timer check and a `Notify` poll, though they are
//! almost never ready. Wrapped, they are polled when one of their own wakers fired.
//!
//! The wrapped future is pinned by the caller (`std::pin::pin!`), so it stays inside the
//! connection's own future: a box per wrap, freed at every park, left freed memory scattered
//! between the parked connections' allocations (about 1 KB per idle connection).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

pub struct OnWake<F> {
    inner: F,
    flag: Arc<Flag>,
    /// Given to `inner`: sets the flag, then wakes the task polling this.
    waker: Waker,
}

struct Flag {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl<F: Future + Unpin> OnWake<F> {
    pub fn new(inner: F) -> Self {
        let flag = Arc::new(Flag {
            // The first poll polls `inner`, which registers its wakers.
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        Self {
            inner,
            waker: Waker::from(flag.clone()),
            flag,
        }
    }
}

impl<F: Future + Unpin> Future for OnWake<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        // Registered before the flag is read: a wake between the two still wakes this task.
        this.flag.task.register(cx.waker());
        if !this.flag.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        Pin::new(&mut this.inner).poll(&mut Context::from_waker(&this.waker))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    #[test]
    fn polled_only_after_its_own_wake_and_ready_then() {
        let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
        let polls = Arc::new(AtomicUsize::new(0));
        let counted = polls.clone();
        let mut signal = OnWake::new(std::future::poll_fn(move |cx| {
            counted.fetch_add(1, Ordering::Relaxed);
            Pin::new(&mut rx).poll(cx)
        }));
        let mut cx = Context::from_waker(Waker::noop());
        // The first poll reaches the receiver; later polls without its wake do not.
        for _ in 0..10 {
            assert!(Pin::new(&mut signal).poll(&mut cx).is_pending());
        }
        assert_eq!(polls.load(Ordering::Relaxed), 1);
        // The sender's wake gets it polled, and it is ready.
        tx.send(()).unwrap();
        assert!(Pin::new(&mut signal).poll(&mut cx).is_ready());
        assert_eq!(polls.load(Ordering::Relaxed), 2);
    }
}
