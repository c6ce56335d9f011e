//! Attribution decisions, table-driven by concern.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use crate::classify::{Channel, Classification, Name};

const NOW: u64 = 1_790_000_000;
const SECRET: &str = "test-secret-test-secret-test-secret!";

fn attributor(yaml: &str) -> Attributor {
    let config: AttributionConfig = serde_yaml::from_str(yaml).unwrap();
    Attributor::new(&config, |_| None).unwrap()
}

fn with_secret() -> Attributor {
    attributor(&format!("cookies: {{secret: {SECRET}}}"))
}

fn classified(channel: Channel, source: Option<&str>) -> Classification {
    let mut c = Classification::unclassified();
    c.channel = channel;
    c.source = source.map(Name::from);
    c.confidence = 0.8;
    c
}

fn context() -> CookieContext<'static> {
    CookieContext {
        path: "/articles/x",
        ..CookieContext::default()
    }
}

fn cookie_header(plan: &Plan) -> String {
    plan.set_cookies
        .iter()
        .map(|c| c.to_str().unwrap().split(';').next().unwrap().to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

fn header<'a>(plan: &'a Plan, name: &str) -> Option<&'a str> {
    plan.headers
        .iter()
        .find(|(n, _)| n.as_str() == name)
        .map(|(_, v)| v.to_str().unwrap())
}

mod headers {
    use super::*;

    #[test]
    fn classification_fields_become_headers() {
        let a = attributor("{}");
        let mut c = classified(Channel::PaidSearch, Some("google"));
        c.medium = Some(Name::from("cpc"));
        c.campaign.name = Some("spring\r\nX-Evil: 1".into());
        let plan = a.plan(&c, &StoredTouches::default(), &context(), NOW);
        assert_eq!(header(&plan, "x-darklight-channel"), Some("paid_search"));
        assert_eq!(header(&plan, "x-darklight-source"), Some("google"));
        assert_eq!(header(&plan, "x-darklight-medium"), Some("cpc"));
        assert_eq!(
            header(&plan, "x-darklight-campaign"),
            Some("spring%0D%0AX-Evil: 1")
        );
        assert_eq!(header(&plan, "x-darklight-confidence"), Some("0.80"));
        assert_eq!(header(&plan, "x-darklight-first-channel"), None);
    }

    #[test]
    fn fields_can_be_trimmed_and_renamed() {
        let a = attributor("headers: {prefix: X-Attr-, fields: [channel]}");
        let plan = a.plan(
            &classified(Channel::Email, Some("gmail")),
            &StoredTouches::default(),
            &context(),
            NOW,
        );
        let names: Vec<&str> = plan.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["x-attr-channel"]);
        assert!(a.is_reserved_header("X-Attr-Source"));
        assert!(!a.is_reserved_header("X-Darklight-Source"));
    }

    #[test]
    fn compact_header_is_a_structured_dictionary() {
        let a = attributor("headers: {compact: true}");
        let plan = a.plan(
            &classified(Channel::DarkSocial, Some("whatsapp")),
            &StoredTouches::default(),
            &context(),
            NOW,
        );
        assert_eq!(
            header(&plan, "x-darklight"),
            Some("channel=dark_social, source=\"whatsapp\", confidence=0.80")
        );
    }

    #[test]
    fn first_touch_from_the_cookie_is_sent() {
        let a = with_secret();
        let first = a.plan(
            &classified(Channel::Email, Some("gmail")),
            &StoredTouches::default(),
            &context(),
            NOW,
        );
        let stored = a.read_cookies(std::iter::once(cookie_header(&first).as_str()), NOW + 60);
        let plan = a.plan(
            &classified(Channel::Direct, None),
            &stored,
            &context(),
            NOW + 60,
        );
        assert_eq!(header(&plan, "x-darklight-first-channel"), Some("email"));
        assert_eq!(header(&plan, "x-darklight-first-source"), Some("gmail"));
        assert_eq!(
            header(&plan, "x-darklight-first-seen"),
            Some(NOW.to_string().as_str())
        );
    }

    #[test]
    fn invalid_names_are_refused_with_position() {
        let error = serde_yaml::from_str::<AttributionConfig>("headers:\n  prefix: 'X Bad'\n")
            .err()
            .unwrap();
        let location = error.location().unwrap();
        assert_eq!(location.line(), 2);
        assert!(error.to_string().contains("invalid header name"), "{error}");
        assert!(serde_yaml::from_str::<AttributionConfig>("headers: {nope: 1}").is_err());
    }

    /// Classifications of every kind the headers carry: rule names, a preview fetcher, a
    /// crawler, a campaign with values from the query, a name outside the rules.
    fn varied() -> Vec<Classification> {
        let mut paid = classified(Channel::PaidSearch, Some("google"));
        paid.medium = Some(Name::from("cpc"));
        paid.campaign.name = Some("spring sale".into());
        paid.campaign.source = Some("newsletter-42".into());
        let mut in_app = classified(Channel::DarkSocial, Some("whatsapp"));
        in_app.in_app = Some(Name::from("whatsapp"));
        in_app.confidence = 0.95;
        let mut preview = classified(Channel::PreviewBot, Some("slack"));
        preview.preview_bot = Some(Name::from("slack"));
        preview.is_bot = true;
        let mut crawler = classified(Channel::Bot, Some("googlebot"));
        crawler.is_bot = true;
        let mut unknown = classified(Channel::Referral, Some("forum.example.org"));
        unknown.preview_bot = Some(Name::from("not-a-platform"));
        vec![paid, in_app, preview, crawler, unknown]
    }

    #[test]
    fn learnt_values_are_the_values_made_per_request() {
        let fresh = with_secret();
        let mut learnt = with_secret();
        learnt.learn_values(["google", "cpc", "whatsapp", "slack", "googlebot"]);
        let first = StoredTouches {
            first: Some(Touch {
                channel: Channel::OrganicSocial,
                source: Some("facebook".into()),
                medium: Some("social".into()),
                campaign: Some("launch".into()),
                timestamp: NOW - 60,
            }),
            ..StoredTouches::default()
        };
        for c in varied() {
            for stored in [&StoredTouches::default(), &first] {
                let expected = fresh.plan(&c, stored, &context(), NOW).headers;
                let got = learnt.plan(&c, stored, &context(), NOW).headers;
                assert_eq!(got, expected, "{c:?}");
            }
        }
    }

    #[test]
    fn learnt_values_share_one_buffer_across_requests() {
        let mut a = attributor("{}");
        a.learn_values(["google", "cpc"]);
        let paid = &varied()[0];
        // Both plans stay alive, so a freed buffer cannot be handed out again.
        let one = a.plan(paid, &StoredTouches::default(), &context(), NOW);
        let two = a.plan(paid, &StoredTouches::default(), &context(), NOW);
        let buffer = |plan: &Plan, name: &str| {
            let (_, value) = plan.headers.iter().find(|(n, _)| n == name).unwrap();
            value.as_bytes().as_ptr()
        };
        for name in [
            "x-darklight-channel",
            "x-darklight-source",
            "x-darklight-medium",
            "x-darklight-confidence",
        ] {
            assert_eq!(buffer(&one, name), buffer(&two, name), "{name}");
        }
        // A value taken from the query is made per request.
        let campaign = "x-darklight-campaign";
        assert_ne!(buffer(&one, campaign), buffer(&two, campaign));
    }
}

mod cookies {
    use super::*;

    #[test]
    fn first_visit_sets_both_cookies_with_safe_attributes() {
        let a = with_secret();
        let plan = a.plan(
            &classified(Channel::DarkSocial, Some("whatsapp")),
            &StoredTouches::default(),
            &context(),
            NOW,
        );
        assert_eq!(plan.set_cookies.len(), 2);
        for cookie in &plan.set_cookies {
            let text = cookie.to_str().unwrap();
            for attribute in ["Path=/", "HttpOnly", "SameSite=Lax", "Max-Age=7776000"] {
                assert!(text.contains(attribute), "{attribute} missing: {text}");
            }
            assert!(!text.contains("Secure"), "{text}");
        }
    }

    #[test]
    fn first_touch_stays_last_touch_moves() {
        let a = with_secret();
        let visit1 = a.plan(
            &classified(Channel::DarkSocial, Some("whatsapp")),
            &StoredTouches::default(),
            &context(),
            NOW,
        );
        let stored = a.read_cookies(std::iter::once(cookie_header(&visit1).as_str()), NOW + 10);
        assert_eq!(
            stored.first.as_ref().map(|t| t.channel),
            Some(Channel::DarkSocial)
        );
        assert_eq!(
            stored.last.as_ref().map(|t| t.channel),
            Some(Channel::DarkSocial)
        );

        let visit2 = a.plan(
            &classified(Channel::OrganicSearch, Some("google")),
            &stored,
            &context(),
            NOW + 10,
        );
        assert_eq!(visit2.set_cookies.len(), 1, "only last touch is rewritten");
        assert!(
            visit2.set_cookies[0]
                .to_str()
                .unwrap()
                .starts_with("dl_last=")
        );

        let visit3 = a.plan(
            &classified(Channel::Direct, None),
            &stored,
            &context(),
            NOW + 20,
        );
        assert!(
            visit3.set_cookies.is_empty(),
            "direct visits keep the last touch"
        );
        let visit4 = a.plan(
            &classified(Channel::Internal, None),
            &stored,
            &context(),
            NOW + 20,
        );
        assert!(
            visit4.set_cookies.is_empty(),
            "internal visits keep the last touch"
        );
    }

    /// The `Cookie` header a first visit from Gmail leaves under `a`'s settings.
    fn gmail_visit_cookies(a: &Attributor) -> String {
        let visit = a.plan(
            &classified(Channel::Email, Some("gmail")),
            &StoredTouches::default(),
            &context(),
            NOW,
        );
        cookie_header(&visit)
    }

    #[test]
    fn tampered_or_expired_cookies_are_ignored_and_replaced() {
        let a = with_secret();
        let good = gmail_visit_cookies(&a);
        let tampered = good.replacen("dl_first=1.", "dl_first=1.A", 1);
        let stored = a.read_cookies(std::iter::once(tampered.as_str()), NOW);
        assert!(stored.rejected);
        assert_eq!(stored.first, None);
        let plan = a.plan(&classified(Channel::Direct, None), &stored, &context(), NOW);
        assert!(
            plan.set_cookies
                .iter()
                .any(|c| c.to_str().unwrap().starts_with("dl_first="))
        );

        let expired = a.read_cookies(std::iter::once(good.as_str()), NOW + 91 * 86_400);
        assert!(expired.rejected);
        assert_eq!(expired.first, None);
    }

    /// A value verified once is still checked for its age on every request, and is still
    /// bound to its cookie's name.
    #[test]
    fn verified_values_are_still_checked_for_age_and_name() {
        let a = with_secret();
        let good = gmail_visit_cookies(&a);
        for _ in 0..2 {
            let stored = a.read_cookies(std::iter::once(good.as_str()), NOW);
            assert!(stored.first.is_some() && !stored.rejected, "{good}");
        }
        let expired = a.read_cookies(std::iter::once(good.as_str()), NOW + 91 * 86_400);
        assert!(expired.rejected);
        assert_eq!(expired.first, None);
        let from_the_future = a.read_cookies(std::iter::once(good.as_str()), NOW - 3_600);
        assert!(from_the_future.rejected);
        // The first-touch value, already verified, offered as the last-touch cookie.
        let first_value = good
            .split("; ")
            .find_map(|pair| pair.strip_prefix("dl_first="))
            .unwrap();
        let swapped = format!("dl_last={first_value}");
        let stored = a.read_cookies(std::iter::once(swapped.as_str()), NOW);
        assert!(stored.rejected, "{swapped}");
        assert_eq!(stored.last, None);
    }

    /// Values are reused within one configuration only: a reload with a new secret signs anew
    /// in the same second, and every value still verifies under its own key.
    #[test]
    fn reused_values_stay_with_their_key() {
        let whatsapp = classified(Channel::DarkSocial, Some("whatsapp"));
        let plan = |a: &Attributor| a.plan(&whatsapp, &StoredTouches::default(), &context(), NOW);
        let old = with_secret();
        let (first, again) = (cookie_header(&plan(&old)), cookie_header(&plan(&old)));
        assert_eq!(first, again, "same touch, same second: same value");
        let reloaded = attributor("cookies: {secret: new-secret-new-secret-new-secret!!}");
        let after_reload = cookie_header(&plan(&reloaded));
        assert_ne!(first, after_reload);
        for (a, header) in [(&old, &first), (&reloaded, &after_reload)] {
            let stored = a.read_cookies(std::iter::once(header.as_str()), NOW);
            assert!(stored.first.is_some() && stored.last.is_some(), "{header}");
            assert!(!stored.rejected);
        }
        let next_second = old.plan(&whatsapp, &StoredTouches::default(), &context(), NOW + 1);
        assert_ne!(first, cookie_header(&next_second));
    }

    #[test]
    fn key_rotation() {
        let old = with_secret();
        let plan = old.plan(
            &classified(Channel::Email, None),
            &StoredTouches::default(),
            &context(),
            NOW,
        );
        let header = cookie_header(&plan);
        let rotated = attributor(&format!(
            "cookies: {{secret: new-secret-new-secret-new-secret!!, previous_secrets: [{SECRET}]}}"
        ));
        assert!(
            rotated
                .read_cookies(std::iter::once(header.as_str()), NOW)
                .first
                .is_some()
        );
        let replaced = attributor("cookies: {secret: new-secret-new-secret-new-secret!!}");
        assert!(
            replaced
                .read_cookies(std::iter::once(header.as_str()), NOW)
                .first
                .is_none()
        );
    }

    #[test]
    fn secret_from_environment_wins_and_weak_secrets_are_refused() {
        let config = AttributionConfig::default();
        let a = Attributor::new(&config, |name| {
            (name == "DARKLIGHT_COOKIE_SECRET").then(|| SECRET.to_string())
        })
        .unwrap();
        assert!(a.cookies_enabled());
        assert!(
            !Attributor::new(&config, |_| None)
                .unwrap()
                .cookies_enabled()
        );
        let error = serde_yaml::from_str::<AttributionConfig>("cookies: {secret: short}")
            .err()
            .unwrap();
        assert!(error.to_string().contains("at least 32"), "{error}");
        let weak_env = Attributor::new(&config, |name| {
            (name == "DARKLIGHT_COOKIE_SECRET").then(|| "short".to_string())
        })
        .err()
        .unwrap();
        assert!(weak_env.to_string().contains("at least 32"), "{weak_env}");
    }

    #[test]
    fn secure_attribute_follows_the_connection_or_the_setting() {
        let auto = with_secret();
        let tls = CookieContext {
            tls: true,
            ..context()
        };
        let plan = auto.plan(
            &classified(Channel::Email, None),
            &StoredTouches::default(),
            &tls,
            NOW,
        );
        assert!(
            plan.set_cookies
                .iter()
                .all(|c| c.to_str().unwrap().ends_with("; Secure"))
        );
        let always = attributor(&format!(
            "cookies: {{secret: {SECRET}, secure: always, domain: example.com}}"
        ));
        let plan = always.plan(
            &classified(Channel::Email, None),
            &StoredTouches::default(),
            &context(),
            NOW,
        );
        assert!(plan.set_cookies.iter().all(|c| {
            let text = c.to_str().unwrap();
            text.ends_with("; Domain=example.com; Secure")
        }));
    }
}

mod privacy {
    use super::*;

    #[test]
    fn no_cookies_when_withheld_but_headers_still_flow() {
        let a = attributor(&format!(
            "cookies: {{secret: {SECRET}, honor_dnt: true, exclude_paths: ['/api/**']}}"
        ));
        let mut bot = classified(Channel::Bot, None);
        bot.is_bot = true;
        let mut preview = classified(Channel::PreviewBot, Some("slack"));
        preview.preview_bot = Some(Name::from("slack"));
        let human = classified(Channel::DarkSocial, Some("whatsapp"));
        let gpc = CookieContext {
            global_privacy_control: true,
            ..context()
        };
        let dnt = CookieContext {
            do_not_track: true,
            ..context()
        };
        let api = CookieContext {
            path: "/api/v1/items",
            ..context()
        };
        let cases: [(&str, &Classification, &CookieContext<'_>, &str); 5] = [
            ("crawler", &bot, &context(), "bot"),
            ("preview bot", &preview, &context(), "bot"),
            ("Sec-GPC: 1", &human, &gpc, "global_privacy_control"),
            ("DNT: 1 honoured", &human, &dnt, "do_not_track"),
            ("excluded path", &human, &api, "excluded_path"),
        ];
        for (case, classification, ctx, reason) in cases {
            let plan = a.plan(classification, &StoredTouches::default(), ctx, NOW);
            assert!(plan.set_cookies.is_empty(), "{case}");
            assert_eq!(plan.cookies_withheld, Some(reason), "{case}");
            assert!(
                header(&plan, "x-darklight-channel").is_some(),
                "{case}: headers still flow"
            );
        }
    }

    #[test]
    fn dnt_is_ignored_unless_configured() {
        let a = with_secret();
        let dnt = CookieContext {
            do_not_track: true,
            ..context()
        };
        let plan = a.plan(
            &classified(Channel::Email, None),
            &StoredTouches::default(),
            &dnt,
            NOW,
        );
        assert!(!plan.set_cookies.is_empty());
    }

    #[test]
    fn shared_cacheable_responses_get_no_cookies() {
        let a = with_secret();
        let cases = [
            (vec!["public, max-age=600"], false),
            (vec!["max-age=60", "s-maxage=600"], false),
            (vec!["private, max-age=60"], true),
            (vec!["no-store"], true),
            (vec![], true),
        ];
        for (values, allowed) in cases {
            assert_eq!(
                a.response_allows_cookies(values.iter().copied()),
                allowed,
                "{values:?}"
            );
        }
        let lax = attributor(&format!(
            "cookies: {{secret: {SECRET}, allow_shared_cache: true}}"
        ));
        assert!(lax.response_allows_cookies(std::iter::once("public")));
    }

    #[test]
    fn disabled_attribution_does_nothing() {
        let a = attributor(&format!("enabled: false\ncookies: {{secret: {SECRET}}}"));
        let plan = a.plan(
            &classified(Channel::Email, None),
            &StoredTouches::default(),
            &context(),
            NOW,
        );
        assert!(plan.headers.is_empty() && plan.set_cookies.is_empty());
    }
}
