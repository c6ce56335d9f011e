//! The export pipeline behind the tracer: a bounded queue in front of the SDK's batch
//! processor, and exporters that run on telemetry's own runtime with a time limit.
//!
//! A request only ever does a non-blocking enqueue: when the queue is full the span is dropped
//! and counted ([`ExportStats`]). Exports run on a dedicated background thread (the SDK's batch
//! processor), which hands the network work to a one-thread tokio runtime owned by telemetry, so
//! a slow or absent collector never touches Pingora's runtimes. While the queue is nearly empty,
//! the OTLP exporter yields that runtime's thread between slices of a batch ([`Pacing`]), so
//! requests sharing its CPU do not wait for a whole batch.

use std::fmt;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::Context;
use opentelemetry::trace::Status;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};

use super::stats::ExportStats;

/// Spans handed to the batch processor and not yet given to an exporter.
#[derive(Debug, Default)]
pub(crate) struct QueueDepth(AtomicUsize);

impl QueueDepth {
    fn release(&self, spans: usize) {
        // Never underflows: every released span was reserved first.
        let _ = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |depth| {
                Some(depth.saturating_sub(spans))
            });
    }
}

/// When the export thread gives its CPU away between slices of a batch. While the queue is
/// nearly empty (under a sixteenth of its capacity), the export keeps up and a request waiting
/// for the CPU goes first; once spans pile up, the export runs flat out, so that pacing neither
/// drops spans for want of CPU nor holds more than that sixteenth in memory.
#[derive(Debug, Clone)]
pub(crate) struct Pacing {
    depth: Arc<QueueDepth>,
    below: usize,
}

impl Pacing {
    /// Pacing for a queue of `capacity` spans whose depth is `depth`.
    pub(crate) fn new(depth: Arc<QueueDepth>, capacity: usize) -> Pacing {
        Pacing {
            depth,
            below: capacity / 16,
        }
    }

    /// True when the export may yield now.
    fn may_yield(&self) -> bool {
        self.depth.0.load(Ordering::Acquire) < self.below
    }

    /// Yields the thread's CPU when the queue allows it.
    pub(crate) fn pause(&self) {
        if self.may_yield() {
            std::thread::yield_now();
        }
    }
}

/// A span processor that refuses spans beyond `capacity` before the inner processor sees them,
/// so that every dropped span is counted.
#[derive(Debug)]
pub(crate) struct QueueGate<P> {
    inner: P,
    depth: Arc<QueueDepth>,
    capacity: usize,
    stats: Arc<ExportStats>,
}

impl<P> QueueGate<P> {
    /// Wraps `inner`, whose own queue must hold at least `capacity` spans.
    pub(crate) fn new(
        inner: P,
        depth: Arc<QueueDepth>,
        capacity: usize,
        stats: Arc<ExportStats>,
    ) -> Self {
        QueueGate {
            inner,
            depth,
            capacity,
            stats,
        }
    }
}

impl<P: SpanProcessor> SpanProcessor for QueueGate<P> {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        let reserved = self
            .depth
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |depth| {
                (depth < self.capacity).then_some(depth + 1)
            });
        if reserved.is_err() {
            self.stats.record_drop();
            return;
        }
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// An exporter wrapper: releases the queue reservation, runs the export on telemetry's runtime
/// (when there is one) within `timeout`, and counts the outcome.
pub(crate) struct GuardedExporter<E> {
    inner: Arc<E>,
    runtime: Option<tokio::runtime::Handle>,
    timeout: Duration,
    depth: Arc<QueueDepth>,
    stats: Arc<ExportStats>,
}

impl<E> GuardedExporter<E> {
    /// Wraps `inner`.
    pub(crate) fn new(
        inner: E,
        runtime: Option<tokio::runtime::Handle>,
        timeout: Duration,
        depth: Arc<QueueDepth>,
        stats: Arc<ExportStats>,
    ) -> Self {
        GuardedExporter {
            inner: Arc::new(inner),
            runtime,
            timeout,
            depth,
            stats,
        }
    }
}

impl<E> fmt::Debug for GuardedExporter<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardedExporter")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl<E: SpanExporter + 'static> SpanExporter for GuardedExporter<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len();
        self.depth.release(spans);
        let result = match &self.runtime {
            Some(runtime) => {
                let inner = Arc::clone(&self.inner);
                let timeout = self.timeout;
                let task = runtime.spawn(async move {
                    match tokio::time::timeout(timeout, inner.export(batch)).await {
                        Ok(result) => result,
                        Err(_) => Err(OTelSdkError::Timeout(timeout)),
                    }
                });
                match task.await {
                    Ok(result) => result,
                    Err(e) => Err(OTelSdkError::InternalFailure(format!(
                        "export task ended abnormally: {e}"
                    ))),
                }
            }
            None => self.inner.export(batch).await,
        };
        let error = result.as_ref().err().map(ToString::to_string);
        self.stats.record_export(spans, error.as_deref());
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.set_resource(resource);
        }
    }
}

/// Writes one JSON object per span to standard output, for local use.
#[derive(Debug, Default)]
pub(crate) struct StdoutExporter {
    service_name: String,
}

impl StdoutExporter {
    /// An exporter labelling spans with `service_name`.
    pub(crate) fn new(service_name: &str) -> Self {
        StdoutExporter {
            service_name: service_name.to_string(),
        }
    }
}

/// One span as a JSON line.
pub(crate) fn span_json(span: &SpanData, service_name: &str) -> serde_json::Value {
    let micros = |t: SystemTime| {
        t.duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
    };
    let attributes: serde_json::Map<String, serde_json::Value> = span
        .attributes
        .iter()
        .map(|kv| {
            let value = match &kv.value {
                opentelemetry::Value::Bool(b) => serde_json::Value::from(*b),
                opentelemetry::Value::I64(i) => serde_json::Value::from(*i),
                opentelemetry::Value::F64(f) => serde_json::Value::from(*f),
                other => serde_json::Value::from(other.to_string()),
            };
            (kv.key.to_string(), value)
        })
        .collect();
    let (status, message) = match &span.status {
        Status::Unset => ("unset", None),
        Status::Ok => ("ok", None),
        Status::Error { description } => ("error", Some(description.to_string())),
    };
    serde_json::json!({
        "service": service_name,
        "name": span.name,
        "kind": format!("{:?}", span.span_kind).to_ascii_lowercase(),
        "trace_id": span.span_context.trace_id().to_string(),
        "span_id": span.span_context.span_id().to_string(),
        "parent_span_id": (span.parent_span_id != opentelemetry::trace::SpanId::INVALID)
            .then(|| span.parent_span_id.to_string()),
        "start_unix_us": micros(span.start_time),
        "duration_us": span.end_time.duration_since(span.start_time).map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
        "status": status,
        "status_message": message,
        "attributes": attributes,
    })
}

impl SpanExporter for StdoutExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let mut out = std::io::stdout().lock();
        for span in &batch {
            writeln!(out, "{}", span_json(span, &self.service_name))
                .map_err(|e| OTelSdkError::InternalFailure(e.to_string()))?;
        }
        out.flush()
            .map_err(|e| OTelSdkError::InternalFailure(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacing_yields_only_while_the_queue_is_nearly_empty() {
        let depth = Arc::new(QueueDepth::default());
        let pacing = Pacing::new(Arc::clone(&depth), 2048);
        // (spans waiting, may yield)
        for (waiting, yields) in [(0, true), (127, true), (128, false), (2048, false)] {
            depth.0.store(waiting, Ordering::Release);
            assert_eq!(pacing.may_yield(), yields, "{waiting} spans waiting");
        }
        // A queue too small to have a sixteenth is never paced.
        let tiny = Pacing::new(Arc::new(QueueDepth::default()), 15);
        assert!(!tiny.may_yield());
    }
}
