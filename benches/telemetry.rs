//! Span attribute building per request: the request attributes, the routing attributes, and
//! darklight's attributes from a `Classification` and its attribution plan
//! (`darklight::telemetry::attributes`), into a fresh vector as the request path does.
//!
//! Classifications and plans are built before timing; only attribute building is timed.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::net::SocketAddr;

use criterion::{Criterion, criterion_group, criterion_main};
use darklight::attribution::{AttributionConfig, Attributor, CookieContext, Plan};
use darklight::classify::{Classification, Classifier, SiteProfile};
use darklight::offline::parse_line;
use darklight::telemetry::attributes::{
    RequestInfo, classification_attributes, request_attributes, routing_attributes, span_name,
};
use opentelemetry::KeyValue;

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

fn attributes(c: &mut Criterion) {
    let inputs = inputs();
    let upstream: SocketAddr = "127.0.0.1:3000".parse().unwrap();
    let request = RequestInfo {
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
    };

    let mut group = c.benchmark_group("span_attributes");
    for (name, classification, plan) in &inputs {
        group.bench_function(format!("classification/{name}"), |b| {
            b.iter(|| {
                let mut out: Vec<KeyValue> = Vec::with_capacity(32);
                classification_attributes(black_box(classification), black_box(plan), &mut out);
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
            classification_attributes(black_box(classification), black_box(plan), &mut more);
            (name, out, more)
        })
    });
    group.finish();
}

criterion_group!(benches, attributes);
criterion_main!(benches);
