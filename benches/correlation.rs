//! The preview table on the request path: lookups (hit and miss), recording a preview, and
//! lookups while other threads record (contention). Keys and tables are built before timing.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use darklight::classify::Name;
use darklight::correlation::PreviewTable;

const NOW: u64 = 1_790_000_000;
const ENTRIES: usize = 100_000;

fn keys(prefix: &str, count: usize) -> Vec<String> {
    (0..count)
        .map(|i| format!("www.example-news-site.com/articles/2026/11/{prefix}-{i:08}"))
        .collect()
}

fn filled() -> (Arc<PreviewTable>, Vec<String>) {
    let table = Arc::new(PreviewTable::new(ENTRIES * 2, 86_400, NOW));
    let urls = keys("story", ENTRIES);
    let platforms = [Name::from("whatsapp"), Name::from("slack")];
    for (i, url) in urls.iter().enumerate() {
        table.record(url, &platforms[i % 2], NOW);
    }
    (table, urls)
}

fn preview_table(c: &mut Criterion) {
    let (table, urls) = filled();
    let misses = keys("unseen", 1024);
    let fresh = keys("fresh", 1 << 16);
    let slack = Name::from("slack");
    let mut group = c.benchmark_group("preview_table");

    let mut i = 0usize;
    group.bench_function("lookup_hit", |b| {
        b.iter(|| {
            i = (i + 7919) % urls.len();
            black_box(table.lookup(black_box(&urls[i]), NOW + 60, 86_400))
        })
    });
    let mut j = 0usize;
    group.bench_function("lookup_miss", |b| {
        b.iter(|| {
            j = (j + 1) % misses.len();
            black_box(table.lookup(black_box(&misses[j]), NOW + 60, 86_400))
        })
    });
    let mut k = 0usize;
    group.bench_function("record", |b| {
        b.iter(|| {
            k = (k + 1) % fresh.len();
            table.record(black_box(&fresh[k]), &slack, NOW + 60);
        })
    });

    // Lookups on this thread while another thread records previews as fast as it can.
    group.bench_function("lookup_hit_while_recording", |b| {
        b.iter_custom(|iterations| {
            let stop = Arc::new(AtomicBool::new(false));
            let writer = {
                let (table, stop, fresh, slack) = (
                    Arc::clone(&table),
                    Arc::clone(&stop),
                    fresh.clone(),
                    slack.clone(),
                );
                std::thread::spawn(move || {
                    let mut n = 0usize;
                    while !stop.load(Ordering::Relaxed) {
                        n = (n + 1) % fresh.len();
                        table.record(&fresh[n], &slack, NOW + 120);
                    }
                })
            };
            let start = Instant::now();
            let mut i = 0usize;
            for _ in 0..iterations {
                i = (i + 7919) % urls.len();
                black_box(table.lookup(&urls[i], NOW + 120, 86_400));
            }
            let elapsed = start.elapsed();
            stop.store(true, Ordering::Relaxed);
            let _ = writer.join();
            elapsed
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = preview_table
}
criterion_main!(benches);
