//! One SERVER span per request, independent of the proxy framework: begun when the request
//! arrives (start time, the client's trace context), started with its attributes once the
//! request is classified and routed, ended when the response is done.

use std::net::SocketAddr;
use std::time::SystemTime;

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{SpanContext, TraceContextExt};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::Sampler;

use super::attributes::RequestInfo;
use super::config::{ClientAddressMode, TraceContextMode};
use super::record::SpanRecord;
use super::recorder::SpanRecorder;
use super::route::{RouteError, RouteTable};
use crate::attribution::Plan;
use crate::classify::Classification;
use crate::config::Config;

/// The W3C `traceparent` header.
pub const TRACEPARENT: &str = "traceparent";
/// The W3C `tracestate` header.
pub const TRACESTATE: &str = "tracestate";

/// [`TRACEPARENT`] as a parsed name, for the lookup every request makes.
const TRACEPARENT_HEADER: http::HeaderName = http::HeaderName::from_static(TRACEPARENT);

/// Per-request span settings compiled from the configuration.
#[derive(Debug, Clone, Default)]
pub struct SpanSettings {
    /// W3C trace context handling.
    pub trace_context: TraceContextMode,
    /// Record `url.query`.
    pub url_query: bool,
    /// How much of the client address to record.
    pub client_address: ClientAddressMode,
    routes: Vec<RouteTable>,
}

impl SpanSettings {
    /// Compiles the telemetry section and every site's `routes`.
    pub fn new(config: &Config) -> Result<SpanSettings, RouteError> {
        let routes = config
            .sites
            .iter()
            .map(|site| RouteTable::new(&site.routes))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(SpanSettings {
            trace_context: config.telemetry.trace_context,
            url_query: config.telemetry.attributes.url_query,
            client_address: config.telemetry.attributes.client_address,
            routes,
        })
    }

    /// The route of `path` on the site at `site` (configuration order).
    pub fn route(&self, site: Option<usize>, path: &str) -> Option<&str> {
        self.routes.get(site?)?.route(path)
    }
}

/// What the span of a request is started with.
#[derive(Debug, Default, Clone)]
pub struct SpanStart<'a> {
    /// The request itself.
    pub request: RequestInfo<'a>,
    /// The site that serves it.
    pub site: Option<&'a str>,
    /// The upstream chosen.
    pub upstream: Option<SocketAddr>,
    /// darklight's classification, when the request was classified.
    pub classification: Option<&'a Classification>,
    /// The attribution plan (for the first touch).
    pub plan: Option<&'a Plan>,
}

/// How a request ended.
#[derive(Debug, Default)]
pub struct SpanEnd<'a> {
    /// The status sent to the client, if any was.
    pub status: Option<u16>,
    /// The proxy error's kind (`ConnectRefused`…) and message, when the proxy failed.
    pub error: Option<(&'a str, String)>,
}

/// The trace context headers for the upstream request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceHeaders {
    /// `traceparent`: darklight's span as the parent.
    pub traceparent: String,
    /// `tracestate`, when there is one to forward.
    pub tracestate: Option<String>,
}

/// A request's span from arrival to end. Small: the recorded part is boxed, and only for a
/// span the sampler keeps.
#[derive(Debug)]
pub struct RequestSpan {
    start: SystemTime,
    parent: Option<SpanContext>,
    span: SpanState,
}

/// Where a request's span stands; its context lives in the record when there is one.
#[derive(Debug)]
enum SpanState {
    /// Not started yet, or already ended.
    Pending,
    /// Started and left out by the sampler: only its context flows on.
    Unrecorded(SpanContext),
    /// Started and recorded.
    Recorded(Box<SpanRecord>),
}

impl RequestSpan {
    /// True once the span was started.
    pub fn started(&self) -> bool {
        !matches!(self.span, SpanState::Pending)
    }

    /// The client's span this request continues, if any.
    pub fn parent(&self) -> Option<&SpanContext> {
        self.parent.as_ref()
    }

    /// The context of darklight's span, from its start to its end.
    pub fn span_context(&self) -> Option<&SpanContext> {
        match &self.span {
            SpanState::Pending => None,
            SpanState::Unrecorded(context) => Some(context),
            SpanState::Recorded(record) => Some(record.context()),
        }
    }
}

/// Creates request spans with a recorder and the compiled settings.
#[derive(Debug, Clone)]
pub struct RequestTracer {
    recorder: SpanRecorder,
    settings: SpanSettings,
    propagator: TraceContextPropagator,
}

impl RequestTracer {
    /// A tracer for requests.
    pub fn new(recorder: SpanRecorder, settings: SpanSettings) -> RequestTracer {
        RequestTracer {
            recorder,
            settings,
            propagator: TraceContextPropagator::new(),
        }
    }

    /// A tracer that records every span and exports none, for tests and benches.
    pub fn detached(settings: SpanSettings) -> RequestTracer {
        RequestTracer::new(SpanRecorder::discarding(Sampler::AlwaysOn), settings)
    }

    /// The settings in force.
    pub fn settings(&self) -> &SpanSettings {
        &self.settings
    }

    /// Notes the arrival time and, when the mode extracts, the client's trace context.
    pub fn begin(&self, headers: &http::HeaderMap) -> RequestSpan {
        // Most requests carry no trace context: one lookup then spares the propagator's work.
        let parent = if self.settings.trace_context.extracts()
            && headers.contains_key(&TRACEPARENT_HEADER)
        {
            let context = self.propagator.extract(&HeaderExtractor(headers));
            let remote = context.span().span_context().clone();
            remote.is_valid().then_some(remote)
        } else {
            None
        };
        RequestSpan {
            start: SystemTime::now(),
            parent,
            span: SpanState::Pending,
        }
    }

    /// Starts the span (once) with everything known about the request.
    pub fn start(&self, request: &mut RequestSpan, start: &SpanStart<'_>) {
        self.start_with(request, || start.clone());
    }

    /// Starts the span (once); `describe` gathers what is known about the request and runs
    /// only when the span is recorded, so a request the sampler leaves out pays for its trace
    /// context alone. The sampler sees the span unnamed: darklight's samplers decide on the
    /// trace id and the parent only.
    pub fn start_with<'a>(
        &self,
        request: &mut RequestSpan,
        describe: impl FnOnce() -> SpanStart<'a>,
    ) {
        if request.started() {
            return;
        }
        let started = self.recorder.start(request.parent.as_ref());
        request.span = if started.recorded {
            let record = SpanRecord::new(
                started.context,
                request.parent.as_ref(),
                request.start,
                &describe(),
            );
            SpanState::Recorded(Box::new(record))
        } else {
            SpanState::Unrecorded(started.context)
        };
    }

    /// The headers the upstream request carries instead of the client's, when the mode injects.
    pub fn upstream_headers(&self, request: &RequestSpan) -> Option<TraceHeaders> {
        if !self.settings.trace_context.injects() {
            return None;
        }
        let context = request.span_context()?;
        if !context.is_valid() {
            return None;
        }
        // The W3C format (`00-<trace id>-<span id>-<flags>`), written directly: the SDK's
        // propagator goes through a map and the formatter for the same 55 bytes.
        let mut traceparent = *b"00-00000000000000000000000000000000-0000000000000000-00";
        write_hex(&mut traceparent[3..35], &context.trace_id().to_bytes());
        write_hex(&mut traceparent[36..52], &context.span_id().to_bytes());
        write_hex(&mut traceparent[53..], &[context.trace_flags().to_u8()]);
        let tracestate = context.trace_state().header();
        Some(TraceHeaders {
            // Hex digits and dashes only: the check cannot fail, and costs less than pushing
            // each digit into a string.
            traceparent: std::str::from_utf8(&traceparent)
                .unwrap_or_default()
                .to_owned(),
            tracestate: (!tracestate.is_empty()).then_some(tracestate),
        })
    }

    /// Ends the span (it must have been started) with the response status and any error,
    /// and hands it over for export when it is recorded.
    pub fn finish(&self, request: &mut RequestSpan, end: &SpanEnd<'_>) {
        if let SpanState::Recorded(mut record) =
            std::mem::replace(&mut request.span, SpanState::Pending)
        {
            record.end(end, SystemTime::now());
            self.recorder.submit(record);
        }
    }
}

/// Writes `bytes` as lowercase hex, the form W3C trace context requires, into `out` (twice as
/// long as `bytes`).
fn write_hex(out: &mut [u8], bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (pair, byte) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0x0f)];
    }
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use opentelemetry::Context;
    use opentelemetry::trace::{SpanId, SpanKind, Status, TraceId};

    use super::super::attributes::keys;
    use super::*;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn tracer(mode: TraceContextMode) -> (RequestTracer, SpanRecorder) {
        let recorder = SpanRecorder::collecting(Sampler::AlwaysOn);
        let settings = SpanSettings {
            trace_context: mode,
            ..SpanSettings::default()
        };
        (RequestTracer::new(recorder.clone(), settings), recorder)
    }

    fn headers(pairs: &[(&str, &str)]) -> http::HeaderMap {
        let mut map = http::HeaderMap::new();
        for (name, value) in pairs {
            map.insert(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        map
    }

    fn start(request: &mut RequestSpan, tracer: &RequestTracer) {
        tracer.start(
            request,
            &SpanStart {
                request: RequestInfo {
                    method: "GET",
                    path: "/articles/x",
                    scheme: "http",
                    route: Some("/articles/*"),
                    ..RequestInfo::default()
                },
                site: Some("news"),
                ..SpanStart::default()
            },
        );
    }

    /// The headers written by hand are those the SDK's W3C propagator writes.
    #[test]
    fn upstream_headers_match_the_sdk_propagator() {
        struct Injected(HashMap<String, String>);
        impl opentelemetry::propagation::Injector for Injected {
            fn set(&mut self, key: &str, value: String) {
                self.0.insert(key.to_string(), value);
            }
        }
        let (tracer, _) = tracer(TraceContextMode::Continue);
        for parent in [
            None,
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"),
        ] {
            let mut sent = vec![(TRACESTATE, "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7")];
            if let Some(parent) = parent {
                sent.push((TRACEPARENT, parent));
            }
            let mut request = tracer.begin(&headers(&sent));
            start(&mut request, &tracer);
            let ours = tracer.upstream_headers(&request).unwrap();
            let context =
                Context::new().with_remote_span_context(request.span_context().unwrap().clone());
            let mut sdk = Injected(HashMap::new());
            TraceContextPropagator::new().inject_context(&context, &mut sdk);
            assert_eq!(
                Some(&ours.traceparent),
                sdk.0.get(TRACEPARENT),
                "{parent:?}"
            );
            let sdk_state = sdk.0.get(TRACESTATE).filter(|s| !s.is_empty());
            assert_eq!(ours.tracestate.as_ref(), sdk_state, "{parent:?}");
        }
    }

    #[test]
    fn continue_mode_extracts_and_injects() {
        let (tracer, exporter) = tracer(TraceContextMode::Continue);
        let mut request = tracer.begin(&headers(&[
            (TRACEPARENT, PARENT),
            (TRACESTATE, "vendor=abc"),
        ]));
        assert!(request.parent().is_some());
        start(&mut request, &tracer);
        let upstream = tracer.upstream_headers(&request).unwrap();
        let own = request.span_context().unwrap().clone();
        assert_eq!(
            upstream.traceparent,
            format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{}-01", own.span_id())
        );
        assert_eq!(upstream.tracestate.as_deref(), Some("vendor=abc"));
        tracer.finish(
            &mut request,
            &SpanEnd {
                status: Some(200),
                error: None,
            },
        );
        let spans = exporter.collected();
        assert_eq!(spans.len(), 1);
        let span = &spans[0];
        assert_eq!(span.name, "GET /articles/*");
        assert_eq!(span.span_kind, SpanKind::Server);
        assert_eq!(
            span.span_context.trace_id(),
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap()
        );
        assert_eq!(
            span.parent_span_id,
            SpanId::from_hex("00f067aa0ba902b7").unwrap()
        );
        assert_eq!(span.status, Status::Unset);
    }

    #[test]
    fn modes_decide_what_flows() {
        let incoming = headers(&[(TRACEPARENT, PARENT)]);
        for (mode, continues, injects) in [
            (TraceContextMode::Continue, true, true),
            (TraceContextMode::Inject, false, true),
            (TraceContextMode::Extract, true, false),
            (TraceContextMode::Ignore, false, false),
        ] {
            let (tracer, exporter) = tracer(mode);
            let mut request = tracer.begin(&incoming);
            start(&mut request, &tracer);
            assert_eq!(
                tracer.upstream_headers(&request).is_some(),
                injects,
                "{mode:?}"
            );
            tracer.finish(&mut request, &SpanEnd::default());
            let span = exporter.collected().remove(0);
            let continued = span.span_context.trace_id()
                == TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
            assert_eq!(continued, continues, "{mode:?}");
            assert_eq!(
                span.parent_span_id != SpanId::INVALID,
                continues,
                "{mode:?}"
            );
        }
    }

    /// A span the sampler leaves out never gathers the request's description, yet still
    /// passes the trace on, marked not sampled.
    #[test]
    fn an_unsampled_span_skips_describing_the_request() {
        for (sampler, recorded) in [(Sampler::AlwaysOff, false), (Sampler::AlwaysOn, true)] {
            let exporter = SpanRecorder::collecting(sampler);
            let tracer = RequestTracer::new(exporter.clone(), SpanSettings::default());
            let mut request = tracer.begin(&http::HeaderMap::new());
            let mut described = false;
            tracer.start_with(&mut request, || {
                described = true;
                SpanStart {
                    request: RequestInfo {
                        method: "GET",
                        path: "/articles/x",
                        route: Some("/articles/*"),
                        ..RequestInfo::default()
                    },
                    ..SpanStart::default()
                }
            });
            assert_eq!(described, recorded);
            assert!(request.started());
            let flags = if recorded { "-01" } else { "-00" };
            let upstream = tracer.upstream_headers(&request).unwrap();
            assert!(
                upstream.traceparent.ends_with(flags),
                "{}",
                upstream.traceparent
            );
            tracer.finish(&mut request, &SpanEnd::default());
            let spans = exporter.collected();
            assert_eq!(spans.len(), usize::from(recorded));
            if let Some(span) = spans.first() {
                assert_eq!(span.name, "GET /articles/*");
                let path = span
                    .attributes
                    .iter()
                    .find(|kv| kv.key.as_str() == keys::URL_PATH);
                assert_eq!(
                    path.map(|kv| kv.value.to_string()).as_deref(),
                    Some("/articles/x")
                );
            }
        }
    }

    #[test]
    fn malformed_traceparent_starts_a_new_trace() {
        let (tracer, _) = tracer(TraceContextMode::Continue);
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "garbage",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        ] {
            let request = tracer.begin(&headers(&[(TRACEPARENT, bad)]));
            assert!(request.parent().is_none(), "{bad}");
        }
    }

    #[test]
    fn errors_and_server_errors_set_error_status() {
        let (tracer, exporter) = tracer(TraceContextMode::Continue);
        let cases = [
            (
                Some(502),
                Some(("ConnectRefused", "connection refused".to_string())),
                true,
            ),
            (Some(503), None, true),
            (Some(404), None, false),
            (Some(200), None, false),
        ];
        for (status, error, is_error) in cases {
            let mut request = tracer.begin(&http::HeaderMap::new());
            start(&mut request, &tracer);
            let kind = error.as_ref().map(|(k, _)| *k);
            tracer.finish(&mut request, &SpanEnd { status, error });
            let span = exporter.collected().pop().unwrap();
            assert_eq!(
                matches!(span.status, Status::Error { .. }),
                is_error,
                "{status:?}"
            );
            let error_type = span
                .attributes
                .iter()
                .find(|kv| kv.key.as_str() == keys::ERROR_TYPE)
                .map(|kv| kv.value.to_string());
            assert_eq!(error_type.is_some(), is_error, "{status:?}");
            if let Some(kind) = kind {
                assert_eq!(error_type.as_deref(), Some(kind));
                assert_eq!(span.events.len(), 1);
            }
        }
    }
}
