//! The hash map of darklight's lookup tables.
//!
//! The tables on the request path (hosts, click-id parameters, source and medium names,
//! upstream addresses, metric labels) are built from the configuration and only read per
//! request: clients choose the keys looked up, never the keys stored, so they cannot lengthen
//! a probe chain. foldhash, seeded per process, hashes such short keys several times faster
//! than the standard library's SipHash. Tables that clients fill (the preview table, the status
//! page's top paths) keep SipHash.

/// A `HashMap` with foldhash's per-process seeded hasher; build one with `default()`.
pub type LookupMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
