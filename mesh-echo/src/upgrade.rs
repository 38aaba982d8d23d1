//! HTTP/1.1 `Upgrade`: switch protocols and echo raw bytes, to test that a proxy passes
//! upgraded connections (WebSocket and others) through untouched.

use http::{Request, Response, StatusCode, Version, header};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::EchoConfig;
use crate::body::{self, BoxError, ResponseBody};
use crate::echo::identity_headers;

/// Upgrade exists only in HTTP/1.1; HTTP/2 forbids the header.
pub fn is_upgrade<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_11 && req.headers().contains_key(header::UPGRADE)
}

/// Answers 101 with the requested protocol and echoes the upgraded bytes until EOF.
pub fn accept(
    mut req: Request<Incoming>,
    cfg: &EchoConfig,
    shutdown: CancellationToken,
) -> Result<Response<ResponseBody>, BoxError> {
    let protocol = req.headers()[header::UPGRADE].clone();
    let upgraded = hyper::upgrade::on(&mut req);
    tokio::spawn(shutdown.run_until_cancelled_owned(async move {
        match upgraded.await {
            Ok(io) => {
                if let Err(err) = echo_bytes(TokioIo::new(io)).await {
                    tracing::debug!(%err, "upgraded echo ended");
                }
            }
            Err(err) => tracing::debug!(%err, "upgrade failed"),
        }
    }));
    let builder = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::UPGRADE, protocol)
        .header(header::CONNECTION, "upgrade");
    Ok(identity_headers(builder, cfg).body(body::empty())?)
}

async fn echo_bytes<T: AsyncRead + AsyncWrite>(io: T) -> std::io::Result<()> {
    let (mut rd, mut wr) = tokio::io::split(io);
    tokio::io::copy(&mut rd, &mut wr).await?;
    // Half-close, so the client sees EOF after the last echoed byte.
    wr.shutdown().await
}
