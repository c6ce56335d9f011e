//! A per-thread memo of User-Agent scans.
//!
//! A page load sends one User-Agent with each of its subresources, and most of a site's visitors
//! run a few browser builds, while each scan walks the whole User-Agent through the token
//! automaton (a DFA of about 500 KiB with the built-in tokens). Each thread keeps the matches of
//! the User-Agents it saw last in a small two-way table, so a repeat costs a hash and a
//! comparison. The whole text is stored and compared: a hash collision only evicts an entry, never
//! returns another User-Agent's matches. Clients choose these keys, but a set holds two entries
//! and no more, so no chain grows; each thread's memo seeds its foldhash hasher at random.
//!
//! Entries name the matcher that produced them: a reload compiles a new matcher, whose scans never
//! read the old one's entries.

use std::cell::RefCell;
use std::hash::BuildHasher;

use super::user_agent::UaMatches;

/// Sets of the table (a power of two), two entries each: 512 User-Agents a thread.
const SETS: usize = 256;

/// Longer User-Agents are scanned without the memo, which keeps its memory bounded (at most
/// 256 KiB of text a thread). Real browsers send 100 to 300 bytes.
pub(crate) const MAX_MEMOIZED_LEN: usize = 512;

/// One remembered scan. `matcher` 0 marks an empty entry (matcher ids start at 1).
#[derive(Default)]
struct Entry {
    matcher: u64,
    hash: u64,
    matches: UaMatches,
    text: String,
}

impl Entry {
    fn holds(&self, matcher: u64, hash: u64, user_agent: &str) -> bool {
        self.matcher == matcher && self.hash == hash && self.text == user_agent
    }
}

/// Two entries and which of them was used last.
#[derive(Default)]
struct Set {
    entries: [Entry; 2],
    first_used_last: bool,
}

struct Memo {
    hasher: foldhash::fast::RandomState,
    sets: Vec<Set>,
}

impl Memo {
    fn new() -> Memo {
        Memo {
            hasher: foldhash::fast::RandomState::default(),
            sets: std::iter::repeat_with(Set::default).take(SETS).collect(),
        }
    }

    fn matches(
        &mut self,
        matcher: u64,
        user_agent: &str,
        scan: impl Fn(&str) -> UaMatches,
    ) -> UaMatches {
        let hash = self.hasher.hash_one(user_agent);
        // SETS is a power of two: the low bits pick the set.
        let Some(set) = self.sets.get_mut(hash as usize & (SETS - 1)) else {
            return scan(user_agent);
        };
        let [first, second] = &mut set.entries;
        if first.holds(matcher, hash, user_agent) {
            set.first_used_last = true;
            return first.matches;
        }
        if second.holds(matcher, hash, user_agent) {
            set.first_used_last = false;
            return second.matches;
        }
        let matches = scan(user_agent);
        // Replaces the entry used least recently, reusing its buffer.
        let victim = if set.first_used_last { second } else { first };
        victim.matcher = matcher;
        victim.hash = hash;
        victim.matches = matches;
        victim.text.clear();
        // Exactly the room needed: a doubling would let an entry hold twice the limit.
        victim.text.reserve_exact(user_agent.len());
        victim.text.push_str(user_agent);
        set.first_used_last = !set.first_used_last;
        matches
    }
}

thread_local! {
    static MEMO: RefCell<Option<Memo>> = const { RefCell::new(None) };
}

/// The matches of `user_agent` for the matcher numbered `matcher`: remembered from an earlier
/// scan on this thread, or found by `scan` (and remembered). A User-Agent longer than
/// [`MAX_MEMOIZED_LEN`], or a thread whose memo is gone (it is exiting), is simply scanned.
pub(crate) fn memoized(
    matcher: u64,
    user_agent: &str,
    scan: impl Fn(&str) -> UaMatches,
) -> UaMatches {
    if user_agent.len() > MAX_MEMOIZED_LEN {
        return scan(user_agent);
    }
    MEMO.try_with(|cell| {
        // Nothing scans from inside a scan, so the memo is never borrowed here already.
        let mut memo = cell.try_borrow_mut().ok()?;
        Some(
            memo.get_or_insert_with(Memo::new)
                .matches(matcher, user_agent, &scan),
        )
    })
    .ok()
    .flatten()
    .unwrap_or_else(|| scan(user_agent))
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    /// A stand-in for the automaton that counts its scans; its result names the text scanned
    /// ([`fingerprint`]).
    fn counting(scans: &Cell<usize>) -> impl Fn(&str) -> UaMatches + '_ {
        move |ua: &str| {
            scans.set(scans.get() + 1);
            fingerprint(ua)
        }
    }

    /// The text's length and its FNV-1a hash: no two texts of these tests share both.
    fn fingerprint(ua: &str) -> UaMatches {
        let fnv = ua.bytes().fold(0x811c_9dc5_u32, |hash, byte| {
            (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
        });
        UaMatches {
            preview_bot: None,
            bot: Some(ua.len() as u32),
            in_app: Some(fnv),
        }
    }

    /// Matcher ids unique to each test, since tests share threads' memos.
    fn fresh_matcher() -> u64 {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(1 << 40);
        NEXT.fetch_add(1, Ordering::Relaxed)
    }

    #[test]
    fn a_repeated_user_agent_is_scanned_once() {
        let scans = Cell::new(0);
        let matcher = fresh_matcher();
        let ua = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) Mobile/15E148";
        let first = memoized(matcher, ua, counting(&scans));
        for _ in 0..10 {
            assert_eq!(memoized(matcher, ua, counting(&scans)), first);
        }
        assert_eq!(scans.get(), 1);
    }

    #[test]
    fn another_matcher_scans_again() {
        let scans = Cell::new(0);
        let (old, new) = (fresh_matcher(), fresh_matcher());
        memoized(old, "Twitterbot/1.0", counting(&scans));
        memoized(new, "Twitterbot/1.0", counting(&scans));
        assert_eq!(scans.get(), 2);
        // Both stay: the two entries of a set serve the old and the new matcher alike.
        memoized(old, "Twitterbot/1.0", counting(&scans));
        memoized(new, "Twitterbot/1.0", counting(&scans));
        assert_eq!(scans.get(), 2);
    }

    #[test]
    fn overlong_user_agents_are_never_stored() {
        let scans = Cell::new(0);
        let matcher = fresh_matcher();
        let long = "x".repeat(MAX_MEMOIZED_LEN + 1);
        let at_limit = "y".repeat(MAX_MEMOIZED_LEN);
        for _ in 0..3 {
            assert_eq!(
                memoized(matcher, &long, counting(&scans)),
                fingerprint(&long)
            );
        }
        assert_eq!(scans.get(), 3);
        for _ in 0..3 {
            memoized(matcher, &at_limit, counting(&scans));
        }
        assert_eq!(scans.get(), 4);
    }

    #[test]
    fn more_user_agents_than_entries_still_get_their_own_matches() {
        let scans = Cell::new(0);
        let matcher = fresh_matcher();
        let agents: Vec<String> = (0..4 * SETS)
            .map(|i| format!("agent/{i}{}", "z".repeat(i % 7)))
            .collect();
        for ua in &agents {
            assert_eq!(
                memoized(matcher, ua, counting(&scans)),
                fingerprint(ua),
                "{ua}"
            );
        }
        assert_eq!(scans.get(), agents.len());
        for ua in &agents {
            assert_eq!(
                memoized(matcher, ua, counting(&scans)),
                fingerprint(ua),
                "{ua}"
            );
        }
        // Twice the table's size cycled through it: only the agents of sets that received no
        // more than two (about one in ten) were still there.
        let rescans = scans.get() - agents.len();
        assert!(rescans > agents.len() / 2, "{rescans} scans again");
        assert!(rescans < agents.len(), "no agent was found again");
    }

    #[test]
    fn the_entry_used_last_survives_a_newcomer() {
        let matcher = fresh_matcher();
        let memo = &mut Memo::new();
        let scans = Cell::new(0);
        // Three texts in one set: find them by their hashes.
        let set_of = |memo: &Memo, ua: &str| memo.hasher.hash_one(ua) as usize & (SETS - 1);
        let target = set_of(memo, "ua-0");
        let same_set: Vec<String> = (1..100_000)
            .map(|i| format!("ua-{i}"))
            .filter(|ua| set_of(memo, ua) == target)
            .take(2)
            .collect();
        assert_eq!(same_set.len(), 2);
        let (a, b, c) = ("ua-0", same_set[0].as_str(), same_set[1].as_str());
        memo.matches(matcher, a, counting(&scans));
        memo.matches(matcher, b, counting(&scans));
        memo.matches(matcher, a, counting(&scans)); // a is now the one used last
        memo.matches(matcher, c, counting(&scans)); // evicts b
        assert_eq!(scans.get(), 3);
        memo.matches(matcher, a, counting(&scans));
        assert_eq!(scans.get(), 3, "a was kept");
        memo.matches(matcher, b, counting(&scans));
        assert_eq!(scans.get(), 4, "b was evicted");
    }
}
