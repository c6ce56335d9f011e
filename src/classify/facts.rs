//! The request facts the classifier looks at, borrowed from the request header.
//!
//! [`RequestFacts`] holds views into the request (no copies), so building it per request
//! costs nothing but a few header lookups. Header values that are not valid UTF-8 are
//! treated as absent.

use std::borrow::Cow;

use http::header::{COOKIE, HOST, HeaderName, REFERER, USER_AGENT};
use http::{HeaderMap, Method, Uri};

/// Header names, parsed once at compile time (lookups by `&str` would re-parse them).
mod names {
    use http::header::HeaderName;

    pub(super) const X_REQUESTED_WITH: HeaderName = HeaderName::from_static("x-requested-with");
    pub(super) const SEC_CH_UA: HeaderName = HeaderName::from_static("sec-ch-ua");
    pub(super) const SEC_CH_UA_MOBILE: HeaderName = HeaderName::from_static("sec-ch-ua-mobile");
    pub(super) const SEC_CH_UA_PLATFORM: HeaderName = HeaderName::from_static("sec-ch-ua-platform");
    pub(super) const SEC_FETCH_SITE: HeaderName = HeaderName::from_static("sec-fetch-site");
    pub(super) const SEC_FETCH_MODE: HeaderName = HeaderName::from_static("sec-fetch-mode");
    pub(super) const SEC_FETCH_DEST: HeaderName = HeaderName::from_static("sec-fetch-dest");
    pub(super) const SEC_PURPOSE: HeaderName = HeaderName::from_static("sec-purpose");
    pub(super) const PURPOSE: HeaderName = HeaderName::from_static("purpose");
    pub(super) const X_MOZ: HeaderName = HeaderName::from_static("x-moz");
}

/// What the classifier needs to know about one request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestFacts<'a> {
    /// The request method (`GET`, `HEAD`, `POST`…).
    pub method: &'a str,
    /// The requested host, lowercase, without port or trailing dot. Borrowed unless the
    /// client sent upper-case letters.
    pub host: Cow<'a, str>,
    /// The path, without query.
    pub path: &'a str,
    /// The raw query string, without `?`.
    pub query: Option<&'a str>,
    /// `Referer`.
    pub referer: Option<&'a str>,
    /// `User-Agent`.
    pub user_agent: Option<&'a str>,
    /// `X-Requested-With`: Android WebViews send the host app's package name here.
    pub x_requested_with: Option<&'a str>,
    /// `Sec-CH-UA` (brand list; `"Android WebView"` marks an in-app WebView).
    pub sec_ch_ua: Option<&'a str>,
    /// `Sec-CH-UA-Mobile` (`?1` on mobile).
    pub sec_ch_ua_mobile: Option<&'a str>,
    /// `Sec-CH-UA-Platform`.
    pub sec_ch_ua_platform: Option<&'a str>,
    /// `Sec-Fetch-Site`: `none`, `same-origin`, `same-site` or `cross-site`.
    pub sec_fetch_site: Option<&'a str>,
    /// `Sec-Fetch-Mode`: `navigate` for page loads.
    pub sec_fetch_mode: Option<&'a str>,
    /// `Sec-Fetch-Dest`: `document` for top-level page loads.
    pub sec_fetch_dest: Option<&'a str>,
    /// `Sec-Purpose` (`prefetch`, `prefetch;prerender`).
    pub sec_purpose: Option<&'a str>,
    /// `Purpose`, or the legacy `X-Moz` when `Purpose` is absent (both say `prefetch`).
    pub purpose: Option<&'a str>,
    /// The value of darklight's attribution cookie, when the client sent one.
    pub attribution_cookie: Option<&'a str>,
}

impl<'a> RequestFacts<'a> {
    /// Borrows the facts from `http` request parts.
    ///
    /// The host comes from the `Host` header, or the URI authority (HTTP/2 `:authority`)
    /// when there is none. `attribution_cookie_name` selects the cookie exposed as
    /// [`RequestFacts::attribution_cookie`]; an empty name disables the lookup.
    pub fn from_http(
        method: &'a Method,
        uri: &'a Uri,
        headers: &'a HeaderMap,
        attribution_cookie_name: &str,
    ) -> RequestFacts<'a> {
        let text = |name: &HeaderName| header_text(headers, name);
        let raw_host = headers
            .get(HOST)
            .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
            .or_else(|| uri.authority().map(|a| a.as_str()))
            .unwrap_or("");
        let path = match uri.path() {
            "" => "/",
            path => path,
        };
        RequestFacts {
            method: method.as_str(),
            host: normalize_host(raw_host),
            path,
            query: uri.query(),
            referer: text(&REFERER),
            user_agent: text(&USER_AGENT),
            x_requested_with: text(&names::X_REQUESTED_WITH),
            sec_ch_ua: text(&names::SEC_CH_UA),
            sec_ch_ua_mobile: text(&names::SEC_CH_UA_MOBILE),
            sec_ch_ua_platform: text(&names::SEC_CH_UA_PLATFORM),
            sec_fetch_site: text(&names::SEC_FETCH_SITE),
            sec_fetch_mode: text(&names::SEC_FETCH_MODE),
            sec_fetch_dest: text(&names::SEC_FETCH_DEST),
            sec_purpose: text(&names::SEC_PURPOSE),
            purpose: text(&names::PURPOSE).or_else(|| text(&names::X_MOZ)),
            attribution_cookie: if attribution_cookie_name.is_empty() {
                None
            } else {
                headers
                    .get_all(COOKIE)
                    .iter()
                    .filter_map(|v| std::str::from_utf8(v.as_bytes()).ok())
                    .find_map(|cookies| find_cookie(cookies, attribution_cookie_name))
            },
        }
    }

    /// True for a speculative load the user may never see (`Sec-Purpose`, `Purpose`, `X-Moz`).
    pub fn is_prefetch(&self) -> bool {
        let says_prefetch = |v: Option<&str>| {
            v.is_some_and(|v| {
                v.split([';', ',', ' ']).any(|t| {
                    t.eq_ignore_ascii_case("prefetch") || t.eq_ignore_ascii_case("prerender")
                })
            })
        };
        says_prefetch(self.sec_purpose) || says_prefetch(self.purpose)
    }
}

/// A header value as text: absent, empty or non-UTF-8 values are `None`.
fn header_text<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Option<&'h str> {
    headers
        .get(name)
        .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// The value of cookie `name` in one `Cookie` header value.
fn find_cookie<'h>(cookies: &'h str, name: &str) -> Option<&'h str> {
    cookies.split(';').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        if key.trim() != name {
            return None;
        }
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        Some(value)
    })
}

/// Strips userinfo, port and trailing dot from a host (or authority) and lowercases it,
/// borrowing when it is already lowercase.
pub fn normalize_host(raw: &str) -> Cow<'_, str> {
    let raw = raw.trim();
    let raw = raw.rsplit_once('@').map_or(raw, |(_, host)| host);
    let host = if raw.starts_with('[') {
        // IPv6 literal: keep the brackets, drop the port.
        match raw.find(']') {
            Some(end) => raw.get(..=end).unwrap_or(raw),
            None => raw,
        }
    } else {
        raw.split_once(':').map_or(raw, |(host, _)| host)
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn host_normalisation() {
        assert_eq!(normalize_host("Example.COM:8080"), "example.com");
        assert_eq!(normalize_host("example.com."), "example.com");
        assert_eq!(normalize_host("[::1]:443"), "[::1]");
        assert_eq!(normalize_host("user:pw@host.test:1"), "host.test");
        assert!(matches!(normalize_host("plain.test"), Cow::Borrowed(_)));
    }

    #[test]
    fn from_http_reads_headers() {
        let method = Method::GET;
        let uri: Uri = "/a/b?utm_source=x".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(HOST, "WWW.Example.com:8443".parse().unwrap());
        headers.insert(REFERER, "https://l.facebook.com/".parse().unwrap());
        headers.insert("x-moz", "prefetch".parse().unwrap());
        headers.append(COOKIE, "a=1; dl_attr=\"v1.abc\"".parse().unwrap());
        let facts = RequestFacts::from_http(&method, &uri, &headers, "dl_attr");
        assert_eq!(facts.host, "www.example.com");
        assert_eq!(facts.path, "/a/b");
        assert_eq!(facts.query, Some("utm_source=x"));
        assert_eq!(facts.referer, Some("https://l.facebook.com/"));
        assert_eq!(facts.attribution_cookie, Some("v1.abc"));
        assert!(facts.is_prefetch());
    }

    #[test]
    fn authority_is_the_fallback_host() {
        let method = Method::GET;
        let uri: Uri = "https://Shop.Example:443/x".parse().unwrap();
        let headers = HeaderMap::new();
        let facts = RequestFacts::from_http(&method, &uri, &headers, "");
        assert_eq!(facts.host, "shop.example");
        assert_eq!(facts.attribution_cookie, None);
    }
}
