//! `Set-Cookie` values already built in the current second, kept per thread.
//!
//! A cookie holds a touch (channel, source, medium, campaign) and the second it happened, not
//! who the visitor is: within one second every new visitor from the same source gets the very
//! same signed value. Signing it is the dearest part of a request's attribution (two HMAC-SHA256
//! tags for a first visit), so each thread keeps the values it built lately and hands out the
//! same bytes again. An entry is reused only for an equal touch, name, `Secure` flag and owner
//! (one set of cookie settings: key, lifetime, domain), so a hit returns exactly what building
//! the value would. A miss, or a new second, only means building it again.

use std::cell::RefCell;
use std::hash::BuildHasher as _;
use std::sync::atomic::{AtomicU64, Ordering};

use http::HeaderValue;

use super::touch::Touch;

/// Sets of entries per thread, each holding [`WAYS`] entries: room for a second's distinct
/// touches at a busy site. A key may sit in any way of its set, so a few keys whose hashes
/// meet do not evict each other on every request.
const SETS: usize = 64;
/// Entries per set.
const WAYS: usize = 4;

/// Which of the two cookies a value is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum CookieKind {
    FirstTouch,
    LastTouch,
}

/// One set of cookie settings, told apart from every other one built in this process (a reload
/// builds new settings, perhaps with a new key, and must not reuse the old values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct MemoOwner(u64);

impl MemoOwner {
    /// A new owner, never equal to an earlier one.
    pub(crate) fn new() -> MemoOwner {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        MemoOwner(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// What a value is built from; `T` is the touch, owned in an entry, borrowed in a lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key<T> {
    owner: MemoOwner,
    kind: CookieKind,
    secure: bool,
    touch: T,
}

impl Key<Touch> {
    fn borrowed(&self) -> Key<&Touch> {
        Key {
            owner: self.owner,
            kind: self.kind,
            secure: self.secure,
            touch: &self.touch,
        }
    }
}

/// A built value and its key.
struct Entry {
    key: Key<Touch>,
    value: HeaderValue,
}

thread_local! {
    /// [`SETS`] sets of [`WAYS`] entries, the set chosen by the key's hash; empty until the
    /// thread's first cookie.
    static MEMO: RefCell<Vec<Option<Entry>>> = const { RefCell::new(Vec::new()) };
}

/// The `Set-Cookie` value for `touch`, from this thread's memo when `build` already made it
/// for the same key, else from `build` (then kept, in place of the entry of the oldest second
/// in its set when the set is full).
pub(crate) fn set_cookie_value(
    owner: MemoOwner,
    kind: CookieKind,
    secure: bool,
    touch: &Touch,
    build: impl FnOnce() -> HeaderValue,
) -> HeaderValue {
    let key = Key {
        owner,
        kind,
        secure,
        touch,
    };
    let set = set_of(&key);
    MEMO.with(|memo| {
        // Never fails: nothing below calls back into the memo while it is borrowed.
        let Ok(mut memo) = memo.try_borrow_mut() else {
            return build();
        };
        if memo.is_empty() {
            memo.resize_with(SETS * WAYS, || None);
        }
        let Some(ways) = memo.get_mut(set * WAYS..(set + 1) * WAYS) else {
            return build();
        };
        if let Some(found) = ways.iter().flatten().find(|e| e.key.borrowed() == key) {
            return found.value.clone();
        }
        let value = build();
        // An empty way first (`None` sorts first), else the oldest second.
        if let Some(way) = ways
            .iter_mut()
            .min_by_key(|way| way.as_ref().map(|e| e.key.touch.timestamp))
        {
            *way = Some(Entry {
                key: Key {
                    owner,
                    kind,
                    secure,
                    touch: touch.clone(),
                },
                value: value.clone(),
            });
        }
        value
    })
}

/// The key's set: the same for a borrowed and an owned touch.
fn set_of(key: &Key<&Touch>) -> usize {
    let hash = foldhash::fast::FixedState::default().hash_one(key);
    // The modulo keeps the index in range whatever the hash; SETS fits in a u64.
    (hash % SETS as u64) as usize
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::cell::Cell;

    use proptest::prelude::*;

    use super::*;
    use crate::classify::{Channel, Name};

    fn touch(source: &str, timestamp: u64) -> Touch {
        Touch {
            channel: Channel::DarkSocial,
            source: Some(Name::from(source)),
            medium: None,
            campaign: None,
            timestamp,
        }
    }

    /// A distinct value per call, so that a reused value shows.
    fn counting(builds: &Cell<u32>) -> impl FnOnce() -> HeaderValue + '_ {
        move || {
            builds.set(builds.get() + 1);
            HeaderValue::try_from(format!("v{}", builds.get())).unwrap()
        }
    }

    #[test]
    fn same_key_is_built_once() {
        let owner = MemoOwner::new();
        let builds = Cell::new(0);
        let t = touch("whatsapp", 1_800_000_000);
        let a = set_cookie_value(owner, CookieKind::FirstTouch, false, &t, counting(&builds));
        let b = set_cookie_value(owner, CookieKind::FirstTouch, false, &t, counting(&builds));
        assert_eq!(builds.get(), 1);
        assert_eq!(a, b);
    }

    /// Each part of the key on its own makes a new value.
    #[test]
    fn any_difference_in_the_key_builds_anew() {
        let owner = MemoOwner::new();
        let t = touch("whatsapp", 1_800_000_000);
        let builds = Cell::new(0);
        let first = set_cookie_value(owner, CookieKind::FirstTouch, false, &t, counting(&builds));
        let variants: [(MemoOwner, CookieKind, bool, Touch); 5] = [
            (MemoOwner::new(), CookieKind::FirstTouch, false, t.clone()),
            (owner, CookieKind::LastTouch, false, t.clone()),
            (owner, CookieKind::FirstTouch, true, t.clone()),
            (
                owner,
                CookieKind::FirstTouch,
                false,
                touch("whatsapp", 1_800_000_001),
            ),
            (
                owner,
                CookieKind::FirstTouch,
                false,
                touch("telegram", 1_800_000_000),
            ),
        ];
        for (n, (owner, kind, secure, touch)) in variants.into_iter().enumerate() {
            let before = builds.get();
            let value = set_cookie_value(owner, kind, secure, &touch, counting(&builds));
            assert_eq!(builds.get(), before + 1, "variant {n} was not built");
            assert_ne!(value, first, "variant {n} got the first value");
        }
    }

    /// `n` touches of successive seconds, from `from` on, whose keys (`key` but for the touch)
    /// share one set; about one second in [`SETS`] lands in a given set.
    fn same_set(key: Key<&Touch>, from: u64, n: usize) -> Vec<Touch> {
        let set = set_of(&key);
        (from..from + (100 * SETS * n) as u64)
            .map(|s| touch("whatsapp", s))
            .filter(|touch| set_of(&Key { touch, ..key }) == set)
            .take(n)
            .collect()
    }

    fn key(t: &Touch) -> Key<&Touch> {
        Key {
            owner: MemoOwner::new(),
            kind: CookieKind::FirstTouch,
            secure: false,
            touch: t,
        }
    }

    fn value_of(key: Key<&Touch>, builds: &Cell<u32>) -> HeaderValue {
        set_cookie_value(key.owner, key.kind, key.secure, key.touch, counting(builds))
    }

    /// Another owner, or another second, that lands in the same set is built, not reused.
    #[test]
    fn a_key_sharing_the_set_is_not_reused() {
        let t = touch("whatsapp", 1_800_000_000);
        let key = key(&t);
        let set = set_of(&key);
        let other_owner = std::iter::repeat_with(MemoOwner::new)
            .take(100 * SETS)
            .find(|&owner| set_of(&Key { owner, ..key }) == set)
            .unwrap();
        let other_second = same_set(key, 1_800_000_001, 1).pop().unwrap();
        let builds = Cell::new(0);
        let first = value_of(key, &builds);
        for other in [
            Key {
                owner: other_owner,
                ..key
            },
            Key {
                touch: &other_second,
                ..key
            },
        ] {
            let before = builds.get();
            let value = value_of(other, &builds);
            assert_eq!(builds.get(), before + 1);
            assert_ne!(value, first);
        }
    }

    /// Keys whose hashes meet are all kept, up to the ways of a set: they do not evict each
    /// other on every request.
    #[test]
    fn keys_sharing_a_set_are_all_kept() {
        let t = touch("whatsapp", 1_800_000_000);
        let owner_key = key(&t);
        let touches = same_set(owner_key, 1_800_000_000, WAYS);
        let builds = Cell::new(0);
        let keys: Vec<_> = touches
            .iter()
            .map(|touch| Key { touch, ..owner_key })
            .collect();
        let first: Vec<_> = keys.iter().map(|&k| value_of(k, &builds)).collect();
        let again: Vec<_> = keys.iter().map(|&k| value_of(k, &builds)).collect();
        assert_eq!(builds.get(), WAYS as u32);
        assert_eq!(first, again);
    }

    /// A full set makes room by dropping the entry of the oldest second.
    #[test]
    fn a_full_set_drops_its_oldest_second() {
        let t = touch("whatsapp", 1_800_000_000);
        let owner_key = key(&t);
        let touches = same_set(owner_key, 1_800_000_000, WAYS + 1);
        let keys: Vec<_> = touches
            .iter()
            .map(|touch| Key { touch, ..owner_key })
            .collect();
        let builds = Cell::new(0);
        for &k in &keys {
            value_of(k, &builds);
        }
        assert_eq!(builds.get(), WAYS as u32 + 1);
        for &k in &keys[1..] {
            value_of(k, &builds);
        }
        assert_eq!(builds.get(), WAYS as u32 + 1, "the newest seconds are kept");
        value_of(keys[0], &builds);
        assert_eq!(
            builds.get(),
            WAYS as u32 + 2,
            "the oldest second was dropped"
        );
    }

    #[test]
    fn owners_are_never_reused() {
        let a = MemoOwner::new();
        let b = MemoOwner::new();
        assert_ne!(a, b);
    }

    proptest! {
        /// Whatever the sequence (a small alphabet, so keys repeat and share sets), the memo
        /// answers what building the value answers.
        #[test]
        fn memo_agrees_with_building(
            keys in prop::collection::vec((0u8..3, any::<bool>(), any::<bool>(), 0u64..4), 1..200)
        ) {
            let owner = MemoOwner::new();
            let sources = ["whatsapp", "telegram", "slack"];
            for (source, last, secure, second) in keys {
                let t = touch(sources[usize::from(source)], 1_800_000_000 + second);
                let kind = if last { CookieKind::LastTouch } else { CookieKind::FirstTouch };
                let expected = format!("{source}-{last}-{secure}-{second}");
                let built = HeaderValue::try_from(expected.clone()).unwrap();
                let value = set_cookie_value(owner, kind, secure, &t, || built);
                prop_assert_eq!(value.to_str().unwrap(), expected);
            }
        }
    }
}
