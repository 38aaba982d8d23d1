//! An OTLP trace collector for the benchmark and for looking at traces by hand: accepts
//! `opentelemetry.proto.collector.trace.v1` exports over gRPC on `--addr` and counts the spans;
//! with `--print`, one line per span (trace id, span id, parent, kind, name, status code). On
//! SIGTERM or Ctrl-C it prints `spans=N exports=M` and exits, so a run can check the proxy
//! really exported.

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use clap::Parser;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;

#[derive(Parser)]
struct Args {
    /// Where to listen (loopback).
    #[arg(long, default_value = "127.0.0.1:4317")]
    addr: SocketAddr,
    /// Print every span as it arrives.
    #[arg(long)]
    print: bool,
}

#[derive(Default, Clone)]
struct Sink {
    spans: Arc<AtomicU64>,
    exports: Arc<AtomicU64>,
    print: bool,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans: usize = request
            .get_ref()
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        self.spans.fetch_add(spans as u64, Ordering::Relaxed);
        if self.print {
            for span in request
                .get_ref()
                .resource_spans
                .iter()
                .flat_map(|r| &r.scope_spans)
                .flat_map(|s| &s.spans)
            {
                let status = span.attributes.iter().find(|a| a.key == "http.status_code");
                println!(
                    "trace={} span={} parent={} kind={} name={:?} http.status_code={}",
                    hex(&span.trace_id),
                    hex(&span.span_id),
                    if span.parent_span_id.is_empty() {
                        "-".to_string()
                    } else {
                        hex(&span.parent_span_id)
                    },
                    span.kind,
                    span.name,
                    match status
                        .and_then(|a| a.value.as_ref())
                        .and_then(|v| v.value.as_ref())
                    {
                        Some(Value::IntValue(i)) => i.to_string(),
                        Some(Value::StringValue(s)) => s.clone(),
                        _ => "-".to_string(),
                    }
                );
            }
        }
        self.exports.fetch_add(1, Ordering::Relaxed);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let sink = Sink {
        print: args.print,
        ..Sink::default()
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let stop = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(sink.clone()))
        .serve_with_shutdown(args.addr, stop)
        .await?;
    println!(
        "spans={} exports={}",
        sink.spans.load(Ordering::Relaxed),
        sink.exports.load(Ordering::Relaxed)
    );
    Ok(())
}
