//! The discovery protocol on the wire: responses written from shared, already encoded parts
//! (a proxy's config is mostly bytes shared with its scope), requests decoded with prost.
//! Same method path, gRPC framing and message schema as the generated `AggregatedDiscovery`
//! service; only the response bytes are assembled here instead of by prost and tonic's
//! per-stream encode buffer (which would keep a config-sized buffer per proxy).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;
use mesh_proto::discovery::v1::{DiscoveryRequest, ResourceType};
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint};
use tonic::codec::{DecodeBuf, Decoder};
use tonic::server::NamedService;
use tonic::{Status, Streaming};

/// `DiscoveryResponse` field numbers.
const TYPE: u32 = 1;
const VERSION_INFO: u32 = 2;
const NONCE: u32 = 3;
const CONFIG: u32 = 4;
const ENDPOINTS_VERSION: u32 = 6;

/// Largest request accepted from a proxy.
const MAX_REQUEST: usize = 64 << 20;

/// Writes a length-delimited field's key and length.
pub fn put_key_len(tag: u32, len: usize, buf: &mut Vec<u8>) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
}

/// Writes `message` as field `tag`.
pub fn put_message(tag: u32, message: &impl Message, buf: &mut Vec<u8>) {
    put_key_len(tag, message.encoded_len(), buf);
    message.encode(buf).expect("vec grows");
}

/// An encoded `DiscoveryResponse`: its own fields, then parts shared with other responses.
#[derive(Debug, Clone)]
pub struct WireResponse {
    pub kind: ResourceType,
    head: Vec<u8>,
    shared: [Bytes; 2],
}

impl WireResponse {
    /// A CONFIG response carrying the config encoded as `parts` (concatenated).
    pub fn config(
        version: &str,
        nonce: &str,
        endpoints_version: &str,
        parts: (Bytes, Bytes),
    ) -> Self {
        let mut head = Vec::with_capacity(64 + version.len() + endpoints_version.len());
        header(ResourceType::Config, version, nonce, &mut head);
        prost::encoding::string::encode(
            ENDPOINTS_VERSION,
            &endpoints_version.to_string(),
            &mut head,
        );
        put_key_len(CONFIG, parts.0.len() + parts.1.len(), &mut head);
        WireResponse {
            kind: ResourceType::Config,
            head,
            shared: [parts.0, parts.1],
        }
    }

    /// An ENDPOINTS response; `endpoints` holds encoded field 5 entries.
    pub fn endpoints(version: &str, nonce: &str, endpoints: Bytes) -> Self {
        let mut head = Vec::with_capacity(48 + version.len());
        header(ResourceType::Endpoints, version, nonce, &mut head);
        WireResponse {
            kind: ResourceType::Endpoints,
            head,
            shared: [endpoints, Bytes::new()],
        }
    }

    pub fn encoded_len(&self) -> usize {
        self.head.len() + self.shared.iter().map(Bytes::len).sum::<usize>()
    }
}

fn header(kind: ResourceType, version: &str, nonce: &str, buf: &mut Vec<u8>) {
    prost::encoding::int32::encode(TYPE, &(kind as i32), buf);
    for (tag, value) in [(VERSION_INFO, version), (NONCE, nonce)] {
        if !value.is_empty() {
            put_key_len(tag, value.len(), buf);
            buf.extend_from_slice(value.as_bytes());
        }
    }
}

/// Decodes requests as the generated service does.
pub struct RequestDecoder;

impl Decoder for RequestDecoder {
    type Item = DiscoveryRequest;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<DiscoveryRequest>, Status> {
        DiscoveryRequest::decode(src)
            .map(Some)
            .map_err(|e| Status::internal(e.to_string()))
    }
}

pub type ResponseStream = Pin<Box<dyn Stream<Item = Result<WireResponse, Status>> + Send>>;

/// What serves one discovery stream.
pub trait StreamHandler: Send + Sync + 'static {
    fn stream(
        self: Arc<Self>,
        requests: tonic::Request<Streaming<DiscoveryRequest>>,
    ) -> futures_util::future::BoxFuture<'static, Result<tonic::Response<ResponseStream>, Status>>;
}

/// The `mesh.discovery.v1.AggregatedDiscovery` gRPC service.
pub struct DiscoveryServer<H> {
    handler: Arc<H>,
}

impl<H> DiscoveryServer<H> {
    pub fn new(handler: Arc<H>) -> Self {
        Self { handler }
    }
}

impl<H> Clone for DiscoveryServer<H> {
    fn clone(&self) -> Self {
        Self {
            handler: self.handler.clone(),
        }
    }
}

impl<H> NamedService for DiscoveryServer<H> {
    const NAME: &'static str = "mesh.discovery.v1.AggregatedDiscovery";
}

const STREAM_PATH: &str = "/mesh.discovery.v1.AggregatedDiscovery/Stream";

impl<H, B> tonic::codegen::Service<http::Request<B>> for DiscoveryServer<H>
where
    H: StreamHandler,
    B: tonic::codegen::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = futures_util::future::BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != STREAM_PATH {
            return Box::pin(async {
                Ok(Status::unimplemented("unknown discovery method").into_http())
            });
        }
        let handler = self.handler.clone();
        Box::pin(async move {
            let requests =
                Streaming::new_request(RequestDecoder, req.into_body(), None, Some(MAX_REQUEST));
            match handler.stream(tonic::Request::new(requests)).await {
                Ok(response) => {
                    let body = ResponseBody {
                        responses: response.into_inner(),
                        queued: VecDeque::new(),
                        done: false,
                    };
                    let mut http = http::Response::new(tonic::body::Body::new(body));
                    http.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static("application/grpc"),
                    );
                    Ok(http)
                }
                Err(status) => Ok(status.into_http()),
            }
        })
    }
}

/// The response body of a stream, gRPC framed. The shared parts of a response go out as data
/// frames of their own, referencing the shared bytes: nothing is copied per proxy, and an
/// idle stream holds no buffer.
struct ResponseBody {
    responses: ResponseStream,
    queued: VecDeque<Bytes>,
    done: bool,
}

impl hyper::body::Body for ResponseBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Status>>> {
        if let Some(part) = self.queued.pop_front() {
            return Poll::Ready(Some(Ok(hyper::body::Frame::data(part))));
        }
        if self.done {
            return Poll::Ready(None);
        }
        let next = match self.responses.as_mut().poll_next(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(next) => next,
        };
        match next {
            Some(Ok(response)) => {
                let len = u32::try_from(response.encoded_len()).unwrap_or(u32::MAX);
                // gRPC message prefix: not compressed, then the length, big-endian.
                let mut first = Vec::with_capacity(5 + response.head.len());
                first.push(0);
                first.extend_from_slice(&len.to_be_bytes());
                first.extend_from_slice(&response.head);
                self.queued
                    .extend(response.shared.into_iter().filter(|p| !p.is_empty()));
                Poll::Ready(Some(Ok(hyper::body::Frame::data(Bytes::from(first)))))
            }
            Some(Err(status)) => {
                self.done = true;
                Poll::Ready(Some(Ok(hyper::body::Frame::trailers(trailers(&status)))))
            }
            None => {
                self.done = true;
                Poll::Ready(Some(Ok(hyper::body::Frame::trailers(trailers(
                    &Status::ok(""),
                )))))
            }
        }
    }
}

fn trailers(status: &Status) -> http::HeaderMap {
    let mut map = http::HeaderMap::new();
    map.insert("grpc-status", http::HeaderValue::from(status.code() as i32));
    let message: String = status
        .message()
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect();
    if let Ok(value) = http::HeaderValue::from_str(&message)
        && !message.is_empty()
    {
        map.insert("grpc-message", value);
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_proto::config::v1::{Listener, ProxyConfig};
    use mesh_proto::discovery::v1::{ClusterEndpoints, DiscoveryResponse};

    fn flat(r: &WireResponse) -> Vec<u8> {
        let mut out = r.head.clone();
        for p in &r.shared {
            out.extend_from_slice(p);
        }
        out
    }

    #[test]
    fn config_responses_decode_as_prost_writes_them() {
        let config = ProxyConfig {
            version: "v".into(),
            listeners: vec![Listener {
                name: "outbound".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let encoded = config.encode_to_vec();
        let (a, b) = encoded.split_at(5);
        let r = WireResponse::config(
            "v",
            "7",
            "e",
            (Bytes::copy_from_slice(a), Bytes::copy_from_slice(b)),
        );
        let expected = DiscoveryResponse {
            r#type: ResourceType::Config as i32,
            version_info: "v".into(),
            nonce: "7".into(),
            config: Some(config),
            endpoints: Vec::new(),
            endpoints_version: "e".into(),
        };
        let bytes = flat(&r);
        assert_eq!(
            DiscoveryResponse::decode(bytes.as_slice()).unwrap(),
            expected
        );
        assert_eq!(bytes.len(), expected.encoded_len());
        assert_eq!(r.encoded_len(), bytes.len());
    }

    #[test]
    fn endpoints_responses_decode_as_prost_writes_them() {
        let update = ClusterEndpoints {
            cluster: "c".into(),
            endpoints: Vec::new(),
        };
        let mut payload = Vec::new();
        put_message(5, &update, &mut payload);
        let r = WireResponse::endpoints("v2", "8", Bytes::from(payload));
        let decoded = DiscoveryResponse::decode(flat(&r).as_slice()).unwrap();
        assert_eq!(decoded.r#type(), ResourceType::Endpoints);
        assert_eq!(decoded.version_info, "v2");
        assert_eq!(decoded.nonce, "8");
        assert_eq!(decoded.endpoints, vec![update]);
        assert!(decoded.config.is_none());
    }
}
