//! Span attribute building per request: the request attributes, the routing attributes, and
//! darklight's attributes from a `Classification` and its attribution plan
//! (`darklight::telemetry::attributes`), into a fresh vector as the request path does.
//!
//! OTLP encoding of an export batch (`otlp_encode`, per span): darklight's encoder
//! (`darklight::telemetry::otlp_wire`), from the SDK's span data and straight from span records,
//! against the generated protobuf types (conversion, then prost encoding), on the same 512 spans.
//!
//! Classifications, plans and spans are built before timing; only the operation is timed.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::net::SocketAddr;

use criterion::{BatchSize, Throughput};
use criterion::{Criterion, criterion_group, criterion_main};
use darklight::attribution::{AttributionConfig, Attributor, CookieContext, Plan};
use darklight::classify::{Classification, Classifier, SiteProfile};
use darklight::offline::parse_line;
use darklight::telemetry::attributes::{
    RequestInfo, classification_attributes, request_attributes, routing_attributes, span_name,
};
use darklight::telemetry::otlp_wire::{encode_export_request, encode_records_paced};
use darklight::telemetry::record::SpanRecord;
use darklight::telemetry::span::{SpanEnd, SpanStart};
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
use prost::Message;
use std::time::{Duration, UNIX_EPOCH};

const NOW: u64 = 1_790_000_000;
const SECRET: &str = "0123456789abcdef0123456789abcdef-bench-secret";

const REQUESTS: [(&str, &str); 4] = [
    (
        "dark_social_in_app",
        r#"{"url":"https://news.example.com/articles/2026/11/the-recipe-everyone-forwarded","headers":{"User-Agent":"Mozilla/5.0 (Linux; Android 14; Pixel 8 Build/UQ1A.240105.004; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/131.0.0.0 Mobile Safari/537.36 WhatsApp/2.24.1.78","X-Requested-With":"com.whatsapp"}}"#,
    ),
    (
        "campaign_email",
        r#"{"url":"https://news.example.com/articles/a?utm_source=newsletter&utm_medium=email&utm_campaign=spring&utm_content=top","headers":{"User-Agent":"Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15"}}"#,
    ),
    (
        "organic_search",
        r#"{"url":"https://news.example.com/articles/2026/11/some-story","referer":"https://www.google.com/","headers":{"User-Agent":"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"}}"#,
    ),
    (
        "preview_bot_whatsapp",
        r#"{"url":"https://news.example.com/articles/2026/11/the-recipe-everyone-forwarded","headers":{"User-Agent":"WhatsApp/2.23.20.0 A"}}"#,
    ),
];

const AGENT: &str = "Mozilla/5.0 (Linux; Android 14; Pixel 8 Build/UQ1A.240105.004; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/131.0.0.0 Mobile Safari/537.36 WhatsApp/2.24.1.78";

fn inputs() -> Vec<(&'static str, Classification, Plan)> {
    let classifier = Classifier::builtin().expect("built-in rules");
    let attributor = Attributor::new(&AttributionConfig::default(), |name| {
        (name == "DARKLIGHT_COOKIE_SECRET").then(|| SECRET.to_string())
    })
    .expect("attribution settings");
    REQUESTS
        .iter()
        .map(|(name, line)| {
            let request = parse_line(line, "news.example.com").expect("bench request");
            let facts = request.facts();
            let classification = classifier.classify(&facts, &SiteProfile::permissive_default());
            let context = CookieContext {
                path: facts.path,
                ..CookieContext::default()
            };
            let plan = attributor.plan(&classification, &Default::default(), &context, NOW);
            (*name, classification, plan)
        })
        .collect()
}

/// The request both groups build spans for: a deep link opened in WhatsApp's in-app browser.
fn dark_social_request() -> RequestInfo<'static> {
    RequestInfo {
        method: "GET",
        path: "/articles/2026/11/the-recipe-everyone-forwarded",
        query: None,
        scheme: "https",
        user_agent: Some(AGENT),
        server_address: Some("news.example.com"),
        server_port: Some(443),
        protocol_version: Some("1.1"),
        client_address: Some("203.0.113.0".parse().unwrap()),
        route: Some("/articles/{slug}"),
    }
}

fn attributes(c: &mut Criterion) {
    let inputs = inputs();
    let upstream: SocketAddr = "127.0.0.1:3000".parse().unwrap();
    let request = dark_social_request();

    let mut group = c.benchmark_group("span_attributes");
    for (name, classification, plan) in &inputs {
        group.bench_function(format!("classification/{name}"), |b| {
            b.iter(|| {
                let mut out: Vec<KeyValue> = Vec::with_capacity(32);
                classification_attributes(
                    black_box(classification),
                    black_box(plan.first_touch.as_ref()),
                    &mut out,
                );
                out
            })
        });
    }
    group.bench_function("request_and_routing", |b| {
        b.iter(|| {
            let mut out: Vec<KeyValue> = Vec::with_capacity(40);
            request_attributes(black_box(&request), &mut out);
            routing_attributes(Some(black_box("news")), Some(upstream), &mut out);
            out
        })
    });
    let (_, classification, plan) = &inputs[0];
    group.bench_function("whole_span_dark_social", |b| {
        b.iter(|| {
            let name = span_name(black_box(request.method), request.route);
            let mut out: Vec<KeyValue> = Vec::with_capacity(40);
            request_attributes(black_box(&request), &mut out);
            let mut more: Vec<KeyValue> = Vec::with_capacity(32);
            routing_attributes(Some(black_box("news")), Some(upstream), &mut more);
            classification_attributes(
                black_box(classification),
                black_box(plan.first_touch.as_ref()),
                &mut more,
            );
            (name, out, more)
        })
    });
    group.finish();
}

const BATCH: usize = 512;

/// A full export batch: the four requests' spans in turn, with every attribute the proxy sets.
fn batch(
    inputs: &[(&'static str, Classification, Plan)],
    request: &RequestInfo<'_>,
) -> Vec<SpanData> {
    let upstream: SocketAddr = "127.0.0.1:3000".parse().unwrap();
    let scope = InstrumentationScope::builder("darklight")
        .with_version(env!("CARGO_PKG_VERSION"))
        .build();
    (0..BATCH)
        .map(|n| {
            let (_, classification, plan) = &inputs[n % inputs.len()];
            let mut attributes = Vec::with_capacity(72);
            request_attributes(request, &mut attributes);
            routing_attributes(Some("news"), Some(upstream), &mut attributes);
            classification_attributes(classification, plan.first_touch.as_ref(), &mut attributes);
            attributes.push(KeyValue::new("http.response.status_code", 200_i64));
            let start = UNIX_EPOCH + Duration::from_secs(NOW) + Duration::from_micros(n as u64);
            SpanData {
                span_context: SpanContext::new(
                    TraceId::from(n as u128 + 1),
                    SpanId::from(n as u64 + 1),
                    TraceFlags::SAMPLED,
                    false,
                    TraceState::default(),
                ),
                parent_span_id: SpanId::INVALID,
                parent_span_is_remote: false,
                span_kind: SpanKind::Server,
                name: span_name(request.method, request.route),
                start_time: start,
                end_time: start + Duration::from_micros(900),
                attributes,
                dropped_attributes_count: 0,
                events: SpanEvents::default(),
                links: SpanLinks::default(),
                status: Status::Unset,
                instrumentation_scope: scope.clone(),
            }
        })
        .collect()
}

/// The same batch as span records, as the export thread receives them.
#[allow(clippy::vec_box, reason = "records are boxed on the request path")]
fn records(
    inputs: &[(&'static str, Classification, Plan)],
    request: &RequestInfo<'_>,
) -> Vec<Box<SpanRecord>> {
    let upstream: SocketAddr = "127.0.0.1:3000".parse().unwrap();
    (0..BATCH)
        .map(|n| {
            let (_, classification, plan) = &inputs[n % inputs.len()];
            let context = SpanContext::new(
                TraceId::from(n as u128 + 1),
                SpanId::from(n as u64 + 1),
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            );
            let start = UNIX_EPOCH + Duration::from_secs(NOW) + Duration::from_micros(n as u64);
            let describe = SpanStart {
                request: request.clone(),
                site: Some("news"),
                upstream: Some(upstream),
                classification: Some(classification),
                plan: Some(plan),
            };
            let mut record = SpanRecord::new(context, None, start, &describe);
            let end = SpanEnd {
                status: Some(200),
                error: None,
            };
            record.end(&end, start + Duration::from_micros(900));
            Box::new(record)
        })
        .collect()
}

fn otlp_encode(c: &mut Criterion) {
    let inputs = inputs();
    let request = dark_social_request();
    let spans = batch(&inputs, &request);
    let records = records(&inputs, &request);
    let scope = spans[0].instrumentation_scope.clone();
    let resource = Resource::builder_empty()
        .with_attributes([
            KeyValue::new("service.name", "darklight"),
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            KeyValue::new("host.name", "edge-1"),
        ])
        .build();
    let schema = ResourceAttributesWithSchema::from(&resource);

    let mut group = c.benchmark_group("otlp_encode");
    group.throughput(Throughput::Elements(BATCH as u64));
    let mut out = Vec::new();
    group.bench_function("darklight_encoder", |b| {
        b.iter(|| {
            out.clear();
            encode_export_request(black_box(&spans), &resource, &mut out);
            out.len()
        })
    });
    group.bench_function("darklight_encoder_from_records", |b| {
        b.iter(|| {
            out.clear();
            encode_records_paced(
                black_box(&records),
                &resource,
                &scope,
                &mut out,
                usize::MAX,
                &mut || {},
            );
            out.len()
        })
    });
    group.bench_function("generated_types", |b| {
        b.iter_batched(
            || spans.clone(),
            |spans| {
                let request = ExportTraceServiceRequest {
                    resource_spans: group_spans_by_resource_and_scope(spans, &schema),
                };
                request.encode_to_vec().len()
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

/// gzip of an encoded batch whose trace and span ids are random, as real ones are (ids do not
/// compress): at the fastest level, as `otlp.compression: gzip` sends OTLP/HTTP bodies, and at
/// level 6, as tonic compresses gRPC messages.
fn otlp_gzip(c: &mut Criterion) {
    use std::io::Write as _;
    let inputs = inputs();
    let request = dark_social_request();
    let mut spans = batch(&inputs, &request);
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut random = move || {
        // splitmix64
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    for span in &mut spans {
        let trace = (u128::from(random()) << 64) | u128::from(random());
        span.span_context = SpanContext::new(
            TraceId::from(trace),
            SpanId::from(random()),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        );
    }
    let resource = Resource::builder_empty()
        .with_attributes([KeyValue::new("service.name", "darklight")])
        .build();
    let mut body = Vec::new();
    encode_export_request(&spans, &resource, &mut body);
    let gzip_at = |body: &[u8], level: flate2::Compression| {
        let mut encoder = flate2::write::GzEncoder::new(Vec::with_capacity(body.len() / 4), level);
        for chunk in body.chunks(16 * 1024) {
            encoder.write_all(chunk).unwrap();
        }
        encoder.finish().unwrap()
    };
    let (fast, six) = (flate2::Compression::fast(), flate2::Compression::new(6));
    eprintln!(
        "otlp_gzip: a {BATCH}-span batch of {} bytes gzips to {} bytes (fast), {} (level 6)",
        body.len(),
        gzip_at(&body, fast).len(),
        gzip_at(&body, six).len()
    );
    let mut group = c.benchmark_group("otlp_gzip");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("fast", |b| b.iter(|| gzip_at(black_box(&body), fast).len()));
    group.bench_function("level_6", |b| {
        b.iter(|| gzip_at(black_box(&body), six).len())
    });
    group.finish();
}

criterion_group!(benches, attributes, otlp_encode, otlp_gzip);
criterion_main!(benches);
