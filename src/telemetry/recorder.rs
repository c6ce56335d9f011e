//! Where request spans go: the sampler decides from the trace id and the parent, ids are
//! drawn, and a recorded span's [`SpanRecord`] is queued for the export thread.

use std::sync::Arc;

use opentelemetry::Context;
use opentelemetry::trace::{SpanContext, SpanKind, TraceContextExt as _, TraceFlags};
use opentelemetry_sdk::trace::{
    IdGenerator as _, RandomIdGenerator, Sampler, SamplingDecision, ShouldSample as _,
};

use super::pipeline::SpanQueue;
use super::record::SpanRecord;

/// The name the sampler sees: darklight's samplers decide on the trace id and parent only.
const UNNAMED: &str = "HTTP";

/// A cheap, shared handle that starts request spans and takes them when they end.
#[derive(Debug, Clone)]
pub struct SpanRecorder {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    sampler: Sampler,
    ids: RandomIdGenerator,
    delivery: Delivery,
}

#[derive(Debug)]
enum Delivery {
    /// Recorded spans are let go (no exporter configured).
    Discard,
    /// Recorded spans go to the export thread.
    Queue(SpanQueue),
    /// Recorded spans are kept, built, in memory (tests).
    #[cfg(test)]
    Collect(std::sync::Mutex<Vec<opentelemetry_sdk::trace::SpanData>>),
}

/// A new span's context, and whether its span is recorded.
#[derive(Debug, Clone)]
pub struct Started {
    /// The span's own context (sampled flag set when recorded).
    pub context: SpanContext,
    /// True when the sampler keeps the span.
    pub recorded: bool,
}

impl SpanRecorder {
    /// Spans sampled by `sampler` and queued for export.
    pub(crate) fn queued(sampler: Sampler, queue: SpanQueue) -> SpanRecorder {
        SpanRecorder::with(sampler, Delivery::Queue(queue))
    }

    /// Spans sampled by `sampler` and then let go: trace context still flows.
    pub fn discarding(sampler: Sampler) -> SpanRecorder {
        SpanRecorder::with(sampler, Delivery::Discard)
    }

    fn with(sampler: Sampler, delivery: Delivery) -> SpanRecorder {
        SpanRecorder {
            inner: Arc::new(Inner {
                sampler,
                ids: RandomIdGenerator::default(),
                delivery,
            }),
        }
    }

    /// Starts a span continuing `parent` (the client's, when trusted) or a new trace.
    pub fn start(&self, parent: Option<&SpanContext>) -> Started {
        let inner = &*self.inner;
        let span_id = inner.ids.new_span_id();
        // The sampler sees the remote parent through a context, as the SDK's tracer gives it.
        let parent_context =
            parent.map(|remote| Context::new().with_remote_span_context(remote.clone()));
        let trace_id = parent.map_or_else(|| inner.ids.new_trace_id(), SpanContext::trace_id);
        let sampling = inner.sampler.should_sample(
            parent_context.as_ref(),
            trace_id,
            UNNAMED,
            &SpanKind::Server,
            &[],
            &[],
        );
        let parent_flags = parent.map_or(TraceFlags::default(), SpanContext::trace_flags);
        // As the SDK's tracer does; a span recorded but not sampled is never exported, so it
        // is not recorded at all.
        let (flags, recorded) = match sampling.decision {
            SamplingDecision::RecordAndSample => (parent_flags.with_sampled(true), true),
            SamplingDecision::RecordOnly => (parent_flags.with_sampled(false), false),
            SamplingDecision::Drop => (TraceFlags::default(), false),
        };
        Started {
            context: SpanContext::new(trace_id, span_id, flags, false, sampling.trace_state),
            recorded,
        }
    }

    /// Takes a finished span for export.
    pub fn submit(&self, record: Box<SpanRecord>) {
        match &self.inner.delivery {
            Delivery::Discard => {}
            Delivery::Queue(queue) => queue.push(record),
            #[cfg(test)]
            Delivery::Collect(spans) => {
                let scope = opentelemetry::InstrumentationScope::builder("test").build();
                if let Ok(mut spans) = spans.lock() {
                    spans.push(record.into_span_data(&scope));
                }
            }
        }
    }
}

#[cfg(test)]
impl SpanRecorder {
    /// Spans sampled by `sampler` and kept in memory, for [`SpanRecorder::collected`].
    pub(crate) fn collecting(sampler: Sampler) -> SpanRecorder {
        SpanRecorder::with(sampler, Delivery::Collect(std::sync::Mutex::default()))
    }

    /// The spans submitted so far, built.
    pub(crate) fn collected(&self) -> Vec<opentelemetry_sdk::trace::SpanData> {
        match &self.inner.delivery {
            Delivery::Collect(spans) => spans.lock().map(|s| s.clone()).unwrap_or_default(),
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{SpanId, TraceId, TraceState};

    use super::*;

    fn remote(sampled: bool) -> SpanContext {
        SpanContext::new(
            TraceId::from(0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736),
            SpanId::from(0x00f0_67aa_0ba9_02b7),
            TraceFlags::default().with_sampled(sampled),
            true,
            TraceState::from_key_value([("vendor", "abc")]).unwrap(),
        )
    }

    /// The decision, flags, trace id and trace state the SDK's tracer gives, by sampler and
    /// parent.
    #[test]
    fn sampling_follows_the_sampler_and_the_parent() {
        let parent_based = || Sampler::ParentBased(Box::new(Sampler::AlwaysOff));
        // (sampler, parent, recorded)
        let cases = [
            (Sampler::AlwaysOn, None, true),
            (Sampler::AlwaysOff, None, false),
            (Sampler::TraceIdRatioBased(1.0), None, true),
            (Sampler::TraceIdRatioBased(0.0), None, false),
            (parent_based(), None, false),
            (parent_based(), Some(remote(true)), true),
            (parent_based(), Some(remote(false)), false),
            (Sampler::AlwaysOn, Some(remote(false)), true),
        ];
        for (n, (sampler, parent, recorded)) in cases.into_iter().enumerate() {
            let recorder = SpanRecorder::discarding(sampler);
            let started = recorder.start(parent.as_ref());
            assert_eq!(started.recorded, recorded, "case {n}");
            assert_eq!(started.context.is_sampled(), recorded, "case {n}");
            assert!(started.context.is_valid(), "case {n}");
            assert!(!started.context.is_remote(), "case {n}");
            if let Some(parent) = &parent {
                assert_eq!(started.context.trace_id(), parent.trace_id(), "case {n}");
                assert_ne!(started.context.span_id(), parent.span_id(), "case {n}");
                assert_eq!(
                    started.context.trace_state().header(),
                    "vendor=abc",
                    "case {n}"
                );
            }
        }
    }

    /// New traces and spans get fresh ids.
    #[test]
    fn ids_are_fresh() {
        let recorder = SpanRecorder::discarding(Sampler::AlwaysOn);
        let a = recorder.start(None).context;
        let b = recorder.start(None).context;
        assert_ne!(a.trace_id(), b.trace_id());
        assert_ne!(a.span_id(), b.span_id());
    }
}
