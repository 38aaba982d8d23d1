//! The gRPC side of the echo: the `mesh.echo.v1.Echo` service.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::{Stream, StreamExt};
use mesh_proto::echo::v1::echo_server::{Echo, EchoServer};
use mesh_proto::echo::v1::{EchoRequest, EchoResponse};
use tonic::metadata::MetadataMap;
use tonic::{Code, Request, Response, Status, Streaming};

use crate::EchoConfig;
use crate::body::{self, ResponseBody};
use crate::echo::identity_headers;
use crate::{headers, route};

/// Request header that makes any method fail with the given gRPC status code, so proxy tests
/// can exercise `retryOn: unavailable` and friends.
pub const STATUS_OVERRIDE_HEADER: &str = "x-echo-grpc-status";

type ResponseStream = Pin<Box<dyn Stream<Item = Result<EchoResponse, Status>> + Send>>;

/// The tower service tonic generates around [`EchoGrpc`].
pub fn service(cfg: Arc<EchoConfig>) -> EchoServer<EchoGrpc> {
    EchoServer::new(EchoGrpc { cfg })
}

/// Implements the echo methods; every response carries the replica identity.
#[derive(Debug, Clone)]
pub struct EchoGrpc {
    cfg: Arc<EchoConfig>,
}

impl EchoGrpc {
    fn response(&self, message: String, metadata: &Metadata) -> EchoResponse {
        EchoResponse {
            message,
            name: self.cfg.name.clone(),
            version: self.cfg.version.clone(),
            metadata: metadata.clone(),
        }
    }
}

/// Request metadata as reported back; flattened once per call, not once per streamed message.
type Metadata = BTreeMap<String, String>;

fn flatten(metadata: &MetadataMap) -> Metadata {
    headers::flatten(&metadata.clone().into_headers())
        .into_iter()
        .collect()
}

/// gRPC shares the port with plain HTTP; the content type tells them apart.
pub fn is_grpc<B>(req: &http::Request<B>) -> bool {
    req.headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|ct| ct.as_bytes().starts_with(b"application/grpc"))
}

/// A broken replica's answer to a gRPC call: the HTTP status alone.
///
/// No body and no `grpc-status`, so clients map the HTTP status the way the gRPC spec says
/// (503 is UNAVAILABLE) instead of failing to decode a JSON body as gRPC frames.
pub fn broken(code: u16, cfg: &EchoConfig) -> http::Response<ResponseBody> {
    let status = route::status(route::Action::Echo, Some(code));
    let builder = identity_headers(http::Response::builder().status(status), cfg);
    builder.body(body::empty()).unwrap_or_else(|_| {
        // Only an invalid identity header could get here; the status still matters most.
        let mut res = http::Response::new(body::empty());
        *res.status_mut() = status;
        res
    })
}

/// The status asked for by `x-echo-grpc-status`, if any (0 or garbage means none).
fn requested_failure(metadata: &MetadataMap) -> Result<(), Status> {
    let code = metadata
        .get(STATUS_OVERRIDE_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i32>().ok())
        .unwrap_or(0);
    match code {
        0 => Ok(()),
        code => Err(Status::new(
            Code::from_i32(code),
            format!("{STATUS_OVERRIDE_HEADER} requested status {code}"),
        )),
    }
}

#[tonic::async_trait]
impl Echo for EchoGrpc {
    async fn unary(&self, req: Request<EchoRequest>) -> Result<Response<EchoResponse>, Status> {
        requested_failure(req.metadata())?;
        let reply = self.response(req.get_ref().message.clone(), &flatten(req.metadata()));
        Ok(Response::new(reply))
    }

    type ServerStreamStream = ResponseStream;

    async fn server_stream(
        &self,
        req: Request<EchoRequest>,
    ) -> Result<Response<ResponseStream>, Status> {
        requested_failure(req.metadata())?;
        let reply = self.response(req.get_ref().message.clone(), &flatten(req.metadata()));
        let count = req.get_ref().count;
        // A lazy stream: responses are produced as the client reads them (flow control applies).
        let stream = futures_util::stream::repeat(reply)
            .take(count as usize)
            .map(Ok);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn client_stream(
        &self,
        req: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<EchoResponse>, Status> {
        requested_failure(req.metadata())?;
        let metadata = flatten(req.metadata());
        let mut inbound = req.into_inner();
        let mut message = String::new();
        while let Some(item) = inbound.message().await? {
            message.push_str(&item.message);
        }
        Ok(Response::new(self.response(message, &metadata)))
    }

    type BidiStreamStream = ResponseStream;

    async fn bidi_stream(
        &self,
        req: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<ResponseStream>, Status> {
        requested_failure(req.metadata())?;
        let metadata = flatten(req.metadata());
        let this = self.clone();
        // Each message is answered as it arrives: nothing is buffered, so a test can interleave
        // sends and receives through a proxy.
        let stream = req
            .into_inner()
            .map(move |item| item.map(|m| this.response(m.message, &metadata)));
        Ok(Response::new(Box::pin(stream)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(value: &str) -> MetadataMap {
        let mut m = MetadataMap::new();
        m.insert(STATUS_OVERRIDE_HEADER, value.parse().unwrap());
        m
    }

    #[test]
    fn status_override() {
        assert!(requested_failure(&MetadataMap::new()).is_ok());
        assert!(requested_failure(&metadata("0")).is_ok());
        assert!(requested_failure(&metadata("junk")).is_ok());
        let err = requested_failure(&metadata("14")).unwrap_err();
        assert_eq!(err.code(), Code::Unavailable);
        assert!(err.message().contains("14"));
    }
}
