//! A minimal OTLP/gRPC trace receiver that accepts every export and counts the spans: the
//! collector darklight exports to in the load comparison (`benches/load/compare.sh`).
//!
//! Usage: `otlp_sink LISTEN [COUNT_FILE]`. Once a second, when the count changed, the total
//! number of spans received is written to `COUNT_FILE` (when given).
//!
//! The sink shares its CPU with the load generator and the origin, where a real collector runs
//! on other machines. It therefore counts spans without decoding them: every span is skipped
//! over as a length-delimited field, so a batch costs the sink a small fraction of what decoding
//! its attributes into strings would, and the sink's work does not show in the latency that wrk
//! measures through darklight.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use tonic::codec::CompressionEncoding;
use tonic::codegen::{Body, BoxFuture, Service, StdError, http};
use tonic::server::{Grpc, NamedService, UnaryService};

/// `ExportTraceServiceRequest` read only as deep as the span count needs: the resource, scope
/// and span contents are unknown fields to these messages, which the decoder skips.
#[derive(Clone, PartialEq, prost::Message)]
struct SpanCount {
    #[prost(message, repeated, tag = "1")]
    resource_spans: Vec<ResourceSpanCount>,
}

/// `ResourceSpans`: only its `scope_spans` (field 2).
#[derive(Clone, PartialEq, prost::Message)]
struct ResourceSpanCount {
    #[prost(message, repeated, tag = "2")]
    scope_spans: Vec<ScopeSpanCount>,
}

/// `ScopeSpans`: only its `spans` (field 2), each kept as an empty message.
#[derive(Clone, PartialEq, prost::Message)]
struct ScopeSpanCount {
    #[prost(message, repeated, tag = "2")]
    spans: Vec<SkippedSpan>,
}

/// A span whose fields are all skipped; zero-sized, so a vector of them never allocates.
#[derive(Clone, PartialEq, prost::Message)]
struct SkippedSpan {}

impl SpanCount {
    fn spans(&self) -> u64 {
        let spans: usize = self
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        spans as u64
    }
}

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// The trace service, with its one method, `Export`.
#[derive(Clone)]
struct CountingTraceService(Arc<AtomicU64>);

impl NamedService for CountingTraceService {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}

/// `Export`: adds the request's spans to the count and accepts them all.
struct Export(Arc<AtomicU64>);

impl UnaryService<SpanCount> for Export {
    type Response = ExportTraceServiceResponse;
    type Future = Ready<Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status>>;

    fn call(&mut self, request: tonic::Request<SpanCount>) -> Self::Future {
        self.0
            .fetch_add(request.into_inner().spans(), Ordering::Relaxed);
        ready(Ok(tonic::Response::new(
            ExportTraceServiceResponse::default(),
        )))
    }
}

impl<B> Service<http::Request<B>> for CountingTraceService
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != EXPORT_PATH {
            let status = tonic::Status::unimplemented(request.uri().path().to_owned());
            return Box::pin(ready(Ok(status.into_http())));
        }
        let export = Export(Arc::clone(&self.0));
        Box::pin(async move {
            let codec = tonic_prost::ProstCodec::<ExportTraceServiceResponse, SpanCount>::default();
            let mut grpc = Grpc::new(codec).accept_compressed(CompressionEncoding::Gzip);
            Ok(grpc.unary(export, request).await)
        })
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let Some(listen) = args.next() else {
        eprintln!("usage: otlp_sink LISTEN [COUNT_FILE]");
        std::process::exit(2);
    };
    let count_file = args.next();
    let listener = match tokio::net::TcpListener::bind(&listen).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("otlp_sink: cannot listen on {listen}: {e}");
            std::process::exit(1);
        }
    };
    let count = Arc::new(AtomicU64::new(0));
    if let Some(path) = count_file {
        let count = Arc::clone(&count);
        tokio::spawn(async move {
            let mut written = u64::MAX;
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let now = count.load(Ordering::Relaxed);
                if now != written {
                    let _ = std::fs::write(&path, format!("{now}\n"));
                    written = now;
                }
            }
        });
    }
    let served = tonic::transport::Server::builder()
        .add_service(CountingTraceService(count))
        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
        .await;
    if let Err(e) = served {
        eprintln!("otlp_sink: {e}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use prost::Message;

    use super::SpanCount;

    fn span(name: &str) -> Span {
        Span {
            name: name.to_owned(),
            trace_id: vec![7; 16],
            span_id: vec![9; 8],
            attributes: vec![KeyValue {
                key: "url.path".to_owned(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::StringValue("/articles/a".to_owned())),
                }),
                ..KeyValue::default()
            }],
            ..Span::default()
        }
    }

    fn scope(spans: usize) -> ScopeSpans {
        ScopeSpans {
            spans: (0..spans).map(|i| span(&format!("GET {i}"))).collect(),
            ..ScopeSpans::default()
        }
    }

    #[test]
    fn counts_every_span_of_every_resource_and_scope() {
        let request = ExportTraceServiceRequest {
            resource_spans: vec![
                ResourceSpans {
                    resource: Some(Resource::default()),
                    scope_spans: vec![scope(3), scope(0), scope(2)],
                    ..ResourceSpans::default()
                },
                ResourceSpans {
                    scope_spans: vec![scope(5)],
                    ..ResourceSpans::default()
                },
            ],
        };
        let bytes = request.encode_to_vec();
        let count = SpanCount::decode(bytes.as_slice()).map(|c| c.spans());
        assert_eq!(count, Ok(10));
    }

    #[test]
    fn an_empty_export_counts_nothing() {
        let bytes = ExportTraceServiceRequest::default().encode_to_vec();
        assert_eq!(
            SpanCount::decode(bytes.as_slice()).map(|c| c.spans()),
            Ok(0)
        );
    }

    #[test]
    fn a_truncated_export_is_refused() {
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![scope(2)],
                ..ResourceSpans::default()
            }],
        };
        let bytes = request.encode_to_vec();
        assert!(SpanCount::decode(&bytes[..bytes.len() - 3]).is_err());
    }
}
