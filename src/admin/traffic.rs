//! Recent traffic for the status page: requests per channel in each of the last 60 minutes, and
//! the dark social landing pages and sources seen most often in the last hour or so.
//!
//! The minute buckets are atomics: a request adds one to its channel's counter in the current
//! minute's bucket. The first request of a new minute claims the bucket and clears what it held
//! an hour ago; a request racing with that clearing may be lost, which a status page can afford.
//!
//! The top lists use the Space-Saving algorithm over a bounded map: when the map is full, a new
//! key replaces the least counted one and inherits its count, so frequent keys always stay and
//! memory never grows past [`TOP_CAPACITY`] keys. Two generations of [`GENERATION_MINUTES`]
//! each are kept, so the lists cover between half an hour and an hour.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::classify::Channel;

/// Minutes of history kept.
pub const MINUTES: usize = 60;
/// Channels counted: every [`Channel`] plus "unclassified".
pub const CHANNEL_SLOTS: usize = Channel::ALL.len() + 1;
/// Most keys each top list tracks.
pub const TOP_CAPACITY: usize = 512;
/// Minutes before the top lists start a new generation.
pub const GENERATION_MINUTES: u64 = 30;
/// Longest landing path kept, in bytes; longer ones are cut at a character boundary.
pub const MAX_PATH_BYTES: usize = 256;

/// The counter slot of a channel (the last slot is "unclassified").
pub fn channel_slot(channel: Option<Channel>) -> usize {
    channel
        .and_then(|c| Channel::ALL.iter().position(|&x| x == c))
        .unwrap_or(Channel::ALL.len())
}

/// The name of a counter slot.
pub fn slot_name(slot: usize) -> &'static str {
    Channel::ALL
        .get(slot)
        .map_or("unclassified", |c| c.as_str())
}

/// One minute of traffic.
#[derive(Debug)]
struct MinuteBucket {
    /// The minute (Unix time / 60) these counts belong to, plus one (0 = never used).
    minute: AtomicU64,
    counts: [AtomicU64; CHANNEL_SLOTS],
}

/// Requests per channel per minute for the last hour, plus the dark social top lists.
#[derive(Debug)]
pub struct TrafficWindow {
    buckets: Box<[MinuteBucket]>,
    top: Mutex<TopLists>,
}

/// One minute of the window as a snapshot: the minute and its counts per channel slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MinuteCounts {
    /// Unix time of the minute's start.
    pub start: u64,
    /// Requests per channel slot (see [`slot_name`]).
    pub counts: [u64; CHANNEL_SLOTS],
}

/// A key of a top list with its (approximate, over-estimating) count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopEntry {
    /// The landing path or source.
    pub key: String,
    /// How often it was seen.
    pub count: u64,
}

#[derive(Debug, Default)]
struct TopLists {
    generation: u64,
    paths: [HashMap<Box<str>, u64>; 2],
    sources: [HashMap<Box<str>, u64>; 2],
}

impl Default for TrafficWindow {
    fn default() -> Self {
        TrafficWindow::new()
    }
}

impl TrafficWindow {
    /// An empty window.
    pub fn new() -> TrafficWindow {
        TrafficWindow {
            buckets: (0..MINUTES)
                .map(|_| MinuteBucket {
                    minute: AtomicU64::new(0),
                    counts: std::array::from_fn(|_| AtomicU64::new(0)),
                })
                .collect(),
            top: Mutex::new(TopLists::default()),
        }
    }

    /// Counts a request of `channel` at Unix time `now`.
    pub fn record(&self, now: u64, channel: Option<Channel>) {
        let minute = now / 60;
        let Some(bucket) = self.buckets.get(minute_index(minute)) else {
            return;
        };
        let tag = minute + 1;
        let seen = bucket.minute.load(Ordering::Acquire);
        if seen != tag {
            if seen > tag {
                return; // a late request for a minute already overwritten
            }
            if bucket
                .minute
                .compare_exchange(seen, tag, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                for counter in &bucket.counts {
                    counter.store(0, Ordering::Relaxed);
                }
            }
        }
        if let Some(counter) = bucket.counts.get(channel_slot(channel)) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a dark social landing on `path` from `source` at Unix time `now`.
    pub fn record_dark_social(&self, now: u64, path: &str, source: &str) {
        let generation = now / 60 / GENERATION_MINUTES;
        let mut top = self.top.lock().unwrap_or_else(|p| p.into_inner());
        if top.generation != generation {
            let [current, previous] = &mut top.paths;
            std::mem::swap(current, previous);
            current.clear();
            if top.generation + 1 != generation {
                top.paths[1].clear();
            }
            let [current, previous] = &mut top.sources;
            std::mem::swap(current, previous);
            current.clear();
            if top.generation + 1 != generation {
                top.sources[1].clear();
            }
            top.generation = generation;
        }
        let [paths, _] = &mut top.paths;
        space_saving(paths, truncate(path, MAX_PATH_BYTES));
        let [sources, _] = &mut top.sources;
        space_saving(sources, truncate(source, MAX_PATH_BYTES));
    }

    /// The last [`MINUTES`] minutes up to Unix time `now`, oldest first; minutes without
    /// traffic are zero.
    pub fn minutes(&self, now: u64) -> Vec<MinuteCounts> {
        let current = now / 60;
        (0..MINUTES as u64)
            .rev()
            .filter_map(|ago| current.checked_sub(ago))
            .map(|minute| {
                let mut counts = [0u64; CHANNEL_SLOTS];
                if let Some(bucket) = self.buckets.get(minute_index(minute))
                    && bucket.minute.load(Ordering::Acquire) == minute + 1
                {
                    for (total, counter) in counts.iter_mut().zip(&bucket.counts) {
                        *total = counter.load(Ordering::Relaxed);
                    }
                }
                MinuteCounts {
                    start: minute * 60,
                    counts,
                }
            })
            .collect()
    }

    /// The `limit` most seen dark social landing paths and sources, most seen first.
    pub fn top(&self, limit: usize) -> (Vec<TopEntry>, Vec<TopEntry>) {
        let top = self.top.lock().unwrap_or_else(|p| p.into_inner());
        (merged(&top.paths, limit), merged(&top.sources, limit))
    }
}

fn minute_index(minute: u64) -> usize {
    usize::try_from(minute % MINUTES as u64).unwrap_or(0)
}

fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Space-Saving: count `key`; when the map is full, the least counted key makes room.
fn space_saving(counts: &mut HashMap<Box<str>, u64>, key: &str) {
    if let Some(count) = counts.get_mut(key) {
        *count += 1;
        return;
    }
    let mut floor = 0;
    if counts.len() >= TOP_CAPACITY {
        let least = counts
            .iter()
            .min_by_key(|(_, count)| **count)
            .map(|(key, count)| (key.clone(), *count));
        if let Some((least, count)) = least {
            counts.remove(&least);
            floor = count;
        }
    }
    counts.insert(Box::from(key), floor + 1);
}

fn merged(generations: &[HashMap<Box<str>, u64>; 2], limit: usize) -> Vec<TopEntry> {
    let mut totals: HashMap<&str, u64> = HashMap::new();
    for generation in generations {
        for (key, count) in generation {
            *totals.entry(key).or_default() += count;
        }
    }
    let mut entries: Vec<TopEntry> = totals
        .into_iter()
        .map(|(key, count)| TopEntry {
            key: key.to_string(),
            count,
        })
        .collect();
    entries.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key)));
    entries.truncate(limit);
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_790_000_000;

    #[test]
    fn minutes_roll_over_after_an_hour() {
        let window = TrafficWindow::new();
        window.record(NOW, Some(Channel::DarkSocial));
        window.record(NOW, Some(Channel::DarkSocial));
        window.record(NOW - 120, Some(Channel::Email));
        window.record(NOW, None);
        let minutes = window.minutes(NOW);
        assert_eq!(minutes.len(), MINUTES);
        let last = &minutes[MINUTES - 1];
        assert_eq!(last.counts[channel_slot(Some(Channel::DarkSocial))], 2);
        assert_eq!(last.counts[CHANNEL_SLOTS - 1], 1);
        assert_eq!(
            minutes[MINUTES - 3].counts[channel_slot(Some(Channel::Email))],
            1
        );
        // An hour later the same bucket belongs to a new minute and starts from zero.
        window.record(NOW + 3600, Some(Channel::Direct));
        let later = window.minutes(NOW + 3600);
        let last = &later[MINUTES - 1];
        assert_eq!(last.counts[channel_slot(Some(Channel::DarkSocial))], 0);
        assert_eq!(last.counts[channel_slot(Some(Channel::Direct))], 1);
        // A late request for the overwritten minute is not counted in the new one.
        window.record(NOW, Some(Channel::Email));
        assert_eq!(
            window.minutes(NOW + 3600)[MINUTES - 1]
                .counts
                .iter()
                .sum::<u64>(),
            1
        );
        assert_eq!(slot_name(CHANNEL_SLOTS - 1), "unclassified");
        assert_eq!(slot_name(1), "dark_social");
    }

    #[test]
    fn top_lists_stay_bounded_and_keep_frequent_keys() {
        let window = TrafficWindow::new();
        for _ in 0..50 {
            window.record_dark_social(NOW, "/articles/popular", "whatsapp");
        }
        for i in 0..(TOP_CAPACITY * 3) {
            window.record_dark_social(NOW, &format!("/articles/{i}"), "unknown");
        }
        let (paths, sources) = window.top(3);
        assert_eq!(paths[0].key, "/articles/popular");
        assert_eq!(sources[0].key, "unknown");
        assert_eq!(sources[1].key, "whatsapp");
        let top = window.top.lock().unwrap();
        assert!(top.paths[0].len() <= TOP_CAPACITY);
        drop(top);
        // The next generation still shows the previous one; the one after forgets it.
        let later = NOW + GENERATION_MINUTES * 60;
        window.record_dark_social(later, "/new", "slack");
        assert_eq!(window.top(1).0[0].key, "/articles/popular");
        window.record_dark_social(later + GENERATION_MINUTES * 60, "/newer", "slack");
        let (paths, _) = window.top(10);
        assert!(
            paths.iter().all(|e| e.key != "/articles/popular"),
            "{paths:?}"
        );
        assert_eq!(truncate("ééé", 3), "é");
    }
}
