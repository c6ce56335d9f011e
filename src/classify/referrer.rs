//! Referrer signals: cheap extraction of the host from a `Referer` value, and the
//! compiled host table that maps hosts to sources.
//!
//! # Host pattern syntax
//!
//! | pattern          | matches                                                          |
//! |------------------|------------------------------------------------------------------|
//! | `t.co`           | exactly `t.co`                                                   |
//! | `*.facebook.com` | any subdomain (`l.facebook.com`, `a.b.facebook.com`), not the apex |
//! | `google.*`       | `google` + a top-level domain: `google.com`, `google.de`, `google.co.uk`, `google.com.br` |
//! | `*.pinterest.*`  | any subdomain of `pinterest` + a top-level domain                |
//!
//! "A top-level domain" is one label (`.com`, `.de`), or a two-letter country code
//! under a second level of at most three letters (`.co.uk`, `.com.au`, `.ne.jp`).
//! Patterns are lowercase host names; matching is case-insensitive. When several
//! patterns match one host, exact beats `*.suffix` (longest suffix first) beats `name.*`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

use super::text::deserialize_parsed;
use crate::lookup_map::LookupMap;

/// How a [`HostPattern`] matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum HostForm {
    Exact,
    Subdomains,
    AnyTld,
    SubdomainsAnyTld,
}

/// A validated host pattern (`example.com`, `*.example.com`, `example.*`, `*.example.*`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HostPattern {
    text: String,
    form: HostForm,
    key: String,
}

impl HostPattern {
    /// The pattern as written (lowercased).
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl FromStr for HostPattern {
    type Err = String;

    fn from_str(raw: &str) -> Result<HostPattern, String> {
        let text = raw.trim().to_ascii_lowercase();
        let (subdomains, rest) = match text.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, text.as_str()),
        };
        let (any_tld, key) = match rest.strip_suffix(".*") {
            Some(key) => (true, key),
            None => (false, rest),
        };
        if key.is_empty() {
            return Err("a host pattern needs a host name".to_owned());
        }
        if key.contains('*') {
            return Err(
                "`*` is only allowed as a leading `*.` (subdomains) or a trailing `.*` (any TLD)"
                    .to_owned(),
            );
        }
        for label in key.split('.') {
            if label.is_empty() {
                return Err("empty label (leading, trailing or doubled dot)".to_owned());
            }
            if label.len() > 63 {
                return Err(format!("label `{label}` is longer than 63 characters"));
            }
            if let Some(bad) = label
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
            {
                return Err(format!("character `{bad}` is not allowed in a host name"));
            }
        }
        let form = match (subdomains, any_tld) {
            (false, false) => HostForm::Exact,
            (true, false) => HostForm::Subdomains,
            (false, true) => HostForm::AnyTld,
            (true, true) => HostForm::SubdomainsAnyTld,
        };
        let key = key.to_owned();
        Ok(HostPattern { text, form, key })
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for HostPattern {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<HostPattern, D::Error> {
        deserialize_parsed(deserializer, "a host pattern", |raw| {
            raw.parse()
                .map_err(|reason| format!("invalid host pattern `{raw}`: {reason}"))
        })
    }
}

/// Host patterns compiled into hash maps; lookups walk the host's labels.
#[derive(Clone, Debug)]
pub(crate) struct HostTable<T> {
    exact: LookupMap<Box<str>, T>,
    subdomains: LookupMap<Box<str>, T>,
    any_tld: LookupMap<Box<str>, T>,
    subdomains_any_tld: LookupMap<Box<str>, T>,
}

impl<T> Default for HostTable<T> {
    fn default() -> Self {
        HostTable {
            exact: LookupMap::default(),
            subdomains: LookupMap::default(),
            any_tld: LookupMap::default(),
            subdomains_any_tld: LookupMap::default(),
        }
    }
}

impl<T: Clone> HostTable<T> {
    fn map_mut(&mut self, form: HostForm) -> &mut LookupMap<Box<str>, T> {
        match form {
            HostForm::Exact => &mut self.exact,
            HostForm::Subdomains => &mut self.subdomains,
            HostForm::AnyTld => &mut self.any_tld,
            HostForm::SubdomainsAnyTld => &mut self.subdomains_any_tld,
        }
    }

    /// Adds a pattern unless it is already present; returns the value already there.
    pub(crate) fn insert(&mut self, pattern: &HostPattern, value: T) -> Option<T> {
        let map = self.map_mut(pattern.form);
        if let Some(existing) = map.get(pattern.key.as_str()) {
            return Some(existing.clone());
        }
        map.insert(pattern.key.clone().into_boxed_str(), value);
        None
    }

    /// True when the table has no pattern.
    pub(crate) fn is_empty(&self) -> bool {
        self.exact.is_empty()
            && self.subdomains.is_empty()
            && self.any_tld.is_empty()
            && self.subdomains_any_tld.is_empty()
    }

    /// The value of the most specific pattern matching `host` (lowercase).
    pub(crate) fn lookup(&self, host: &str) -> Option<&T> {
        if let Some(v) = self.exact.get(host) {
            return Some(v);
        }
        if !self.subdomains.is_empty() {
            if let Some(v) = lookup_parent_suffixes(&self.subdomains, host) {
                return Some(v);
            }
        }
        if self.any_tld.is_empty() && self.subdomains_any_tld.is_empty() {
            return None;
        }
        for base in tld_stripped_bases(host).into_iter().flatten() {
            if let Some(v) = self.any_tld.get(base) {
                return Some(v);
            }
            if let Some(v) = lookup_parent_suffixes(&self.subdomains_any_tld, base) {
                return Some(v);
            }
        }
        None
    }
}

/// Looks up every proper parent suffix of `host` (`a.b.c` → `b.c`, `c`), longest first.
fn lookup_parent_suffixes<'m, T>(map: &'m LookupMap<Box<str>, T>, host: &str) -> Option<&'m T> {
    let mut rest = host;
    while let Some((_, parent)) = rest.split_once('.') {
        if let Some(v) = map.get(parent) {
            return Some(v);
        }
        rest = parent;
    }
    None
}

/// `host` without its top-level domain: two candidates at most, the longer TLD first
/// (`www.google.co.uk` → `www.google`, then `www.google.co`).
fn tld_stripped_bases(host: &str) -> [Option<&str>; 2] {
    let Some((base, tld)) = host.rsplit_once('.') else {
        return [None, None];
    };
    if base.is_empty() {
        return [None, None];
    }
    let mut out = [None, Some(base)];
    if tld.len() == 2 && tld.bytes().all(|b| b.is_ascii_alphabetic()) {
        if let Some((shorter, second_level)) = base.rsplit_once('.') {
            if !shorter.is_empty() && (1..=3).contains(&second_level.len()) {
                out[0] = Some(shorter);
            }
        }
    }
    out
}

/// The "registrable" part of a host, near enough for naming an unknown referrer:
/// the last two labels, or three under a country-code second level (`bbc.co.uk`).
pub(crate) fn registrable_domain(host: &str) -> &str {
    if host.starts_with('[') || host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return host;
    }
    let labels: Vec<usize> = host.match_indices('.').map(|(i, _)| i).collect();
    let keep_labels = match tld_stripped_bases(host) {
        [Some(_), _] => 3,
        _ => 2,
    };
    if labels.len() < keep_labels {
        return host;
    }
    let cut = labels[labels.len() - keep_labels] + 1;
    host.get(cut..).unwrap_or(host)
}

/// Longest valid DNS name; longer "hosts" are not looked up (bounds the label walk).
const MAX_HOST_LEN: usize = 253;

/// What a `Referer` value points at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Referrer<'a> {
    /// An `http(s)://` page on this host (raw case, without userinfo, port or trailing dot).
    Web { host: &'a str },
    /// An `android-app://package/…` referrer: the app that opened the link.
    App { package: &'a str },
    /// Present but not usable (no scheme, empty host, another scheme).
    Invalid,
}

/// Extracts the host (or Android package) from a `Referer` value without a full URL parse.
pub(crate) fn parse_referrer(value: &str) -> Referrer<'_> {
    let value = value.trim();
    let Some((scheme, rest)) = value.split_once("://") else {
        return Referrer::Invalid;
    };
    let authority_end = rest.find(['/', '?', '#', '\\']).unwrap_or(rest.len());
    let authority = rest.get(..authority_end).unwrap_or("");
    if scheme.eq_ignore_ascii_case("android-app") {
        return if authority.is_empty() || authority.len() > MAX_HOST_LEN {
            Referrer::Invalid
        } else {
            Referrer::App { package: authority }
        };
    }
    if !(scheme.eq_ignore_ascii_case("https") || scheme.eq_ignore_ascii_case("http")) {
        return Referrer::Invalid;
    }
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if host_port.starts_with('[') {
        match host_port.find(']') {
            Some(end) => host_port.get(..=end).unwrap_or(""),
            None => return Referrer::Invalid,
        }
    } else {
        host_port.split_once(':').map_or(host_port, |(h, _)| h)
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() || host.len() > MAX_HOST_LEN {
        Referrer::Invalid
    } else {
        Referrer::Web { host }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn table(patterns: &[&str]) -> HostTable<usize> {
        let mut t = HostTable::default();
        for (i, p) in patterns.iter().enumerate() {
            assert!(t.insert(&p.parse().unwrap(), i).is_none());
        }
        t
    }

    #[test]
    fn pattern_forms() {
        let t = table(&["t.co", "*.facebook.com", "google.*", "*.pinterest.*"]);
        assert_eq!(t.lookup("t.co"), Some(&0));
        assert_eq!(t.lookup("x.t.co"), None);
        assert_eq!(t.lookup("l.facebook.com"), Some(&1));
        assert_eq!(t.lookup("a.b.facebook.com"), Some(&1));
        assert_eq!(t.lookup("facebook.com"), None);
        assert_eq!(t.lookup("google.com"), Some(&2));
        assert_eq!(t.lookup("google.co.uk"), Some(&2));
        assert_eq!(t.lookup("google.com.br"), Some(&2));
        assert_eq!(t.lookup("google.evil.com"), None);
        assert_eq!(t.lookup("de.pinterest.de"), Some(&3));
        assert_eq!(t.lookup("pinterest.com"), None);
    }

    #[test]
    fn exact_beats_wildcards() {
        let t = table(&["mail.google.com", "*.google.com", "google.*"]);
        assert_eq!(t.lookup("mail.google.com"), Some(&0));
        assert_eq!(t.lookup("docs.google.com"), Some(&1));
    }

    #[test]
    fn bad_patterns() {
        for bad in ["", "*.", "a..b", "go*gle.com", "exa mple.com", "*.*"] {
            assert!(bad.parse::<HostPattern>().is_err(), "{bad}");
        }
    }

    #[test]
    fn referrer_parsing() {
        assert_eq!(
            parse_referrer("https://User:pw@WWW.Example.com:8443/a?b"),
            Referrer::Web {
                host: "WWW.Example.com"
            }
        );
        assert_eq!(
            parse_referrer("http://[::1]:80/"),
            Referrer::Web { host: "[::1]" }
        );
        assert_eq!(
            parse_referrer("android-app://com.google.android.gm/"),
            Referrer::App {
                package: "com.google.android.gm"
            }
        );
        assert_eq!(
            parse_referrer("https://t.co"),
            Referrer::Web { host: "t.co" }
        );
        assert_eq!(parse_referrer("example.com/x"), Referrer::Invalid);
        assert_eq!(parse_referrer("https:///x"), Referrer::Invalid);
        assert_eq!(parse_referrer("ftp://x.test/"), Referrer::Invalid);
    }

    #[test]
    fn registrable() {
        assert_eq!(registrable_domain("blog.example.org"), "example.org");
        assert_eq!(registrable_domain("news.bbc.co.uk"), "bbc.co.uk");
        assert_eq!(registrable_domain("example.org"), "example.org");
        assert_eq!(registrable_domain("localhost"), "localhost");
        assert_eq!(registrable_domain("10.0.0.1"), "10.0.0.1");
    }
}
