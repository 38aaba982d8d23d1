//! Request mirroring (VirtualService `mirror` / `mirrors`, Envoy's request mirror policies):
//! a shadow copy of a request goes to another cluster, fire and forget. The copy's body is
//! fed frame by frame as the original's is read (a refcounted clone of each chunk, never the
//! whole body), through a small bounded queue: a copy that falls behind is cut off instead of
//! slowing the original. The caller never sees the copy's answer or failure; both are counted.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderValue;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use tokio::sync::mpsc;

use super::body::{BoxError, UpstreamBody};
use super::forward::{Outgoing, PEER_METADATA_NAME, upstream_version};
use crate::metrics::Metrics;
use crate::telemetry::trace::TraceHeaders;
use crate::upstream::Target;
use crate::upstream::h1::{Added, AddedValue};
use crate::upstream::pool::Sent;

/// Frames a copy may lag behind the original before it is cut off.
const QUEUE_FRAMES: usize = 16;

/// How one mirrored request ended, the `result` label of `mesh_proxy_mirror_requests_total`.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum MirrorResult {
    /// Answered, by status class.
    Status2xx,
    Status3xx,
    Status4xx,
    Status5xx,
    /// Refused by the cluster's circuit breakers, or no endpoint to send it to.
    Overflow,
    /// Connect failure, reset, timeout, or its body cut off.
    Failed,
}

impl EncodeLabelValue for MirrorResult {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        encoder.write_str(match self {
            Self::Status2xx => "2xx",
            Self::Status3xx => "3xx",
            Self::Status4xx => "4xx",
            Self::Status5xx => "5xx",
            Self::Overflow => "overflow",
            Self::Failed => "failed",
        })
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MirrorLabels {
    pub cluster: String,
    pub result: MirrorResult,
}

/// The authority a shadow copy carries, as Envoy writes it: `-shadow` after the host, before
/// any port (`reviews:9080` becomes `reviews-shadow:9080`).
pub fn shadow_authority(authority: &HeaderValue) -> HeaderValue {
    let a = authority.to_str().unwrap_or_default();
    let (host, port) = match a.rfind(':') {
        // An IPv6 literal's colons are inside brackets.
        Some(i) if !a[i..].contains(']') => a.split_at(i),
        _ => (a, ""),
    };
    HeaderValue::from_str(&format!("{host}-shadow{port}")).unwrap_or_else(|_| authority.clone())
}

/// Whether a mirror with `share_ppm` parts per million takes this request, from the request's
/// roll and the mirror's position (so two mirrors of a route roll independently).
pub fn takes(roll: u64, index: usize, share_ppm: u32) -> bool {
    // splitmix64 of the roll and the index: a well-mixed draw per mirror.
    let mut z = roll.wrapping_add((index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z % 1_000_000) < u64::from(share_ppm)
}

/// The original body's side: offers each frame to every copy still keeping up.
pub struct BodyCopies {
    copies: Vec<(mpsc::Sender<Frame<Bytes>>, Arc<AtomicBool>)>,
}

impl BodyCopies {
    /// Copies for `n` mirrors, with the bodies they send. An original without a body gives
    /// empty bodies and nothing to feed.
    pub fn new(n: usize, original_is_empty: bool) -> (Self, Vec<CopyBody>) {
        let mut copies = Vec::with_capacity(n);
        let mut bodies = Vec::with_capacity(n);
        for _ in 0..n {
            let (tx, rx) = mpsc::channel(QUEUE_FRAMES);
            let complete = Arc::new(AtomicBool::new(original_is_empty));
            bodies.push(CopyBody {
                rx,
                complete: complete.clone(),
            });
            if !original_is_empty {
                copies.push((tx, complete));
            }
        }
        (Self { copies }, bodies)
    }

    /// A frame of the original, as it passes.
    pub fn offer(&mut self, frame: &Frame<Bytes>) {
        self.copies.retain(|(tx, _)| {
            let copy = match (frame.data_ref(), frame.trailers_ref()) {
                (Some(data), _) => Frame::data(data.clone()),
                (None, Some(trailers)) => Frame::trailers(trailers.clone()),
                (None, None) => return true,
            };
            // Full: the copy fell behind and is cut off; closed: it ended on its own.
            tx.try_send(copy).is_ok()
        });
    }

    /// The original's body ended: every copy still fed is complete.
    pub fn finish(&mut self) {
        for (_, complete) in self.copies.drain(..) {
            complete.store(true, Ordering::Release);
        }
    }
}

/// A copy's body: the original's frames as they were read. Ending before the original's end
/// (cut off, or the original failed) is an error, so a copy is never sent short.
pub struct CopyBody {
    rx: mpsc::Receiver<Frame<Bytes>>,
    complete: Arc<AtomicBool>,
}

impl Body for CopyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(frame)) => Poll::Ready(Some(Ok(frame))),
            Poll::Ready(None) if self.complete.load(Ordering::Acquire) => Poll::Ready(None),
            Poll::Ready(None) => Poll::Ready(Some(Err(
                "the mirrored copy fell behind or the original body failed".into(),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.complete.load(Ordering::Acquire) && self.rx.is_closed() && self.rx.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        if self.is_end_stream() {
            SizeHint::with_exact(0)
        } else {
            SizeHint::default()
        }
    }
}

/// Sends one shadow copy and counts how it ended; nothing of it reaches the caller.
pub async fn send_copy(
    metrics: Arc<Metrics>,
    target: Target,
    mut out: Outgoing,
    body: CopyBody,
    timeout: Option<Duration>,
    trace: Option<TraceHeaders>,
) {
    let cluster = target.cluster.clone();
    let trace = trace.as_ref();
    let result = match timeout {
        Some(t) => tokio::time::timeout(t, send(&metrics, &target, &mut out, body, trace))
            .await
            .unwrap_or(MirrorResult::Failed),
        None => send(&metrics, &target, &mut out, body, trace).await,
    };
    metrics
        .mirror_requests
        .get_or_create(&MirrorLabels {
            cluster: cluster.name.clone(),
            result,
        })
        .inc();
}

async fn send(
    metrics: &Metrics,
    target: &Target,
    out: &mut Outgoing,
    body: CopyBody,
    trace: Option<&TraceHeaders>,
) -> MirrorResult {
    let cluster = &target.cluster;
    let version = upstream_version(cluster.protocol, out.downstream_version);
    let Ok(mut admission) = cluster
        .pool
        .limits()
        .admit(version != http::Version::HTTP_2)
        .await
    else {
        return MirrorResult::Overflow;
    };
    let Some(picked) = target.pick(None, &[]) else {
        return MirrorResult::Overflow;
    };
    let endpoint = picked.endpoint();
    let peer_metadata = metrics.istio.announcement(&endpoint.transport);
    let sent = match version {
        http::Version::HTTP_2 => {
            let headers = std::mem::take(&mut out.headers);
            let req = out.h2_request(headers, peer_metadata, trace, UpstreamBody::Copy(body));
            cluster
                .pool
                .send_h2(endpoint.address, &endpoint.transport, req, &mut admission)
                .await
        }
        _ => {
            let added = peer_metadata.as_ref().map(|v| Added {
                name: &PEER_METADATA_NAME,
                value: AddedValue::Value(v),
            });
            let head = out.h1_head(added.as_slice(), trace);
            cluster
                .pool
                .send_h1(
                    endpoint.address,
                    &endpoint.transport,
                    &head,
                    UpstreamBody::Copy(body),
                )
                .await
        }
    };
    let Ok(Sent { response }) = sent else {
        return MirrorResult::Failed;
    };
    let status = response.status().as_u16();
    // Read to the end, so the connection goes back to the pool.
    if response.into_body().collect().await.is_err() {
        return MirrorResult::Failed;
    }
    match status {
        200..=299 => MirrorResult::Status2xx,
        300..=399 => MirrorResult::Status3xx,
        400..=499 => MirrorResult::Status4xx,
        _ => MirrorResult::Status5xx,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shadow_authorities_are_envoys() {
        let shadow = |a: &'static str| shadow_authority(&HeaderValue::from_static(a));
        assert_eq!(shadow("reviews:9080"), "reviews-shadow:9080");
        assert_eq!(shadow("reviews"), "reviews-shadow");
        assert_eq!(shadow("[::1]:80"), "[::1]-shadow:80");
        assert_eq!(shadow("[::1]"), "[::1]-shadow");
    }

    #[test]
    fn shares_hold_over_many_rolls_and_mirrors_roll_apart() {
        let n = 100_000u64;
        let first = (0..n).filter(|r| takes(*r, 0, 250_000)).count() as f64 / n as f64;
        assert!((first - 0.25).abs() < 0.01, "{first}");
        assert!((0..n).all(|r| takes(r, 0, 1_000_000)));
        assert!(!(0..n).any(|r| takes(r, 0, 0)));
        let both = (0..n)
            .filter(|r| takes(*r, 0, 500_000) && takes(*r, 1, 500_000))
            .count() as f64
            / n as f64;
        assert!((both - 0.25).abs() < 0.01, "independent draws: {both}");
    }

    #[tokio::test]
    async fn copies_get_every_frame_and_end_with_the_original() {
        let (mut copies, mut bodies) = BodyCopies::new(2, false);
        copies.offer(&Frame::data(Bytes::from_static(b"ab")));
        copies.offer(&Frame::data(Bytes::from_static(b"cd")));
        copies.finish();
        for body in bodies.drain(..) {
            let got = body.collect().await.unwrap().to_bytes();
            assert_eq!(got, "abcd");
        }
    }

    #[tokio::test]
    async fn a_copy_that_falls_behind_is_cut_off_not_waited_for() {
        let (mut copies, mut bodies) = BodyCopies::new(1, false);
        for _ in 0..QUEUE_FRAMES + 1 {
            copies.offer(&Frame::data(Bytes::from_static(b"x")));
        }
        copies.finish();
        let body = bodies.pop().unwrap();
        assert!(body.collect().await.is_err(), "never sent short");
    }

    #[tokio::test]
    async fn an_original_without_body_gives_empty_copies() {
        let (_copies, bodies) = BodyCopies::new(1, true);
        assert!(bodies[0].is_end_stream());
    }

    #[tokio::test]
    async fn an_original_that_fails_fails_its_copies() {
        let (copies, mut bodies) = BodyCopies::new(1, false);
        drop(copies);
        assert!(bodies.pop().unwrap().collect().await.is_err());
    }
}
