//! Host-based routing: which configured site answers a request.
//!
//! Pure and allocation-free per lookup: exact names in a hash map, wildcards as suffixes walked
//! label by label, then the default site. A host that matches nothing gets no site, so darklight
//! never forwards to anything that is not configured.

use crate::config::HostPattern;
use crate::lookup_map::LookupMap;

/// Index of a site in the compiled configuration.
pub type SiteIndex = usize;

/// Maps a request's host to a site.
#[derive(Debug, Clone, Default)]
pub struct SiteRouter {
    exact: LookupMap<String, SiteIndex>,
    wildcard: LookupMap<String, SiteIndex>,
    default_site: Option<SiteIndex>,
}

/// A host claimed twice, found while building the router.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DuplicateHost {
    /// The pattern as written.
    pub pattern: String,
    /// The site that claimed it first.
    pub first: SiteIndex,
    /// The site that claimed it again.
    pub second: SiteIndex,
}

impl SiteRouter {
    /// Builds the router; each pattern may belong to one site only.
    pub fn new<'a>(
        sites: impl IntoIterator<Item = (SiteIndex, &'a [HostPattern])>,
        default_site: Option<SiteIndex>,
    ) -> Result<Self, DuplicateHost> {
        let mut router = SiteRouter {
            default_site,
            ..SiteRouter::default()
        };
        for (index, patterns) in sites {
            for pattern in patterns {
                let (table, key) = match pattern {
                    HostPattern::Exact(name) => (&mut router.exact, name),
                    HostPattern::Wildcard(suffix) => (&mut router.wildcard, suffix),
                };
                if let Some(&first) = table.get(key.as_str()) {
                    return Err(DuplicateHost {
                        pattern: pattern.to_string(),
                        first,
                        second: index,
                    });
                }
                table.insert(key.clone(), index);
            }
        }
        Ok(router)
    }

    /// The site for `host` (already lower-cased, without port), or `None` when no site claims it
    /// and there is no default.
    pub fn route(&self, host: &str) -> Option<SiteIndex> {
        if let Some(&index) = self.exact.get(host) {
            return Some(index);
        }
        // Most specific wildcard first: for a.b.example.com try b.example.com, then example.com.
        let mut rest = host;
        while let Some(dot) = rest.find('.') {
            rest = &rest[dot + 1..];
            if let Some(&index) = self.wildcard.get(rest) {
                return Some(index);
            }
        }
        self.default_site
    }
}

/// Normalises a `Host` header or URI authority into the form [`SiteRouter::route`] expects:
/// lower case, no port, no trailing dot, IPv6 without brackets. Returns `None` for values that
/// cannot be a host.
pub fn normalize_host(raw: &str) -> Option<std::borrow::Cow<'_, str>> {
    if crate::classify::is_plain_host(raw) {
        return Some(std::borrow::Cow::Borrowed(raw));
    }
    normalize_any_host(raw)
}

/// [`normalize_host`] for any form of host or authority.
fn normalize_any_host(raw: &str) -> Option<std::borrow::Cow<'_, str>> {
    let raw = raw.trim();
    let host = if let Some(bracketed) = raw.strip_prefix('[') {
        let end = bracketed.find(']')?;
        &bracketed[..end]
    } else {
        match raw.rfind(':') {
            Some(colon) if raw[colon + 1..].bytes().all(|b| b.is_ascii_digit()) => &raw[..colon],
            Some(_) => return None,
            None => raw,
        }
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b':'))
    {
        return None;
    }
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Some(std::borrow::Cow::Owned(host.to_ascii_lowercase()))
    } else {
        Some(std::borrow::Cow::Borrowed(host))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patterns(list: &[&str]) -> Vec<HostPattern> {
        list.iter()
            .map(|p| HostPattern::parse(p).unwrap_or_else(|e| panic!("{e}")))
            .collect()
    }

    #[test]
    fn exact_then_most_specific_wildcard_then_default() {
        let blog = patterns(&["blog.example.com"]);
        let shop = patterns(&["*.shop.example.com", "shop.example.com"]);
        let any = patterns(&["*.example.com"]);
        let router = SiteRouter::new([(0, &blog[..]), (1, &shop[..]), (2, &any[..])], Some(3))
            .unwrap_or_else(|e| panic!("{e:?}"));
        let cases = [
            ("blog.example.com", Some(0)),
            ("shop.example.com", Some(1)),
            ("eu.shop.example.com", Some(1)),
            ("a.b.shop.example.com", Some(1)),
            ("www.example.com", Some(2)),
            ("example.com", Some(3)),
            ("other.org", Some(3)),
        ];
        for (host, expected) in cases {
            assert_eq!(router.route(host), expected, "{host}");
        }
    }

    #[test]
    fn no_default_means_no_site() {
        let blog = patterns(&["blog.example.com"]);
        let router = SiteRouter::new([(0, &blog[..])], None).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(router.route("evil.example.net"), None);
        assert_eq!(router.route("example.com"), None);
    }

    #[test]
    fn duplicate_patterns_are_refused() {
        let a = patterns(&["x.com"]);
        let b = patterns(&["X.com"]);
        let error = SiteRouter::new([(0, &a[..]), (1, &b[..])], None).err();
        assert_eq!(
            error,
            Some(DuplicateHost {
                pattern: "x.com".into(),
                first: 0,
                second: 1
            })
        );
    }

    #[test]
    fn host_normalisation() {
        let cases = [
            ("Example.COM:8080", Some("example.com")),
            ("example.com.", Some("example.com")),
            ("[::1]:8080", Some("::1")),
            ("127.0.0.1", Some("127.0.0.1")),
            ("", None),
            ("a b", None),
            ("x.com:port", None),
            ("[::1", None),
        ];
        for (raw, expected) in cases {
            assert_eq!(normalize_host(raw).as_deref(), expected, "{raw}");
        }
    }

    proptest::proptest! {
        /// A host the shortcut takes as it is comes out of the full normalisation unchanged.
        #[test]
        fn plain_hosts_are_already_normal(host in "[a-zA-Z0-9.:@\\[\\] _-]{0,24}") {
            if crate::classify::is_plain_host(&host) {
                proptest::prop_assert_eq!(
                    normalize_any_host(&host),
                    Some(std::borrow::Cow::Borrowed(host.as_str()))
                );
            }
            proptest::prop_assert_eq!(normalize_host(&host), normalize_any_host(&host));
        }
    }
}
