//! The export pipeline behind the tracer: a bounded queue of span records, a thread that
//! batches them, and exporters that run on telemetry's own runtime with a time limit.
//!
//! A request only ever does a non-blocking enqueue: when the queue is full the span is dropped
//! and counted ([`ExportStats`]). Exports run on a dedicated background thread
//! ([`ExportThread`]), which hands the network work to a one-thread tokio runtime owned by
//! telemetry, so a slow or absent collector never touches Pingora's runtimes. While the queue
//! is nearly empty, the OTLP exporter yields that runtime's thread between slices of a batch
//! ([`Pacing`]), so requests sharing its CPU do not wait for a whole batch.

use std::fmt;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use opentelemetry::InstrumentationScope;
use opentelemetry::trace::Status;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};

use super::config::BatchConfig;
use super::record::SpanRecord;
use super::stats::ExportStats;

/// Spans queued for export and not yet given to an exporter.
#[derive(Debug, Default)]
pub(crate) struct QueueDepth(AtomicUsize);

impl QueueDepth {
    /// Counts one more span if fewer than `capacity` are queued; the depth before, or `None`
    /// when the queue is full.
    fn reserve(&self, capacity: usize) -> Option<usize> {
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |depth| {
                (depth < capacity).then_some(depth + 1)
            })
            .ok()
    }

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

/// What wakes the export thread before its scheduled export.
enum Wake {
    /// A batch's worth of spans is waiting.
    BatchReady,
    /// Export everything queued, stop, and say so.
    Shutdown(SyncSender<()>),
}

/// The request side of the export queue. A push never blocks, and never wakes the export
/// thread except once a batch's worth of spans waits: a wake-up per span would cost the
/// request more than the span itself. A span beyond the queue's capacity, or after telemetry
/// stopped, is dropped and counted.
#[derive(Debug, Clone)]
pub(crate) struct SpanQueue {
    spans: SyncSender<Box<SpanRecord>>,
    wake: SyncSender<Wake>,
    /// True from the wake-up for a full batch until the export thread takes the spans.
    woken: Arc<AtomicBool>,
    depth: Arc<QueueDepth>,
    capacity: usize,
    batch: usize,
    stats: Arc<ExportStats>,
}

impl SpanQueue {
    /// Queues `record` for export.
    pub(crate) fn push(&self, record: Box<SpanRecord>) {
        let Some(before) = self.depth.reserve(self.capacity) else {
            self.stats.record_drop();
            return;
        };
        if self.spans.try_send(record).is_err() {
            self.depth.release(1);
            self.stats.record_drop();
            return;
        }
        if before + 1 >= self.batch && !self.woken.swap(true, Ordering::AcqRel) {
            let _ = self.wake.try_send(Wake::BatchReady);
        }
    }
}

impl fmt::Debug for Wake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Wake::BatchReady => "BatchReady",
            Wake::Shutdown(_) => "Shutdown",
        })
    }
}

/// The export thread: takes the queued spans every `scheduled_delay`, or as soon as
/// `max_export_batch_size` of them wait, and exports them in batches of at most that size,
/// which the OTLP exporter encodes straight from their records.
#[derive(Debug)]
pub(crate) struct ExportThread {
    wake: SyncSender<Wake>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ExportThread {
    /// Starts the thread for `exporter`; spans go in through the returned queue.
    pub(crate) fn start<E: RecordExporter + 'static>(
        exporter: GuardedExporter<E>,
        scope: InstrumentationScope,
        batch: &BatchConfig,
        depth: Arc<QueueDepth>,
        stats: Arc<ExportStats>,
    ) -> std::io::Result<(SpanQueue, ExportThread)> {
        // Drives the exporter's futures; the network I/O runs on telemetry's own runtime.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let capacity = batch.max_queue_size;
        let max_batch = batch.max_export_batch_size.max(1);
        let (spans, queued) = std::sync::mpsc::sync_channel(capacity);
        // A full-batch wake-up and a shutdown at most are ever pending.
        let (wake, woken_by) = std::sync::mpsc::sync_channel(2);
        let woken = Arc::new(AtomicBool::new(false));
        let worker = Worker {
            exporter,
            scope,
            max_batch,
            delay: batch.scheduled_delay.0,
            woken: Arc::clone(&woken),
            runtime,
        };
        let thread = std::thread::Builder::new()
            .name("darklight-spans".into())
            .spawn(move || worker.run(&queued, &woken_by))?;
        let queue = SpanQueue {
            spans,
            wake: wake.clone(),
            woken,
            depth,
            capacity,
            batch: max_batch,
            stats,
        };
        Ok((
            queue,
            ExportThread {
                wake,
                thread: Some(thread),
            },
        ))
    }

    /// Exports what is queued and stops the thread, waiting at most `timeout`. False when it
    /// did not finish in time.
    pub(crate) fn shutdown(mut self, timeout: Duration) -> bool {
        let (done, finished) = std::sync::mpsc::sync_channel(1);
        if self.wake.try_send(Wake::Shutdown(done)).is_err() {
            return false;
        }
        if finished.recv_timeout(timeout).is_err() {
            return false;
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        true
    }
}

impl Drop for ExportThread {
    fn drop(&mut self) {
        if self.thread.is_some() {
            // Not shut down: let the thread export what it has and end, without waiting.
            let (done, _) = std::sync::mpsc::sync_channel(1);
            let _ = self.wake.try_send(Wake::Shutdown(done));
        }
    }
}

struct Worker<E> {
    exporter: GuardedExporter<E>,
    scope: InstrumentationScope,
    max_batch: usize,
    delay: Duration,
    woken: Arc<AtomicBool>,
    runtime: tokio::runtime::Runtime,
}

impl<E: RecordExporter + 'static> Worker<E> {
    fn run(self, queued: &Receiver<Box<SpanRecord>>, woken_by: &Receiver<Wake>) {
        let mut batch = Vec::with_capacity(self.max_batch);
        let mut due = Instant::now() + self.delay;
        loop {
            let wait = due.saturating_duration_since(Instant::now());
            match woken_by.recv_timeout(wait) {
                Ok(Wake::BatchReady) => self.export_queued(queued, &mut batch),
                Err(RecvTimeoutError::Timeout) => {
                    self.export_queued(queued, &mut batch);
                    due = Instant::now() + self.delay;
                }
                Ok(Wake::Shutdown(done)) => {
                    self.export_queued(queued, &mut batch);
                    let _ = self.exporter.shutdown();
                    let _ = done.send(());
                    return;
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.export_queued(queued, &mut batch);
                    return;
                }
            }
        }
    }

    /// Exports every span queued now, in batches of at most `max_batch`.
    fn export_queued(&self, queued: &Receiver<Box<SpanRecord>>, batch: &mut Records) {
        self.woken.store(false, Ordering::Release);
        while let Ok(record) = queued.try_recv() {
            batch.push(record);
            if batch.len() >= self.max_batch {
                self.export(batch);
            }
        }
        self.export(batch);
    }

    /// Exports `batch`; the guard counts and logs the outcome.
    fn export(&self, batch: &mut Records) {
        if batch.is_empty() {
            return;
        }
        let records = std::mem::replace(batch, Vec::with_capacity(self.max_batch));
        let _ = self
            .runtime
            .block_on(self.exporter.export_records(records, &self.scope));
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

impl<E: RecordExporter + 'static> GuardedExporter<E> {
    /// Exports `records` (of `scope`) and counts the outcome.
    pub(crate) async fn export_records(
        &self,
        records: Records,
        scope: &InstrumentationScope,
    ) -> OTelSdkResult {
        let spans = records.len();
        self.depth.release(spans);
        let result = match &self.runtime {
            Some(runtime) => {
                let inner = Arc::clone(&self.inner);
                let timeout = self.timeout;
                let scope = scope.clone();
                let task = runtime.spawn(async move {
                    match tokio::time::timeout(timeout, inner.export_records(records, &scope)).await
                    {
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
            None => self.inner.export_records(records, scope).await,
        };
        let error = result.as_ref().err().map(ToString::to_string);
        self.stats.record_export(spans, error.as_deref());
        result
    }

    /// Lets the exporter release what it holds.
    pub(crate) fn shutdown(&self) -> OTelSdkResult {
        self.inner.shutdown()
    }

    /// Labels the spans exported with `resource`; before the exporter is shared only.
    pub(crate) fn set_resource(&mut self, resource: &Resource) {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.set_resource(resource);
        }
    }
}

/// A batch of span records, in the order they ended.
#[allow(
    clippy::vec_box,
    reason = "records arrive boxed from the request path; unboxing would copy each"
)]
pub(crate) type Records = Vec<Box<SpanRecord>>;

/// An exporter that takes span records. One that can encode them directly overrides
/// [`RecordExporter::export_records`]; the others get them in the SDK's form.
pub(crate) trait RecordExporter: SpanExporter {
    /// Exports `records`, all of `scope`.
    fn export_records(
        &self,
        records: Records,
        scope: &InstrumentationScope,
    ) -> impl Future<Output = OTelSdkResult> + Send {
        let spans: Vec<SpanData> = records
            .into_iter()
            .map(|record| record.into_span_data(scope))
            .collect();
        self.export(spans)
    }
}

impl RecordExporter for StdoutExporter {}

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
    use std::sync::Mutex;

    use opentelemetry::trace::SpanContext;

    use super::*;
    use crate::config::HumanDuration;
    use crate::telemetry::span::SpanStart;

    /// Notes the size of every batch exported.
    #[derive(Debug, Clone, Default)]
    struct Batches(Arc<Mutex<Vec<usize>>>);

    impl Batches {
        fn sizes(&self) -> Vec<usize> {
            self.0.lock().unwrap().clone()
        }

        /// Waits (at most 5 s) until `expected` batches were exported.
        fn wait_for(&self, expected: usize) -> Vec<usize> {
            for _ in 0..500 {
                if self.sizes().len() >= expected {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            self.sizes()
        }
    }

    impl SpanExporter for Batches {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            self.0.lock().unwrap().push(batch.len());
            Ok(())
        }
    }

    impl RecordExporter for Batches {}

    /// An export thread whose scheduled export never comes during a test.
    fn start(queue: usize, batch: usize) -> (SpanQueue, ExportThread, Batches, Arc<ExportStats>) {
        let batches = Batches::default();
        let depth = Arc::new(QueueDepth::default());
        let stats = Arc::new(ExportStats::default());
        let guarded = GuardedExporter::new(
            batches.clone(),
            None,
            Duration::from_secs(5),
            Arc::clone(&depth),
            Arc::clone(&stats),
        );
        let config = BatchConfig {
            max_queue_size: queue,
            max_export_batch_size: batch,
            scheduled_delay: HumanDuration(Duration::from_secs(3600)),
        };
        let scope = InstrumentationScope::builder("test").build();
        let (spans, thread) =
            ExportThread::start(guarded, scope, &config, depth, Arc::clone(&stats)).unwrap();
        (spans, thread, batches, stats)
    }

    fn record() -> Box<SpanRecord> {
        Box::new(SpanRecord::new(
            SpanContext::empty_context(),
            None,
            SystemTime::UNIX_EPOCH,
            &SpanStart::default(),
        ))
    }

    #[test]
    fn a_full_batch_is_exported_without_waiting_for_the_schedule() {
        let (queue, thread, batches, _) = start(64, 4);
        for _ in 0..3 {
            queue.push(record());
        }
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(
            batches.sizes(),
            Vec::<usize>::new(),
            "exported before a batch was full"
        );
        queue.push(record());
        assert_eq!(batches.wait_for(1), [4]);
        assert!(thread.shutdown(Duration::from_secs(5)));
    }

    #[test]
    fn shutdown_exports_what_is_queued_and_later_spans_are_counted_as_dropped() {
        let (queue, thread, batches, stats) = start(64, 4);
        for _ in 0..4 {
            queue.push(record());
        }
        assert_eq!(batches.wait_for(1), [4]);
        queue.push(record());
        queue.push(record());
        assert!(thread.shutdown(Duration::from_secs(5)));
        assert_eq!(batches.sizes(), [4, 2]);
        queue.push(record());
        let counts = stats.counts();
        assert_eq!((counts.exported, counts.dropped), (6, 1));
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let (queue, thread, batches, stats) = start(3, 100);
        for _ in 0..5 {
            queue.push(record());
        }
        assert_eq!(stats.counts().dropped, 2);
        assert!(thread.shutdown(Duration::from_secs(5)));
        assert_eq!(batches.sizes(), [3]);
    }

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
