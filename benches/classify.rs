//! Classification cost per request, for a realistic mix of requests.
//!
//! The requests are read from `benches/requests.jsonl` (the `darklight classify` JSON
//! line format) and parsed before any timing starts; only `Classifier::classify` (and,
//! in the `from_http` group, building the facts from an `http` header map) is timed.
//! Repeated User-Agents are answered from the thread's memo after their first scan;
//! `classify_mix/all_requests_unseen_user_agents` measures the mix when none repeats.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use darklight::classify::{Classifier, RequestFacts, SiteProfile};
use darklight::offline::{OwnedRequest, parse_line};

const REQUESTS: &str = include_str!("requests.jsonl");

fn load() -> Vec<(Option<String>, OwnedRequest)> {
    REQUESTS
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let name = serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .and_then(|v| v.get("name").and_then(|n| n.as_str()).map(str::to_owned));
            (
                name,
                parse_line(line, "news.example.com").expect("bench request"),
            )
        })
        .collect()
}

fn classify(c: &mut Criterion) {
    let classifier = Classifier::builtin().expect("built-in rules");
    let site = SiteProfile::permissive_default();
    let requests = load();
    let facts: Vec<(Option<&str>, RequestFacts<'_>)> = requests
        .iter()
        .map(|(name, request)| (name.as_deref(), request.facts()))
        .collect();

    let mut group = c.benchmark_group("classify");
    for (name, facts) in facts.iter().filter_map(|(n, f)| n.map(|n| (n, f))) {
        group.bench_function(name, |b| {
            b.iter(|| classifier.classify(black_box(facts), black_box(&site)))
        });
    }
    group.finish();

    let mut mix = c.benchmark_group("classify_mix");
    mix.throughput(Throughput::Elements(facts.len() as u64));
    mix.bench_function("all_requests", |b| {
        b.iter(|| {
            for (_, facts) in &facts {
                black_box(classifier.classify(black_box(facts), &site));
            }
        })
    });
    // The same mix with every User-Agent made unique (a suffix per copy), over many more
    // User-Agents than the per-thread memo holds: every scan misses it, as under a flood of
    // random User-Agents.
    let copies = 256;
    let unique_agents: Vec<Option<String>> = (0..copies)
        .flat_map(|copy| {
            facts
                .iter()
                .map(move |(_, f)| f.user_agent.map(|ua| format!("{ua} copy/{copy}")))
        })
        .collect();
    let unseen: Vec<RequestFacts<'_>> = facts
        .iter()
        .cycle()
        .zip(&unique_agents)
        .map(|((_, f), ua)| RequestFacts {
            user_agent: ua.as_deref(),
            ..f.clone()
        })
        .collect();
    mix.throughput(Throughput::Elements(unseen.len() as u64));
    mix.bench_function("all_requests_unseen_user_agents", |b| {
        b.iter(|| {
            for facts in &unseen {
                black_box(classifier.classify(black_box(facts), &site));
            }
        })
    });
    mix.finish();
}

fn from_http(c: &mut Criterion) {
    let method = http::Method::GET;
    let uri: http::Uri = "/2024/05/how-we-built-it?utm_source=x".parse().unwrap();
    let mut headers = http::HeaderMap::new();
    for (name, value) in [
        ("host", "news.example.com"),
        (
            "user-agent",
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
        ),
        (
            "accept",
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        ),
        ("accept-language", "en-GB,en;q=0.9"),
        ("sec-fetch-site", "none"),
        ("sec-fetch-mode", "navigate"),
        ("sec-fetch-dest", "document"),
        ("cookie", "session=abc; _dl=v1.xyz"),
    ] {
        headers.insert(name, value.parse().unwrap());
    }
    c.bench_function("request_facts_from_http", |b| {
        b.iter(|| {
            RequestFacts::from_http(
                black_box(&method),
                black_box(&uri),
                black_box(&headers),
                "_dl",
            )
            .path
            .len()
        })
    });
}

criterion_group!(benches, classify, from_http);
criterion_main!(benches);
