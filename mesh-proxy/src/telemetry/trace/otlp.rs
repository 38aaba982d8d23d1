//! OTLP's trace messages written straight into protobuf bytes
//! (`opentelemetry/proto/trace/v1/trace.proto` and the collector's `ExportTraceServiceRequest`).
//! A span is encoded once, when it ends, into the bytes that travel; a batch is those bytes
//! placed inside one resource and one scope. No span type in between, no copy of its
//! attributes, no conversion at export.

use bytes::Bytes;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};

/// `Span`'s fields.
pub mod span {
    pub const TRACE_ID: u32 = 1;
    pub const SPAN_ID: u32 = 2;
    pub const PARENT_SPAN_ID: u32 = 4;
    pub const NAME: u32 = 5;
    pub const KIND: u32 = 6;
    pub const START_TIME_UNIX_NANO: u32 = 7;
    pub const END_TIME_UNIX_NANO: u32 = 8;
    pub const ATTRIBUTES: u32 = 9;
    pub const STATUS: u32 = 15;
    pub const FLAGS: u32 = 16;

    /// `Span.SpanKind`.
    pub const KIND_SERVER: u64 = 2;
    pub const KIND_CLIENT: u64 = 3;

    /// `SpanFlags`: the low byte is the W3C trace flags; these say whether the parent is remote.
    pub const FLAGS_CONTEXT_HAS_IS_REMOTE: u32 = 0x100;
    pub const FLAGS_CONTEXT_IS_REMOTE: u32 = 0x200;
}

/// `Status`'s field and its error code.
pub mod status {
    pub const CODE: u32 = 3;
    pub const CODE_ERROR: u64 = 2;
}

/// `Resource.attributes`.
pub const RESOURCE_ATTRIBUTES: u32 = 1;

/// `InstrumentationScope`'s fields.
pub mod scope {
    pub const NAME: u32 = 1;
    pub const VERSION: u32 = 2;
}

/// The nesting of a batch: request > resource spans > (resource, scope spans > (scope, spans)).
const REQUEST_RESOURCE_SPANS: u32 = 1;
const RESOURCE_SPANS_RESOURCE: u32 = 1;
const RESOURCE_SPANS_SCOPE_SPANS: u32 = 2;
const SCOPE_SPANS_SCOPE: u32 = 1;
const SCOPE_SPANS_SPANS: u32 = 2;

/// `KeyValue` and `AnyValue`'s fields.
const KEY_VALUE_KEY: u32 = 1;
const KEY_VALUE_VALUE: u32 = 2;
const ANY_STRING: u32 = 1;
const ANY_BOOL: u32 = 2;
const ANY_INT: u32 = 3;

/// An attribute's value, as OTLP's `AnyValue` carries it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    Str(&'a str),
    Int(i64),
    Bool(bool),
}

/// One protobuf message being written: its fields, in the order they are added.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Message(Vec<u8>);

impl Message {
    pub fn with_capacity(bytes: usize) -> Self {
        Self(Vec::with_capacity(bytes))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn bytes(&mut self, field: u32, value: &[u8]) {
        self.len_prefix(field, value.len());
        self.0.extend_from_slice(value);
    }

    pub fn string(&mut self, field: u32, value: &str) {
        self.bytes(field, value.as_bytes());
    }

    /// A varint field: an enum, an unsigned or a two's-complement `int64`.
    pub fn uint(&mut self, field: u32, value: u64) {
        encode_key(field, WireType::Varint, &mut self.0);
        encode_varint(value, &mut self.0);
    }

    pub fn fixed64(&mut self, field: u32, value: u64) {
        encode_key(field, WireType::SixtyFourBit, &mut self.0);
        self.0.extend_from_slice(&value.to_le_bytes());
    }

    pub fn fixed32(&mut self, field: u32, value: u32) {
        encode_key(field, WireType::ThirtyTwoBit, &mut self.0);
        self.0.extend_from_slice(&value.to_le_bytes());
    }

    /// A message field holding `inner`.
    pub fn message(&mut self, field: u32, inner: &Message) {
        self.bytes(field, &inner.0);
    }

    /// Appends fields written elsewhere (attributes encoded once, repeated on every span).
    pub fn extend(&mut self, fields: &Message) {
        self.0.extend_from_slice(&fields.0);
    }

    /// A `KeyValue` in the repeated field `field`, written without building its parts apart:
    /// the lengths are known from the key and the value.
    pub fn attribute(&mut self, field: u32, key: &str, value: Value<'_>) {
        let any_len = match value {
            Value::Str(s) => field_len(ANY_STRING, s.len()),
            Value::Int(i) => key_len(ANY_INT) + encoded_len_varint(i as u64),
            Value::Bool(_) => key_len(ANY_BOOL) + 1,
        };
        self.len_prefix(
            field,
            field_len(KEY_VALUE_KEY, key.len()) + field_len(KEY_VALUE_VALUE, any_len),
        );
        self.string(KEY_VALUE_KEY, key);
        self.len_prefix(KEY_VALUE_VALUE, any_len);
        match value {
            Value::Str(s) => self.string(ANY_STRING, s),
            Value::Int(i) => self.uint(ANY_INT, i as u64),
            Value::Bool(b) => self.uint(ANY_BOOL, u64::from(b)),
        }
    }

    /// The key and length of a length-delimited field whose `len` bytes follow.
    fn len_prefix(&mut self, field: u32, len: usize) {
        encode_key(field, WireType::LengthDelimited, &mut self.0);
        encode_varint(len as u64, &mut self.0);
    }
}

/// `ExportTraceServiceRequest` of one resource and one scope holding `spans` (each an encoded
/// `Span`). Lengths are summed first so every span's bytes are copied once.
pub fn export_request(resource: &Message, scope: &Message, spans: &[Message]) -> Bytes {
    let scope_spans = field_len(SCOPE_SPANS_SCOPE, scope.len())
        + spans
            .iter()
            .map(|s| field_len(SCOPE_SPANS_SPANS, s.len()))
            .sum::<usize>();
    let resource_spans = field_len(RESOURCE_SPANS_RESOURCE, resource.len())
        + field_len(RESOURCE_SPANS_SCOPE_SPANS, scope_spans);
    let mut out = Message::with_capacity(field_len(REQUEST_RESOURCE_SPANS, resource_spans));
    out.len_prefix(REQUEST_RESOURCE_SPANS, resource_spans);
    out.message(RESOURCE_SPANS_RESOURCE, resource);
    out.len_prefix(RESOURCE_SPANS_SCOPE_SPANS, scope_spans);
    out.message(SCOPE_SPANS_SCOPE, scope);
    for span in spans {
        out.message(SCOPE_SPANS_SPANS, span);
    }
    Bytes::from(out.0)
}

/// Bytes of a length-delimited field `field` of `len` bytes: key, length, content.
fn field_len(field: u32, len: usize) -> usize {
    key_len(field) + encoded_len_varint(len as u64) + len
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
    use prost::Message as _;

    fn decoded(kv: &KeyValue) -> (String, Option<Any>) {
        (
            kv.key.clone(),
            kv.value.as_ref().and_then(|v: &AnyValue| v.value.clone()),
        )
    }

    #[test]
    fn field_lengths_match_the_bytes_written() {
        for field in [1, 9, 15, 16, 2047] {
            for len in [0, 1, 127, 128, 16_383, 16_384] {
                let mut m = Message::default();
                m.bytes(field, &vec![0; len]);
                assert_eq!(m.len(), field_len(field, len), "field {field}, {len} bytes");
            }
        }
    }

    /// The collector's own generated types read what is written here: every value kind,
    /// negative and long values, and spans of lengths that need multi-byte varints.
    #[test]
    fn the_collectors_types_decode_a_written_batch() {
        let mut resource = Message::default();
        resource.attribute(
            RESOURCE_ATTRIBUTES,
            "service.name",
            Value::Str("reviews.default"),
        );
        let mut scope_msg = Message::default();
        scope_msg.string(scope::NAME, "mesh-proxy");
        scope_msg.string(scope::VERSION, "1.2.3");

        let long = "x".repeat(300);
        let mut first = Message::default();
        first.bytes(span::TRACE_ID, &[7; 16]);
        first.bytes(span::SPAN_ID, &[8; 8]);
        first.bytes(span::PARENT_SPAN_ID, &[9; 8]);
        first.string(span::NAME, "reviews:9080/*");
        first.uint(span::KIND, span::KIND_SERVER);
        first.fixed64(span::START_TIME_UNIX_NANO, 1_000);
        first.fixed64(span::END_TIME_UNIX_NANO, 2_000);
        first.attribute(span::ATTRIBUTES, "http.url", Value::Str(&long));
        first.attribute(span::ATTRIBUTES, "request_size", Value::Int(-5));
        first.attribute(span::ATTRIBUTES, "response_size", Value::Int(i64::MAX));
        first.attribute(span::ATTRIBUTES, "error", Value::Bool(true));
        first.attribute(span::ATTRIBUTES, "zero", Value::Int(0));
        first.attribute(span::ATTRIBUTES, "off", Value::Bool(false));
        let mut status_msg = Message::default();
        status_msg.uint(status::CODE, status::CODE_ERROR);
        first.message(span::STATUS, &status_msg);
        first.fixed32(
            span::FLAGS,
            1 | span::FLAGS_CONTEXT_HAS_IS_REMOTE | span::FLAGS_CONTEXT_IS_REMOTE,
        );
        let mut second = Message::default();
        second.string(span::NAME, "second");
        second.uint(span::KIND, span::KIND_CLIENT);

        let bytes = export_request(&resource, &scope_msg, &[first, second]);
        let request = ExportTraceServiceRequest::decode(bytes).unwrap();
        assert_eq!(request.resource_spans.len(), 1);
        let rs = &request.resource_spans[0];
        let attrs: Vec<_> = rs
            .resource
            .as_ref()
            .unwrap()
            .attributes
            .iter()
            .map(decoded)
            .collect();
        assert_eq!(
            attrs,
            [(
                "service.name".into(),
                Some(Any::StringValue("reviews.default".into()))
            )]
        );
        assert_eq!(rs.scope_spans.len(), 1);
        let ss = &rs.scope_spans[0];
        let scope = ss.scope.as_ref().unwrap();
        assert_eq!(
            (scope.name.as_str(), scope.version.as_str()),
            ("mesh-proxy", "1.2.3")
        );
        assert_eq!(ss.spans.len(), 2);
        let s = &ss.spans[0];
        assert_eq!(s.trace_id, [7; 16]);
        assert_eq!(s.span_id, [8; 8]);
        assert_eq!(s.parent_span_id, [9; 8]);
        assert_eq!(s.name, "reviews:9080/*");
        assert_eq!(s.kind, 2);
        assert_eq!(
            (s.start_time_unix_nano, s.end_time_unix_nano),
            (1_000, 2_000)
        );
        assert_eq!(s.flags, 0x301);
        assert_eq!(s.status.as_ref().unwrap().code, 2);
        let attrs: Vec<_> = s.attributes.iter().map(decoded).collect();
        assert_eq!(
            attrs,
            [
                ("http.url".into(), Some(Any::StringValue(long))),
                ("request_size".into(), Some(Any::IntValue(-5))),
                ("response_size".into(), Some(Any::IntValue(i64::MAX))),
                ("error".into(), Some(Any::BoolValue(true))),
                ("zero".into(), Some(Any::IntValue(0))),
                ("off".into(), Some(Any::BoolValue(false))),
            ]
        );
        assert_eq!((ss.spans[1].name.as_str(), ss.spans[1].kind), ("second", 3));
    }

    #[test]
    fn an_empty_batch_is_still_one_resource_and_scope() {
        let bytes = export_request(&Message::default(), &Message::default(), &[]);
        let request = ExportTraceServiceRequest::decode(bytes).unwrap();
        assert_eq!(request.resource_spans.len(), 1);
        assert!(request.resource_spans[0].scope_spans[0].spans.is_empty());
    }
}
