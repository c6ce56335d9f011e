//! Table-driven tests of the built-in classification rules, grouped by concern.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::borrow::Cow;
use std::sync::OnceLock;

use darklight::classify::{
    Channel, Classification, Classifier, RequestFacts, SiteClassificationConfig, SiteProfile,
};

const HOST: &str = "www.example.com";
const DEEP: &str = "/2024/05/why-dark-social-matters";

const CHROME_DESKTOP: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36";
const SAFARI_IOS: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1";
const CHROME_ANDROID: &str = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.6367.82 Mobile Safari/537.36";
const ANDROID_WEBVIEW: &str = "Mozilla/5.0 (Linux; Android 14; Pixel 8 Build/AP1A.240405.002; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/124.0.6367.82 Mobile Safari/537.36";

fn classifier() -> &'static Classifier {
    static CLASSIFIER: OnceLock<Classifier> = OnceLock::new();
    CLASSIFIER.get_or_init(|| Classifier::builtin().expect("built-in rules compile"))
}

/// A GET navigation of `target` (path and query) on HOST with this User-Agent.
fn get(target: &'static str, user_agent: &'static str) -> RequestFacts<'static> {
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    RequestFacts {
        method: "GET",
        host: Cow::Borrowed(HOST),
        path,
        query,
        user_agent: Some(user_agent),
        ..Default::default()
    }
}

fn run(facts: &RequestFacts<'_>) -> Classification {
    classifier().classify(facts, &SiteProfile::permissive_default())
}

#[track_caller]
fn expect(facts: &RequestFacts<'_>, channel: Channel, source: Option<&str>) -> Classification {
    let c = run(facts);
    assert_eq!(
        (c.channel, c.source.as_deref()),
        (channel, source),
        "facts: {facts:?}\nclassification: {c:?}"
    );
    assert!((0.0..=1.0).contains(&c.confidence));
    assert!(!c.reasons.is_empty(), "no reasons: {c:?}");
    c
}

mod search_engines {
    use super::*;

    #[test]
    fn referrers_are_organic_search() {
        let cases = [
            ("https://www.google.com/", "google"),
            ("https://www.google.co.uk/", "google"),
            ("https://www.google.de/search?q=x", "google"),
            ("https://www.google.com.br/", "google"),
            (
                "https://google.com/url?q=https://www.example.com/",
                "google",
            ),
            ("https://www.bing.com/", "bing"),
            ("https://duckduckgo.com/", "duckduckgo"),
            ("https://search.yahoo.com/", "yahoo"),
            ("https://uk.search.yahoo.com/", "yahoo"),
            ("https://yandex.ru/", "yandex"),
            ("https://yandex.com.tr/", "yandex"),
            ("https://www.baidu.com/link?url=x", "baidu"),
            ("https://www.ecosia.org/", "ecosia"),
            ("https://search.brave.com/", "brave"),
            ("https://search.naver.com/", "naver"),
            ("https://www.startpage.com/", "startpage"),
            ("https://www.qwant.com/", "qwant"),
            ("https://search.seznam.cz/", "seznam"),
        ];
        for (referer, source) in cases {
            let facts = RequestFacts {
                referer: Some(referer),
                ..get(DEEP, CHROME_DESKTOP)
            };
            let c = expect(&facts, Channel::OrganicSearch, Some(source));
            assert_eq!(c.medium.as_deref(), Some("organic"));
            assert!(
                c.reasons.contains(&format!("referrer_host:{source}")),
                "{c:?}"
            );
        }
    }
}

mod social_networks {
    use super::*;

    #[test]
    fn referrers_and_link_shims_are_organic_social() {
        let cases = [
            ("https://l.facebook.com/", "facebook"),
            ("https://lm.facebook.com/", "facebook"),
            ("https://m.facebook.com/", "facebook"),
            ("https://www.facebook.com/", "facebook"),
            ("https://t.co/", "twitter"),
            ("https://x.com/", "twitter"),
            ("https://lnkd.in/", "linkedin"),
            ("https://www.linkedin.com/", "linkedin"),
            ("https://out.reddit.com/t3_abc", "reddit"),
            ("https://www.reddit.com/", "reddit"),
            ("https://away.vk.com/away.php", "vk"),
            ("https://l.instagram.com/", "instagram"),
            ("https://www.pinterest.co.uk/", "pinterest"),
            ("https://pinterest.com/", "pinterest"),
            ("https://www.youtube.com/", "youtube"),
            ("https://news.ycombinator.com/", "hacker_news"),
            ("https://bsky.app/", "bluesky"),
            ("https://www.threads.net/", "threads"),
            ("https://www.tiktok.com/", "tiktok"),
            ("https://mastodon.social/", "mastodon"),
        ];
        for (referer, source) in cases {
            let facts = RequestFacts {
                referer: Some(referer),
                ..get(DEEP, SAFARI_IOS)
            };
            let c = expect(&facts, Channel::OrganicSocial, Some(source));
            assert_eq!(c.medium.as_deref(), Some("social"));
        }
    }
}

mod email {
    use super::*;

    #[test]
    fn webmail_referrers_are_email() {
        let cases = [
            ("https://mail.google.com/", "gmail"),
            ("https://outlook.live.com/", "outlook"),
            ("https://outlook.office.com/mail/", "outlook"),
            ("https://outlook.office365.com/", "outlook"),
            ("https://mail.yahoo.com/", "yahoo_mail"),
            ("https://uk.mail.yahoo.com/", "yahoo_mail"),
            ("https://mail.proton.me/", "proton_mail"),
            ("https://mail.aol.com/", "aol_mail"),
            ("https://mail.yandex.ru/", "yandex_mail"),
        ];
        for (referer, source) in cases {
            let facts = RequestFacts {
                referer: Some(referer),
                ..get(DEEP, CHROME_DESKTOP)
            };
            expect(&facts, Channel::Email, Some(source));
        }
    }

    #[test]
    fn mail_apps_are_email() {
        for (package, source) in [
            ("com.google.android.gm", "gmail"),
            ("com.microsoft.office.outlook", "outlook"),
        ] {
            let facts = RequestFacts {
                x_requested_with: Some(package),
                ..get(DEEP, ANDROID_WEBVIEW)
            };
            let c = expect(&facts, Channel::Email, Some(source));
            assert_eq!(c.in_app.as_deref(), Some(source));
        }
        let facts = RequestFacts {
            referer: Some("android-app://com.google.android.gm/"),
            ..get(DEEP, CHROME_ANDROID)
        };
        let c = expect(&facts, Channel::Email, Some("gmail"));
        assert!(c.reasons.contains("referrer_app:gmail"));
    }
}

mod messaging_apps {
    use super::*;

    #[test]
    fn web_messengers_with_a_referrer_are_messaging() {
        let cases = [
            ("https://web.whatsapp.com/", "whatsapp"),
            ("https://web.telegram.org/", "telegram"),
            ("https://www.messenger.com/", "messenger"),
            ("https://app.slack.com/client/T01/C02", "slack"),
            ("https://slack-redir.net/link?url=x", "slack"),
            ("https://discord.com/", "discord"),
            ("https://teams.microsoft.com/", "microsoft_teams"),
        ];
        for (referer, source) in cases {
            let facts = RequestFacts {
                referer: Some(referer),
                ..get(DEEP, CHROME_DESKTOP)
            };
            let c = expect(&facts, Channel::Messaging, Some(source));
            assert_eq!(c.medium.as_deref(), Some("messaging"));
        }
    }

    /// In-app browsers identified by their User-Agent: (UA, in_app name, source, channel).
    const IN_APP_USER_AGENTS: &[(&str, &str, &str, Channel)] = &[
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 [FBAN/FBIOS;FBAV/460.0.0.37.107;FBBV/597146417;FBDV/iPhone15,3;FBMD/iPhone;FBSN/iOS;FBSV/17.4;FBSS/3;FBID/phone;FBLC/en_US;FBOP/5;FBRV/599146417]",
            "facebook",
            "facebook",
            Channel::OrganicSocial,
        ),
        (
            "Mozilla/5.0 (Linux; Android 14; SM-S918B Build/UP1A.231005.007; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/124.0.6367.82 Mobile Safari/537.36 [FB_IAB/FB4A;FBAV/460.0.0.48.109;]",
            "facebook",
            "facebook",
            Channel::OrganicSocial,
        ),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_3_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 [FBAN/MessengerForiOS;FBAV/458.0.0.44.108;FBBV/591184435;FBDV/iPhone14,5;FBMD/iPhone;FBSN/iOS;FBSV/17.3.1;FBSS/3;FBCR/;FBID/phone;FBLC/en_US;FBOP/5]",
            "messenger",
            "messenger",
            Channel::DarkSocial,
        ),
        (
            "Mozilla/5.0 (Linux; Android 13; SM-A536B Build/TP1A.220624.014; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/123.0.6312.118 Mobile Safari/537.36 [FB_IAB/Orca-Android;FBAV/452.0.0.41.108;]",
            "messenger",
            "messenger",
            Channel::DarkSocial,
        ),
        (
            "Mozilla/5.0 (Linux; Android 13; SM-A536B Build/TP1A.220624.014; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/123.0.6312.118 Mobile Safari/537.36 [FB_IAB/MESSENGER;FBAV/452.0.0.41.108;]",
            "messenger",
            "messenger",
            Channel::DarkSocial,
        ),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 Instagram 329.0.0.41.93 (iPhone15,3; iOS 17_4; en_US; en; scale=3.00; 1290x2796; 594283756)",
            "instagram",
            "instagram",
            Channel::OrganicSocial,
        ),
        (
            "Mozilla/5.0 (Linux; Android 14; Pixel 8 Build/AP1A.240405.002; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/124.0.6367.82 Mobile Safari/537.36 Instagram 329.0.0.29.120 Android (34/14; 420dpi; 1080x2400; Google/google; Pixel 8; shiba; shiba; en_US; 594283756)",
            "instagram",
            "instagram",
            Channel::OrganicSocial,
        ),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 Barcelona 329.0.0.19.103 (iPhone15,3; iOS 17_4; en_US; en; scale=3.00; 1290x2796; 594283756)",
            "threads",
            "threads",
            Channel::OrganicSocial,
        ),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 MicroMessenger/8.0.48(0x18003030) NetType/WIFI Language/zh_CN",
            "wechat",
            "wechat",
            Channel::DarkSocial,
        ),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 Safari Line/14.5.0",
            "line",
            "line",
            Channel::DarkSocial,
        ),
        (
            "Mozilla/5.0 (Linux; Android 14; Pixel 8 Build/AP1A.240405.002; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/124.0.6367.82 Mobile Safari/537.36 Telegram-Android/10.11.1 (Google Pixel 8; Android 14; SDK 34; HIGH)",
            "telegram",
            "telegram",
            Channel::DarkSocial,
        ),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 Snapchat/13.0.0.45 (like Safari/8617.1.17.10.9, panda)",
            "snapchat",
            "snapchat",
            Channel::DarkSocial,
        ),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 musical_ly_34.1.0 JsSdk/2.0 NetType/WIFI Channel/App Store ByteLocale/en Region/US isDarkMode/0 WKWebView/1 RevealType/Dialog BytedanceWebview/d8a21c6",
            "tiktok",
            "tiktok",
            Channel::OrganicSocial,
        ),
        (
            "Mozilla/5.0 (Linux; Android 14; Pixel 8 Build/AP1A.240405.002; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/124.0.6367.82 Mobile Safari/537.36 trill_2023401050 JsSdk/1.0 NetType/WIFI Channel/googleplay AppName/trill app_version/34.1.5 ByteLocale/en Region/US BytedanceWebview/d8a21c6",
            "tiktok",
            "tiktok",
            Channel::OrganicSocial,
        ),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 Twitter for iPhone/10.34",
            "twitter",
            "twitter",
            Channel::OrganicSocial,
        ),
        (
            "Mozilla/5.0 (Linux; Android 14; Pixel 8 Build/AP1A.240405.002; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/124.0.6367.82 Mobile Safari/537.36 TwitterAndroid",
            "twitter",
            "twitter",
            Channel::OrganicSocial,
        ),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 [LinkedInApp]/9.29.6010",
            "linkedin",
            "linkedin",
            Channel::OrganicSocial,
        ),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 [Pinterest/iOS]",
            "pinterest",
            "pinterest",
            Channel::OrganicSocial,
        ),
        (
            "Mozilla/5.0 (Linux; Android 14; Pixel 8 Build/AP1A.240405.002; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/124.0.6367.82 Mobile Safari/537.36 [Pinterest/Android]",
            "pinterest",
            "pinterest",
            Channel::OrganicSocial,
        ),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 KAKAOTALK 10.6.5",
            "kakaotalk",
            "kakaotalk",
            Channel::DarkSocial,
        ),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 NAVER(inapp; search; 2000; 12.6.2; 15PROMAX)",
            "naver",
            "naver",
            Channel::OrganicSearch,
        ),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) GSA/310.0.622390563 Mobile/15E148 Safari/604.1",
            "google_app",
            "google",
            Channel::OrganicSearch,
        ),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 Discord/228.0",
            "discord",
            "discord",
            Channel::DarkSocial,
        ),
        (
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Slack/4.38.125 Chrome/124.0.6367.91 Electron/30.0.2 Safari/537.36 Sonic Slack_SSB/4.38.125",
            "slack",
            "slack",
            Channel::DarkSocial,
        ),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 Viber/21.7.0",
            "viber",
            "viber",
            Channel::DarkSocial,
        ),
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Teams/24102.2223.2870.9480 Chrome/124.0.0.0 Electron/30.0.0 Safari/537.36",
            "microsoft_teams",
            "microsoft_teams",
            Channel::DarkSocial,
        ),
    ];

    #[test]
    fn in_app_user_agents_without_referrer() {
        for (ua, app, source, channel) in IN_APP_USER_AGENTS {
            let facts = RequestFacts {
                user_agent: Some(ua),
                ..get(DEEP, "")
            };
            let c = expect(&facts, *channel, Some(source));
            assert_eq!(c.in_app.as_deref(), Some(*app), "{ua}");
            assert!(c.reasons.contains(&format!("in_app:{app}")), "{c:?}");
            assert!(!c.is_bot);
        }
    }

    /// Android WebView packages (X-Requested-With): (package, in_app name, channel).
    const PACKAGES: &[(&str, &str, Channel)] = &[
        ("com.facebook.katana", "facebook", Channel::OrganicSocial),
        ("com.facebook.orca", "messenger", Channel::DarkSocial),
        ("com.instagram.android", "instagram", Channel::OrganicSocial),
        ("com.whatsapp", "whatsapp", Channel::DarkSocial),
        ("org.telegram.messenger", "telegram", Channel::DarkSocial),
        ("com.twitter.android", "twitter", Channel::OrganicSocial),
        ("com.linkedin.android", "linkedin", Channel::OrganicSocial),
        ("com.google.android.gm", "gmail", Channel::Email),
        ("com.microsoft.office.outlook", "outlook", Channel::Email),
        ("com.Slack", "slack", Channel::DarkSocial),
        ("com.discord", "discord", Channel::DarkSocial),
        ("com.viber.voip", "viber", Channel::DarkSocial),
        ("jp.naver.line.android", "line", Channel::DarkSocial),
        ("com.kakao.talk", "kakaotalk", Channel::DarkSocial),
        ("com.snapchat.android", "snapchat", Channel::DarkSocial),
        ("com.zhiliaoapp.musically", "tiktok", Channel::OrganicSocial),
        ("com.pinterest", "pinterest", Channel::OrganicSocial),
        (
            "com.google.android.googlequicksearchbox",
            "google_app",
            Channel::OrganicSearch,
        ),
        ("com.tencent.mm", "wechat", Channel::DarkSocial),
        ("com.snapchat.android", "snapchat", Channel::DarkSocial),
    ];

    #[test]
    fn x_requested_with_packages() {
        for (package, app, channel) in PACKAGES {
            let facts = RequestFacts {
                x_requested_with: Some(package),
                ..get(DEEP, ANDROID_WEBVIEW)
            };
            let c = run(&facts);
            assert_eq!(
                (c.channel, c.in_app.as_deref()),
                (*channel, Some(*app)),
                "{package}: {c:?}"
            );
        }
    }

    #[test]
    fn every_listed_in_app_browser_is_covered() {
        let covered: Vec<&str> = IN_APP_USER_AGENTS
            .iter()
            .map(|c| c.1)
            .chain(PACKAGES.iter().map(|c| c.1))
            .collect();
        for app in [
            "facebook",
            "messenger",
            "instagram",
            "whatsapp",
            "wechat",
            "line",
            "telegram",
            "snapchat",
            "tiktok",
            "twitter",
            "linkedin",
            "pinterest",
            "kakaotalk",
            "naver",
            "google_app",
            "discord",
            "slack",
            "viber",
        ] {
            assert!(covered.contains(&app), "{app} has no test case");
        }
    }

    #[test]
    fn messaging_in_app_is_dark_social_even_on_the_home_page() {
        let facts = RequestFacts {
            x_requested_with: Some("com.whatsapp"),
            ..get("/", ANDROID_WEBVIEW)
        };
        let c = expect(&facts, Channel::DarkSocial, Some("whatsapp"));
        assert_eq!(c.in_app.as_deref(), Some("whatsapp"));
    }

    #[test]
    fn app_referrers() {
        let cases = [
            (
                "android-app://org.telegram.messenger/",
                Channel::DarkSocial,
                "telegram",
            ),
            ("android-app://com.slack/", Channel::DarkSocial, "slack"),
            (
                "android-app://com.whatsapp/",
                Channel::DarkSocial,
                "whatsapp",
            ),
            (
                "android-app://com.google.android.googlequicksearchbox/https/www.google.com",
                Channel::OrganicSearch,
                "google",
            ),
            (
                "android-app://com.linkedin.android/",
                Channel::OrganicSocial,
                "linkedin",
            ),
            (
                "android-app://com.google.android.apps.messaging/",
                Channel::Sms,
                "google_messages",
            ),
            (
                "android-app://com.samsung.android.messaging/",
                Channel::Sms,
                "samsung_messages",
            ),
            (
                "android-app://com.example.reader/",
                Channel::DarkSocial,
                "com.example.reader",
            ),
        ];
        for (referer, channel, source) in cases {
            let facts = RequestFacts {
                referer: Some(referer),
                ..get(DEEP, CHROME_ANDROID)
            };
            let c = expect(&facts, channel, Some(source));
            assert!(c.in_app.is_none(), "{c:?}");
        }
    }
}

mod sms {
    use super::*;

    #[test]
    fn sms_campaigns_and_apps() {
        let facts = get(
            "/offer?utm_source=twilio&utm_medium=sms&utm_campaign=spring",
            SAFARI_IOS,
        );
        expect(&facts, Channel::Sms, Some("twilio"));
        let facts = RequestFacts {
            x_requested_with: Some("com.google.android.apps.messaging"),
            ..get(DEEP, ANDROID_WEBVIEW)
        };
        expect(&facts, Channel::Sms, Some("google_messages"));
    }
}

mod preview_bots {
    use super::*;

    /// (User-Agent, platform).
    const PREVIEWS: &[(&str, &str)] = &[
        ("WhatsApp/2.23.20.0 A", "whatsapp"),
        ("WhatsApp/2.2413.51 i", "whatsapp"),
        ("WhatsApp/2", "signal"),
        (
            "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
            "facebook",
        ),
        ("facebookexternalhit/1.1", "facebook"),
        ("Facebot", "facebook"),
        (
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_11_1) AppleWebKit/601.2.4 (KHTML, like Gecko) Version/9.0.1 Safari/601.2.4 facebookexternalhit/1.1 Facebot Twitterbot/1.0",
            "imessage",
        ),
        ("facebookexternalhit/1.1;line-poker/1.0", "line"),
        (
            "facebookexternalhit/1.1;kakaotalk-scrap/1.0;+https://devtalk.kakao.com/",
            "kakaotalk",
        ),
        (
            "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
            "slack",
        ),
        ("Slack-ImgProxy (+https://api.slack.com/robots)", "slack"),
        ("TelegramBot (like TwitterBot)", "telegram"),
        (
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10.10; rv:38.0) Gecko/20100101 Firefox/38.0 (compatible; Discordbot/2.0; +https://discordapp.com)",
            "discord",
        ),
        ("Twitterbot/1.0", "twitter"),
        (
            "LinkedInBot/1.0 (compatible; Mozilla/5.0; Apache-HttpClient +http://www.linkedin.com)",
            "linkedin",
        ),
        (
            "Mozilla/5.0 (Windows NT 6.1; WOW64) SkypeUriPreview Preview/0.5 skype-url-preview@microsoft.com",
            "microsoft_teams",
        ),
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/100.0.4896.127 Safari/537.36 MicrosoftPreview/2.0 +https://aka.ms/MicrosoftPreview",
            "microsoft_teams",
        ),
        ("Viber/20.9.0.8 CFNetwork/1410.0.3 Darwin/22.6.0", "viber"),
        (
            "Mozilla/5.0 (compatible; Snap URL Preview Service; bot; snapchat; https://developers.snap.com/robots)",
            "snapchat",
        ),
        (
            "Pinterest/0.2 (+https://www.pinterest.com/bot.html)",
            "pinterest",
        ),
        (
            "Mozilla/5.0 (compatible; Pinterestbot/1.0; +https://www.pinterest.com/bot.html)",
            "pinterest",
        ),
        (
            "Mozilla/5.0 (compatible; redditbot/1.0; +http://www.reddit.com/feedback)",
            "reddit",
        ),
        (
            "http.rb/5.1.1 (Mastodon/4.2.8; +https://mastodon.social/) Bot",
            "mastodon",
        ),
        (
            "Mozilla/5.0 (compatible; Bluesky Cardyb/1.1; +mailto:support@bsky.app)",
            "bluesky",
        ),
        (
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko; Google-PageRenderer Google (+https://developers.google.com/+/web/snippet/)) Chrome/56.0.2924.87 Safari/537.36",
            "google",
        ),
        (
            "Mozilla/5.0 (compatible; vkShare; +http://vk.com/dev/Share)",
            "vk",
        ),
        (
            "Iframely/1.3.1 (+https://iframely.com/docs/about)",
            "iframely",
        ),
        (
            "Mozilla/5.0 (compatible; Embedly/0.2; +http://support.embed.ly/)",
            "embedly",
        ),
    ];

    #[test]
    fn preview_fetchers() {
        for (ua, platform) in PREVIEWS {
            let facts = RequestFacts {
                user_agent: Some(ua),
                ..get(DEEP, "")
            };
            let c = expect(&facts, Channel::PreviewBot, Some(platform));
            assert_eq!(c.preview_bot.as_deref(), Some(*platform));
            assert!(c.is_bot);
            assert!(c.reasons.contains(&format!("preview_bot:{platform}")));
        }
    }

    #[test]
    fn every_built_in_preview_bot_is_covered() {
        for name in classifier().preview_bot_names() {
            assert!(
                PREVIEWS.iter().any(|(_, p)| *p == name),
                "preview bot {name} has no test case"
            );
        }
    }
}

mod bots {
    use super::*;

    #[test]
    fn crawlers_and_tools() {
        let cases = [
            (
                "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
                "googlebot",
                0.95,
            ),
            (
                "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.6367.60 Mobile Safari/537.36 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
                "googlebot",
                0.95,
            ),
            (
                "AdsBot-Google (+http://www.google.com/adsbot.html)",
                "googlebot",
                0.95,
            ),
            (
                "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
                "bingbot",
                0.95,
            ),
            (
                "Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)",
                "yandexbot",
                0.95,
            ),
            (
                "Mozilla/5.0 (compatible; Baiduspider/2.0; +http://www.baidu.com/search/spider.html)",
                "baiduspider",
                0.95,
            ),
            (
                "DuckDuckBot/1.1; (+http://duckduckgo.com/duckduckbot.html)",
                "duckduckbot",
                0.95,
            ),
            (
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/13.1.1 Safari/605.1.15 (Applebot/0.1; +http://www.apple.com/go/applebot)",
                "applebot",
                0.95,
            ),
            (
                "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; +https://openai.com/gptbot)",
                "openai",
                0.95,
            ),
            (
                "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; ClaudeBot/1.0; +claudebot@anthropic.com)",
                "anthropic",
                0.95,
            ),
            (
                "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
                "ahrefsbot",
                0.95,
            ),
            (
                "Slackbot 1.0 (+https://api.slack.com/robots)",
                "slack",
                0.95,
            ),
            (
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/124.0.0.0 Safari/537.36",
                "headless_browser",
                0.95,
            ),
            ("curl/8.5.0", "curl", 0.7),
            ("Wget/1.21.4", "wget", 0.7),
            ("python-requests/2.31.0", "python", 0.7),
            ("Go-http-client/1.1", "go_http_client", 0.7),
            (
                "Mozilla/5.0 (compatible; SomeNewCrawler/0.1; +https://crawler.example)",
                "generic_bot",
                0.8,
            ),
            ("examplespider/2.0", "generic_bot", 0.8),
        ];
        for (ua, name, confidence) in cases {
            let facts = RequestFacts {
                user_agent: Some(ua),
                ..get(DEEP, "")
            };
            let c = expect(&facts, Channel::Bot, Some(name));
            assert!(c.is_bot);
            assert_eq!(c.preview_bot, None);
            assert_eq!(c.confidence, confidence, "{ua}");
        }
    }
}

mod campaigns {
    use super::*;

    #[test]
    fn utm_mediums_map_to_channels() {
        let cases: [(&'static str, Channel, Option<&str>); 16] = [
            (
                "/p?utm_source=google&utm_medium=cpc&utm_campaign=brand",
                Channel::PaidSearch,
                Some("google"),
            ),
            (
                "/p?utm_source=bing&utm_medium=ppc",
                Channel::PaidSearch,
                Some("bing"),
            ),
            (
                "/p?utm_source=facebook&utm_medium=cpc",
                Channel::PaidSocial,
                Some("facebook"),
            ),
            (
                "/p?utm_source=fb&utm_medium=paid_social",
                Channel::PaidSocial,
                Some("facebook"),
            ),
            (
                "/p?utm_source=instagram&utm_medium=cpm",
                Channel::PaidSocial,
                Some("instagram"),
            ),
            (
                "/p?utm_source=google&utm_medium=display",
                Channel::PaidSearch,
                Some("google"),
            ),
            (
                "/p?utm_source=programmatic_partner&utm_medium=display",
                Channel::Campaign,
                Some("programmatic_partner"),
            ),
            (
                "/p?utm_source=newsletter&utm_medium=email&utm_campaign=weekly",
                Channel::Email,
                Some("newsletter"),
            ),
            ("/p?utm_medium=Newsletter", Channel::Email, None),
            (
                "/p?utm_source=Twitter&utm_medium=social",
                Channel::OrganicSocial,
                Some("twitter"),
            ),
            (
                "/p?utm_source=partner_site&utm_medium=referral",
                Channel::Referral,
                Some("partner_site"),
            ),
            (
                "/p?utm_source=affiliate_network&utm_medium=affiliate",
                Channel::Campaign,
                Some("affiliate_network"),
            ),
            (
                "/p?utm_source=podcast&utm_medium=audio",
                Channel::Campaign,
                Some("podcast"),
            ),
            (
                "/p?utm_source=whatsapp",
                Channel::Messaging,
                Some("whatsapp"),
            ),
            ("/p?utm_campaign=spring", Channel::Campaign, None),
            (
                "/p?utm_source=linkedin&utm_medium=organic",
                Channel::OrganicSearch,
                Some("linkedin"),
            ),
        ];
        for (target, channel, source) in cases {
            let facts = get(target, CHROME_DESKTOP);
            expect(&facts, channel, source);
        }
    }

    #[test]
    fn values_are_decoded_and_kept() {
        let facts = get(
            "/p?utm_source=News+Letter&utm_medium=email&utm_campaign=Spring%20Sale%20%E2%82%AC&utm_term=red%2Bshoes&utm_content=hero&utm_id=abc.123",
            CHROME_DESKTOP,
        );
        let c = expect(&facts, Channel::Email, Some("news letter"));
        assert_eq!(c.medium.as_deref(), Some("email"));
        assert_eq!(c.campaign.source.as_deref(), Some("News Letter"));
        assert_eq!(c.campaign.name.as_deref(), Some("Spring Sale €"));
        assert_eq!(c.campaign.term.as_deref(), Some("red+shoes"));
        assert_eq!(c.campaign.content.as_deref(), Some("hero"));
        assert_eq!(c.campaign.id.as_deref(), Some("abc.123"));
        assert!(c.reasons.contains("utm_source"));
        assert!(c.reasons.contains("utm_medium"));
        assert!(c.reasons.contains("utm_campaign"));
    }

    /// (query, channel, source, medium).
    const CLICK_IDS: &[(&str, Channel, &str, &str)] = &[
        (
            "gclid=Cj0KCQjw3ZayBhDRARIsAPWzx8o",
            Channel::PaidSearch,
            "google",
            "cpc",
        ),
        ("gbraid=0AAAAADx", Channel::PaidSearch, "google", "cpc"),
        ("wbraid=CkMKCQjw", Channel::PaidSearch, "google", "cpc"),
        ("gad_source=1", Channel::PaidSearch, "google", "cpc"),
        ("dclid=CJqL4", Channel::Campaign, "google", "display"),
        ("msclkid=4f1e2d3c", Channel::PaidSearch, "bing", "cpc"),
        ("yclid=1234567890", Channel::PaidSearch, "yandex", "cpc"),
        (
            "ttclid=E.C.P.abc",
            Channel::PaidSocial,
            "tiktok",
            "paid_social",
        ),
        (
            "twclid=2-abc",
            Channel::PaidSocial,
            "twitter",
            "paid_social",
        ),
        (
            "li_fat_id=3c2b1a",
            Channel::PaidSocial,
            "linkedin",
            "paid_social",
        ),
        ("rdt_cid=123", Channel::PaidSocial, "reddit", "paid_social"),
        ("ScCid=abc", Channel::PaidSocial, "snapchat", "paid_social"),
        (
            "epik=dj0yJnU9",
            Channel::PaidSocial,
            "pinterest",
            "paid_social",
        ),
        (
            "mc_cid=1a2b3c&mc_eid=4d5e6f",
            Channel::Email,
            "mailchimp",
            "email",
        ),
        ("mc_eid=4d5e6f", Channel::Email, "mailchimp", "email"),
        (
            "_hsenc=p2ANqtz-abc&_hsmi=123",
            Channel::Email,
            "hubspot",
            "email",
        ),
        ("_hsmi=123", Channel::Email, "hubspot", "email"),
        ("_kx=abc", Channel::Email, "klaviyo", "email"),
        ("mkt_tok=eyJp", Channel::Email, "marketo", "email"),
        (
            "fbclid=IwAR2x0abcdefghijklmnop",
            Channel::OrganicSocial,
            "facebook",
            "social",
        ),
        (
            "igshid=MzRlODBiNWFlZA==",
            Channel::OrganicSocial,
            "instagram",
            "social",
        ),
        (
            "igsh=MXh5dDl",
            Channel::OrganicSocial,
            "instagram",
            "social",
        ),
        (
            "srsltid=AfmBOor",
            Channel::OrganicSearch,
            "google",
            "organic",
        ),
        ("ysclid=lv1abc", Channel::OrganicSearch, "yandex", "organic"),
    ];

    #[test]
    fn click_ids_map_to_networks() {
        for (query, channel, source, medium) in CLICK_IDS {
            let target: &'static str = Box::leak(format!("{DEEP}?{query}").into_boxed_str());
            let facts = get(target, CHROME_DESKTOP);
            let c = expect(&facts, *channel, Some(source));
            assert_eq!(c.medium.as_deref(), Some(*medium), "{query}");
            let click = c.campaign.click_id.as_ref().expect("click id recorded");
            assert_eq!(click.network.as_str(), *source);
        }
    }

    #[test]
    fn every_built_in_click_id_is_covered() {
        for param in classifier().click_id_params() {
            assert!(
                CLICK_IDS.iter().any(|(q, ..)| q
                    .to_ascii_lowercase()
                    .starts_with(&format!("{param}="))
                    || q.to_ascii_lowercase().contains(&format!("&{param}="))),
                "click id {param} has no test case"
            );
        }
    }

    #[test]
    fn fbclid_from_instagram_is_instagram() {
        let facts = RequestFacts {
            referer: Some("https://l.instagram.com/"),
            ..get("/p?fbclid=PAZXh0bgNhZW0", SAFARI_IOS)
        };
        expect(&facts, Channel::OrganicSocial, Some("instagram"));
    }
}

mod precedence {
    use super::*;

    #[test]
    fn preview_bot_beats_bot() {
        let facts = RequestFacts {
            user_agent: Some("Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)"),
            ..get(DEEP, "")
        };
        expect(&facts, Channel::PreviewBot, Some("slack"));
    }

    #[test]
    fn bot_beats_campaign() {
        let facts = get(
            "/p?utm_source=google&utm_medium=cpc&gclid=x",
            "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        );
        let c = expect(&facts, Channel::Bot, Some("googlebot"));
        assert!(c.campaign.is_empty());
    }

    #[test]
    fn campaign_beats_click_id() {
        let facts = get(
            "/p?utm_source=newsletter&utm_medium=email&gclid=abc",
            CHROME_DESKTOP,
        );
        let c = expect(&facts, Channel::Email, Some("newsletter"));
        assert_eq!(
            c.campaign.click_id.as_ref().map(|c| c.param.as_str()),
            Some("gclid")
        );
        assert!(c.reasons.contains("click_id:gclid"));
    }

    #[test]
    fn click_id_beats_referrer() {
        let facts = RequestFacts {
            referer: Some("https://www.google.com/"),
            ..get("/p?gclid=abc", CHROME_DESKTOP)
        };
        expect(&facts, Channel::PaidSearch, Some("google"));
        let facts = RequestFacts {
            referer: Some("https://mail.google.com/"),
            ..get("/p?msclkid=abc", CHROME_DESKTOP)
        };
        expect(&facts, Channel::PaidSearch, Some("bing"));
    }

    #[test]
    fn referrer_beats_in_app_browser() {
        let ua = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 Instagram 329.0.0.41.93 (iPhone15,3; iOS 17_4; en_US; en; scale=3.00; 1290x2796; 594283756)";
        let facts = RequestFacts {
            referer: Some("https://www.google.com/"),
            user_agent: Some(ua),
            ..get(DEEP, "")
        };
        let c = expect(&facts, Channel::OrganicSearch, Some("google"));
        assert_eq!(c.in_app.as_deref(), Some("instagram"));
        assert!(c.reasons.contains("in_app:instagram"));
    }

    #[test]
    fn internal_referrer_beats_in_app_browser() {
        let facts = RequestFacts {
            referer: Some("https://www.example.com/previous"),
            x_requested_with: Some("com.whatsapp"),
            ..get(DEEP, ANDROID_WEBVIEW)
        };
        let c = expect(&facts, Channel::Internal, None);
        assert_eq!(c.in_app.as_deref(), Some("whatsapp"));
    }

    #[test]
    fn in_app_beats_no_referrer_heuristics() {
        let facts = RequestFacts {
            x_requested_with: Some("com.facebook.katana"),
            ..get("/", ANDROID_WEBVIEW)
        };
        expect(&facts, Channel::OrganicSocial, Some("facebook"));
    }

    #[test]
    fn x_requested_with_beats_user_agent_token() {
        let ua = "Mozilla/5.0 (Linux; Android 13; SM-A536B Build/TP1A.220624.014; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/123.0.6312.118 Mobile Safari/537.36 [FB_IAB/FB4A;FBAV/452.0.0.41.108;]";
        let facts = RequestFacts {
            x_requested_with: Some("com.facebook.orca"),
            user_agent: Some(ua),
            ..get(DEEP, "")
        };
        expect(&facts, Channel::DarkSocial, Some("messenger"));
    }

    #[test]
    fn heuristics_come_last() {
        expect(&get(DEEP, SAFARI_IOS), Channel::DarkSocial, None);
        expect(&get("/", SAFARI_IOS), Channel::Direct, None);
    }
}

mod dark_social {
    use super::*;

    #[test]
    fn deep_link_without_referrer() {
        let c = expect(&get(DEEP, SAFARI_IOS), Channel::DarkSocial, None);
        assert!(c.reasons.contains("deep_link_no_referrer"));
        assert!(c.reasons.contains("no_referrer"));
        assert_eq!(c.confidence, 0.6);
    }

    #[test]
    fn sec_fetch_site_none_strengthens() {
        let facts = RequestFacts {
            sec_fetch_site: Some("none"),
            sec_fetch_mode: Some("navigate"),
            sec_fetch_dest: Some("document"),
            ..get(DEEP, CHROME_DESKTOP)
        };
        let c = expect(&facts, Channel::DarkSocial, None);
        assert_eq!(c.confidence, 0.75);
        assert!(c.reasons.contains("sec_fetch_site:none"));
    }

    #[test]
    fn unknown_android_webview_strengthens() {
        let c = expect(&get(DEEP, ANDROID_WEBVIEW), Channel::DarkSocial, None);
        assert!(c.reasons.contains("android_webview"));
        assert_eq!(c.confidence, 0.7);
        let facts = RequestFacts {
            sec_ch_ua: Some(
                "\"Chromium\";v=\"124\", \"Android WebView\";v=\"124\", \"Not-A.Brand\";v=\"99\"",
            ),
            ..get(DEEP, CHROME_ANDROID)
        };
        assert!(run(&facts).reasons.contains("android_webview"));
    }

    #[test]
    fn shallow_paths_are_direct() {
        for path in ["/", "/index.html", "/news", "/news/"] {
            let c = expect(&get(path, SAFARI_IOS), Channel::Direct, None);
            assert!(c.reasons.contains("shallow_path"), "{path}");
        }
    }

    #[test]
    fn prefetches_are_not_landings() {
        let cases = [
            RequestFacts {
                sec_purpose: Some("prefetch"),
                ..get(DEEP, CHROME_DESKTOP)
            },
            RequestFacts {
                sec_purpose: Some("prefetch;prerender"),
                ..get(DEEP, CHROME_DESKTOP)
            },
            RequestFacts {
                purpose: Some("prefetch"),
                ..get(DEEP, CHROME_DESKTOP)
            },
        ];
        for facts in cases {
            let c = expect(&facts, Channel::Direct, None);
            assert!(c.reasons.contains("prefetch"));
        }
        let facts = RequestFacts {
            sec_purpose: Some("prefetch"),
            referer: Some("https://www.google.com/"),
            ..get(DEEP, CHROME_DESKTOP)
        };
        let c = expect(&facts, Channel::OrganicSearch, Some("google"));
        assert!(c.reasons.contains("prefetch"));
    }

    #[test]
    fn non_navigations_are_direct() {
        let post = RequestFacts {
            method: "POST",
            ..get(DEEP, CHROME_DESKTOP)
        };
        assert!(
            expect(&post, Channel::Direct, None)
                .reasons
                .contains("non_get_method")
        );
        let image = RequestFacts {
            sec_fetch_dest: Some("image"),
            sec_fetch_mode: Some("no-cors"),
            ..get(DEEP, CHROME_DESKTOP)
        };
        assert!(
            expect(&image, Channel::Direct, None)
                .reasons
                .contains("not_navigation")
        );
        let xhr = RequestFacts {
            x_requested_with: Some("XMLHttpRequest"),
            ..get(DEEP, CHROME_DESKTOP)
        };
        let c = expect(&xhr, Channel::Direct, None);
        assert!(c.in_app.is_none());
        let head = RequestFacts {
            method: "HEAD",
            ..get(DEEP, CHROME_DESKTOP)
        };
        expect(&head, Channel::DarkSocial, None);
    }

    #[test]
    fn anonymising_shims_count_as_no_referrer() {
        let facts = RequestFacts {
            referer: Some("https://href.li/?https://www.example.com/x"),
            ..get(DEEP, CHROME_DESKTOP)
        };
        let c = expect(&facts, Channel::DarkSocial, None);
        assert!(c.reasons.contains("referrer_shim:href_li"));
        assert!(!c.reasons.contains("no_referrer"));
    }

    #[test]
    fn cross_site_without_referrer_is_weaker() {
        let facts = RequestFacts {
            sec_fetch_site: Some("cross-site"),
            ..get(DEEP, CHROME_DESKTOP)
        };
        let c = expect(&facts, Channel::DarkSocial, None);
        assert_eq!(c.confidence, 0.55);
        assert!(c.reasons.contains("sec_fetch_site:cross_site"));
    }

    #[test]
    fn site_path_rules() {
        let config: SiteClassificationConfig = serde_yaml::from_str(
            "shallow_paths: [\"/tag/*\", \"re:^/\\\\d{4}/$\"]\ndeep_paths: [\"/*\"]\n",
        )
        .unwrap();
        let site = SiteProfile::new(&["example.com".to_owned()], &config).unwrap();
        let classify =
            |path: &'static str| classifier().classify(&get(path, SAFARI_IOS), &site).channel;
        assert_eq!(classify("/tag/rust"), Channel::Direct);
        assert_eq!(classify("/2024/"), Channel::Direct);
        assert_eq!(classify("/my-article-slug"), Channel::DarkSocial);
        assert_eq!(classify("/"), Channel::Direct);
    }
}

mod internal_and_referral {
    use super::*;

    #[test]
    fn own_hosts_are_internal() {
        let site = SiteProfile::new(
            &["example.com".to_owned(), "*.example.net".to_owned()],
            &SiteClassificationConfig::default(),
        )
        .unwrap();
        for referer in [
            "https://www.example.com/a",
            "https://blog.example.com/",
            "https://example.com/",
            "https://shop.example.net/cart",
            "https://WWW.EXAMPLE.COM:443/x",
        ] {
            let facts = RequestFacts {
                referer: Some(referer),
                ..get(DEEP, CHROME_DESKTOP)
            };
            let c = classifier().classify(&facts, &site);
            assert_eq!(c.channel, Channel::Internal, "{referer}");
            assert!(c.reasons.contains("referrer_internal"));
        }
    }

    #[test]
    fn permissive_default_knows_the_request_host() {
        let facts = RequestFacts {
            referer: Some("https://example.com/"),
            ..get(DEEP, CHROME_DESKTOP)
        };
        expect(&facts, Channel::Internal, None);
        let facts = RequestFacts {
            referer: Some("https://notexample.com/"),
            ..get(DEEP, CHROME_DESKTOP)
        };
        expect(&facts, Channel::Referral, Some("notexample.com"));
    }

    #[test]
    fn fetch_metadata_without_referrer() {
        for value in ["same-origin", "same-site"] {
            let facts = RequestFacts {
                sec_fetch_site: Some(value),
                ..get(DEEP, CHROME_DESKTOP)
            };
            let c = expect(&facts, Channel::Internal, None);
            assert_eq!(c.confidence, 0.7);
        }
    }

    #[test]
    fn unknown_referrers_are_referral() {
        let cases = [
            (
                "https://www.somebodysblog.net/2024/links",
                "somebodysblog.net",
            ),
            ("https://news.bbc.co.uk/story", "bbc.co.uk"),
            (
                "http://user:pw@Forum.Example.ORG:8080/thread",
                "example.org",
            ),
            ("https://[2001:db8::1]/x", "[2001:db8::1]"),
            ("https://docs.google.com/document/d/1", "google.com"),
            ("https://chatgpt.com/", "chatgpt"),
        ];
        for (referer, source) in cases {
            let facts = RequestFacts {
                referer: Some(referer),
                ..get(DEEP, CHROME_DESKTOP)
            };
            let c = expect(&facts, Channel::Referral, Some(source));
            assert_eq!(c.medium.as_deref(), Some("referral"));
        }
    }
}

mod serialisation {
    use super::*;

    #[test]
    fn json_shape() {
        let facts = RequestFacts {
            referer: Some("https://l.facebook.com/"),
            ..get(
                "/p?utm_source=facebook&utm_medium=paid_social&utm_campaign=spring&fbclid=x",
                CHROME_DESKTOP,
            )
        };
        let json = serde_json::to_string(&run(&facts)).unwrap();
        assert_eq!(
            json,
            r#"{"channel":"paid_social","source":"facebook","medium":"paid_social","campaign":{"source":"facebook","medium":"paid_social","name":"spring","click_id":{"param":"fbclid","network":"facebook"}},"in_app":null,"is_bot":false,"preview_bot":null,"confidence":0.9,"reasons":["utm_source","utm_medium","utm_campaign","click_id:fbclid"]}"#
        );
    }

    #[test]
    fn channel_names() {
        for channel in Channel::ALL {
            let json = serde_json::to_string(&channel).unwrap();
            assert_eq!(json, format!("\"{}\"", channel.as_str()));
            assert_eq!(channel.to_string(), channel.as_str());
        }
    }

    #[test]
    fn classification_is_static_send_sync() {
        fn assert_traits<T: Clone + Send + Sync + 'static>() {}
        assert_traits::<Classification>();
        assert_traits::<Classifier>();
        assert_traits::<SiteProfile>();
    }
}

mod regression {
    use super::*;

    #[test]
    fn telegram_preview_is_not_twitter() {
        let facts = RequestFacts {
            user_agent: Some("TelegramBot (like TwitterBot)"),
            ..get(DEEP, "")
        };
        expect(&facts, Channel::PreviewBot, Some("telegram"));
    }

    #[test]
    fn word_start_tokens_do_not_match_inside_words() {
        let facts = RequestFacts {
            user_agent: Some("Mozilla/5.0 Pipeline/1.0 (X11; Linux x86_64)"),
            ..get(DEEP, "")
        };
        assert!(run(&facts).in_app.is_none());
    }

    #[test]
    fn upper_case_and_odd_referrers() {
        let facts = RequestFacts {
            referer: Some("HTTPS://WWW.GOOGLE.COM/"),
            ..get(DEEP, CHROME_DESKTOP)
        };
        expect(&facts, Channel::OrganicSearch, Some("google"));
        let facts = RequestFacts {
            referer: Some("https://www.google.com./"),
            ..get(DEEP, CHROME_DESKTOP)
        };
        expect(&facts, Channel::OrganicSearch, Some("google"));
        let facts = RequestFacts {
            referer: Some("not a url"),
            ..get(DEEP, CHROME_DESKTOP)
        };
        let c = expect(&facts, Channel::DarkSocial, None);
        assert!(c.reasons.contains("referrer_invalid"));
    }

    #[test]
    fn whatsapp_preview_is_not_whatsapp_in_app() {
        let facts = RequestFacts {
            user_agent: Some("WhatsApp/2.24.9.78 A"),
            x_requested_with: Some("com.whatsapp"),
            ..get(DEEP, "")
        };
        expect(&facts, Channel::PreviewBot, Some("whatsapp"));
    }

    #[test]
    fn missing_user_agent_is_not_a_bot() {
        let facts = RequestFacts {
            user_agent: None,
            ..get(DEEP, "")
        };
        let c = run(&facts);
        assert!(!c.is_bot);
        assert_eq!(c.channel, Channel::DarkSocial);
    }
}

/// Every channel has at least one example in this file; the list in
/// docs/classification.md mirrors these.
#[test]
fn every_channel_is_reachable() {
    let examples: Vec<RequestFacts<'static>> = vec![
        get("/", SAFARI_IOS),
        get(DEEP, SAFARI_IOS),
        RequestFacts {
            referer: Some("https://www.google.com/"),
            ..get(DEEP, SAFARI_IOS)
        },
        get("/p?gclid=x", SAFARI_IOS),
        RequestFacts {
            referer: Some("https://t.co/"),
            ..get(DEEP, SAFARI_IOS)
        },
        get("/p?ttclid=x", SAFARI_IOS),
        RequestFacts {
            referer: Some("https://mail.google.com/"),
            ..get(DEEP, SAFARI_IOS)
        },
        RequestFacts {
            referer: Some("https://web.whatsapp.com/"),
            ..get(DEEP, SAFARI_IOS)
        },
        get("/p?utm_medium=sms", SAFARI_IOS),
        RequestFacts {
            referer: Some("https://blog.example.org/"),
            ..get(DEEP, SAFARI_IOS)
        },
        RequestFacts {
            referer: Some("https://www.example.com/"),
            ..get(DEEP, SAFARI_IOS)
        },
        get("/p?utm_campaign=x", SAFARI_IOS),
        RequestFacts {
            user_agent: Some("WhatsApp/2.23.20.0 A"),
            ..get(DEEP, "")
        },
        RequestFacts {
            user_agent: Some("curl/8.5.0"),
            ..get(DEEP, "")
        },
    ];
    let seen: Vec<Channel> = examples.iter().map(|f| run(f).channel).collect();
    for channel in Channel::ALL {
        assert!(seen.contains(&channel), "{channel} not reached");
    }
}
