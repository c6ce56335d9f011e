//! Classification never panics, whatever the request looks like.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::borrow::Cow;
use std::sync::OnceLock;

use darklight::classify::{Classifier, RequestFacts, SiteClassificationConfig, SiteProfile};
use proptest::prelude::*;

fn classifier() -> &'static Classifier {
    static CLASSIFIER: OnceLock<Classifier> = OnceLock::new();
    CLASSIFIER.get_or_init(|| Classifier::builtin().expect("built-in rules"))
}

fn site() -> &'static SiteProfile {
    static SITE: OnceLock<SiteProfile> = OnceLock::new();
    SITE.get_or_init(|| {
        let config: SiteClassificationConfig = serde_yaml::from_str(
            "shallow_paths: [\"/tag/*\", \"re:^/\\\\d+/?$\"]\ndeep_paths: [\"/p/**\"]\n",
        )
        .expect("site config");
        SiteProfile::new(&["example.com".to_owned()], &config).expect("site")
    })
}

/// Arbitrary text, biased towards the characters that matter to the parsers.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-zA-Z0-9:/?&=%#@\\[\\].;, +*_-]{0,80}",
        prop::collection::vec(any::<u8>(), 0..200)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        Just(String::new()),
        Just("https://".to_owned()),
        Just("android-app://".to_owned()),
        Just("http://[::1".to_owned()),
        Just("%".to_owned()),
        Just("utm_source=%E2%82".to_owned()),
        "(https?|android-app)://[a-zA-Z0-9.:@\\[\\]-]{0,40}(/[a-z%?=&]{0,20})?",
        "(utm_[a-z]{2,8}|gclid|fbclid|ScCid)=[%a-zA-Z0-9+]{0,30}(&[a-z_]{1,8}=[%a-z+]{0,10}){0,5}",
    ]
}

fn huge() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("a".repeat(100_000)),
        Just(format!("utm_source={}", "%41".repeat(30_000))),
        Just(format!("https://{}/", "a.".repeat(5_000))),
        Just("Mozilla/5.0 ".repeat(5_000)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn classify_never_panics(
        method in text(), host in text(), path in text(), query in proptest::option::of(text()),
        referer in proptest::option::of(text()), user_agent in proptest::option::of(text()),
        xrw in proptest::option::of(text()), hints in proptest::option::of(text()),
        fetch in proptest::option::of(text()), purpose in proptest::option::of(text()),
    ) {
        let facts = RequestFacts {
            method: &method,
            host: Cow::Borrowed(&host),
            path: &path,
            query: query.as_deref(),
            referer: referer.as_deref(),
            user_agent: user_agent.as_deref(),
            x_requested_with: xrw.as_deref(),
            sec_ch_ua: hints.as_deref(),
            sec_ch_ua_mobile: hints.as_deref(),
            sec_ch_ua_platform: hints.as_deref(),
            sec_fetch_site: fetch.as_deref(),
            sec_fetch_mode: fetch.as_deref(),
            sec_fetch_dest: fetch.as_deref(),
            sec_purpose: purpose.as_deref(),
            purpose: purpose.as_deref(),
            attribution_cookie: purpose.as_deref(),
        };
        for site in [site(), &SiteProfile::permissive_default()] {
            let c = classifier().classify(&facts, site);
            prop_assert!((0.0..=1.0).contains(&c.confidence));
            prop_assert!(!c.reasons.is_empty());
            for value in [&c.campaign.source, &c.campaign.medium, &c.campaign.name] {
                prop_assert!(value.as_ref().is_none_or(|v| v.len() <= darklight::classify::MAX_CAMPAIGN_VALUE_LEN));
            }
            serde_json::to_string(&c).unwrap();
        }
    }

}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn huge_fields_never_panic(big in huge(), other in text()) {
        let facts = RequestFacts {
            method: "GET",
            host: Cow::Borrowed(&big),
            path: &big,
            query: Some(&big),
            referer: Some(&big),
            user_agent: Some(&big),
            x_requested_with: Some(&big),
            sec_ch_ua: Some(&other),
            ..Default::default()
        };
        let c = classifier().classify(&facts, site());
        prop_assert!((0.0..=1.0).contains(&c.confidence));
        let with_scheme = format!("https://{big}");
        let facts = RequestFacts { referer: Some(&with_scheme), ..facts };
        classifier().classify(&facts, site());
    }

    #[test]
    fn from_http_never_panics(
        headers in prop::collection::vec(
            ("[a-zA-Z-]{1,20}|host|referer|user-agent|cookie|x-requested-with|sec-fetch-site|purpose|x-moz",
             prop::collection::vec(any::<u8>(), 0..120)),
            0..12,
        ),
        path in "/[a-zA-Z0-9/%?=&._~-]{0,60}",
        cookie_name in "[a-z_]{0,8}",
    ) {
        let mut map = http::HeaderMap::new();
        for (name, value) in &headers {
            let (Ok(name), Ok(value)) = (
                http::header::HeaderName::from_bytes(name.as_bytes()),
                http::HeaderValue::from_bytes(value),
            ) else {
                continue;
            };
            map.append(name, value);
        }
        let Ok(uri) = path.parse::<http::Uri>() else { return Ok(()); };
        let method = http::Method::GET;
        let facts = RequestFacts::from_http(&method, &uri, &map, &cookie_name);
        prop_assert!(!facts.host.bytes().any(|b| b.is_ascii_uppercase()));
        let c = classifier().classify(&facts, site());
        prop_assert!((0.0..=1.0).contains(&c.confidence));
    }
}
