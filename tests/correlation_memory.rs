//! The preview table's hard memory bound: a million entries stay well under 200 MB.
//!
//! Alone in its own test binary so the resident-set measurement sees only this table.

use darklight::classify::Name;
use darklight::correlation::PreviewTable;

/// Resident memory of this process, from /proc (Linux).
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

#[test]
fn a_million_entries_stay_well_under_200_mb() {
    const ENTRIES: u64 = 1_000_000;
    let Some(before) = resident_bytes() else {
        eprintln!("no /proc/self/statm: skipping the memory measurement");
        return;
    };
    let now = 1_790_000_000;
    let table = PreviewTable::new(ENTRIES as usize, 86_400, now);
    let platforms = [
        Name::from("whatsapp"),
        Name::from("slack"),
        Name::from("telegram"),
    ];
    // Realistic keys: host plus a dated article path, about 60 bytes.
    for i in 0..ENTRIES {
        let url = format!("www.example-news-site.com/articles/2026/11/a-story-about-{i:08}");
        table.record(&url, &platforms[(i % 3) as usize], now + i / 1000);
    }
    // One more pass past capacity: evictions keep the bound.
    for i in 0..10_000u64 {
        let url = format!("www.example-news-site.com/articles/2026/12/newer-{i:08}");
        table.record(&url, &platforms[0], now + 2000);
    }
    assert_eq!(table.len(), ENTRIES as usize);
    let after = resident_bytes().unwrap_or(before);
    let per_entry = after.saturating_sub(before) / ENTRIES;
    let total_mb = after.saturating_sub(before) as f64 / 1_048_576.0;
    println!(
        "preview table: {ENTRIES} entries, {total_mb:.0} MiB resident, {per_entry} bytes per entry"
    );
    assert!(total_mb < 160.0, "{total_mb:.0} MiB for a million entries");
}
