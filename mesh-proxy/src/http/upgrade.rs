//! HTTP/1.1 `Upgrade` (WebSocket and others): the request goes out on a connection of its
//! own, and after `101 Switching Protocols` bytes are copied both ways until either side closes.

use http::uri::PathAndQuery;
use http::{HeaderValue, Request, Response, StatusCode, Uri, Version, header};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;

use super::body::{DownstreamBody, RequestBody, ResponseBody, UpstreamBody};

use super::local;
use crate::upstream::{Alpn, Target};

/// Sends the upgrade request to an endpoint of `target`; the endpoint counts it in flight for
/// as long as the upgraded stream lasts.
pub async fn forward(
    target: &Target,
    hash: Option<u64>,
    mut req: Request<RequestBody>,
    authority: HeaderValue,
    path_and_query: PathAndQuery,
) -> Response<ResponseBody> {
    if let Some(first_answers) = target.first_answers() {
        Box::pin(first_answers).await;
    }
    let Some(picked) = target.pick(hash, &[]) else {
        return local::no_healthy_upstream(false);
    };
    let endpoint = picked.endpoint();
    let own_transport = endpoint.transport.for_authority(&authority);
    let transport = own_transport.as_ref().unwrap_or(&endpoint.transport);
    let downstream = hyper::upgrade::on(&mut req);
    let io = match target
        .cluster
        .pool
        .connect_own(endpoint.address, transport, Alpn::Http1)
        .await
    {
        Ok(io) => io,
        Err(crate::upstream::connect::ConnectError::Overflow) => return local::overflow(false),
        Err(e) => {
            tracing::debug!(error = %e, "upgrade: upstream connect failed");
            return local::connect_failure(false);
        }
    };
    let (mut sender, conn) = match http1::handshake(TokioIo::new(io)).await {
        Ok(pair) => pair,
        Err(_) => return local::connect_failure(false),
    };
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "upgraded upstream connection ended");
        }
    });

    let (mut parts, body) = req.into_parts();
    parts.uri = Uri::from(path_and_query);
    parts.version = Version::HTTP_11;
    parts.headers.insert(header::HOST, authority);
    let upstream_req =
        Request::from_parts(parts, UpstreamBody::Stream(DownstreamBody::watch(body).0));
    let mut resp = match sender.send_request(upstream_req).await {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade: upstream request failed");
            return local::reset(false);
        }
    };
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let upstream = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            let _in_flight = picked;
            let (Ok(down), Ok(up)) = tokio::join!(downstream, upstream) else {
                return;
            };
            let (mut down, mut up) = (TokioIo::new(down), TokioIo::new(up));
            if let Err(e) = tokio::io::copy_bidirectional(&mut down, &mut up).await {
                tracing::debug!(error = %e, "upgraded stream ended");
            }
        });
    }
    let (parts, body) = resp.into_parts();
    Response::from_parts(parts, ResponseBody::Upstream(body))
}
