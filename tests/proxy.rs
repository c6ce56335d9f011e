//! The real darklight binary in front of real upstreams on 127.0.0.1.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{Behaviour, Darklight, Upstream, get, request, send_raw};

fn two_sites(blog: &Upstream, shop: &Upstream, default: Option<&Upstream>) -> String {
    let mut config = format!(
        "listen: [127.0.0.1:{{PORT}}]\n\
         server: {{threads: 1, grace_period: 1s, shutdown_timeout: 1s}}\n\
         sites:\n\
         \x20 - name: blog\n\
         \x20   hosts: [blog.example.com]\n\
         \x20   upstreams: [{}]\n\
         \x20 - name: shop\n\
         \x20   hosts: ['*.shop.example.com', shop.example.com]\n\
         \x20   upstreams: [{}]\n",
        blog.url(),
        shop.url()
    );
    if let Some(default) = default {
        config.push_str(&format!(
            "  - name: fallback\n    default: true\n    hosts: [fallback.example.com]\n    upstreams: [{}]\n",
            default.url()
        ));
    }
    config
}

fn one_site(upstream: &str, extra: &str) -> String {
    format!(
        "listen: [127.0.0.1:{{PORT}}]\n\
         server: {{threads: 1, grace_period: 1s, shutdown_timeout: 1s}}\n\
         sites:\n\
         \x20 - name: app\n\
         \x20   upstreams: [{upstream}]\n{extra}"
    )
}

mod forwarding {
    use super::*;

    #[test]
    fn get_keeps_method_path_query_and_headers() {
        let upstream = Upstream::start("app");
        let proxy = Darklight::start(&one_site(&upstream.url(), ""));
        let response = get(
            proxy.port,
            "/articles/2026/11/x?utm_source=news&q=a%20b",
            &[("X-Custom", "kept"), ("Accept-Language", "fr")],
        );
        assert_eq!(response.status, 200, "{}", response.text());
        assert_eq!(response.header("x-upstream"), Some("app"));
        let seen = upstream.last();
        assert_eq!(seen.method, "GET");
        assert_eq!(seen.target, "/articles/2026/11/x?utm_source=news&q=a%20b");
        assert_eq!(seen.header("x-custom").as_deref(), Some("kept"));
        assert_eq!(seen.header("accept-language").as_deref(), Some("fr"));
        assert_eq!(seen.header("host").as_deref(), Some("localhost"));
    }

    #[test]
    fn post_and_put_bodies_arrive_intact() {
        let upstream = Upstream::start("app");
        let proxy = Darklight::start(&one_site(&upstream.url(), ""));
        let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        for method in ["POST", "PUT"] {
            let response = request(proxy.port, method, "/form", &[], &body);
            assert_eq!(response.status, 200, "{method}: {}", response.text());
            assert_eq!(response.json()["body_length"], body.len());
            let seen = upstream.last();
            assert_eq!(seen.method, method);
            assert_eq!(seen.body, body, "{method} body differs");
        }
    }

    #[test]
    fn hop_by_hop_headers_are_not_forwarded() {
        let upstream = Upstream::start("app");
        let proxy = Darklight::start(&one_site(&upstream.url(), ""));
        let response = get(
            proxy.port,
            "/",
            &[
                ("Keep-Alive", "timeout=5"),
                ("Proxy-Authorization", "Basic c2VjcmV0"),
                ("X-Private-Hop", "1"),
                ("Connection", "X-Private-Hop"),
                ("X-End-To-End", "yes"),
            ],
        );
        assert_eq!(response.status, 200);
        let seen = upstream.last();
        for name in ["keep-alive", "proxy-authorization", "x-private-hop"] {
            assert_eq!(seen.header(name), None, "{name} was forwarded");
        }
        assert_eq!(seen.header("x-end-to-end").as_deref(), Some("yes"));
    }

    #[test]
    fn forwarding_headers_are_set_and_client_values_replaced() {
        let upstream = Upstream::start("app");
        let proxy = Darklight::start(&one_site(&upstream.url(), ""));
        let response = get(
            proxy.port,
            "/",
            &[
                ("Host", "www.example.com"),
                ("X-Forwarded-For", "6.6.6.6"),
                ("Forwarded", "for=6.6.6.6"),
            ],
        );
        assert_eq!(response.status, 200);
        let seen = upstream.last();
        assert_eq!(seen.header_values("x-forwarded-for"), ["127.0.0.1"]);
        assert_eq!(seen.header("x-forwarded-proto").as_deref(), Some("http"));
        assert_eq!(
            seen.header("x-forwarded-host").as_deref(),
            Some("www.example.com")
        );
        assert_eq!(
            seen.header_values("forwarded"),
            ["for=127.0.0.1;proto=http;host=\"www.example.com\""]
        );
    }

    /// The header names the upstream received, in the order and spelling it received them.
    fn names(upstream: &Upstream) -> Vec<String> {
        upstream
            .last()
            .headers
            .into_iter()
            .map(|(n, _)| n)
            .collect()
    }

    #[test]
    fn header_names_go_upstream_in_lower_case_unless_preserved() {
        let sent = [
            ("X-Custom", "kept"),
            ("User-Agent", "Mozilla/5.0 WhatsApp/2.24"),
        ];
        let upstream = Upstream::start("app");
        let proxy = Darklight::start(&one_site(&upstream.url(), ""));
        let response = get(proxy.port, "/articles/x", &sent);
        assert_eq!(response.status, 200, "{}", response.text());
        let lower = names(&upstream);
        for name in [
            "x-custom",
            "user-agent",
            "x-forwarded-for",
            "x-darklight-channel",
        ] {
            assert!(lower.iter().any(|n| n == name), "{name} not in {lower:?}");
        }
        assert!(lower.iter().any(|n| n == "Host"), "{lower:?}");
        assert_eq!(upstream.last().header("x-custom").as_deref(), Some("kept"));

        let preserving = Upstream::start("app");
        let config = one_site(&preserving.url(), "").replace(
            "shutdown_timeout: 1s}",
            "shutdown_timeout: 1s, preserve_header_case: true}",
        );
        let proxy = Darklight::start(&config);
        assert_eq!(get(proxy.port, "/articles/x", &sent).status, 200);
        let spelled = names(&preserving);
        for name in [
            "X-Custom",
            "User-Agent",
            "X-Forwarded-For",
            "X-Darklight-Channel",
        ] {
            assert!(
                spelled.iter().any(|n| n == name),
                "{name} not in {spelled:?}"
            );
        }
        // The same headers either way, only spelled differently.
        let mut folded: Vec<String> = spelled.iter().map(|n| n.to_ascii_lowercase()).collect();
        let mut lowered: Vec<String> = lower.iter().map(|n| n.to_ascii_lowercase()).collect();
        folded.sort();
        lowered.sort();
        assert_eq!(folded, lowered);
    }

    #[test]
    fn absolute_form_target_is_passed_on_with_its_headers() {
        let upstream = Upstream::start("app");
        let proxy = Darklight::start(&one_site(&upstream.url(), ""));
        let response = send_raw(
            proxy.port,
            b"GET http://localhost/abs?x=1 HTTP/1.1\r\nHost: localhost\r\nX-Custom: kept\r\n\
              Connection: close\r\n\r\n",
        );
        assert_eq!(response.status, 200, "{}", response.text());
        let seen = upstream.last();
        assert_eq!(seen.target, "http://localhost/abs?x=1");
        assert_eq!(seen.header("x-custom").as_deref(), Some("kept"));
        assert_eq!(seen.header_values("x-forwarded-for"), ["127.0.0.1"]);
        assert!(
            seen.header("x-darklight-channel").is_some(),
            "{:?}",
            seen.headers
        );
    }

    #[test]
    fn trusted_forwarding_headers_are_extended() {
        let upstream = Upstream::start("app");
        let config = one_site(&upstream.url(), "").replace(
            "shutdown_timeout: 1s}",
            "shutdown_timeout: 1s, trust_forwarded_headers: true}",
        );
        let proxy = Darklight::start(&config);
        get(proxy.port, "/", &[("X-Forwarded-For", "198.51.100.7")]);
        assert_eq!(
            upstream.last().header_values("x-forwarded-for"),
            ["198.51.100.7, 127.0.0.1"]
        );
    }

    #[test]
    fn upstream_connections_are_reused() {
        let upstream = Upstream::start("app");
        let proxy = Darklight::start(&one_site(&upstream.url(), ""));
        for _ in 0..5 {
            assert_eq!(get(proxy.port, "/", &[]).status, 200);
        }
        assert_eq!(upstream.count(), 5);
        let connections = upstream
            .connections
            .load(std::sync::atomic::Ordering::SeqCst);
        assert!(
            connections < 5,
            "{connections} upstream connections for 5 requests"
        );
    }

    #[test]
    fn round_robin_across_upstreams() {
        let a = Upstream::start("a");
        let b = Upstream::start("b");
        let proxy = Darklight::start(&one_site(&format!("{}, {}", a.url(), b.url()), ""));
        for _ in 0..6 {
            assert_eq!(get(proxy.port, "/", &[]).status, 200);
        }
        assert_eq!((a.count(), b.count()), (3, 3));
    }

    #[test]
    fn host_can_be_rewritten_to_the_upstream() {
        let upstream = Upstream::start("app");
        let proxy = Darklight::start(&one_site(&upstream.url(), "    preserve_host: false\n"));
        get(proxy.port, "/", &[("Host", "www.example.com")]);
        assert_eq!(
            upstream.last().header("host"),
            Some(format!("127.0.0.1:{}", upstream.port))
        );
    }
}

mod routing {
    use super::*;

    #[test]
    fn host_header_selects_the_site() {
        let blog = Upstream::start("blog");
        let shop = Upstream::start("shop");
        let fallback = Upstream::start("fallback");
        let proxy = Darklight::start(&two_sites(&blog, &shop, Some(&fallback)));
        let cases = [
            ("blog.example.com", "blog"),
            ("BLOG.example.com:80", "blog"),
            ("shop.example.com", "shop"),
            ("eu.shop.example.com", "shop"),
            ("fallback.example.com", "fallback"),
            ("unknown.example.org", "fallback"),
        ];
        for (host, expected) in cases {
            let response = get(proxy.port, "/", &[("Host", host)]);
            assert_eq!(response.status, 200, "{host}");
            assert_eq!(response.header("x-upstream"), Some(expected), "{host}");
        }
    }

    #[test]
    fn unknown_host_without_default_is_404_and_contacts_nothing() {
        let blog = Upstream::start("blog");
        let shop = Upstream::start("shop");
        let unlisted = Upstream::start("unlisted");
        let proxy = Darklight::start(&two_sites(&blog, &shop, None));
        let unlisted_authority = format!("127.0.0.1:{}", unlisted.port);
        let response = get(proxy.port, "/", &[("Host", &unlisted_authority)]);
        assert_eq!(response.status, 404);
        assert!(
            response.text().contains("no site is configured"),
            "{}",
            response.text()
        );
        // Absolute-form request naming another server: still routed by configuration only.
        let raw = format!(
            "GET http://{unlisted_authority}/ HTTP/1.1\r\nHost: {unlisted_authority}\r\nConnection: close\r\n\r\n"
        );
        assert_eq!(send_raw(proxy.port, raw.as_bytes()).status, 404);
        // A target authority that disagrees with Host is refused outright, never routed to
        // the authority (which no site claims) nor to the site named by Host.
        let raw = format!(
            "GET http://{unlisted_authority}/ HTTP/1.1\r\nHost: blog.example.com\r\nConnection: close\r\n\r\n"
        );
        let status = send_raw(proxy.port, raw.as_bytes()).status;
        assert!(matches!(status, 400 | 404), "{status}");
        assert_eq!(
            unlisted
                .connections
                .load(std::sync::atomic::Ordering::SeqCst),
            0
        );
        assert_eq!(blog.count() + shop.count(), 0);
    }
}

mod failures {
    use super::*;

    #[test]
    fn upstream_down_is_502_with_a_plain_page() {
        let port = common::free_port();
        let proxy = Darklight::start(&one_site(&format!("http://127.0.0.1:{port}"), ""));
        let response = get(proxy.port, "/articles/x", &[]);
        assert_eq!(response.status, 502);
        assert_eq!(
            response.header("content-type"),
            Some("text/plain; charset=utf-8")
        );
        assert!(
            response.text().contains("Bad Gateway"),
            "{}",
            response.text()
        );
        // The proxy keeps serving.
        assert_eq!(get(proxy.port, "/", &[]).status, 502);
    }

    #[test]
    fn slow_upstream_is_504() {
        let slow = Upstream::start_with("slow", Behaviour::Delay(Duration::from_secs(3)));
        let proxy = Darklight::start(&one_site(
            &slow.url(),
            "    timeouts: {connect: 1s, read: 300ms}\n",
        ));
        let response = get(proxy.port, "/", &[]);
        assert_eq!(response.status, 504);
        assert!(
            response.text().contains("Gateway Timeout"),
            "{}",
            response.text()
        );
    }

    #[test]
    fn an_upstream_listening_just_after_darklight_stays_in_rotation() {
        let port = common::free_port();
        let proxy = Darklight::start(&one_site(
            &format!("http://127.0.0.1:{port}"),
            "    health_check: {kind: tcp, interval: 30s}\n",
        ));
        // Listens only now, before the first probe (at most a second after startup)...
        let _upstream = Upstream::start_on(port, "late", Behaviour::Echo);
        // ...so that probe finds it up, and it is not out of rotation for the next 30 s.
        std::thread::sleep(Duration::from_millis(1500));
        let response = get(proxy.port, "/", &[]);
        assert_eq!(response.status, 200);
        assert_eq!(response.header("x-upstream"), Some("late"));
    }

    #[test]
    fn health_checks_take_a_dead_upstream_out_of_rotation() {
        let alive = Upstream::start("alive");
        let dead_port = common::free_port();
        let proxy = Darklight::start(&one_site(
            &format!("{}, http://127.0.0.1:{dead_port}", alive.url()),
            "    health_check: {kind: tcp, interval: 200ms}\n",
        ));
        std::thread::sleep(Duration::from_millis(800));
        for _ in 0..6 {
            let response = get(proxy.port, "/", &[]);
            assert_eq!(response.status, 200);
            assert_eq!(response.header("x-upstream"), Some("alive"));
        }
    }
}

mod lifecycle {
    use super::*;

    #[test]
    fn sigterm_stops_gracefully() {
        let upstream = Upstream::start("app");
        let mut proxy = Darklight::start(&one_site(&upstream.url(), ""));
        assert_eq!(get(proxy.port, "/", &[]).status, 200);
        proxy.signal("TERM");
        let status = proxy
            .wait_exit(Duration::from_secs(20))
            .expect("still running");
        assert!(status.success(), "{status}");
    }

    #[test]
    fn sigint_stops_quickly() {
        let upstream = Upstream::start("app");
        let mut proxy = Darklight::start(&one_site(&upstream.url(), ""));
        assert_eq!(get(proxy.port, "/", &[]).status, 200);
        proxy.signal("INT");
        let status = proxy
            .wait_exit(Duration::from_secs(20))
            .expect("still running");
        assert!(status.success(), "{status}");
        assert!(proxy.logs().contains("darklight stopped"));
    }

    #[test]
    fn access_log_has_one_line_per_request() {
        let upstream = Upstream::start("app");
        let proxy = Darklight::start(&one_site(&upstream.url(), ""));
        get(proxy.port, "/articles/logged?x=1", &[]);
        let logs = proxy.wait_for_log("path=/articles/logged");
        let line = logs
            .lines()
            .find(|l| l.contains("path=/articles/logged"))
            .unwrap_or_default();
        for field in [
            "darklight::access",
            "method=GET",
            "status=200",
            "site=app",
            "channel=",
        ] {
            assert!(line.contains(field), "{field} missing in {line}");
        }
    }
}

mod demo {
    use super::*;

    /// The shipped configuration, with its fixed ports swapped for free ones.
    fn shipped_config() -> (String, u16) {
        shipped_config_with_admin().0
    }

    /// The shipped configuration with free ports, and the admin port.
    fn shipped_config_with_admin() -> ((String, u16), u16) {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/config/darklight.yaml"
        ))
        .unwrap();
        let origin = common::free_port();
        let admin = common::free_port();
        assert!(text.contains("0.0.0.0:8080") && text.contains("127.0.0.1:3000"));
        assert!(text.contains("127.0.0.1:9090"));
        let text = text
            .replace("0.0.0.0:8080", "127.0.0.1:{PORT}")
            .replace("127.0.0.1:3000", &format!("127.0.0.1:{origin}"))
            .replace("127.0.0.1:9090", &format!("127.0.0.1:{admin}"));
        ((text, origin), admin)
    }

    #[test]
    fn shipped_config_serves_the_status_page_and_metrics() {
        let ((config, origin), admin) = shipped_config_with_admin();
        let proxy = Darklight::start(&config);
        common::wait_for_port(origin);
        common::wait_for_port(admin);
        assert_eq!(get(proxy.port, "/", &[]).status, 200);
        let status = get(admin, "/status", &[]);
        assert_eq!(status.status, 200);
        assert!(status.text().contains("<svg"), "{}", status.text());
        // Requests are counted once their response is sent: poll briefly.
        let deadline = std::time::Instant::now() + common::READY_TIMEOUT;
        loop {
            let metrics = get(admin, "/metrics", &[]).text();
            if metrics.contains("darklight_requests_total{site=\"demo\"") {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{metrics}");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    #[test]
    fn shipped_config_serves_the_demo_site_through_the_proxy() {
        let (config, origin) = shipped_config();
        let proxy = Darklight::start(&config);
        common::wait_for_port(origin);
        for path in ["/", "/news/", "/tech/"] {
            let response = get(proxy.port, path, &[]);
            assert_eq!(response.status, 200, "{path}");
            assert!(response.text().contains("darklight demo"), "{path}");
        }
        let article = get(
            proxy.port,
            "/articles/2026/11/the-recipe-everyone-forwarded",
            &[("Referer", "https://web.whatsapp.com/")],
        );
        assert_eq!(article.status, 200);
        assert!(article.text().contains("The recipe everyone forwarded"));

        let headers = get(
            proxy.port,
            "/headers",
            &[("Referer", "https://www.google.com/")],
        );
        let page = headers.text();
        assert!(page.contains("x-darklight-channel"), "{page}");
        assert!(page.contains("organic_search"), "{page}");
        assert!(page.contains("x-forwarded-for"), "{page}");

        let echo = request(
            proxy.port,
            "POST",
            "/echo?x=1",
            &[("X-Test", "yes")],
            b"hello",
        );
        let json = echo.json();
        assert_eq!(json["method"], "POST");
        assert_eq!(json["uri"], "/echo?x=1");
        assert_eq!(json["body"], "hello");
        assert_eq!(get(proxy.port, "/no-such-page", &[]).status, 404);
    }

    #[test]
    fn demo_command_serves_the_origin_alone() {
        let port = common::free_port();
        let child = common::KillOnDrop(
            std::process::Command::new(env!("CARGO_BIN_EXE_darklight"))
                .args(["demo", "--listen", &format!("127.0.0.1:{port}")])
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        );
        common::wait_for_port(port);
        let response = get(port, "/healthz", &[]);
        drop(child);
        assert_eq!(response.status, 200);
        assert_eq!(response.text(), "ok\n");
    }
}
