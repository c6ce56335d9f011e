//! User-Agent signals: preview fetchers, crawlers and in-app browsers, found in one
//! Aho-Corasick pass over the header.
//!
//! # Token syntax
//!
//! Tokens are matched case-insensitively.
//!
//! | token            | matches when the token…                                        |
//! |------------------|----------------------------------------------------------------|
//! | `Discordbot`     | starts a word (the byte before is not a letter or digit)      |
//! | `*bot`           | appears anywhere, even inside a word (`Googlebot`)            |
//! | `^curl/`         | starts the User-Agent                                          |
//! | `Twitterbot/1.0$`| ends the User-Agent                                            |
//! | `^WhatsApp/2$`   | is the whole User-Agent                                        |
//!
//! Within each category (preview bots, bots, in-app browsers) every match is
//! collected and the rule listed first wins, wherever in the string it matched: this is
//! what makes `facebookexternalhit/1.1 Facebot Twitterbot/1.0` (iMessage) beat
//! `facebookexternalhit` (Facebook) and `TelegramBot (like TwitterBot)` beat `Twitterbot`.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};
use serde::{Deserialize, Deserializer};

use super::text::deserialize_parsed;
use super::ua_memo;

/// Where a token may start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Anchor {
    Word,
    Anywhere,
    UaBegin,
}

/// A validated user-agent token with its anchors.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UaToken {
    written: String,
    literal: String,
    start: Anchor,
    at_end: bool,
}

impl UaToken {
    /// The token as written in the configuration.
    pub fn as_str(&self) -> &str {
        &self.written
    }

    /// The literal text matched, lowercased (duplicate detection key).
    pub(crate) fn key(&self) -> (String, bool, bool, bool) {
        (
            self.literal.to_ascii_lowercase(),
            self.start == Anchor::Anywhere,
            self.start == Anchor::UaBegin,
            self.at_end,
        )
    }
}

impl FromStr for UaToken {
    type Err = String;

    fn from_str(raw: &str) -> Result<UaToken, String> {
        let mut literal = raw;
        let start = if let Some(rest) = literal.strip_prefix('^') {
            literal = rest;
            Anchor::UaBegin
        } else if let Some(rest) = literal.strip_prefix('*') {
            literal = rest;
            Anchor::Anywhere
        } else {
            Anchor::Word
        };
        let at_end = match literal.strip_suffix('$') {
            Some(rest) => {
                literal = rest;
                true
            }
            None => false,
        };
        if literal.trim().is_empty() {
            return Err("the token is empty".to_owned());
        }
        if literal.len() > 200 {
            return Err("the token is longer than 200 bytes".to_owned());
        }
        if literal.chars().any(char::is_control) {
            return Err("control characters are not allowed".to_owned());
        }
        Ok(UaToken {
            written: raw.to_owned(),
            literal: literal.to_owned(),
            start,
            at_end,
        })
    }
}

impl fmt::Display for UaToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.written)
    }
}

impl<'de> Deserialize<'de> for UaToken {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<UaToken, D::Error> {
        deserialize_parsed(deserializer, "a user-agent token", |raw| {
            raw.parse()
                .map_err(|reason| format!("invalid user-agent token `{raw}`: {reason}"))
        })
    }
}

/// Which list a token belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum UaCategory {
    PreviewBot,
    Bot,
    InApp,
}

/// One token's rule: category, rule index (= priority, lower wins) and anchors.
#[derive(Clone, Copy, Debug)]
struct Target {
    category: UaCategory,
    rule: u32,
    start: Anchor,
    at_end: bool,
    starts_alphanumeric: bool,
}

/// The best rule of each category that matched one User-Agent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct UaMatches {
    pub(crate) preview_bot: Option<u32>,
    pub(crate) bot: Option<u32>,
    pub(crate) in_app: Option<u32>,
}

/// Collects tokens, then builds the automaton.
#[derive(Default)]
pub(crate) struct UaMatcherBuilder {
    literals: Vec<String>,
    targets: Vec<Vec<Target>>,
    index: std::collections::HashMap<String, usize>,
}

impl UaMatcherBuilder {
    /// Adds a token for rule `rule` of `category`.
    pub(crate) fn add(&mut self, category: UaCategory, rule: u32, token: &UaToken) {
        let lower = token.literal.to_ascii_lowercase();
        let target = Target {
            category,
            rule,
            start: token.start,
            at_end: token.at_end,
            starts_alphanumeric: token
                .literal
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphanumeric()),
        };
        match self.index.get(&lower) {
            Some(&i) => {
                if let Some(list) = self.targets.get_mut(i) {
                    list.push(target);
                }
            }
            None => {
                self.index.insert(lower.clone(), self.literals.len());
                self.literals.push(lower);
                self.targets.push(vec![target]);
            }
        }
    }

    /// Compiles the automaton.
    ///
    /// A DFA, though with the built-in tokens (about 120) it takes about 500 KiB against
    /// 45 KiB for a contiguous NFA: under load the DFA still served more requests a second
    /// (three alternating pairs of `make bench-load` runs).
    pub(crate) fn build(self) -> Result<UaMatcher, aho_corasick::BuildError> {
        let automaton = AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .kind(Some(AhoCorasickKind::DFA))
            .build(&self.literals)?;
        // Numbers each build for the scan memo; 0 is the memo's empty entry.
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        Ok(UaMatcher {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            automaton,
            targets: self.targets,
        })
    }
}

/// All user-agent tokens in one automaton.
#[derive(Clone, Debug)]
pub(crate) struct UaMatcher {
    /// Names this build's entries in the scan memo; a clone scans alike and shares it.
    id: u64,
    automaton: AhoCorasick,
    targets: Vec<Vec<Target>>,
}

impl UaMatcher {
    /// The first-listed matching rule per category, remembered per thread for a User-Agent
    /// seen lately ([`ua_memo`]).
    pub(crate) fn scan(&self, user_agent: &str) -> UaMatches {
        ua_memo::memoized(self.id, user_agent, |ua| self.scan_uncached(ua))
    }

    /// Scans `user_agent` once and keeps the first-listed matching rule per category.
    fn scan_uncached(&self, user_agent: &str) -> UaMatches {
        let mut found = UaMatches::default();
        let bytes = user_agent.as_bytes();
        for m in self.automaton.find_overlapping_iter(user_agent) {
            let Some(targets) = self.targets.get(m.pattern().as_usize()) else {
                continue;
            };
            for target in targets {
                let start_ok = match target.start {
                    Anchor::UaBegin => m.start() == 0,
                    Anchor::Anywhere => true,
                    Anchor::Word => {
                        !target.starts_alphanumeric
                            || m.start() == 0
                            || bytes
                                .get(m.start() - 1)
                                .is_some_and(|b| !b.is_ascii_alphanumeric())
                    }
                };
                if !start_ok || (target.at_end && m.end() != bytes.len()) {
                    continue;
                }
                let slot = match target.category {
                    UaCategory::PreviewBot => &mut found.preview_bot,
                    UaCategory::Bot => &mut found.bot,
                    UaCategory::InApp => &mut found.in_app,
                };
                if slot.is_none_or(|current| target.rule < current) {
                    *slot = Some(target.rule);
                }
            }
        }
        found
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn matcher(tokens: &[(UaCategory, u32, &str)]) -> UaMatcher {
        let mut b = UaMatcherBuilder::default();
        for (c, r, t) in tokens {
            b.add(*c, *r, &t.parse().unwrap());
        }
        b.build().unwrap()
    }

    #[test]
    fn anchors() {
        let m = matcher(&[
            (UaCategory::PreviewBot, 0, "^WhatsApp/2$"),
            (UaCategory::PreviewBot, 1, "^WhatsApp/"),
            (UaCategory::InApp, 0, "Line/"),
            (UaCategory::Bot, 5, "*bot"),
        ]);
        assert_eq!(m.scan("WhatsApp/2").preview_bot, Some(0));
        assert_eq!(m.scan("WhatsApp/2.23.20.0 A").preview_bot, Some(1));
        assert_eq!(m.scan("x WhatsApp/2").preview_bot, None);
        assert_eq!(m.scan("Safari Line/13.1").in_app, Some(0));
        assert_eq!(m.scan("Pipeline/1.0").in_app, None);
        assert_eq!(m.scan("Googlebot/2.1").bot, Some(5));
    }

    #[test]
    fn first_listed_rule_wins_wherever_it_matched() {
        let m = matcher(&[
            (UaCategory::PreviewBot, 0, "TelegramBot"),
            (UaCategory::PreviewBot, 1, "Twitterbot"),
        ]);
        assert_eq!(m.scan("TelegramBot (like TwitterBot)").preview_bot, Some(0));
        assert_eq!(m.scan("Twitterbot/1.0").preview_bot, Some(1));
    }

    /// One matcher for every case of the property below, so that its memo entries meet.
    fn shared_matcher() -> &'static UaMatcher {
        static MATCHER: std::sync::OnceLock<UaMatcher> = std::sync::OnceLock::new();
        MATCHER.get_or_init(|| {
            matcher(&[
                (UaCategory::PreviewBot, 0, "^WhatsApp/2$"),
                (UaCategory::PreviewBot, 1, "^WhatsApp/"),
                (UaCategory::InApp, 0, "Line/"),
                (UaCategory::Bot, 5, "*bot"),
            ])
        })
    }

    proptest::proptest! {
        /// The memo answers as the automaton does, for new and repeated User-Agents alike,
        /// however they follow one another.
        #[test]
        fn memoized_scans_agree_with_the_automaton(
            agents in proptest::collection::vec(
                proptest::collection::vec(
                    proptest::prop_oneof![
                        proptest::strategy::Just("WhatsApp/2"),
                        proptest::strategy::Just("Line/"),
                        proptest::strategy::Just("Googlebot"),
                        proptest::strategy::Just(" "),
                        proptest::strategy::Just("x"),
                        proptest::strategy::Just("é"),
                    ],
                    0..8,
                ),
                1..6,
            ),
            order in proptest::collection::vec(0usize..6, 1..24),
        ) {
            let m = shared_matcher();
            let agents: Vec<String> = agents.iter().map(|parts| parts.concat()).collect();
            for i in order {
                let ua = &agents[i % agents.len()];
                proptest::prop_assert_eq!(m.scan(ua), m.scan_uncached(ua));
            }
        }
    }

    #[test]
    fn a_rebuilt_matcher_does_not_read_the_old_ones_memo() {
        let old = matcher(&[(UaCategory::InApp, 0, "Line/")]);
        let new = matcher(&[(UaCategory::Bot, 0, "Line/")]);
        let ua = "Mozilla/5.0 Safari Line/13.1";
        assert_eq!(old.scan(ua).in_app, Some(0));
        assert_eq!(new.scan(ua).in_app, None);
        assert_eq!(new.scan(ua).bot, Some(0));
        assert_eq!(old.clone().scan(ua).in_app, Some(0));
    }

    #[test]
    fn token_syntax_errors() {
        for bad in ["", "^", "*", "$", "^$", "a\u{7}b"] {
            assert!(bad.parse::<UaToken>().is_err(), "{bad:?}");
        }
    }
}
