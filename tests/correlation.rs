//! Share-preview correlation through the real proxy, and its admin endpoint.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Darklight, Upstream, get};

const BROWSER: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1";

fn config(upstream: &Upstream, admin_port: u16) -> String {
    format!(
        "listen: [127.0.0.1:{{PORT}}]\n\
         server: {{threads: 1, grace_period: 1s, shutdown_timeout: 1s}}\n\
         admin: {{listen: 127.0.0.1:{admin_port}}}\n\
         sites:\n\
         \x20 - name: news\n\
         \x20   hosts: [news.example.com]\n\
         \x20   upstreams: [{}]\n\
         correlation: {{key_params: [id]}}\n\
         attribution:\n\
         \x20 cookies: {{secret: correlation-secret-correlation-secret}}\n",
        upstream.url()
    )
}

#[test]
fn a_preview_fetch_attributes_the_next_visit() {
    let upstream = Upstream::start("news");
    let admin_port = common::free_port();
    let proxy = Darklight::start(&config(&upstream, admin_port));
    let host = ("Host", "news.example.com");

    // Slack unfurls the link...
    let preview = get(
        proxy.port,
        "/articles/launch?id=42&utm_source=x",
        &[
            host,
            (
                "User-Agent",
                "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
            ),
        ],
    );
    assert_eq!(preview.status, 200);
    assert_eq!(
        upstream.last().header("x-darklight-channel").as_deref(),
        Some("preview_bot")
    );

    // ...then someone clicks it: no referrer, a plain browser.
    let visit = get(
        proxy.port,
        "/articles/launch/?id=42",
        &[host, ("User-Agent", BROWSER)],
    );
    assert_eq!(visit.status, 200);
    let seen = upstream.last();
    assert_eq!(
        seen.header("x-darklight-channel").as_deref(),
        Some("dark_social")
    );
    assert_eq!(seen.header("x-darklight-source").as_deref(), Some("slack"));
    let reasons = seen.header("x-darklight-reasons").unwrap_or_default();
    assert!(reasons.contains("preview_correlation:slack"), "{reasons}");
    let confidence: f32 = seen
        .header("x-darklight-confidence")
        .unwrap()
        .parse()
        .unwrap();
    assert!(confidence > 0.8, "{confidence}");
    // The first-touch cookie remembers it.
    let cookies = visit.headers_named("set-cookie");
    assert!(
        cookies.iter().any(|c| c.starts_with("dl_first=")),
        "{cookies:?}"
    );

    // Another article, or another id, is not attributed.
    get(
        proxy.port,
        "/articles/other",
        &[host, ("User-Agent", BROWSER)],
    );
    assert_eq!(upstream.last().header("x-darklight-source"), None);
    get(
        proxy.port,
        "/articles/launch?id=43",
        &[host, ("User-Agent", BROWSER)],
    );
    assert_eq!(upstream.last().header("x-darklight-source"), None);

    // A visit with a referrer keeps its own attribution.
    get(
        proxy.port,
        "/articles/launch?id=42",
        &[
            host,
            ("User-Agent", BROWSER),
            ("Referer", "https://www.google.com/"),
        ],
    );
    assert_eq!(
        upstream.last().header("x-darklight-source").as_deref(),
        Some("google")
    );

    // Operators see the counters.
    let admin = get(admin_port, "/previews", &[]);
    assert_eq!(admin.status, 200);
    let json = admin.json();
    assert_eq!(json["enabled"], true);
    assert_eq!(json["stats"]["previews_recorded"], 1);
    assert_eq!(json["stats"]["visits_attributed"], 1);
    let row = &json["previews"][0];
    assert_eq!(row["url"], "news.example.com/articles/launch?id=42");
    assert_eq!(row["platform"], "slack");
    assert_eq!(row["previews"], 1);
    assert_eq!(row["visits_attributed"], 1);
    assert_eq!(get(admin_port, "/nope", &[]).status, 404);
}
