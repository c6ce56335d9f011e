//! A minimal OTLP/gRPC trace receiver that accepts every export and counts the spans: the
//! collector darklight exports to in the load comparison (`benches/load/compare.sh`).
//!
//! Usage: `otlp_sink LISTEN [COUNT_FILE]`. Once a second, when the count changed, the total
//! number of spans received is written to `COUNT_FILE` (when given).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};

/// Counts the spans of every export.
struct Sink(Arc<AtomicU64>);

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans: usize = request
            .into_inner()
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        self.0.fetch_add(spans as u64, Ordering::Relaxed);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
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
        .add_service(TraceServiceServer::new(Sink(count)))
        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
        .await;
    if let Err(e) = served {
        eprintln!("otlp_sink: {e}");
        std::process::exit(1);
    }
}
