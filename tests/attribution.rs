//! Attribution through the real proxy: headers the upstream receives, cookies the client gets.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Darklight, Response, Upstream, get};

const SECRET: &str = "integration-secret-integration-secret";
const OTHER_SECRET: &str = "another-secret-another-secret-another!";

fn config(upstream: &Upstream, cookies: &str) -> String {
    format!(
        "listen: [127.0.0.1:{{PORT}}]\n\
         server: {{threads: 1, grace_period: 1s, shutdown_timeout: 1s}}\n\
         sites:\n\
         \x20 - name: news\n\
         \x20   hosts: [news.example.com]\n\
         \x20   default: true\n\
         \x20   upstreams: [{}]\n\
         attribution:\n\
         \x20 cookies: {cookies}\n",
        upstream.url()
    )
}

fn signed(upstream: &Upstream) -> Darklight {
    Darklight::start(&config(upstream, &format!("{{secret: {SECRET}}}")))
}

/// `name=value` pairs of darklight's cookies in a response, ready for a `Cookie` header.
fn cookie_pairs(response: &Response) -> Vec<String> {
    response
        .headers_named("set-cookie")
        .into_iter()
        .filter(|c| c.starts_with("dl_"))
        .map(|c| c.split(';').next().unwrap().to_string())
        .collect()
}

fn cookie_named<'a>(pairs: &'a [String], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|p| p.starts_with(&format!("{name}=")))
        .map(String::as_str)
}

mod upstream_headers {
    use super::*;

    /// Path, request headers, expected channel, expected source.
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str, Option<&'a str>);

    #[test]
    fn each_channel_reaches_the_upstream() {
        let upstream = Upstream::start("app");
        let proxy = signed(&upstream);
        let cases: [Case<'_>; 5] = [
            (
                "/articles/a?utm_source=newsletter&utm_medium=email&utm_campaign=spring",
                &[],
                "email",
                Some("newsletter"),
            ),
            (
                "/articles/b",
                &[("Referer", "https://www.google.com/")],
                "organic_search",
                Some("google"),
            ),
            ("/articles/2026/11/deep-story", &[], "dark_social", None),
            (
                "/articles/c",
                &[(
                    "User-Agent",
                    "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
                )],
                "preview_bot",
                Some("slack"),
            ),
            ("/", &[], "direct", None),
        ];
        for (path, headers, channel, source) in cases {
            let response = get(proxy.port, path, headers);
            assert_eq!(response.status, 200, "{path}");
            let seen = upstream.last();
            assert_eq!(
                seen.header("x-darklight-channel").as_deref(),
                Some(channel),
                "{path}"
            );
            if let Some(source) = source {
                assert_eq!(
                    seen.header("x-darklight-source").as_deref(),
                    Some(source),
                    "{path}"
                );
            }
            assert!(seen.header("x-darklight-confidence").is_some(), "{path}");
        }
        let campaign = &upstream.received.lock().unwrap()[0];
        assert_eq!(
            campaign.header("x-darklight-campaign").as_deref(),
            Some("spring")
        );
    }

    #[test]
    fn client_sent_attribution_headers_are_replaced() {
        let upstream = Upstream::start("app");
        let proxy = signed(&upstream);
        get(
            proxy.port,
            "/",
            &[
                ("X-Darklight-Channel", "paid_search"),
                ("X-Darklight-Source", "forged"),
                ("x-darklight-first-channel", "email"),
                ("X-Darklight-Anything", "x"),
            ],
        );
        let seen = upstream.last();
        assert_eq!(seen.header_values("x-darklight-channel"), ["direct"]);
        assert_eq!(seen.header("x-darklight-source"), None);
        assert_eq!(seen.header("x-darklight-first-channel"), None);
        assert_eq!(seen.header("x-darklight-anything"), None);
    }

    #[test]
    fn hostile_campaign_values_are_sanitised() {
        let upstream = Upstream::start("app");
        let proxy = signed(&upstream);
        let long = "x".repeat(5000);
        let path = format!(
            "/articles/a?utm_campaign=%0D%0AX-Injected:%201&utm_source={long}&utm_medium=email"
        );
        assert_eq!(get(proxy.port, &path, &[]).status, 200);
        let seen = upstream.last();
        assert_eq!(seen.header("x-injected"), None);
        for (name, value) in &seen.headers {
            if name.starts_with("x-darklight") {
                assert!(value.len() <= 256, "{name} is {} bytes", value.len());
                assert!(!value.contains(['\r', '\n']), "{name}: {value:?}");
            }
        }
    }
}

mod cookies {
    use super::*;

    #[test]
    fn first_touch_stays_and_last_touch_moves() {
        let upstream = Upstream::start("app");
        let proxy = signed(&upstream);
        let first = get(
            proxy.port,
            "/articles/shared",
            &[("Referer", "https://mail.google.com/")],
        );
        let pairs = cookie_pairs(&first);
        assert!(
            cookie_named(&pairs, "dl_first").is_some(),
            "{:?}",
            first.headers
        );
        assert!(
            cookie_named(&pairs, "dl_last").is_some(),
            "{:?}",
            first.headers
        );
        for cookie in first.headers_named("set-cookie") {
            for attribute in ["Path=/", "HttpOnly", "SameSite=Lax", "Max-Age="] {
                assert!(cookie.contains(attribute), "{cookie}");
            }
            assert!(!cookie.contains("Secure"), "plain HTTP: {cookie}");
        }

        // Second visit from search: first touch reported upstream, only last touch rewritten.
        let jar = pairs.join("; ");
        let second = get(
            proxy.port,
            "/articles/other",
            &[("Cookie", &jar), ("Referer", "https://www.bing.com/")],
        );
        let seen = upstream.last();
        assert_eq!(
            seen.header("x-darklight-first-channel").as_deref(),
            Some("email")
        );
        assert_eq!(
            seen.header("x-darklight-channel").as_deref(),
            Some("organic_search")
        );
        let updated = cookie_pairs(&second);
        assert_eq!(
            cookie_named(&updated, "dl_first"),
            None,
            "first touch is set once"
        );
        let new_last = cookie_named(&updated, "dl_last").expect("last touch moves");
        assert_ne!(Some(new_last), cookie_named(&pairs, "dl_last"));

        // A direct visit changes nothing.
        let third = get(proxy.port, "/", &[("Cookie", &jar)]);
        assert!(cookie_pairs(&third).is_empty());
        assert_eq!(
            upstream
                .last()
                .header("x-darklight-first-channel")
                .as_deref(),
            Some("email")
        );
    }

    #[test]
    fn tampered_cookie_is_ignored_and_replaced() {
        let upstream = Upstream::start("app");
        let proxy = signed(&upstream);
        let first = get(
            proxy.port,
            "/articles/a",
            &[("Referer", "https://mail.google.com/")],
        );
        let pairs = cookie_pairs(&first);
        let genuine = cookie_named(&pairs, "dl_first").unwrap();
        // Re-sign nothing, just claim another channel inside the payload.
        let tampered = genuine.replacen("dl_first=1.", "dl_first=1.Z", 1);
        for cookie in [
            tampered.as_str(),
            "dl_first=garbage",
            "dl_first=1.AAAA.BBBB",
        ] {
            let response = get(proxy.port, "/articles/b", &[("Cookie", cookie)]);
            assert_eq!(response.status, 200, "{cookie}");
            assert_eq!(
                upstream.last().header("x-darklight-first-channel"),
                None,
                "{cookie}"
            );
            assert!(
                cookie_named(&cookie_pairs(&response), "dl_first").is_some(),
                "{cookie} should be replaced"
            );
        }
    }

    #[test]
    fn privacy_signals_and_bots_get_no_cookies() {
        let upstream = Upstream::start("app");
        let proxy = signed(&upstream);
        let cases: [(&str, &[(&str, &str)]); 3] = [
            ("Sec-GPC", &[("Sec-GPC", "1")]),
            (
                "crawler",
                &[(
                    "User-Agent",
                    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
                )],
            ),
            ("preview bot", &[("User-Agent", "WhatsApp/2.23.20.0 A")]),
        ];
        for (case, headers) in cases {
            let response = get(proxy.port, "/articles/x", headers);
            assert_eq!(response.status, 200, "{case}");
            assert!(response.headers_named("set-cookie").is_empty(), "{case}");
            assert!(
                upstream.last().header("x-darklight-channel").is_some(),
                "{case}: headers flow"
            );
        }
    }

    #[test]
    fn shared_cacheable_responses_get_no_cookies_and_app_cookies_pass() {
        let upstream = Upstream::start("app");
        let proxy = signed(&upstream);
        let cached = get(proxy.port, "/cached/page", &[("Referer", "https://t.co/x")]);
        assert!(
            cached.headers_named("set-cookie").is_empty(),
            "{:?}",
            cached.headers
        );
        let app = get(proxy.port, "/app-cookie", &[("Referer", "https://t.co/x")]);
        let cookies = app.headers_named("set-cookie");
        assert!(
            cookies.contains(&"app_session=abc123; Path=/; HttpOnly"),
            "{cookies:?}"
        );
        assert!(
            cookies.iter().any(|c| c.starts_with("dl_first=")),
            "{cookies:?}"
        );
    }

    #[test]
    fn key_rotation_accepts_the_previous_secret() {
        let upstream = Upstream::start("app");
        let jar = {
            let proxy = signed(&upstream);
            let response = get(
                proxy.port,
                "/articles/a",
                &[("Referer", "https://mail.google.com/")],
            );
            cookie_pairs(&response).join("; ")
        };
        let rotated = Darklight::start(&config(
            &upstream,
            &format!("{{secret: {OTHER_SECRET}, previous_secrets: [{SECRET}]}}"),
        ));
        let response = get(rotated.port, "/articles/b", &[("Cookie", &jar)]);
        assert_eq!(
            upstream
                .last()
                .header("x-darklight-first-channel")
                .as_deref(),
            Some("email")
        );
        assert!(cookie_named(&cookie_pairs(&response), "dl_first").is_none());
        drop(rotated);

        let replaced = Darklight::start(&config(&upstream, &format!("{{secret: {OTHER_SECRET}}}")));
        let response = get(replaced.port, "/articles/b", &[("Cookie", &jar)]);
        assert_eq!(upstream.last().header("x-darklight-first-channel"), None);
        assert!(cookie_named(&cookie_pairs(&response), "dl_first").is_some());
    }

    #[test]
    fn no_secret_means_headers_only() {
        let upstream = Upstream::start("app");
        let proxy = Darklight::start(&config(&upstream, "{}"));
        let response = get(
            proxy.port,
            "/articles/a",
            &[("Referer", "https://mail.google.com/")],
        );
        assert!(response.headers_named("set-cookie").is_empty());
        assert_eq!(
            upstream.last().header("x-darklight-channel").as_deref(),
            Some("email")
        );
    }
}
