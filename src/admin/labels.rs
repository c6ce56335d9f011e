//! Bounded label tables: the label values a metric may carry, known in advance and numbered.
//!
//! Requests look a value up by `&str` (one hash, no allocation) and get its number; values that
//! are not in the table are counted under `other`. Tables only grow (a reload adds names, it never
//! renumbers), up to a fixed limit, so series keep their meaning for the life of the process.

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::lookup_map::LookupMap;

/// Number reserved for "no value" (`none`).
pub const NONE: u16 = 0;
/// Number reserved for a value outside the table (`other`).
pub const OTHER: u16 = 1;

/// An append-only, bounded set of label values, read without locks.
#[derive(Debug)]
pub struct LabelTable {
    snapshot: ArcSwap<Snapshot>,
    writer: Mutex<()>,
    limit: usize,
}

/// The table at one moment.
#[derive(Debug, Default)]
struct Snapshot {
    names: Vec<Arc<str>>,
    index: LookupMap<Arc<str>, u16>,
}

impl LabelTable {
    /// An empty table holding at most `limit` values besides `none` and `other`.
    pub fn new(limit: usize) -> LabelTable {
        let names: Vec<Arc<str>> = vec![Arc::from("none"), Arc::from("other")];
        LabelTable {
            snapshot: ArcSwap::from_pointee(Snapshot {
                names,
                index: LookupMap::default(),
            }),
            writer: Mutex::new(()),
            limit: limit.min(usize::from(u16::MAX) - 2),
        }
    }

    /// The number of `value`: [`NONE`] for `None`, [`OTHER`] when it is not in the table.
    pub fn lookup(&self, value: Option<&str>) -> u16 {
        match value {
            None => NONE,
            Some(value) => self
                .snapshot
                .load()
                .index
                .get(value)
                .copied()
                .unwrap_or(OTHER),
        }
    }

    /// Adds values not yet present, as long as the limit allows; `none` and `other` are kept
    /// for their own meaning.
    pub fn extend<'a>(&self, values: impl IntoIterator<Item = &'a str>) {
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.snapshot.load();
        let mut names = current.names.clone();
        let mut index = current.index.clone();
        for value in values {
            if value == "none" || value == "other" || index.contains_key(value) {
                continue;
            }
            if names.len() - 2 >= self.limit {
                break;
            }
            let Ok(number) = u16::try_from(names.len()) else {
                break;
            };
            let name: Arc<str> = Arc::from(value);
            names.push(Arc::clone(&name));
            index.insert(name, number);
        }
        self.snapshot.store(Arc::new(Snapshot { names, index }));
    }

    /// The names by number, for rendering.
    pub fn names(&self) -> Vec<Arc<str>> {
        self.snapshot.load().names.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values_get_numbers_others_share_one() {
        let table = LabelTable::new(2);
        table.extend(["whatsapp", "google", "slack", "other"]);
        assert_eq!(table.lookup(None), NONE);
        assert_eq!(table.lookup(Some("whatsapp")), 2);
        assert_eq!(table.lookup(Some("google")), 3);
        assert_eq!(table.lookup(Some("slack")), OTHER, "beyond the limit");
        assert_eq!(table.lookup(Some("example.org")), OTHER);
        table.extend(["google"]);
        let names = table.names();
        assert_eq!(names.len(), 4);
        assert_eq!(&*names[3], "google");
    }
}
