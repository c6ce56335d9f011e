//! Landing-page signals: the site's own hosts (internal referrers) and which paths are
//! "shallow" (a home page or section front someone could type or bookmark) as opposed
//! to deep links, which are shared.
//!
//! # Path pattern syntax
//!
//! * Glob (default): must start with `/`; matches the whole path (query excluded).
//!   `*` matches within one segment, `**` across segments, `?` one character of a
//!   segment. `/tag/*` matches `/tag/rust` but not `/tag/rust/page/2`; `/category/**`
//!   matches `/category/` and everything below it.
//! * Regex: `re:` followed by a [`regex`](https://docs.rs/regex) pattern, searched in the
//!   path as is (anchor it yourself): `re:^/\d{4}/$`.
//!
//! # Which paths are shallow
//!
//! 1. `/` is always shallow.
//! 2. A path matching one of the site's `shallow_paths` is shallow.
//! 3. A path matching one of the site's `deep_paths` is deep.
//! 4. Otherwise, unless `default_shallow_paths: false`: `/index.html`, `/index.htm`,
//!    `/index.php` and single-segment paths (`/news`, `/news/`) are shallow.
//! 5. Everything else is deep.

use std::fmt;
use std::str::FromStr;

use regex::{Regex, RegexSet};
use serde::{Deserialize, Deserializer};

use super::facts::normalize_host;
use super::referrer::{HostPattern, HostTable};
use super::rules::RuleError;
use super::text::{deserialize_parsed, with_ascii_lowercase};

/// A validated landing-path pattern: a glob (`/tag/*`) or a regex (`re:^/\d{4}/$`).
#[derive(Clone, Debug)]
pub struct PathPattern {
    written: String,
    regex: String,
}

impl PathPattern {
    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.written
    }

    /// The regular expression the pattern compiles to.
    pub fn regex_source(&self) -> &str {
        &self.regex
    }
}

impl PartialEq for PathPattern {
    fn eq(&self, other: &PathPattern) -> bool {
        self.written == other.written
    }
}

impl fmt::Display for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.written)
    }
}

impl FromStr for PathPattern {
    type Err = String;

    fn from_str(raw: &str) -> Result<PathPattern, String> {
        let regex = if let Some(source) = raw.strip_prefix("re:") {
            Regex::new(source).map_err(|e| format!("invalid regex `{source}`: {e}"))?;
            source.to_owned()
        } else {
            if !raw.starts_with('/') {
                return Err(format!(
                    "invalid path glob `{raw}`: it must start with `/` (or write a regex as `re:...`)"
                ));
            }
            glob_to_regex(raw)
        };
        Ok(PathPattern {
            written: raw.to_owned(),
            regex,
        })
    }
}

impl<'de> Deserialize<'de> for PathPattern {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<PathPattern, D::Error> {
        deserialize_parsed(deserializer, "a path pattern", str::parse)
    }
}

/// Translates a path glob into an anchored regex.
fn glob_to_regex(glob: &str) -> String {
    let mut out = String::with_capacity(glob.len() * 2 + 2);
    out.push('^');
    let mut chars = glob.chars().peekable();
    let mut literal = [0u8; 4];
    while let Some(c) = chars.next() {
        match c {
            '*' if chars.peek() == Some(&'*') => {
                chars.next();
                out.push_str(".*");
            }
            '*' => out.push_str("[^/]*"),
            '?' => out.push_str("[^/]"),
            _ => out.push_str(&regex::escape(c.encode_utf8(&mut literal))),
        }
    }
    out.push('$');
    out
}

/// The per-site classification settings (the `classification:` key of a site).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteClassificationConfig {
    /// Paths that are home pages or section fronts: no-referrer visits there are direct.
    #[serde(default)]
    pub shallow_paths: Vec<PathPattern>,
    /// Paths that are always deep links, overriding the default heuristics.
    #[serde(default)]
    pub deep_paths: Vec<PathPattern>,
    /// Apply the default heuristics (`/index.html`, single-segment paths are shallow).
    #[serde(default = "default_true")]
    pub default_shallow_paths: bool,
    /// Other hosts whose referrers count as internal (checkout, login, other brands).
    #[serde(default)]
    pub internal_hosts: Vec<HostPattern>,
}

fn default_true() -> bool {
    true
}

impl Default for SiteClassificationConfig {
    fn default() -> Self {
        SiteClassificationConfig {
            shallow_paths: Vec::new(),
            deep_paths: Vec::new(),
            default_shallow_paths: true,
            internal_hosts: Vec::new(),
        }
    }
}

/// One site, compiled: its hosts (for internal-referrer detection) and its path rules.
#[derive(Clone, Debug)]
pub struct SiteProfile {
    own_hosts: HostTable<()>,
    shallow: Option<RegexSet>,
    deep: Option<RegexSet>,
    default_shallow_paths: bool,
}

impl SiteProfile {
    /// Compiles a site from its host names (`example.com`, `*.example.com`, `host:port`)
    /// and its classification settings. A host counts with all its subdomains.
    pub fn new(
        hosts: &[String],
        config: &SiteClassificationConfig,
    ) -> Result<SiteProfile, RuleError> {
        let mut own_hosts = HostTable::default();
        for host in hosts {
            let stripped = host.trim().trim_start_matches("*.");
            let normalized = normalize_host(stripped);
            let normalized = normalized.trim_start_matches('.');
            for form in [normalized.to_owned(), format!("*.{normalized}")] {
                let pattern: HostPattern = form.parse().map_err(|reason| RuleError::SiteHost {
                    host: host.clone(),
                    reason,
                })?;
                own_hosts.insert(&pattern, ());
            }
        }
        for pattern in &config.internal_hosts {
            own_hosts.insert(pattern, ());
        }
        Ok(SiteProfile {
            own_hosts,
            shallow: compile_set("shallow_paths", &config.shallow_paths)?,
            deep: compile_set("deep_paths", &config.deep_paths)?,
            default_shallow_paths: config.default_shallow_paths,
        })
    }

    /// A profile for requests no configured site claims: only the request's own host is
    /// internal, and the default shallow-path heuristics apply.
    pub fn permissive_default() -> SiteProfile {
        SiteProfile {
            own_hosts: HostTable::default(),
            shallow: None,
            deep: None,
            default_shallow_paths: true,
        }
    }

    /// True when a referrer from `referrer_host` is a navigation inside the site: the
    /// request's own host, a configured host or one of its subdomains, or (for a
    /// `www.` request host) the bare domain and its subdomains.
    pub(crate) fn is_internal(&self, referrer_host: &str, request_host: &str) -> bool {
        with_ascii_lowercase(referrer_host, |referrer| {
            if !request_host.is_empty() {
                if referrer == request_host {
                    return true;
                }
                let bare = request_host.strip_prefix("www.").unwrap_or(request_host);
                if bare.contains('.') && is_same_or_subdomain(referrer, bare) {
                    return true;
                }
            }
            !self.own_hosts.is_empty() && self.own_hosts.lookup(referrer).is_some()
        })
    }

    /// True when `path` is a home page or section front rather than a deep link.
    pub fn is_shallow(&self, path: &str) -> bool {
        if path.is_empty() || path == "/" {
            return true;
        }
        if self.shallow.as_ref().is_some_and(|set| set.is_match(path)) {
            return true;
        }
        if self.deep.as_ref().is_some_and(|set| set.is_match(path)) {
            return false;
        }
        self.default_shallow_paths && default_shallow(path)
    }
}

fn is_same_or_subdomain(host: &str, domain: &str) -> bool {
    host == domain
        || host
            .strip_suffix(domain)
            .is_some_and(|prefix| prefix.ends_with('.'))
}

/// The built-in heuristics: index files and single-segment paths.
fn default_shallow(path: &str) -> bool {
    let trimmed = path.strip_suffix('/').unwrap_or(path);
    let Some(segment) = trimmed.strip_prefix('/') else {
        return false;
    };
    !segment.contains('/')
}

fn compile_set(key: &'static str, patterns: &[PathPattern]) -> Result<Option<RegexSet>, RuleError> {
    if patterns.is_empty() {
        return Ok(None);
    }
    RegexSet::new(patterns.iter().map(|p| p.regex.as_str()))
        .map(Some)
        .map_err(|e| RuleError::PathSet {
            key,
            reason: e.to_string(),
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn profile(shallow: &[&str], deep: &[&str], defaults: bool) -> SiteProfile {
        let config = SiteClassificationConfig {
            shallow_paths: shallow.iter().map(|p| p.parse().unwrap()).collect(),
            deep_paths: deep.iter().map(|p| p.parse().unwrap()).collect(),
            default_shallow_paths: defaults,
            internal_hosts: vec!["checkout.shop.test".parse().unwrap()],
        };
        SiteProfile::new(
            &["example.com".to_owned(), "*.example.org".to_owned()],
            &config,
        )
        .unwrap()
    }

    #[test]
    fn default_heuristics() {
        let p = SiteProfile::permissive_default();
        for shallow in ["", "/", "/news", "/news/", "/index.html"] {
            assert!(p.is_shallow(shallow), "{shallow}");
        }
        for deep in ["/news/2024/story", "/a/b", "//x"] {
            assert!(!p.is_shallow(deep), "{deep}");
        }
    }

    #[test]
    fn globs_and_regexes() {
        let p = profile(
            &["/tag/*", "/category/**", r"re:^/\d{4}/$"],
            &["/p-*"],
            true,
        );
        assert!(p.is_shallow("/tag/rust"));
        assert!(!p.is_shallow("/tag/rust/page/2"));
        assert!(p.is_shallow("/category/"));
        assert!(p.is_shallow("/category/a/b"));
        assert!(p.is_shallow("/2024/"));
        assert!(!p.is_shallow("/p-my-article"));
        assert!(p.is_shallow("/about"));
        let no_defaults = profile(&[], &[], false);
        assert!(!no_defaults.is_shallow("/about"));
        assert!(no_defaults.is_shallow("/"));
    }

    #[test]
    fn internal_hosts() {
        let p = profile(&[], &[], true);
        assert!(p.is_internal("Blog.Example.com", "www.example.com"));
        assert!(p.is_internal("example.org", "other.test"));
        assert!(p.is_internal("a.example.org", "other.test"));
        assert!(p.is_internal("checkout.shop.test", "other.test"));
        assert!(!p.is_internal("notexample.com", "other.test"));
        let d = SiteProfile::permissive_default();
        assert!(d.is_internal("www.news.test", "www.news.test"));
        assert!(d.is_internal("news.test", "www.news.test"));
        assert!(d.is_internal("m.news.test", "www.news.test"));
        assert!(!d.is_internal("news.test.evil", "www.news.test"));
    }

    #[test]
    fn bad_patterns() {
        assert!("news/*".parse::<PathPattern>().is_err());
        let err = "re:(unclosed".parse::<PathPattern>().unwrap_err();
        assert!(err.contains("invalid regex `(unclosed`"), "{err}");
    }
}
