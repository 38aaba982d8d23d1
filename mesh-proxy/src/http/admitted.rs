//! An upstream response body that keeps its request counted by the cluster's circuit breakers
//! until the body ends. The count is released as the last frame is handed on, before the
//! caller can see the end, so a caller's next request never finds its own last one still
//! counted (an HTTP/1.1 body gives its connection back to the pool at that point too).

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::body::BoxError;
use crate::upstream::limits::Admission;
use crate::upstream::pool::Received;

pub struct AdmittedBody {
    inner: Received,
    admission: Option<Admission>,
}

impl AdmittedBody {
    pub fn new(inner: Received, admission: Admission) -> Self {
        let ended = inner.is_end_stream();
        Self {
            inner,
            admission: (!ended).then_some(admission),
        }
    }
}

impl Body for AdmittedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        match &frame {
            Some(Ok(_)) if !this.inner.is_end_stream() => {}
            _ => this.admission = None,
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
