//! One clock read for everything one poll of a connection's task does.
//!
//! A request reads the time when its head arrives, when its response head comes back, when it
//! is recorded and when its connection goes idle: mostly in two polls of the downstream
//! connection's task, microseconds apart. Inside [`scoped`] the first [`now`] of a poll reads
//! the clock and the rest of that poll gets the same instant, as Envoy's dispatcher shares one
//! approximate time per loop iteration; outside it every `now` reads the clock. A poll never
//! waits, so the shared instant is behind the clock by at most the poll's own work.

use std::cell::Cell;
use std::future::{Future, poll_fn};
use std::pin::pin;
use std::time::Duration;

use tokio::time::Instant;

#[derive(Clone, Copy)]
enum PollTime {
    /// Not in a scoped poll: every read is a read.
    Outside,
    /// In a scoped poll that has not read the clock yet.
    Unread,
    /// In a scoped poll that read it at this instant.
    Read(Instant),
}

thread_local! {
    static POLL_TIME: Cell<PollTime> = const { Cell::new(PollTime::Outside) };
}

/// The time: in a [`scoped`] future, the one instant its current poll reads.
pub fn now() -> Instant {
    POLL_TIME.with(|t| match t.get() {
        PollTime::Read(at) => at,
        PollTime::Unread => {
            let at = Instant::now();
            t.set(PollTime::Read(at));
            at
        }
        PollTime::Outside => Instant::now(),
    })
}

/// How long since `earlier`, by [`now`]; zero when `earlier` is later.
pub fn since(earlier: Instant) -> Duration {
    now().saturating_duration_since(earlier)
}

/// Runs `fut` with each of its polls sharing one clock read.
pub async fn scoped<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    poll_fn(|cx| {
        let _restore = Restore(POLL_TIME.replace(PollTime::Unread));
        fut.as_mut().poll(cx)
    })
    .await
}

/// Puts back what the thread had before a scoped poll, also when the poll panics.
struct Restore(PollTime);

impl Drop for Restore {
    fn drop(&mut self) {
        POLL_TIME.set(self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pause() {
        std::thread::sleep(Duration::from_millis(2));
    }

    #[tokio::test]
    async fn outside_a_scope_every_read_is_a_read() {
        let first = now();
        pause();
        assert!(now() > first);
    }

    #[tokio::test]
    async fn a_scoped_poll_reads_once_and_the_next_poll_reads_again() {
        let (first, same, next) = scoped(async {
            let first = now();
            pause();
            let same = now();
            tokio::task::yield_now().await;
            (first, same, now())
        })
        .await;
        assert_eq!(first, same);
        assert!(next > first);
        // The scope ends with its future.
        let after = now();
        pause();
        assert!(now() > after);
    }

    #[tokio::test]
    async fn an_inner_scope_gives_the_outer_its_instant_back() {
        scoped(async {
            let outer = now();
            pause();
            let inner = scoped(async { now() }).await;
            assert!(inner > outer);
            assert_eq!(now(), outer);
        })
        .await;
    }
}
