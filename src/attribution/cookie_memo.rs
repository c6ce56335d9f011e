//! `Set-Cookie` values already built in the current second, kept per thread.
//!
//! A cookie holds a touch (channel, source, medium, campaign) and the second it happened, not
//! who the visitor is: within one second every new visitor from the same source gets the very
//! same signed value. Signing it is the dearest part of a request's attribution (two HMAC-SHA256
//! tags for a first visit), so each thread keeps the values it built lately and hands out the
//! same bytes again. An entry is reused only for an equal touch, name, `Secure` flag and owner
//! (one set of cookie settings: key, lifetime, domain), so a hit returns exactly what building
//! the value would. A miss, a collision or a new second only means building it again.

use std::cell::RefCell;
use std::hash::BuildHasher as _;
use std::sync::atomic::{AtomicU64, Ordering};

use http::HeaderValue;

use super::touch::Touch;

/// Entries per thread: a second's distinct touches at a busy site, with room for collisions.
const SLOTS: usize = 128;

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
    /// Direct-mapped by the hash of the key; empty until the thread's first cookie.
    static MEMO: RefCell<Vec<Option<Entry>>> = const { RefCell::new(Vec::new()) };
}

/// The `Set-Cookie` value for `touch`, from this thread's memo when `build` already made it
/// for the same key, else from `build` (then kept).
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
    let slot = slot_of(&key);
    MEMO.with(|memo| {
        // Never fails: nothing below calls back into the memo while it is borrowed.
        let Ok(mut memo) = memo.try_borrow_mut() else {
            return build();
        };
        if memo.is_empty() {
            memo.resize_with(SLOTS, || None);
        }
        let Some(entry) = memo.get_mut(slot) else {
            return build();
        };
        if let Some(found) = entry.as_ref().filter(|e| e.key.borrowed() == key) {
            return found.value.clone();
        }
        let value = build();
        *entry = Some(Entry {
            key: Key {
                owner,
                kind,
                secure,
                touch: touch.clone(),
            },
            value: value.clone(),
        });
        value
    })
}

/// The key's slot: the same for a borrowed and an owned touch.
fn slot_of(key: &Key<&Touch>) -> usize {
    let hash = foldhash::fast::FixedState::default().hash_one(key);
    // The modulo keeps the index in range whatever the hash; SLOTS fits in a u64.
    (hash % SLOTS as u64) as usize
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

    /// Another owner, or another second, that lands in the same slot is built, not reused.
    #[test]
    fn a_colliding_key_is_not_reused() {
        let t = touch("whatsapp", 1_800_000_000);
        let key = Key {
            owner: MemoOwner::new(),
            kind: CookieKind::FirstTouch,
            secure: false,
            touch: &t,
        };
        let slot = slot_of(&key);
        // About one candidate in SLOTS lands in the slot.
        let other_owner = std::iter::repeat_with(MemoOwner::new)
            .take(100 * SLOTS)
            .find(|&owner| slot_of(&Key { owner, ..key }) == slot)
            .unwrap();
        let other_second = (1..100 * SLOTS as u64)
            .map(|s| touch("whatsapp", 1_800_000_000 + s))
            .find(|touch| slot_of(&Key { touch, ..key }) == slot)
            .unwrap();
        for (owner, touch) in [(other_owner, &t), (key.owner, &other_second)] {
            let builds = Cell::new(0);
            let first = set_cookie_value(key.owner, key.kind, false, &t, counting(&builds));
            let other = set_cookie_value(owner, key.kind, false, touch, counting(&builds));
            assert_eq!(builds.get(), 2);
            assert_ne!(first, other);
        }
    }

    #[test]
    fn owners_are_never_reused() {
        let a = MemoOwner::new();
        let b = MemoOwner::new();
        assert_ne!(a, b);
    }

    proptest! {
        /// Whatever the sequence (a small alphabet, so keys repeat and slots collide), the memo
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
