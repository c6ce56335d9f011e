//! A fleet sharing previews through a real Redis server, and darklight serving on when Redis
//! goes away.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Darklight, Upstream, get};

const BROWSER: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
const SLACK: &str = "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)";
const TELEGRAM: &str = "TelegramBot (like TwitterBot)";

/// A redis-server on 127.0.0.1, without persistence, stopped when dropped.
struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start_on(port: u16) -> Redis {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is needed for this test (`make deps` installs it)");
        common::wait_for_port(port);
        Redis { child, port }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(upstream: &Upstream, redis_port: u16) -> String {
    format!(
        "listen: [127.0.0.1:{{PORT}}]\n\
         server: {{threads: 1, grace_period: 1s, shutdown_timeout: 1s}}\n\
         sites:\n\
         \x20 - name: news\n\
         \x20   upstreams: [{}]\n\
         correlation:\n\
         \x20 store: redis\n\
         \x20 redis: {{url: 'redis://127.0.0.1:{redis_port}/0', timeout: 200ms}}\n",
        upstream.url()
    )
}

fn source_of_visit(proxy: &Darklight, upstream: &Upstream, path: &str) -> Option<String> {
    let response = get(proxy.port, path, &[("User-Agent", BROWSER)]);
    assert_eq!(response.status, 200);
    upstream.last().header("x-darklight-source")
}

#[test]
fn previews_seen_by_one_instance_attribute_visits_on_another() {
    let redis = Redis::start_on(common::free_port());
    let upstream = Upstream::start("news");
    let a = Darklight::start(&config(&upstream, redis.port));
    let b = Darklight::start(&config(&upstream, redis.port));

    get(a.port, "/articles/fleet", &[("User-Agent", SLACK)]);
    // The write to Redis is in the background: allow it a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    let source = loop {
        let source = source_of_visit(&b, &upstream, "/articles/fleet");
        if source.is_some() || Instant::now() > deadline {
            break source;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(source.as_deref(), Some("slack"));
    assert_eq!(source_of_visit(&b, &upstream, "/articles/unshared"), None);
}

#[test]
fn redis_down_falls_back_to_memory_and_recovers() {
    let port = common::free_port();
    let redis = Redis::start_on(port);
    let upstream = Upstream::start("news");
    let a = Darklight::start(&config(&upstream, port));
    let b = Darklight::start(&config(&upstream, port));
    drop(redis);

    // Serving goes on, fast, and the local table still correlates.
    let started = Instant::now();
    get(b.port, "/articles/local", &[("User-Agent", TELEGRAM)]);
    for _ in 0..20 {
        assert_eq!(
            source_of_visit(&b, &upstream, "/articles/local").as_deref(),
            Some("telegram")
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?} for 21 requests",
        started.elapsed()
    );
    b.wait_for_log("redis preview store unavailable");

    // Redis comes back: after the retry pause, sharing works again.
    let _redis = Redis::start_on(port);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut round = 0;
    loop {
        round += 1;
        let path = format!("/articles/again-{round}");
        get(a.port, &path, &[("User-Agent", SLACK)]);
        std::thread::sleep(Duration::from_millis(300));
        if source_of_visit(&b, &upstream, &path).as_deref() == Some("slack") {
            break;
        }
        assert!(Instant::now() < deadline, "sharing did not recover");
    }
}
