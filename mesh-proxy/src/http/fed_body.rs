//! A request body its connection reads for it: the HTTP/1.1 codec (`listener::h1`) reads the
//! body's bytes from the socket when, and only when, whoever sends the request on asks for
//! them (the request's own task, or an HTTP/2 connection's), so a body nobody reads is never
//! buffered, and the client is slowed by TCP as the upstream is.

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use http_body::{Body, Frame, SizeHint};

use super::body::BoxError;

/// The reading end, a request's body.
#[derive(Debug)]
pub struct FedBody {
    shared: Arc<Shared>,
}

/// The feeding end, kept by the connection.
#[derive(Debug, Clone)]
pub struct Feeder {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// The body's reader, woken when a chunk is there or the body failed.
    reader: AtomicWaker,
    /// The connection, woken when the reader wants a chunk.
    connection: AtomicWaker,
}

#[derive(Debug)]
struct State {
    /// Handed over, not yet taken by the reader.
    chunk: Option<Bytes>,
    /// Bytes of the body still to come from the client.
    remaining: u64,
    /// The reader is waiting for a chunk.
    wanted: bool,
    /// The client closed before the body's end.
    failed: bool,
}

/// A body of `len` bytes (more than 0) and the connection's end of it.
pub fn fed(len: u64) -> (FedBody, Feeder) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            chunk: None,
            remaining: len,
            wanted: false,
            failed: false,
        }),
        reader: AtomicWaker::new(),
        connection: AtomicWaker::new(),
    });
    (
        FedBody {
            shared: shared.clone(),
        },
        Feeder { shared },
    )
}

/// What the connection is asked for.
#[derive(Debug, PartialEq, Eq)]
pub enum Wants {
    /// Up to this many bytes.
    Bytes(u64),
    /// Nothing now: the reader has not asked, or holds a chunk it has not taken.
    Nothing,
    /// Nothing ever again: the whole body was handed over, or it failed.
    Done,
}

impl Feeder {
    /// What the reader wants; the connection is woken when that changes.
    pub fn wants(&self, cx: &mut Context<'_>) -> Wants {
        self.shared.connection.register(cx.waker());
        let state = self.shared.state.lock().expect("body lock");
        if state.remaining == 0 || state.failed {
            Wants::Done
        } else if state.wanted && state.chunk.is_none() {
            Wants::Bytes(state.remaining)
        } else {
            Wants::Nothing
        }
    }

    /// Hands the reader the next bytes of the body (no more than it [`Wants`]).
    pub fn give(&self, chunk: Bytes) {
        let mut state = self.shared.state.lock().expect("body lock");
        state.remaining = state.remaining.saturating_sub(chunk.len() as u64);
        state.chunk = Some(chunk);
        state.wanted = false;
        drop(state);
        self.shared.reader.wake();
    }

    /// The client closed before the body's end.
    pub fn fail(&self) {
        self.shared.state.lock().expect("body lock").failed = true;
        self.shared.reader.wake();
    }

    /// Whether the client sent the whole body (it was all handed over).
    pub fn is_complete(&self) -> bool {
        self.shared.state.lock().expect("body lock").remaining == 0
    }
}

impl Body for FedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let shared = &self.shared;
        let mut state = shared.state.lock().expect("body lock");
        if let Some(chunk) = state.chunk.take() {
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if state.failed {
            return Poll::Ready(Some(Err("client closed before the end of the body".into())));
        }
        if state.remaining == 0 {
            return Poll::Ready(None);
        }
        shared.reader.register(cx.waker());
        state.wanted = true;
        drop(state);
        shared.connection.wake();
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        let state = self.shared.state.lock().expect("body lock");
        state.remaining == 0 && state.chunk.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        let state = self.shared.state.lock().expect("body lock");
        let held = state.chunk.as_ref().map_or(0, |c| c.len() as u64);
        SizeHint::with_exact(state.remaining + held)
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::task::Waker;

    use super::*;

    fn poll(body: &mut FedBody) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(body).poll_frame(&mut Context::from_waker(Waker::noop()))
    }

    fn wants(feeder: &Feeder) -> Wants {
        feeder.wants(&mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn bytes_are_read_only_when_asked_for() {
        let (mut body, feeder) = fed(5);
        assert_eq!(body.size_hint().exact(), Some(5));
        assert_eq!(wants(&feeder), Wants::Nothing, "nobody asked yet");
        assert!(poll(&mut body).is_pending());
        assert_eq!(wants(&feeder), Wants::Bytes(5));
        feeder.give(Bytes::from_static(b"hel"));
        assert_eq!(wants(&feeder), Wants::Nothing, "the chunk is not taken yet");
        let Poll::Ready(Some(Ok(frame))) = poll(&mut body) else {
            panic!("a chunk")
        };
        assert_eq!(frame.into_data().unwrap(), "hel");
        assert!(poll(&mut body).is_pending());
        assert_eq!(wants(&feeder), Wants::Bytes(2));
        feeder.give(Bytes::from_static(b"lo"));
        assert_eq!(wants(&feeder), Wants::Done);
        assert!(feeder.is_complete());
        assert!(matches!(poll(&mut body), Poll::Ready(Some(Ok(_)))));
        assert!(body.is_end_stream());
        assert!(matches!(poll(&mut body), Poll::Ready(None)));
    }

    #[test]
    fn a_client_closing_early_fails_the_body() {
        let (mut body, feeder) = fed(5);
        assert!(poll(&mut body).is_pending());
        feeder.fail();
        assert!(matches!(poll(&mut body), Poll::Ready(Some(Err(_)))));
        assert_eq!(wants(&feeder), Wants::Done);
        assert!(!feeder.is_complete());
    }
}
