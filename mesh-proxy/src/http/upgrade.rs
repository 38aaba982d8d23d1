//! HTTP/1.1 `Upgrade` (WebSocket and others): the request goes out on a connection of its
//! own, and after `101 Switching Protocols` bytes are copied both ways until either side closes.

use std::net::SocketAddr;

use http::uri::PathAndQuery;
use http::{HeaderValue, Request, Response, StatusCode, Uri, Version, header};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;

use super::body::{ResponseBody, UpstreamBody};
use super::local;
use crate::upstream::{Alpn, Cluster, Pool, Transport};

pub async fn forward(
    cluster: &Cluster,
    subset: &str,
    hash: Option<u64>,
    req: Request<Incoming>,
    authority: HeaderValue,
    path_and_query: PathAndQuery,
) -> Response<ResponseBody> {
    let Some(endpoint) = cluster
        .balancer(subset)
        .and_then(|b| b.pick(hash, &[]).map(|i| b.endpoints()[i].clone()))
    else {
        return local::no_healthy_upstream(false);
    };
    forward_over(
        &cluster.pool,
        endpoint.address,
        &endpoint.transport,
        req,
        authority,
        path_and_query,
    )
    .await
}

/// To an original destination, in plaintext.
pub async fn forward_to(
    pool: &Pool,
    addr: SocketAddr,
    req: Request<Incoming>,
    authority: HeaderValue,
    path_and_query: PathAndQuery,
) -> Response<ResponseBody> {
    forward_over(
        pool,
        addr,
        &Transport::Plain,
        req,
        authority,
        path_and_query,
    )
    .await
}

async fn forward_over(
    pool: &Pool,
    addr: SocketAddr,
    transport: &Transport,
    mut req: Request<Incoming>,
    authority: HeaderValue,
    path_and_query: PathAndQuery,
) -> Response<ResponseBody> {
    let downstream = hyper::upgrade::on(&mut req);
    let io = match pool.connect_with(addr, transport, Alpn::Http1).await {
        Ok(io) => io,
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
    let upstream_req = Request::from_parts(parts, UpstreamBody::Stream(body));
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
