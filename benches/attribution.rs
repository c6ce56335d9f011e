//! Attribution cost per request: signing and verifying a touch cookie, and the whole per-request
//! attribution step (`Attributor::read_cookies` + `Attributor::plan`) for realistic requests.
//!
//! Keys, classifications and cookie headers are built before timing; only the calls are timed.
//! Planning at a fixed time measures a new visitor whose cookie values this thread already
//! built in that second (the memo in `attribution::cookie_memo`); the `_new_second` variant
//! moves the clock each time, so both cookies are signed anew. Reading a returning visitor's
//! cookies measures values this thread already verified (the same memo); `cookie/decode_valid`
//! measures the check itself, which a value pays the first time a thread sees it.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use darklight::attribution::{AttributionConfig, Attributor, CookieContext, SigningKeys, Touch};
use darklight::classify::{Channel, Classification, Classifier, Name, SiteProfile};
use darklight::offline::parse_line;

const NOW: u64 = 1_790_000_000;
const MAX_AGE: u64 = 90 * 86_400;
const SECRET: &str = "0123456789abcdef0123456789abcdef-bench-secret";

fn touch() -> Touch {
    Touch {
        channel: Channel::DarkSocial,
        source: Some(Name::from("whatsapp")),
        medium: Some(Name::from("messaging")),
        campaign: Some("spring-sale-2026".into()),
        timestamp: NOW - 3 * 86_400,
    }
}

fn signing(c: &mut Criterion) {
    let keys = SigningKeys::new(SECRET.as_bytes(), &[]);
    let rotated = SigningKeys::new(
        b"a-newer-secret-of-at-least-32-bytes!!",
        &[SECRET.as_bytes()],
    );
    let touch = touch();
    let value = keys.encode("dl_first", &touch);
    // A well-formed value whose tag is wrong: one character inside the tag changed.
    let forged = {
        let mut v = value.clone().into_bytes();
        let i = v.len() - 6;
        v[i] = if v[i] == b'A' { b'B' } else { b'A' };
        String::from_utf8(v).unwrap()
    };

    let mut group = c.benchmark_group("cookie");
    group.bench_function("encode", |b| {
        b.iter(|| keys.encode(black_box("dl_first"), black_box(&touch)))
    });
    group.bench_function("decode_valid", |b| {
        b.iter(|| keys.decode(black_box("dl_first"), black_box(&value), NOW, MAX_AGE))
    });
    group.bench_function("decode_forged", |b| {
        b.iter(|| keys.decode(black_box("dl_first"), black_box(&forged), NOW, MAX_AGE))
    });
    group.bench_function("decode_previous_key", |b| {
        b.iter(|| rotated.decode(black_box("dl_first"), black_box(&value), NOW, MAX_AGE))
    });
    group.finish();
}

fn classification(classifier: &Classifier, line: &str) -> Classification {
    let request = parse_line(line, "news.example.com").expect("bench request");
    classifier.classify(&request.facts(), &SiteProfile::permissive_default())
}

fn per_request(c: &mut Criterion) {
    let mut attributor = Attributor::new(&AttributionConfig::default(), |name| {
        (name == "DARKLIGHT_COOKIE_SECRET").then(|| SECRET.to_string())
    })
    .expect("attribution settings");
    assert!(attributor.cookies_enabled());
    let keys = SigningKeys::new(SECRET.as_bytes(), &[]);
    let classifier = Classifier::builtin().expect("built-in rules");
    attributor.learn_values(classifier.rule_names());

    let whatsapp_in_app = classification(
        &classifier,
        r#"{"url":"https://news.example.com/articles/2026/11/the-recipe-everyone-forwarded","headers":{"User-Agent":"Mozilla/5.0 (Linux; Android 14; Pixel 8 Build/UQ1A.240105.004; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/131.0.0.0 Mobile Safari/537.36 WhatsApp/2.24.1.78","X-Requested-With":"com.whatsapp"}}"#,
    );
    let search = classification(
        &classifier,
        r#"{"url":"https://news.example.com/articles/2026/11/some-story","referer":"https://www.google.com/","headers":{"User-Agent":"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"}}"#,
    );
    let first = keys.encode("dl_first", &touch());
    let last = keys.encode("dl_last", &touch());
    // A returning visitor: analytics and session cookies around darklight's two.
    let returning = format!(
        "_ga=GA1.2.1234567890.1789000000; session=9f8e7d6c5b4a39281706f5e4d3c2b1a0; dl_first={first}; consent=analytics%3Dtrue; dl_last={last}"
    );
    let newcomer = "_ga=GA1.2.1234567890.1789000000; session=9f8e7d6c5b4a39281706f5e4d3c2b1a0";
    let context = CookieContext {
        path: "/articles/2026/11/the-recipe-everyone-forwarded",
        ..CookieContext::default()
    };

    let mut group = c.benchmark_group("attribution");
    group.bench_function("read_cookies_returning", |b| {
        b.iter(|| attributor.read_cookies(std::iter::once(black_box(returning.as_str())), NOW))
    });
    group.bench_function("read_cookies_none_of_ours", |b| {
        b.iter(|| attributor.read_cookies(std::iter::once(black_box(newcomer)), NOW))
    });
    let stored_returning = attributor.read_cookies(std::iter::once(returning.as_str()), NOW);
    assert!(stored_returning.first.is_some() && stored_returning.last.is_some());
    let stored_new = attributor.read_cookies(std::iter::once(newcomer), NOW);
    group.bench_function("plan_new_visitor_dark_social", |b| {
        b.iter(|| {
            attributor.plan(
                black_box(&whatsapp_in_app),
                black_box(&stored_new),
                &context,
                NOW,
            )
        })
    });
    // A later second each time: no value of this thread's memo fits, both cookies are signed.
    let mut second = NOW;
    group.bench_function("plan_new_visitor_dark_social_new_second", |b| {
        b.iter(|| {
            second += 1;
            attributor.plan(
                black_box(&whatsapp_in_app),
                black_box(&stored_new),
                &context,
                second,
            )
        })
    });
    group.bench_function("plan_returning_search", |b| {
        b.iter(|| {
            attributor.plan(
                black_box(&search),
                black_box(&stored_returning),
                &context,
                NOW,
            )
        })
    });
    group.bench_function("read_cookies_and_plan_returning", |b| {
        b.iter(|| {
            let stored =
                attributor.read_cookies(std::iter::once(black_box(returning.as_str())), NOW);
            attributor.plan(black_box(&whatsapp_in_app), &stored, &context, NOW)
        })
    });
    group.finish();
}

criterion_group!(benches, signing, per_request);
criterion_main!(benches);
