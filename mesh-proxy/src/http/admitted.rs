//! An upstream response body that keeps its request counted by the cluster's circuit breakers
//! until the body ends. The count is given back as the last frame is handed on, before the
//! caller can see the end, so a caller's next request never finds its own last one still
//! counted.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::upstream::limits::Admission;

pub struct AdmittedBody {
    inner: Incoming,
    admission: Option<Admission>,
}

impl AdmittedBody {
    pub fn new(inner: Incoming, admission: Admission) -> Self {
        let admission = (!inner.is_end_stream()).then_some(admission);
        Self { inner, admission }
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
        if !matches!(frame, Some(Ok(_))) || this.inner.is_end_stream() {
            this.admission = None;
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
