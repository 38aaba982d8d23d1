//! Response body type shared by the JSON, upgrade and gRPC handlers, and request body reading.

use bytes::{Bytes, BytesMut};
use http_body::Body;
use http_body_util::{BodyExt, Empty, Full, combinators::UnsyncBoxBody};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One body type for every handler, so a single service can serve JSON and gRPC.
pub type ResponseBody = UnsyncBoxBody<Bytes, BoxError>;

pub fn full(bytes: impl Into<Bytes>) -> ResponseBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub fn empty() -> ResponseBody {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// The first `cap` bytes of a body and its total length.
///
/// The rest is counted and dropped, so large uploads in benchmarks cost no memory.
pub async fn read_capped<B>(mut body: B, cap: usize) -> Result<(Bytes, u64), B::Error>
where
    B: Body<Data = Bytes> + Unpin,
{
    let mut kept = BytesMut::new();
    let mut total = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            total += data.len() as u64;
            let room = cap.saturating_sub(kept.len());
            kept.extend_from_slice(&data[..room.min(data.len())]);
        }
    }
    Ok((kept.freeze(), total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::StreamBody;

    #[tokio::test]
    async fn keeps_prefix_and_counts_all() {
        let chunks = ["hello ", "world", "!!"]
            .map(|c| Ok::<_, std::convert::Infallible>(http_body::Frame::data(Bytes::from(c))));
        let body = StreamBody::new(futures_util::stream::iter(chunks));
        let (kept, total) = read_capped(body, 8).await.unwrap();
        assert_eq!(&kept[..], b"hello wo");
        assert_eq!(total, 13);
    }
}
