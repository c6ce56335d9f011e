//! The request facts the classifier looks at, borrowed from the request header.
//!
//! [`RequestFacts`] holds views into the request (no copies), so building it per request
//! costs one pass over the request's headers. Header values that are not valid UTF-8 are
//! treated as absent.

use std::borrow::Cow;

use http::{HeaderMap, HeaderValue, Method, Uri};

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
        let path = match uri.path() {
            "" => "/",
            path => path,
        };
        let mut found = FoundHeaders::default();
        // One pass over the few headers a request has, instead of a hashed lookup for each of
        // the many names the classifier reads.
        for (name, value) in headers {
            let slot = match name.as_str() {
                "host" => &mut found.host,
                "referer" => &mut found.referer,
                "user-agent" => &mut found.user_agent,
                "x-requested-with" => &mut found.x_requested_with,
                "sec-ch-ua" => &mut found.sec_ch_ua,
                "sec-ch-ua-mobile" => &mut found.sec_ch_ua_mobile,
                "sec-ch-ua-platform" => &mut found.sec_ch_ua_platform,
                "sec-fetch-site" => &mut found.sec_fetch_site,
                "sec-fetch-mode" => &mut found.sec_fetch_mode,
                "sec-fetch-dest" => &mut found.sec_fetch_dest,
                "sec-purpose" => &mut found.sec_purpose,
                "purpose" => &mut found.purpose,
                "x-moz" => &mut found.x_moz,
                "cookie" => {
                    if found.attribution_cookie.is_none() && !attribution_cookie_name.is_empty() {
                        found.attribution_cookie = std::str::from_utf8(value.as_bytes())
                            .ok()
                            .and_then(|cookies| find_cookie(cookies, attribution_cookie_name));
                    }
                    continue;
                }
                _ => continue,
            };
            // The first value of a repeated header counts, as `HeaderMap::get` would return.
            if slot.is_none() {
                *slot = Some(value);
            }
        }
        let raw_host = found
            .host
            .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
            .or_else(|| uri.authority().map(|a| a.as_str()))
            .unwrap_or("");
        RequestFacts {
            method: method.as_str(),
            host: normalize_host(raw_host),
            path,
            query: uri.query(),
            referer: value_text(found.referer),
            user_agent: value_text(found.user_agent),
            x_requested_with: value_text(found.x_requested_with),
            sec_ch_ua: value_text(found.sec_ch_ua),
            sec_ch_ua_mobile: value_text(found.sec_ch_ua_mobile),
            sec_ch_ua_platform: value_text(found.sec_ch_ua_platform),
            sec_fetch_site: value_text(found.sec_fetch_site),
            sec_fetch_mode: value_text(found.sec_fetch_mode),
            sec_fetch_dest: value_text(found.sec_fetch_dest),
            sec_purpose: value_text(found.sec_purpose),
            purpose: value_text(found.purpose).or_else(|| value_text(found.x_moz)),
            attribution_cookie: found.attribution_cookie,
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

/// The first value of each header the classifier reads, found in one pass.
#[derive(Default)]
struct FoundHeaders<'h> {
    host: Option<&'h HeaderValue>,
    referer: Option<&'h HeaderValue>,
    user_agent: Option<&'h HeaderValue>,
    x_requested_with: Option<&'h HeaderValue>,
    sec_ch_ua: Option<&'h HeaderValue>,
    sec_ch_ua_mobile: Option<&'h HeaderValue>,
    sec_ch_ua_platform: Option<&'h HeaderValue>,
    sec_fetch_site: Option<&'h HeaderValue>,
    sec_fetch_mode: Option<&'h HeaderValue>,
    sec_fetch_dest: Option<&'h HeaderValue>,
    sec_purpose: Option<&'h HeaderValue>,
    purpose: Option<&'h HeaderValue>,
    x_moz: Option<&'h HeaderValue>,
    attribution_cookie: Option<&'h str>,
}

/// A header value as text: absent, empty or non-UTF-8 values are `None`.
fn value_text(value: Option<&HeaderValue>) -> Option<&str> {
    value
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
    if is_plain_host(raw) {
        return Cow::Borrowed(raw);
    }
    normalize_any_host(raw)
}

/// True for a host already in normal form, as most `Host` headers are (`news.example.com`):
/// lower-case letters, digits, dots and hyphens, not ending in a dot. One scan of it then
/// replaces the searches for userinfo, port, brackets and upper case.
pub(crate) fn is_plain_host(host: &str) -> bool {
    !host.is_empty()
        && !host.ends_with('.')
        && host
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-'))
}

/// [`normalize_host`] for any form of host or authority.
fn normalize_any_host(raw: &str) -> Cow<'_, str> {
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
    use http::header::{COOKIE, HOST, HeaderName, REFERER};
    use proptest::prelude::*;

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

    /// Every header the classifier reads lands in its field; the first value of a repeated
    /// header counts, even when it is empty; `Purpose` wins over `X-Moz`.
    #[test]
    fn from_http_fields_by_header() {
        let method = Method::GET;
        let uri: Uri = "/x".parse().unwrap();
        type Case = (
            &'static str,
            &'static [(&'static str, &'static [u8])],
            &'static str,
        );
        let cases: &[Case] = &[
            (
                "referer",
                &[("referer", b"https://t.co/")],
                "referer=https://t.co/",
            ),
            (
                "user agent",
                &[("user-agent", b"WhatsApp/2")],
                "user_agent=WhatsApp/2",
            ),
            (
                "requested with",
                &[("x-requested-with", b"com.whatsapp")],
                "x_requested_with=com.whatsapp",
            ),
            (
                "client hints",
                &[
                    ("sec-ch-ua", b"\"Android WebView\""),
                    ("sec-ch-ua-mobile", b"?1"),
                    ("sec-ch-ua-platform", b"\"Android\""),
                ],
                "sec_ch_ua=\"Android WebView\" sec_ch_ua_mobile=?1 sec_ch_ua_platform=\"Android\"",
            ),
            (
                "fetch metadata",
                &[
                    ("sec-fetch-site", b"none"),
                    ("sec-fetch-mode", b"navigate"),
                    ("sec-fetch-dest", b"document"),
                ],
                "sec_fetch_site=none sec_fetch_mode=navigate sec_fetch_dest=document",
            ),
            (
                "sec-purpose",
                &[("sec-purpose", b"prefetch")],
                "sec_purpose=prefetch",
            ),
            ("x-moz alone", &[("x-moz", b"prefetch")], "purpose=prefetch"),
            (
                "purpose over x-moz",
                &[("x-moz", b"prefetch"), ("purpose", b"other")],
                "purpose=other",
            ),
            (
                "first of repeated",
                &[
                    ("referer", b"https://a.test/"),
                    ("referer", b"https://b.test/"),
                ],
                "referer=https://a.test/",
            ),
            (
                "empty first value",
                &[("user-agent", b"  "), ("user-agent", b"Slackbot")],
                "",
            ),
            ("not UTF-8", &[("referer", b"https://\xff.test/")], ""),
            (
                "trimmed",
                &[("sec-fetch-site", b" none ")],
                "sec_fetch_site=none",
            ),
            (
                "cookie in a later header",
                &[("cookie", b"a=1"), ("cookie", b"dl=v1.x")],
                "attribution_cookie=v1.x",
            ),
            ("unread header", &[("accept", b"text/html")], ""),
        ];
        for (group, headers, expected) in cases {
            let mut map = HeaderMap::new();
            for (name, value) in *headers {
                map.append(
                    HeaderName::from_static(name),
                    HeaderValue::from_bytes(value).unwrap(),
                );
            }
            let facts = RequestFacts::from_http(&method, &uri, &map, "dl");
            assert_eq!(describe(&facts), *expected, "{group}");
        }
    }

    /// The optional fields that are set, as `name=value` pairs.
    fn describe(facts: &RequestFacts<'_>) -> String {
        let fields = [
            ("referer", facts.referer),
            ("user_agent", facts.user_agent),
            ("x_requested_with", facts.x_requested_with),
            ("sec_ch_ua", facts.sec_ch_ua),
            ("sec_ch_ua_mobile", facts.sec_ch_ua_mobile),
            ("sec_ch_ua_platform", facts.sec_ch_ua_platform),
            ("sec_fetch_site", facts.sec_fetch_site),
            ("sec_fetch_mode", facts.sec_fetch_mode),
            ("sec_fetch_dest", facts.sec_fetch_dest),
            ("sec_purpose", facts.sec_purpose),
            ("purpose", facts.purpose),
            ("attribution_cookie", facts.attribution_cookie),
        ];
        fields
            .iter()
            .filter_map(|(name, value)| value.map(|v| format!("{name}={v}")))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The facts as hashed lookups of each header would read them.
    fn facts_by_lookup<'a>(uri: &'a Uri, headers: &'a HeaderMap, cookie: &str) -> RequestFacts<'a> {
        let text = |name: &str| value_text(headers.get(name));
        let raw_host = headers
            .get(HOST)
            .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
            .or_else(|| uri.authority().map(|a| a.as_str()))
            .unwrap_or("");
        RequestFacts {
            method: "GET",
            host: normalize_host(raw_host),
            path: uri.path(),
            query: uri.query(),
            referer: text("referer"),
            user_agent: text("user-agent"),
            x_requested_with: text("x-requested-with"),
            sec_ch_ua: text("sec-ch-ua"),
            sec_ch_ua_mobile: text("sec-ch-ua-mobile"),
            sec_ch_ua_platform: text("sec-ch-ua-platform"),
            sec_fetch_site: text("sec-fetch-site"),
            sec_fetch_mode: text("sec-fetch-mode"),
            sec_fetch_dest: text("sec-fetch-dest"),
            sec_purpose: text("sec-purpose"),
            purpose: text("purpose").or_else(|| text("x-moz")),
            attribution_cookie: if cookie.is_empty() {
                None
            } else {
                headers
                    .get_all(COOKIE)
                    .iter()
                    .filter_map(|v| std::str::from_utf8(v.as_bytes()).ok())
                    .find_map(|cookies| find_cookie(cookies, cookie))
            },
        }
    }

    proptest! {
        /// A host the shortcut takes as it is comes out of the full normalisation unchanged.
        #[test]
        fn plain_hosts_are_already_normal(host in "[a-zA-Z0-9.:@\\[\\] _-]{0,24}") {
            if is_plain_host(&host) {
                prop_assert_eq!(normalize_any_host(&host), Cow::Borrowed(host.as_str()));
            }
            prop_assert_eq!(normalize_host(&host), normalize_any_host(&host));
        }

        /// The one-pass reading agrees with a lookup per header, whatever the headers, their
        /// order and repetitions.
        #[test]
        fn one_pass_agrees_with_lookups(
            headers in proptest::collection::vec((0usize..17, 0usize..8), 0..24),
            cookie in prop_oneof![Just(""), Just("dl")],
        ) {
            const NAMES: [&str; 17] = [
                "host", "referer", "user-agent", "x-requested-with", "sec-ch-ua",
                "sec-ch-ua-mobile", "sec-ch-ua-platform", "sec-fetch-site", "sec-fetch-mode",
                "sec-fetch-dest", "sec-purpose", "purpose", "x-moz", "cookie", "accept",
                "x-darklight-channel", "sec-ch-ua-model",
            ];
            const VALUES: [&[u8]; 8] = [
                b"", b"  ", b"prefetch", b"Example.COM:8080", b"dl=v1.a; b=2", b"a=1",
                b"\xfe\xff", b" WhatsApp/2 ",
            ];
            let uri: Uri = "http://authority.test/p?q=1".parse().unwrap();
            let mut map = HeaderMap::new();
            for (name, value) in headers {
                map.append(
                    HeaderName::from_static(NAMES[name]),
                    HeaderValue::from_bytes(VALUES[value]).unwrap(),
                );
            }
            let facts = RequestFacts::from_http(&Method::GET, &uri, &map, cookie);
            prop_assert_eq!(facts, facts_by_lookup(&uri, &map, cookie));
        }
    }
}
