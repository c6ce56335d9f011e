//! Cookie work already done lately, kept per thread: the `Set-Cookie` values built in the
//! current second, and the cookie values already verified.
//!
//! A cookie holds a touch (channel, source, medium, campaign) and the second it happened, not
//! who the visitor is: within one second every new visitor from the same source gets the very
//! same signed value. Signing it is the dearest part of a request's attribution (two HMAC-SHA256
//! tags for a first visit), so each thread keeps the values it built lately and hands out the
//! same bytes again. An entry is reused only for an equal touch, name, `Secure` flag and owner
//! (one set of cookie settings: key, lifetime, domain), so a hit returns exactly what building
//! the value would. A miss, or a new second, only means building it again.
//!
//! A returning visitor sends the same cookie value with every request of a visit (the page and
//! each of its assets), and checking its tag is an HMAC-SHA256 again. A value that verified is
//! kept with its touch, so the same bytes under the same owner and name are not checked twice;
//! its age is still checked on every request, and a value that failed is never kept.

use std::cell::RefCell;
use std::hash::BuildHasher as _;
use std::sync::atomic::{AtomicU64, Ordering};

use http::HeaderValue;

use super::touch::Touch;

/// Sets of entries per thread and memo, each holding [`WAYS`] entries: room for a second's
/// distinct touches at a busy site. A key may sit in any way of its set, so a few keys whose
/// hashes meet do not evict each other on every request.
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

/// [`SETS`] sets of [`WAYS`] entries, the set chosen by the key's hash; empty until first used.
struct Sets<E>(Vec<Option<E>>);

impl<E> Sets<E> {
    const fn new() -> Sets<E> {
        Sets(Vec::new())
    }

    /// The ways of set `set` (below [`SETS`]).
    fn ways(&mut self, set: usize) -> Option<&mut [Option<E>]> {
        if self.0.is_empty() {
            self.0.resize_with(SETS * WAYS, || None);
        }
        self.0.get_mut(set * WAYS..(set + 1) * WAYS)
    }
}

/// Puts `entry` in an empty way of `ways`, else in place of the entry of least `age`.
fn keep<E>(ways: &mut [Option<E>], entry: E, age: impl Fn(&E) -> u64) {
    // `None` sorts first.
    if let Some(way) = ways.iter_mut().min_by_key(|way| way.as_ref().map(&age)) {
        *way = Some(entry);
    }
}

/// The set of anything hashable: the same for a borrowed and an owned form of a key.
fn set_of(key: &impl std::hash::Hash) -> usize {
    let hash = foldhash::fast::FixedState::default().hash_one(key);
    // The modulo keeps the index in range whatever the hash; SETS fits in a u64.
    (hash % SETS as u64) as usize
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

/// A cookie value that verified, with its owner, its cookie and what it holds.
struct Verified {
    owner: MemoOwner,
    kind: CookieKind,
    value: Box<str>,
    touch: Touch,
    /// When it was kept, in this thread's count of values kept: the first kept goes first.
    kept: u64,
}

/// The verified values of one thread.
struct VerifiedValues {
    sets: Sets<Verified>,
    kept: u64,
}

thread_local! {
    /// The `Set-Cookie` values this thread built lately.
    static BUILT: RefCell<Sets<Entry>> = const { RefCell::new(Sets::new()) };
    /// The cookie values this thread verified lately.
    static VERIFIED: RefCell<VerifiedValues> = const {
        RefCell::new(VerifiedValues { sets: Sets::new(), kept: 0 })
    };
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
    BUILT.with(|built| {
        // Never fails: nothing below calls back into the memo while it is borrowed.
        let Ok(mut built) = built.try_borrow_mut() else {
            return build();
        };
        let Some(ways) = built.ways(set) else {
            return build();
        };
        if let Some(found) = ways.iter().flatten().find(|e| e.key.borrowed() == key) {
            return found.value.clone();
        }
        let value = build();
        let entry = Entry {
            key: Key {
                owner,
                kind,
                secure,
                touch: touch.clone(),
            },
            value: value.clone(),
        };
        keep(ways, entry, |e| e.key.touch.timestamp);
        value
    })
}

/// The touch in cookie value `value` of kind `kind` under `owner`'s settings, from this
/// thread's memo when that very value verified before, else from `verify` (then kept when it
/// verified, in place of the entry kept first in its set when the set is full). The touch's
/// age is the caller's to check.
pub(crate) fn verified_touch(
    owner: MemoOwner,
    kind: CookieKind,
    value: &str,
    verify: impl FnOnce() -> Option<Touch>,
) -> Option<Touch> {
    let set = set_of(&(owner, kind, value));
    VERIFIED.with(|verified| {
        // Never fails: nothing below calls back into the memo while it is borrowed.
        let Ok(mut verified) = verified.try_borrow_mut() else {
            return verify();
        };
        let VerifiedValues { sets, kept } = &mut *verified;
        let Some(ways) = sets.ways(set) else {
            return verify();
        };
        if let Some(found) = ways
            .iter()
            .flatten()
            .find(|e| e.owner == owner && e.kind == kind && *e.value == *value)
        {
            return Some(found.touch.clone());
        }
        let touch = verify()?;
        *kept += 1;
        let entry = Verified {
            owner,
            kind,
            value: value.into(),
            touch: touch.clone(),
            kept: *kept,
        };
        keep(ways, entry, |e| e.kept);
        Some(touch)
    })
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

    /// Verifies as `verify` would, counting the calls: `value` holds a touch when it starts
    /// with `ok`.
    fn check<'a>(checks: &'a Cell<u32>, value: &'a str) -> impl FnOnce() -> Option<Touch> + 'a {
        move || {
            checks.set(checks.get() + 1);
            value.starts_with("ok").then(|| touch(value, 1_800_000_000))
        }
    }

    fn verified(
        owner: MemoOwner,
        kind: CookieKind,
        value: &str,
        checks: &Cell<u32>,
    ) -> Option<Touch> {
        verified_touch(owner, kind, value, check(checks, value))
    }

    #[test]
    fn a_verified_value_is_checked_once() {
        let owner = MemoOwner::new();
        let checks = Cell::new(0);
        let first = verified(owner, CookieKind::FirstTouch, "ok-1", &checks);
        let again = verified(owner, CookieKind::FirstTouch, "ok-1", &checks);
        assert_eq!(checks.get(), 1);
        assert_eq!(first, again);
        assert_eq!(first, Some(touch("ok-1", 1_800_000_000)));
    }

    #[test]
    fn a_value_that_failed_is_checked_every_time() {
        let owner = MemoOwner::new();
        let checks = Cell::new(0);
        for _ in 0..3 {
            assert_eq!(
                verified(owner, CookieKind::FirstTouch, "forged", &checks),
                None
            );
        }
        assert_eq!(checks.get(), 3);
    }

    /// Another owner, the other cookie, or other bytes (a longer value, a changed one) are
    /// checked anew.
    #[test]
    fn any_difference_in_the_value_or_its_cookie_checks_anew() {
        let owner = MemoOwner::new();
        let checks = Cell::new(0);
        verified(owner, CookieKind::FirstTouch, "ok-1", &checks);
        for (n, (owner, kind, value)) in [
            (MemoOwner::new(), CookieKind::FirstTouch, "ok-1"),
            (owner, CookieKind::LastTouch, "ok-1"),
            (owner, CookieKind::FirstTouch, "ok-1x"),
            (owner, CookieKind::FirstTouch, "ok-2"),
            (owner, CookieKind::FirstTouch, "ok-"),
        ]
        .into_iter()
        .enumerate()
        {
            let before = checks.get();
            verified(owner, kind, value, &checks);
            assert_eq!(checks.get(), before + 1, "variant {n} was not checked");
        }
    }

    /// The same bytes for another owner, or for the other cookie, are checked anew even when
    /// they land in the set of the value already kept.
    #[test]
    fn the_same_bytes_in_the_same_set_under_another_key_check_anew() {
        let owner = MemoOwner::new();
        let set = set_of(&(owner, CookieKind::FirstTouch, "ok-1"));
        let other_owner = std::iter::repeat_with(MemoOwner::new)
            .take(100 * SETS)
            .find(|&other| set_of(&(other, CookieKind::FirstTouch, "ok-1")) == set)
            .unwrap();
        let both_kinds = (0..100 * SETS)
            .map(|i| format!("ok-{i}"))
            .find(|value| {
                set_of(&(owner, CookieKind::FirstTouch, value.as_str()))
                    == set_of(&(owner, CookieKind::LastTouch, value.as_str()))
            })
            .unwrap();
        let checks = Cell::new(0);
        verified(owner, CookieKind::FirstTouch, "ok-1", &checks);
        verified(other_owner, CookieKind::FirstTouch, "ok-1", &checks);
        assert_eq!(checks.get(), 2, "another owner's value");
        verified(owner, CookieKind::FirstTouch, &both_kinds, &checks);
        verified(owner, CookieKind::LastTouch, &both_kinds, &checks);
        assert_eq!(checks.get(), 4, "the other cookie's value");
    }

    /// `n` values whose keys share one set.
    fn values_in_one_set(owner: MemoOwner, n: usize) -> Vec<String> {
        let set = set_of(&(owner, CookieKind::FirstTouch, "ok-0"));
        (0..100 * SETS * n)
            .map(|i| format!("ok-{i}"))
            .filter(|value| set_of(&(owner, CookieKind::FirstTouch, value.as_str())) == set)
            .take(n)
            .collect()
    }

    /// A full set keeps its ways' values and makes room by dropping the value kept first.
    #[test]
    fn a_full_set_of_values_drops_the_one_kept_first() {
        let owner = MemoOwner::new();
        let values = values_in_one_set(owner, WAYS + 1);
        let checks = Cell::new(0);
        for value in &values[..WAYS] {
            verified(owner, CookieKind::FirstTouch, value, &checks);
        }
        for value in &values[..WAYS] {
            verified(owner, CookieKind::FirstTouch, value, &checks);
        }
        assert_eq!(checks.get(), WAYS as u32, "a full set keeps all its values");
        verified(owner, CookieKind::FirstTouch, &values[WAYS], &checks);
        for value in &values[1..] {
            verified(owner, CookieKind::FirstTouch, value, &checks);
        }
        assert_eq!(checks.get(), WAYS as u32 + 1, "the later values are kept");
        verified(owner, CookieKind::FirstTouch, &values[0], &checks);
        assert_eq!(
            checks.get(),
            WAYS as u32 + 2,
            "the value kept first was dropped"
        );
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

        /// Whatever the sequence of values, owners and cookies, the memo answers what checking
        /// each value answers, even for a value good under one owner and forged under another.
        #[test]
        fn verified_memo_agrees_with_checking(
            values in prop::collection::vec((any::<bool>(), 0u8..6, any::<bool>()), 1..200)
        ) {
            let owners = [MemoOwner::new(), MemoOwner::new()];
            for (second_owner, value, last) in values {
                let kind = if last { CookieKind::LastTouch } else { CookieKind::FirstTouch };
                // The first owner's key signed values 0 to 3, the second's 2 to 5; odd values
                // only as first-touch cookies.
                let signed = if second_owner { value >= 2 } else { value < 4 };
                let good = signed && (!last || value % 2 == 0);
                let text = format!("v-{value}");
                let expected = good.then(|| touch(&text, 1_800_000_000));
                let owner = owners[usize::from(second_owner)];
                let answer = verified_touch(owner, kind, &text, || expected.clone());
                prop_assert_eq!(answer, expected);
            }
        }
    }
}
