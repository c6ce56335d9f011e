//! Span names and attributes, built from plain request values and a [`Classification`].
//!
//! Pure and cheap: no I/O, no clock, no formatting of numbers; names from the rule set are
//! shared (`Arc<str>`) rather than copied. Attribute keys follow the stable OpenTelemetry HTTP
//! semantic conventions, plus darklight's own `darklight.*` namespace.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};

use opentelemetry::{Key, KeyValue};

use crate::attribution::Touch;
use crate::classify::{Classification, Name};

/// `darklight.*` and HTTP attribute keys, in one place so the docs and tests agree.
pub mod keys {
    /// `http.request.method`
    pub const HTTP_REQUEST_METHOD: &str = "http.request.method";
    /// `http.response.status_code`
    pub const HTTP_RESPONSE_STATUS_CODE: &str = "http.response.status_code";
    /// `http.route`
    pub const HTTP_ROUTE: &str = "http.route";
    /// `url.path`
    pub const URL_PATH: &str = "url.path";
    /// `url.query`
    pub const URL_QUERY: &str = "url.query";
    /// `url.scheme`
    pub const URL_SCHEME: &str = "url.scheme";
    /// `user_agent.original`
    pub const USER_AGENT_ORIGINAL: &str = "user_agent.original";
    /// `server.address`
    pub const SERVER_ADDRESS: &str = "server.address";
    /// `server.port`
    pub const SERVER_PORT: &str = "server.port";
    /// `network.protocol.version`
    pub const NETWORK_PROTOCOL_VERSION: &str = "network.protocol.version";
    /// `client.address`
    pub const CLIENT_ADDRESS: &str = "client.address";
    /// `error.type`
    pub const ERROR_TYPE: &str = "error.type";
    /// `darklight.site`
    pub const SITE: &str = "darklight.site";
    /// `darklight.upstream`
    pub const UPSTREAM: &str = "darklight.upstream";
    /// `darklight.channel`
    pub const CHANNEL: &str = "darklight.channel";
    /// `darklight.source`
    pub const SOURCE: &str = "darklight.source";
    /// `darklight.medium`
    pub const MEDIUM: &str = "darklight.medium";
    /// `darklight.in_app`
    pub const IN_APP: &str = "darklight.in_app";
    /// `darklight.is_bot`
    pub const IS_BOT: &str = "darklight.is_bot";
    /// `darklight.preview_bot`
    pub const PREVIEW_BOT: &str = "darklight.preview_bot";
    /// `darklight.confidence`
    pub const CONFIDENCE: &str = "darklight.confidence";
    /// `darklight.reasons`
    pub const REASONS: &str = "darklight.reasons";
    /// `darklight.campaign.source`
    pub const CAMPAIGN_SOURCE: &str = "darklight.campaign.source";
    /// `darklight.campaign.medium`
    pub const CAMPAIGN_MEDIUM: &str = "darklight.campaign.medium";
    /// `darklight.campaign.name`
    pub const CAMPAIGN_NAME: &str = "darklight.campaign.name";
    /// `darklight.campaign.term`
    pub const CAMPAIGN_TERM: &str = "darklight.campaign.term";
    /// `darklight.campaign.content`
    pub const CAMPAIGN_CONTENT: &str = "darklight.campaign.content";
    /// `darklight.campaign.id`
    pub const CAMPAIGN_ID: &str = "darklight.campaign.id";
    /// `darklight.campaign.click_id`: the click-id parameter present (`gclid`), never its value.
    pub const CAMPAIGN_CLICK_ID: &str = "darklight.campaign.click_id";
    /// `darklight.first_touch.channel`
    pub const FIRST_TOUCH_CHANNEL: &str = "darklight.first_touch.channel";
    /// `darklight.first_touch.source`
    pub const FIRST_TOUCH_SOURCE: &str = "darklight.first_touch.source";
    /// `darklight.first_touch.medium`
    pub const FIRST_TOUCH_MEDIUM: &str = "darklight.first_touch.medium";
    /// `darklight.first_touch.campaign`
    pub const FIRST_TOUCH_CAMPAIGN: &str = "darklight.first_touch.campaign";
    /// `darklight.first_touch.seen`: Unix time of the first visit.
    pub const FIRST_TOUCH_SEEN: &str = "darklight.first_touch.seen";
}

/// What a span records about the request itself, all borrowed from it.
#[derive(Debug, Clone, Default)]
pub struct RequestInfo<'a> {
    /// The method as sent.
    pub method: &'a str,
    /// The path, without query.
    pub path: &'a str,
    /// The query, when `url_query` is on.
    pub query: Option<&'a str>,
    /// `http` or `https`, as the client connected.
    pub scheme: &'static str,
    /// `User-Agent`.
    pub user_agent: Option<&'a str>,
    /// Host name the client asked for, without port.
    pub server_address: Option<&'a str>,
    /// The port the client asked for (or connected to).
    pub server_port: Option<u16>,
    /// `1.0`, `1.1` or `2`.
    pub protocol_version: Option<&'static str>,
    /// The client address, already truncated or absent per configuration.
    pub client_address: Option<IpAddr>,
    /// The matched low-cardinality route.
    pub route: Option<&'a str>,
}

/// The span name per the HTTP semantic conventions: `GET /articles/{slug}` when the route is
/// known, else the method alone. Non-standard methods become `HTTP`.
pub fn span_name(method: &str, route: Option<&str>) -> Cow<'static, str> {
    let method = span_method(method);
    match route {
        Some(route) => {
            let mut name = String::with_capacity(method.len() + 1 + route.len());
            name.push_str(method);
            name.push(' ');
            name.push_str(route);
            Cow::Owned(name)
        }
        None => Cow::Borrowed(method),
    }
}

/// The method part of a span's name: the method when it is a standard one, else `HTTP`.
pub fn span_method(method: &str) -> &'static str {
    known_method(method).unwrap_or("HTTP")
}

/// The method as a static string when it is one of the standard ones.
fn known_method(method: &str) -> Option<&'static str> {
    const METHODS: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
    ];
    METHODS.into_iter().find(|m| *m == method)
}

/// Where attributes go: the SDK's key-values ([`Vec<KeyValue>`]), or an encoder that writes
/// them straight to the wire. One set of builders serves both, so the two cannot disagree.
pub trait AttributeSink {
    /// A text value, copied if the sink keeps it.
    fn text(&mut self, key: &'static str, value: &str);
    /// A text value that lives for the whole program.
    fn static_text(&mut self, key: &'static str, value: &'static str) {
        self.text(key, value);
    }
    /// A name from the rule set, shared rather than copied where the sink can.
    fn name(&mut self, key: &'static str, value: &Name) {
        self.text(key, value.as_str());
    }
    /// An integer.
    fn int(&mut self, key: &'static str, value: i64);
    /// A boolean.
    fn boolean(&mut self, key: &'static str, value: bool);
    /// A floating-point number.
    fn float(&mut self, key: &'static str, value: f64);
}

impl AttributeSink for Vec<KeyValue> {
    fn text(&mut self, key: &'static str, value: &str) {
        self.push(KeyValue::new(key, value.to_string()));
    }

    fn static_text(&mut self, key: &'static str, value: &'static str) {
        self.push(KeyValue::new(key, value));
    }

    fn name(&mut self, key: &'static str, value: &Name) {
        self.push(KeyValue::new(Key::from_static_str(key), value.shared()));
    }

    fn int(&mut self, key: &'static str, value: i64) {
        self.push(KeyValue::new(key, value));
    }

    fn boolean(&mut self, key: &'static str, value: bool) {
        self.push(KeyValue::new(key, value));
    }

    fn float(&mut self, key: &'static str, value: f64) {
        self.push(KeyValue::new(key, value));
    }
}

/// Appends the HTTP request attributes.
pub fn request_attributes(request: &RequestInfo<'_>, out: &mut impl AttributeSink) {
    match known_method(request.method) {
        Some(method) => out.static_text(keys::HTTP_REQUEST_METHOD, method),
        None => out.text(keys::HTTP_REQUEST_METHOD, request.method),
    }
    out.text(keys::URL_PATH, request.path);
    out.static_text(keys::URL_SCHEME, request.scheme);
    if let Some(query) = request.query.filter(|q| !q.is_empty()) {
        out.text(keys::URL_QUERY, query);
    }
    if let Some(route) = request.route {
        out.text(keys::HTTP_ROUTE, route);
    }
    if let Some(agent) = request.user_agent {
        out.text(keys::USER_AGENT_ORIGINAL, agent);
    }
    if let Some(address) = request.server_address {
        out.text(keys::SERVER_ADDRESS, address);
    }
    if let Some(port) = request.server_port {
        out.int(keys::SERVER_PORT, i64::from(port));
    }
    if let Some(version) = request.protocol_version {
        out.static_text(keys::NETWORK_PROTOCOL_VERSION, version);
    }
    if let Some(ip) = request.client_address {
        out.text(
            keys::CLIENT_ADDRESS,
            crate::address_text::AddressText::ip(ip).as_str(),
        );
    }
}

/// Appends the site and upstream that served the request.
pub fn routing_attributes(
    site: Option<&str>,
    upstream: Option<SocketAddr>,
    out: &mut impl AttributeSink,
) {
    if let Some(site) = site {
        out.text(keys::SITE, site);
    }
    if let Some(upstream) = upstream {
        out.text(
            keys::UPSTREAM,
            crate::address_text::AddressText::socket(upstream).as_str(),
        );
    }
}

/// Appends darklight's attributes for a classification and the visitor's first touch.
pub fn classification_attributes(
    classification: &Classification,
    first_touch: Option<&Touch>,
    out: &mut impl AttributeSink,
) {
    out.static_text(keys::CHANNEL, classification.channel.as_str());
    push_name(out, keys::SOURCE, classification.source.as_ref());
    push_name(out, keys::MEDIUM, classification.medium.as_ref());
    push_name(out, keys::IN_APP, classification.in_app.as_ref());
    out.boolean(keys::IS_BOT, classification.is_bot);
    push_name(out, keys::PREVIEW_BOT, classification.preview_bot.as_ref());
    out.float(
        keys::CONFIDENCE,
        round_confidence(classification.confidence),
    );
    let reasons = &classification.reasons;
    if !reasons.is_empty() {
        let mut text = String::with_capacity(reasons.text_len());
        reasons.push_text(&mut text);
        out.text(keys::REASONS, &text);
    }

    let campaign = &classification.campaign;
    for (key, value) in [
        (keys::CAMPAIGN_SOURCE, &campaign.source),
        (keys::CAMPAIGN_MEDIUM, &campaign.medium),
        (keys::CAMPAIGN_NAME, &campaign.name),
        (keys::CAMPAIGN_TERM, &campaign.term),
        (keys::CAMPAIGN_CONTENT, &campaign.content),
        (keys::CAMPAIGN_ID, &campaign.id),
    ] {
        if let Some(value) = value {
            out.text(key, value);
        }
    }
    if let Some(click_id) = &campaign.click_id {
        out.name(keys::CAMPAIGN_CLICK_ID, &click_id.param);
    }

    if let Some(first) = first_touch {
        first_touch_attributes(first, out);
    }
}

fn first_touch_attributes(first: &Touch, out: &mut impl AttributeSink) {
    out.static_text(keys::FIRST_TOUCH_CHANNEL, first.channel.as_str());
    push_name(out, keys::FIRST_TOUCH_SOURCE, first.source.as_ref());
    push_name(out, keys::FIRST_TOUCH_MEDIUM, first.medium.as_ref());
    if let Some(campaign) = &first.campaign {
        out.text(keys::FIRST_TOUCH_CAMPAIGN, campaign);
    }
    out.int(
        keys::FIRST_TOUCH_SEEN,
        i64::try_from(first.timestamp).unwrap_or(i64::MAX),
    );
}

/// Appends the response status.
pub fn response_attributes(status: Option<u16>, out: &mut impl AttributeSink) {
    if let Some(status) = status.filter(|s| *s > 0) {
        out.int(keys::HTTP_RESPONSE_STATUS_CODE, i64::from(status));
    }
}

/// The `error.type` of a finished request: the proxy error's kind, else the 5xx status code.
/// `None` when the request succeeded (4xx responses are not server errors).
pub fn error_type(status: Option<u16>, proxy_error: Option<&str>) -> Option<Cow<'static, str>> {
    if let Some(kind) = proxy_error {
        return Some(Cow::Owned(kind.to_string()));
    }
    let status = status.filter(|s| (500..600).contains(s))?;
    Some(Cow::Owned(status.to_string()))
}

/// Confidence as a short decimal (`0.8`, not `0.800000011920929`).
fn round_confidence(confidence: f32) -> f64 {
    (f64::from(confidence) * 100.0).round() / 100.0
}

fn push_name(out: &mut impl AttributeSink, key: &'static str, name: Option<&Name>) {
    if let Some(name) = name {
        out.name(key, name);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::classify::classify_for_test as classify;

    fn as_map(attributes: &[KeyValue]) -> HashMap<String, String> {
        let mut map = HashMap::new();
        for kv in attributes {
            let previous = map.insert(kv.key.to_string(), kv.value.to_string());
            assert!(previous.is_none(), "duplicate attribute {}", kv.key);
        }
        map
    }

    const PHONE: &str = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36";

    #[test]
    fn classification_attributes_by_channel() {
        // (uri, headers, expected attributes, attributes that must be absent)
        type Case<'a> = (
            &'a str,
            &'a [(&'a str, &'a str)],
            &'a [(&'a str, &'a str)],
            &'a [&'a str],
        );
        let cases: [Case<'_>; 5] = [
            (
                "/articles/2026/11/deep-story",
                &[("user-agent", PHONE)],
                &[
                    ("darklight.channel", "dark_social"),
                    ("darklight.is_bot", "false"),
                ],
                &["darklight.source", "darklight.campaign.source"],
            ),
            (
                "/articles/a?utm_source=newsletter&utm_medium=email&utm_campaign=spring&utm_term=t&utm_content=c&utm_id=42",
                &[("user-agent", PHONE)],
                &[
                    ("darklight.channel", "email"),
                    ("darklight.source", "newsletter"),
                    ("darklight.medium", "email"),
                    ("darklight.campaign.source", "newsletter"),
                    ("darklight.campaign.medium", "email"),
                    ("darklight.campaign.name", "spring"),
                    ("darklight.campaign.term", "t"),
                    ("darklight.campaign.content", "c"),
                    ("darklight.campaign.id", "42"),
                ],
                &["darklight.preview_bot"],
            ),
            (
                "/offer?gclid=abc",
                &[("user-agent", PHONE)],
                &[
                    ("darklight.channel", "paid_search"),
                    ("darklight.source", "google"),
                    ("darklight.campaign.click_id", "gclid"),
                ],
                &["darklight.campaign.name"],
            ),
            (
                "/articles/c",
                &[(
                    "user-agent",
                    "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
                )],
                &[
                    ("darklight.channel", "preview_bot"),
                    ("darklight.is_bot", "true"),
                    ("darklight.preview_bot", "slack"),
                ],
                &[],
            ),
            (
                "/articles/b",
                &[
                    ("user-agent", PHONE),
                    ("referer", "https://www.google.com/"),
                ],
                &[
                    ("darklight.channel", "organic_search"),
                    ("darklight.source", "google"),
                    ("darklight.medium", "organic"),
                ],
                &["darklight.first_touch.channel"],
            ),
        ];
        for (uri, headers, expected, absent) in cases {
            let classification = classify(uri, headers);
            let mut out = Vec::new();
            classification_attributes(&classification, None, &mut out);
            let map = as_map(&out);
            for (key, value) in expected {
                assert_eq!(
                    map.get(*key).map(String::as_str),
                    Some(*value),
                    "{uri}: {key}"
                );
            }
            for key in absent {
                assert!(!map.contains_key(*key), "{uri}: {key} should be absent");
            }
            assert!(map.contains_key("darklight.confidence"), "{uri}");
            assert!(map.contains_key("darklight.reasons"), "{uri}");
        }
    }

    #[test]
    fn in_app_and_confidence() {
        let classification = classify(
            "/articles/2026/11/x",
            &[(
                "user-agent",
                "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 [FBAN/FBIOS;FBAV/440.0]",
            )],
        );
        let mut out = Vec::new();
        classification_attributes(&classification, None, &mut out);
        let map = as_map(&out);
        assert_eq!(
            map.get("darklight.in_app").map(String::as_str),
            Some("facebook")
        );
        let confidence: f64 = map["darklight.confidence"].parse().unwrap();
        assert!(confidence > 0.0 && confidence <= 1.0);
        assert!(
            map["darklight.confidence"].len() <= 4,
            "{}",
            map["darklight.confidence"]
        );
    }

    #[test]
    fn first_touch_attributes() {
        let first = Touch {
            channel: crate::classify::Channel::Email,
            source: Some(Name::new("newsletter")),
            medium: Some(Name::new("email")),
            campaign: Some("spring".into()),
            timestamp: 1_790_000_000,
        };
        let mut out = Vec::new();
        classification_attributes(&Classification::unclassified(), Some(&first), &mut out);
        let map = as_map(&out);
        let expected = [
            ("darklight.channel", "direct"),
            ("darklight.first_touch.channel", "email"),
            ("darklight.first_touch.source", "newsletter"),
            ("darklight.first_touch.medium", "email"),
            ("darklight.first_touch.campaign", "spring"),
            ("darklight.first_touch.seen", "1790000000"),
        ];
        for (key, value) in expected {
            assert_eq!(map.get(key).map(String::as_str), Some(value), "{key}");
        }
        assert!(!map.contains_key("darklight.reasons"));
    }

    #[test]
    fn request_attributes_follow_the_conventions() {
        let request = RequestInfo {
            method: "GET",
            path: "/articles/x",
            query: Some("utm_source=a"),
            scheme: "https",
            user_agent: Some("agent"),
            server_address: Some("www.example.com"),
            server_port: Some(443),
            protocol_version: Some("1.1"),
            client_address: Some("203.0.113.0".parse().unwrap()),
            route: Some("/articles/*"),
        };
        let mut out = Vec::new();
        request_attributes(&request, &mut out);
        routing_attributes(
            Some("news"),
            Some("127.0.0.1:3000".parse().unwrap()),
            &mut out,
        );
        response_attributes(Some(200), &mut out);
        let map = as_map(&out);
        let expected = [
            ("http.request.method", "GET"),
            ("url.path", "/articles/x"),
            ("url.query", "utm_source=a"),
            ("url.scheme", "https"),
            ("http.route", "/articles/*"),
            ("user_agent.original", "agent"),
            ("server.address", "www.example.com"),
            ("server.port", "443"),
            ("network.protocol.version", "1.1"),
            ("client.address", "203.0.113.0"),
            ("darklight.site", "news"),
            ("darklight.upstream", "127.0.0.1:3000"),
            ("http.response.status_code", "200"),
        ];
        for (key, value) in expected {
            assert_eq!(map.get(key).map(String::as_str), Some(value), "{key}");
        }

        let mut minimal = Vec::new();
        request_attributes(
            &RequestInfo {
                method: "BREW",
                path: "/",
                scheme: "http",
                ..RequestInfo::default()
            },
            &mut minimal,
        );
        response_attributes(Some(0), &mut minimal);
        let map = as_map(&minimal);
        assert_eq!(map.len(), 3, "{map:?}");
        assert_eq!(map["http.request.method"], "BREW");
    }

    #[test]
    fn span_names() {
        assert_eq!(span_name("GET", Some("/articles/*")), "GET /articles/*");
        assert_eq!(span_name("POST", None), "POST");
        assert_eq!(span_name("BREW", None), "HTTP");
        assert_eq!(span_name("BREW", Some("/pot")), "HTTP /pot");
    }

    #[test]
    fn error_types() {
        assert_eq!(error_type(Some(200), None), None);
        assert_eq!(error_type(Some(404), None), None);
        assert_eq!(error_type(Some(503), None).as_deref(), Some("503"));
        assert_eq!(
            error_type(Some(502), Some("ConnectRefused")).as_deref(),
            Some("ConnectRefused")
        );
    }
}
