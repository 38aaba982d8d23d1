//! An upstream response body that keeps its request counted by the cluster's circuit breakers
//! until the body ends, and gives its HTTP/1.1 connection back to the pool then. Both happen
//! as the last frame is handed on, before the caller can see the end, so a caller's next
//! request never finds its own last one still counted, and finds the connection idle.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::upstream::limits::Admission;
use crate::upstream::pool::H1Lease;

pub struct AdmittedBody {
    inner: Incoming,
    admission: Option<Admission>,
    lease: Option<Box<H1Lease>>,
}

impl AdmittedBody {
    pub fn new(inner: Incoming, admission: Admission, lease: Option<Box<H1Lease>>) -> Self {
        let mut body = Self {
            inner,
            admission: Some(admission),
            lease,
        };
        if body.inner.is_end_stream() {
            body.ended();
        }
        body
    }

    fn ended(&mut self) {
        self.admission = None;
        if let Some(lease) = self.lease.take() {
            lease.give_back();
        }
    }
}

impl Body for AdmittedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        match &frame {
            // A failed body leaves its connection unusable: the lease is dropped with it.
            Some(Err(_)) => this.admission = None,
            Some(Ok(_)) if !this.inner.is_end_stream() => {}
            _ => this.ended(),
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
