//! The in-memory preview table: which platforms fetched a preview of which URL, and when.
//!
//! A [`DashMap`] keyed by a 64-bit hash of the normalised URL, so lookups on the request path
//! take one shard read lock. Memory is bounded twice: entries older than the time-to-live are
//! dropped, and past `max_entries` the oldest entries are evicted in insertion order (a FIFO of
//! `(key, time)` records, touched only when a preview is recorded — rare next to visits).
//! Times are seconds since the Unix epoch, passed in by the caller, so the table is testable
//! without a clock.

use std::collections::VecDeque;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};

use dashmap::DashMap;

use crate::classify::Name;

/// Platforms remembered per URL; a fourth evicts the least recent.
pub const PLATFORMS_PER_URL: usize = 3;
/// Longest URL text kept for operators, in bytes.
pub const URL_TEXT_LIMIT: usize = 160;
/// URL texts kept for operators (the most recently previewed); entries beyond it are shown by
/// their key only. Texts are kept apart from the entries so that the table itself stays small.
pub const URL_TEXTS_KEPT: usize = 50_000;
/// Distinct platform names the table can tell apart (more share the last slot).
const PLATFORM_LIMIT: usize = 255;

/// One platform's previews of one URL (8 bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct PlatformHits {
    /// Seconds since the table's epoch of the latest preview (0 = empty slot).
    last_seen: u32,
    /// Previews seen (saturating).
    previews: u16,
    /// Visits attributed to this platform (saturating).
    attributed: u16,
}

/// One URL: up to three platforms, with their registry indices kept apart to avoid padding.
#[derive(Debug, Default)]
struct Entry {
    hits: [PlatformHits; PLATFORMS_PER_URL],
    platforms: [u8; PLATFORMS_PER_URL],
}

impl Entry {
    fn newest(&self) -> u32 {
        self.hits.iter().map(|h| h.last_seen).max().unwrap_or(0)
    }

    /// Live slots with their platform index.
    fn live(&self) -> impl Iterator<Item = (u8, &PlatformHits)> {
        self.platforms
            .iter()
            .copied()
            .zip(self.hits.iter())
            .filter(|(_, h)| h.last_seen != 0)
    }
}

/// What a lookup found for a URL: the platforms that previewed it within the window, most
/// recent first.
#[derive(Debug, Clone, PartialEq)]
pub struct PreviewMatch {
    /// Most recent preview's platform.
    pub platform: Name,
    /// Seconds since that preview.
    pub age_secs: u64,
    /// How many distinct platforms previewed the URL within the window.
    pub platforms: usize,
}

/// Counters for one URL and platform, for operators.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PreviewCounters {
    /// The normalised URL (host, path and identifying query parameters), possibly truncated.
    pub url: String,
    /// The preview platform.
    pub platform: String,
    /// Preview fetches seen (saturates at 65535).
    pub previews: u16,
    /// Later visits attributed to this platform (saturates at 65535).
    pub visits_attributed: u16,
    /// Unix time of the latest preview.
    pub last_preview: u64,
}

/// Table-wide statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct TableStats {
    /// URLs currently tracked.
    pub entries: usize,
    /// Preview fetches recorded since start.
    pub previews_recorded: u64,
    /// Visits attributed since start.
    pub visits_attributed: u64,
    /// Entries evicted to stay under `max_entries`.
    pub evicted: u64,
    /// Entries dropped after their time-to-live.
    pub expired: u64,
}

/// The bounded, concurrent preview table.
pub struct PreviewTable {
    entries: DashMap<u64, Entry>,
    order: Mutex<VecDeque<(u64, u32)>>,
    url_texts: DashMap<u64, Box<str>>,
    url_text_order: Mutex<VecDeque<u64>>,
    platforms: RwLock<Vec<Name>>,
    hasher: RandomState,
    epoch: u64,
    ttl_secs: u64,
    max_entries: usize,
    previews_recorded: AtomicU64,
    visits_attributed: AtomicU64,
    evicted: AtomicU64,
    expired: AtomicU64,
}

impl std::fmt::Debug for PreviewTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreviewTable")
            .field("entries", &self.entries.len())
            .field("max_entries", &self.max_entries)
            .field("ttl_secs", &self.ttl_secs)
            .finish()
    }
}

impl PreviewTable {
    /// An empty table; `now` anchors its compact 32-bit timestamps.
    pub fn new(max_entries: usize, ttl_secs: u64, now: u64) -> PreviewTable {
        PreviewTable {
            entries: DashMap::with_capacity(max_entries.min(1 << 16)),
            order: Mutex::new(VecDeque::new()),
            url_texts: DashMap::new(),
            url_text_order: Mutex::new(VecDeque::new()),
            platforms: RwLock::new(Vec::new()),
            hasher: RandomState::new(),
            // One hour back, so that a preview recorded "now" is never at time 0 (empty).
            epoch: now.saturating_sub(3600),
            ttl_secs,
            max_entries: max_entries.max(1),
            previews_recorded: AtomicU64::new(0),
            visits_attributed: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
            expired: AtomicU64::new(0),
        }
    }

    /// Records a preview fetch of `url` by `platform`.
    pub fn record(&self, url: &str, platform: &Name, now: u64) {
        let key = self.hasher.hash_one(url);
        let stamp = self.stamp(now);
        let index = self.platform_index(platform);
        self.previews_recorded.fetch_add(1, Ordering::Relaxed);
        let (new_url, queued) = {
            let mut created = false;
            let mut entry = self.entries.entry(key).or_insert_with(|| {
                created = true;
                Entry::default()
            });
            let entry = &mut *entry;
            // Refreshed earlier in the same second: the queue already holds `(key, stamp)`.
            let queued = !created && entry.newest() == stamp;
            let slot = (0..PLATFORMS_PER_URL)
                .find(|&i| entry.hits[i].last_seen != 0 && entry.platforms[i] == index)
                .or_else(|| entry.hits.iter().position(|h| h.last_seen == 0))
                .unwrap_or_else(|| oldest_slot(&entry.hits));
            if entry.platforms[slot] != index || entry.hits[slot].last_seen == 0 {
                entry.platforms[slot] = index;
                entry.hits[slot] = PlatformHits::default();
            }
            entry.hits[slot].last_seen = stamp;
            entry.hits[slot].previews = entry.hits[slot].previews.saturating_add(1);
            (created, queued)
        };
        if new_url {
            self.remember_url_text(key, url);
        }
        self.note_insertion(key, stamp, now, !queued);
    }

    /// The platforms that previewed `url` within `window_secs` before `now`.
    pub fn lookup(&self, url: &str, now: u64, window_secs: u64) -> Option<PreviewMatch> {
        let key = self.hasher.hash_one(url);
        let stamp = self.stamp(now);
        let window = window_secs.min(self.ttl_secs);
        let fresh = |h: &PlatformHits| {
            h.last_seen != 0 && u64::from(stamp.saturating_sub(h.last_seen)) <= window
        };
        let (platform, age, platforms) = {
            let entry = self.entries.get(&key)?;
            let (platform, recent) = entry
                .live()
                .filter(|(_, h)| fresh(h))
                .max_by_key(|(_, h)| h.last_seen)?;
            let platforms = entry.live().filter(|(_, h)| fresh(h)).count();
            (
                platform,
                u64::from(stamp.saturating_sub(recent.last_seen)),
                platforms,
            )
        };
        Some(PreviewMatch {
            platform: self.platform_name(platform),
            age_secs: age,
            platforms,
        })
    }

    /// Counts a visit to `url` attributed to `platform`.
    pub fn mark_attributed(&self, url: &str, platform: &Name) {
        let key = self.hasher.hash_one(url);
        let index = self.platform_index(platform);
        if let Some(mut entry) = self.entries.get_mut(&key) {
            let entry = &mut *entry;
            if let Some(slot) = (0..PLATFORMS_PER_URL)
                .find(|&i| entry.platforms[i] == index && entry.hits[i].last_seen != 0)
            {
                entry.hits[slot].attributed = entry.hits[slot].attributed.saturating_add(1);
            }
        }
        self.visits_attributed.fetch_add(1, Ordering::Relaxed);
    }

    /// Drops entries whose newest preview is older than the time-to-live. Recording does this
    /// as it goes; call it periodically too so an idle table shrinks.
    pub fn expire(&self, now: u64) {
        let stamp = self.stamp(now);
        let mut order = self.order.lock().unwrap_or_else(|p| p.into_inner());
        self.pop_front(&mut order, |oldest| {
            u64::from(stamp.saturating_sub(oldest)) > self.ttl_secs
        });
        release_spare(&mut order);
    }

    /// Entries tracked now.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is tracked.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Table-wide statistics.
    pub fn stats(&self) -> TableStats {
        TableStats {
            entries: self.entries.len(),
            previews_recorded: self.previews_recorded.load(Ordering::Relaxed),
            visits_attributed: self.visits_attributed.load(Ordering::Relaxed),
            evicted: self.evicted.load(Ordering::Relaxed),
            expired: self.expired.load(Ordering::Relaxed),
        }
    }

    /// Counters per URL and platform, most previewed first, at most `limit` rows.
    pub fn top(&self, limit: usize) -> Vec<PreviewCounters> {
        let mut rows: Vec<PreviewCounters> = Vec::new();
        for entry in &self.entries {
            let url = self
                .url_texts
                .get(entry.key())
                .map_or_else(|| format!("#{:016x}", entry.key()), |t| t.to_string());
            for (platform, hit) in entry.live() {
                rows.push(PreviewCounters {
                    url: url.clone(),
                    platform: self.platform_name(platform).to_string(),
                    previews: hit.previews,
                    visits_attributed: hit.attributed,
                    last_preview: self.epoch + u64::from(hit.last_seen),
                });
            }
        }
        rows.sort_by(|a, b| {
            b.previews
                .cmp(&a.previews)
                .then(b.visits_attributed.cmp(&a.visits_attributed))
                .then_with(|| a.url.cmp(&b.url))
                .then_with(|| a.platform.cmp(&b.platform))
        });
        rows.truncate(limit);
        rows
    }

    fn stamp(&self, now: u64) -> u32 {
        u32::try_from(now.saturating_sub(self.epoch)).unwrap_or(u32::MAX)
    }

    /// Queues the record `(key, stamp)` when `push`, then expires, evicts and compacts.
    fn note_insertion(&self, key: u64, stamp: u32, now: u64, push: bool) {
        let mut order = self.order.lock().unwrap_or_else(|p| p.into_inner());
        if push {
            order.push_back((key, stamp));
        }
        let ttl = self.ttl_secs;
        let max = self.max_entries;
        let current = self.stamp(now);
        self.pop_front(&mut order, |oldest| {
            u64::from(current.saturating_sub(oldest)) > ttl
        });
        // Over capacity: evict in insertion order, skipping records made stale by a later
        // preview of the same URL.
        while self.entries.len() > max {
            let Some((key, recorded)) = order.pop_front() else {
                break;
            };
            if self.remove_unless_refreshed(key, recorded) {
                self.evicted.fetch_add(1, Ordering::Relaxed);
            }
        }
        // Stale records pile up when popular URLs are previewed second after second; keep
        // only the newest record of each live entry once they outnumber the live entries, so
        // the queue (and its memory) follows the table's size, not `max_entries` or the
        // traffic. Each compaction follows at least as many pushes as it visits records.
        let live = self.entries.len();
        if order.len() > 2 * live + 64 {
            let mut seen = std::collections::HashSet::with_capacity(live);
            let mut kept: Vec<(u64, u32)> = order
                .drain(..)
                .rev()
                .filter(|(key, recorded)| {
                    self.entries
                        .get(key)
                        .is_some_and(|entry| entry.newest() == *recorded)
                        && seen.insert(*key)
                })
                .collect();
            kept.reverse();
            order.extend(kept);
        }
        release_spare(&mut order);
    }

    /// Pops records from the front while `expired(recorded_time)` holds, removing entries not
    /// refreshed since.
    fn pop_front(&self, order: &mut VecDeque<(u64, u32)>, expired: impl Fn(u32) -> bool) {
        while let Some(&(key, recorded)) = order.front() {
            if !expired(recorded) {
                break;
            }
            order.pop_front();
            if self.remove_unless_refreshed(key, recorded) {
                self.expired.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Removes `key` unless a preview after `recorded` refreshed it; true when removed.
    fn remove_unless_refreshed(&self, key: u64, recorded: u32) -> bool {
        let removed = self
            .entries
            .remove_if(&key, |_, entry| entry.newest() <= recorded)
            .is_some();
        if removed {
            self.url_texts.remove(&key);
        }
        removed
    }

    /// Keeps the text of a newly tracked URL, forgetting the oldest texts past the limit. (A
    /// URL evicted and tracked again may lose its text early: it is for display only.)
    fn remember_url_text(&self, key: u64, url: &str) {
        self.url_texts
            .insert(key, truncate(url, URL_TEXT_LIMIT).into());
        let mut order = self
            .url_text_order
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        order.push_back(key);
        while order.len() > URL_TEXTS_KEPT {
            if let Some(old) = order.pop_front() {
                self.url_texts.remove(&old);
            }
        }
    }

    fn platform_index(&self, platform: &Name) -> u8 {
        let position = |names: &[Name]| names.iter().position(|n| n == platform);
        {
            let names = self.platforms.read().unwrap_or_else(|p| p.into_inner());
            if let Some(index) = position(&names) {
                return u8::try_from(index).unwrap_or(u8::MAX);
            }
        }
        let mut names = self.platforms.write().unwrap_or_else(|p| p.into_inner());
        if let Some(index) = position(&names) {
            return u8::try_from(index).unwrap_or(u8::MAX);
        }
        if names.len() < PLATFORM_LIMIT {
            names.push(platform.clone());
            u8::try_from(names.len() - 1).unwrap_or(u8::MAX)
        } else {
            u8::MAX
        }
    }

    fn platform_name(&self, index: u8) -> Name {
        let names = self.platforms.read().unwrap_or_else(|p| p.into_inner());
        names
            .get(usize::from(index))
            .cloned()
            .unwrap_or_else(|| Name::from("other"))
    }
}

/// Gives back most of a queue's ring buffer once a burst of records has left it.
fn release_spare<T>(queue: &mut VecDeque<T>) {
    if queue.capacity() > 4 * queue.len() + 256 {
        queue.shrink_to(2 * queue.len() + 64);
    }
}

fn oldest_slot(hits: &[PlatformHits; PLATFORMS_PER_URL]) -> usize {
    hits.iter()
        .enumerate()
        .min_by_key(|(_, h)| h.last_seen)
        .map_or(0, |(i, _)| i)
}

fn truncate(text: &str, limit: usize) -> &str {
    let mut end = text.len().min(limit);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_790_000_000;
    const HOUR: u64 = 3600;

    fn name(n: &str) -> Name {
        Name::from(n)
    }

    #[test]
    fn records_and_finds_the_most_recent_platform() {
        let table = PreviewTable::new(100, 24 * HOUR, NOW);
        table.record("example.com/a", &name("slack"), NOW);
        table.record("example.com/a", &name("whatsapp"), NOW + 60);
        let found = table.lookup("example.com/a", NOW + 120, 24 * HOUR).unwrap();
        table.mark_attributed("example.com/a", &found.platform);
        assert_eq!(found.platform, name("whatsapp"));
        assert_eq!(found.age_secs, 60);
        assert_eq!(found.platforms, 2);
        assert_eq!(table.lookup("example.com/b", NOW, 24 * HOUR), None);
        let top = table.top(10);
        let whatsapp = top.iter().find(|r| r.platform == "whatsapp").unwrap();
        assert_eq!((whatsapp.previews, whatsapp.visits_attributed), (1, 1));
        assert_eq!(whatsapp.last_preview, NOW + 60);
    }

    #[test]
    fn window_and_ttl_limit_matches() {
        let table = PreviewTable::new(100, 24 * HOUR, NOW);
        table.record("u", &name("slack"), NOW);
        assert!(
            table.lookup("u", NOW + 2 * HOUR, HOUR).is_none(),
            "outside the window"
        );
        assert!(table.lookup("u", NOW + 2 * HOUR, 48 * HOUR).is_some());
        assert!(
            table.lookup("u", NOW + 25 * HOUR, 48 * HOUR).is_none(),
            "past the TTL"
        );
        table.expire(NOW + 25 * HOUR);
        assert!(table.is_empty());
        assert_eq!(table.stats().expired, 1);
    }

    #[test]
    fn a_later_preview_keeps_the_entry_alive() {
        let table = PreviewTable::new(100, 10 * HOUR, NOW);
        table.record("u", &name("slack"), NOW);
        table.record("u", &name("slack"), NOW + 9 * HOUR);
        table.expire(NOW + 11 * HOUR);
        assert_eq!(table.len(), 1);
        table.expire(NOW + 20 * HOUR);
        assert_eq!(table.len(), 0);
    }

    #[test]
    fn capacity_evicts_the_oldest() {
        let table = PreviewTable::new(3, 24 * HOUR, NOW);
        for (i, url) in ["a", "b", "c", "d", "e"].iter().enumerate() {
            table.record(url, &name("slack"), NOW + i as u64);
        }
        assert_eq!(table.len(), 3);
        assert!(table.lookup("a", NOW + 10, HOUR).is_none());
        assert!(table.lookup("b", NOW + 10, HOUR).is_none());
        assert!(table.lookup("e", NOW + 10, HOUR).is_some());
        assert_eq!(table.stats().evicted, 2);
    }

    #[test]
    fn refreshed_entries_are_not_evicted_first() {
        let table = PreviewTable::new(2, 24 * HOUR, NOW);
        table.record("a", &name("slack"), NOW);
        table.record("b", &name("slack"), NOW + 1);
        table.record("a", &name("slack"), NOW + 2);
        table.record("c", &name("slack"), NOW + 3);
        assert!(
            table.lookup("a", NOW + 4, HOUR).is_some(),
            "a was refreshed"
        );
        assert!(table.lookup("b", NOW + 4, HOUR).is_none());
    }

    #[test]
    fn a_fourth_platform_replaces_the_least_recent() {
        let table = PreviewTable::new(10, 24 * HOUR, NOW);
        for (i, p) in ["slack", "whatsapp", "telegram", "discord"]
            .iter()
            .enumerate()
        {
            table.record("u", &name(p), NOW + i as u64);
        }
        let platforms: Vec<String> = table.top(10).into_iter().map(|r| r.platform).collect();
        assert_eq!(platforms.len(), PLATFORMS_PER_URL);
        assert!(!platforms.contains(&"slack".to_string()));
    }

    #[test]
    fn many_previews_in_the_same_second_keep_the_queue_bounded() {
        let table = PreviewTable::new(4, 24 * HOUR, NOW);
        for _ in 0..10_000 {
            table.record("hot", &name("slack"), NOW);
        }
        let queued = table.order.lock().unwrap().len();
        assert!(queued <= 2 * 4 + 64 + 1, "{queued}");
        assert!(table.lookup("hot", NOW, HOUR).is_some());
    }

    #[test]
    fn queue_follows_the_table_not_its_capacity() {
        // Regression: with the default capacity the queue grew to 400,000 records (8 MiB)
        // for a handful of popular URLs before any compaction.
        let table = PreviewTable::new(200_000, 24 * HOUR, NOW);
        for second in 0..5_000 {
            for url in ["a", "b", "c"] {
                table.record(url, &name("whatsapp"), NOW + second);
                table.record(url, &name("slack"), NOW + second);
            }
        }
        let order = table.order.lock().unwrap();
        assert!(order.len() <= 2 * 3 + 64 + 1, "{}", order.len());
        assert!(
            order.capacity() <= 4 * (2 * 3 + 64 + 1) + 256,
            "{}",
            order.capacity()
        );
        drop(order);
        assert_eq!(table.len(), 3);
        assert!(table.lookup("b", NOW + 4_999, HOUR).is_some());
    }

    #[test]
    fn previews_in_one_second_queue_one_record() {
        let table = PreviewTable::new(200_000, 24 * HOUR, NOW);
        for _ in 0..1_000 {
            table.record("hot", &name("slack"), NOW);
            table.record("hot", &name("whatsapp"), NOW);
        }
        assert_eq!(table.order.lock().unwrap().len(), 1);
        // The entry still expires on time through that one record.
        table.expire(NOW + 24 * HOUR + 1);
        assert!(table.is_empty());
    }

    #[test]
    fn expired_burst_gives_the_queue_memory_back() {
        let table = PreviewTable::new(200_000, HOUR, NOW);
        for i in 0..20_000 {
            table.record(&format!("/burst/{i}"), &name("slack"), NOW);
        }
        assert!(table.order.lock().unwrap().capacity() >= 20_000);
        table.expire(NOW + HOUR + 1);
        assert!(table.is_empty());
        assert!(table.order.lock().unwrap().capacity() <= 256);
    }

    #[test]
    fn queue_of_stale_records_stays_bounded() {
        let table = PreviewTable::new(4, 24 * HOUR, NOW);
        for i in 0..1000 {
            table.record("hot", &name("slack"), NOW + i);
        }
        let queued = table.order.lock().unwrap().len();
        assert!(queued <= 2 * 4 + 64 + 1, "{queued}");
        assert_eq!(table.len(), 1);
    }
}
