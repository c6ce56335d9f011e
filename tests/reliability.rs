//! Reliability: hot reload, upstream faults, hostile input, a log sink that fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use common::{Darklight, Upstream, get, read_response, send_raw};

const BROWSER: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

fn one_site(upstream: &str, extra: &str) -> String {
    format!(
        "listen: [127.0.0.1:{{PORT}}]\n\
         server: {{threads: 2, grace_period: 1s, shutdown_timeout: 1s}}\n\
         sites:\n\
         \x20 - name: app\n\
         \x20   upstreams: [{upstream}]\n\
         \x20   timeouts: {{connect: 1s, read: 1s}}\n{extra}"
    )
}

/// Rewrites the running proxy's configuration file (keeping its port) and sends SIGHUP.
fn reload(proxy: &Darklight, config: &str, expect: &str) -> String {
    let path = proxy.dir.path().join("darklight.yaml");
    std::fs::write(&path, config.replace("{PORT}", &proxy.port.to_string())).unwrap();
    let before = proxy.logs().matches(expect).count();
    proxy.signal("HUP");
    let deadline = std::time::Instant::now() + common::READY_TIMEOUT;
    loop {
        let logs = proxy.logs();
        if logs.matches(expect).count() > before {
            return logs;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no new `{expect}` in:\n{logs}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

mod hot_reload {
    use super::*;

    #[test]
    fn sighup_swaps_sites_and_rules_without_dropping_connections() {
        let old = Upstream::start("old");
        let new = Upstream::start("new");
        let proxy = Darklight::start(&one_site(&old.url(), ""));

        // A kept-alive client connection opened before the reload.
        let mut kept = TcpStream::connect(("127.0.0.1", proxy.port)).unwrap();
        kept.set_read_timeout(Some(common::IO_TIMEOUT)).unwrap();
        let mut kept_reader = BufReader::new(kept.try_clone().unwrap());
        let keepalive = b"GET /kept HTTP/1.1\r\nHost: localhost\r\n\r\n";
        kept.write_all(keepalive).unwrap();
        assert_eq!(read_response(&mut kept_reader).status, 200);

        // Traffic keeps flowing during the reload; not one request may fail.
        let stop = Arc::new(AtomicBool::new(false));
        let failures = Arc::new(AtomicUsize::new(0));
        let sent = Arc::new(AtomicUsize::new(0));
        let load = {
            let (stop, failures, sent, port) =
                (stop.clone(), failures.clone(), sent.clone(), proxy.port);
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    sent.fetch_add(1, Ordering::Relaxed);
                    if get(port, "/during", &[]).status != 200 {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        };

        let extra = "classification:\n  sources:\n    - name: intranet\n      kind: referral\n      channel: internal\n      hosts: [intranet.example.org]\n";
        let config = one_site(&new.url(), "").replace("sites:", &format!("{extra}sites:"));
        reload(&proxy, &config, "configuration reloaded");
        thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::Relaxed);
        load.join().unwrap();
        assert_eq!(
            failures.load(Ordering::Relaxed),
            0,
            "of {} requests",
            sent.load(Ordering::Relaxed)
        );

        // New requests go to the new upstream with the new rules.
        let response = get(
            proxy.port,
            "/after",
            &[
                ("Referer", "https://intranet.example.org/"),
                ("User-Agent", BROWSER),
            ],
        );
        assert_eq!(response.header("x-upstream"), Some("new"));
        assert_eq!(
            new.last().header("x-darklight-source").as_deref(),
            Some("intranet")
        );
        assert_eq!(
            new.last().header("x-darklight-channel").as_deref(),
            Some("internal")
        );

        // The connection opened before the reload still works.
        kept.write_all(keepalive).unwrap();
        assert_eq!(read_response(&mut kept_reader).status, 200);
    }

    #[test]
    fn a_broken_file_is_refused_and_the_old_configuration_keeps_serving() {
        let upstream = Upstream::start("app");
        let proxy = Darklight::start(&one_site(&upstream.url(), ""));
        let logs = reload(
            &proxy,
            "listen: [127.0.0.1:{PORT}\nsites: [",
            "configuration reload refused",
        );
        assert!(
            logs.contains("darklight.yaml:"),
            "the error names the file: {logs}"
        );
        let logs = reload(
            &proxy,
            &one_site(&upstream.url(), "    hosts: ['bad host']\n"),
            "configuration reload refused",
        );
        assert!(logs.contains("invalid host"), "{logs}");
        for _ in 0..5 {
            assert_eq!(get(proxy.port, "/", &[]).status, 200);
        }
        assert_eq!(upstream.last().target, "/");
    }

    #[test]
    fn previews_survive_a_reload_and_restart_only_changes_are_reported() {
        let upstream = Upstream::start("app");
        let config = one_site(&upstream.url(), "");
        let proxy = Darklight::start(&config);
        get(
            proxy.port,
            "/articles/shared",
            &[("User-Agent", "TelegramBot (like TwitterBot)")],
        );
        let changed = config.replace("threads: 2", "threads: 1");
        let logs = reload(&proxy, &changed, "configuration reloaded");
        assert!(
            logs.contains("needs a restart") && logs.contains("section=server"),
            "{logs}"
        );
        get(proxy.port, "/articles/shared", &[("User-Agent", BROWSER)]);
        assert_eq!(
            upstream.last().header("x-darklight-source").as_deref(),
            Some("telegram")
        );
    }
}

/// A hand-made upstream that misbehaves in one way until told to behave.
struct FaultyUpstream {
    port: u16,
    healthy: Arc<AtomicBool>,
}

#[derive(Clone, Copy)]
enum Fault {
    Reset,
    Garbage,
    Hang,
}

impl FaultyUpstream {
    fn start(fault: Fault) -> FaultyUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let healthy = Arc::new(AtomicBool::new(false));
        let flag = healthy.clone();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let healthy = flag.load(Ordering::SeqCst);
                thread::spawn(move || {
                    let mut buffer = [0u8; 4096];
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                    let _ = stream.read(&mut buffer);
                    if healthy {
                        let _ = stream.write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                        );
                        return;
                    }
                    match fault {
                        Fault::Reset => {
                            let _ = stream.shutdown(Shutdown::Both);
                        }
                        Fault::Garbage => {
                            let _ = stream.write_all(b"\x00\x01garbage that is not HTTP\r\n\r\n");
                        }
                        Fault::Hang => thread::sleep(Duration::from_secs(5)),
                    }
                });
            }
        });
        FaultyUpstream { port, healthy }
    }
}

mod faults {
    use super::*;

    fn fails_cleanly_then_recovers(fault: Fault, expected: u16) {
        let upstream = FaultyUpstream::start(fault);
        let proxy = Darklight::start(&one_site(
            &format!("http://127.0.0.1:{}", upstream.port),
            "",
        ));
        for _ in 0..3 {
            let response = get(proxy.port, "/", &[]);
            assert_eq!(response.status, expected, "{}", response.text());
        }
        upstream.healthy.store(true, Ordering::SeqCst);
        let response = get(proxy.port, "/", &[]);
        assert_eq!(response.status, 200);
        assert_eq!(response.text(), "ok");
    }

    #[test]
    fn upstream_resetting_connections() {
        fails_cleanly_then_recovers(Fault::Reset, 502);
    }

    #[test]
    fn upstream_answering_garbage() {
        fails_cleanly_then_recovers(Fault::Garbage, 502);
    }

    #[test]
    fn upstream_hanging() {
        fails_cleanly_then_recovers(Fault::Hang, 504);
    }

    #[test]
    fn a_failing_log_sink_does_not_stop_serving() {
        let upstream = Upstream::start("app");
        let port = common::free_port();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("darklight.yaml");
        std::fs::write(
            &path,
            one_site(&upstream.url(), "").replace("{PORT}", &port.to_string()),
        )
        .unwrap();
        // Standard error is /dev/full: every log write fails with ENOSPC, as on a full disk.
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let mut child = common::KillOnDrop(
            std::process::Command::new(env!("CARGO_BIN_EXE_darklight"))
                .args(["run", "--config"])
                .arg(&path)
                .stderr(full)
                .spawn()
                .unwrap(),
        );
        common::wait_for_port(port);
        for attempt in 1..=20 {
            // Its logs go nowhere: when a request fails, say whether darklight is still running.
            match std::panic::catch_unwind(|| get(port, "/articles/x", &[]).status) {
                Ok(status) => assert_eq!(status, 200, "request {attempt}"),
                Err(panic) => {
                    let state = child.try_wait();
                    eprintln!("request {attempt} failed; darklight: {state:?} (None: running)");
                    std::panic::resume_unwind(panic);
                }
            }
        }
        assert!(child.try_wait().unwrap().is_none(), "darklight exited");
    }
}

mod hostile_input {
    use super::*;

    fn raw(port: u16, head: &[u8]) -> common::Response {
        send_raw(port, head)
    }

    #[test]
    fn oversized_and_malformed_requests_are_refused_or_sanitised() {
        let upstream = Upstream::start("app");
        let proxy = Darklight::start(&one_site(
            &upstream.url(),
            "limits: {max_uri_bytes: 4096, max_headers: 64, max_header_bytes: 16384}\n",
        ));
        let port = proxy.port;
        let big_value = "a".repeat(64 * 1024);
        let cases: Vec<(&str, Vec<u8>, u16)> = vec![
            (
                "64 KiB header value",
                format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {big_value}\r\nConnection: close\r\n\r\n").into_bytes(),
                431,
            ),
            (
                "a hundred headers",
                format!(
                    "GET / HTTP/1.1\r\nHost: x\r\n{}Connection: close\r\n\r\n",
                    (0..100).map(|i| format!("X-H{i}: v\r\n")).collect::<String>()
                )
                .into_bytes(),
                431,
            ),
            (
                "thousands of headers (Pingora's own limit)",
                format!(
                    "GET / HTTP/1.1\r\nHost: x\r\n{}Connection: close\r\n\r\n",
                    (0..3000).map(|i| format!("X-H{i}: v\r\n")).collect::<String>()
                )
                .into_bytes(),
                400,
            ),
            (
                "absurd query string",
                format!("GET /?q={} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "q".repeat(60_000)).into_bytes(),
                414,
            ),
            (
                "conflicting Content-Length",
                b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\nConnection: close\r\n\r\nhello!".to_vec(),
                400,
            ),
        ];
        for (case, request, status) in cases {
            let before = upstream.count();
            assert_eq!(raw(port, &request).status, status, "{case}");
            assert_eq!(
                upstream.count(),
                before,
                "{case}: nothing reached the upstream"
            );
        }
        // Still serving.
        assert_eq!(get(port, "/", &[]).status, 200);
    }

    #[test]
    fn hostile_values_are_classified_safely() {
        let upstream = Upstream::start("app");
        let proxy = Darklight::start(&one_site(&upstream.url(), ""));
        let port = proxy.port;
        let cases: [(&str, &[u8]); 5] = [
            ("non-UTF-8 referer and user agent", b"GET /articles/x HTTP/1.1\r\nHost: x\r\nReferer: \xff\xfe\x80abc\r\nUser-Agent: \xc3\x28\r\nConnection: close\r\n\r\n"),
            ("malformed referer URL", b"GET /articles/x HTTP/1.1\r\nHost: x\r\nReferer: http://[::1\r\nConnection: close\r\n\r\n"),
            ("referer with only a scheme", b"GET /articles/x HTTP/1.1\r\nHost: x\r\nReferer: https://\r\nConnection: close\r\n\r\n"),
            ("bare LF smuggling a darklight header", b"GET /articles/x HTTP/1.1\r\nHost: x\r\nX-A: a\nX-Darklight-Channel: paid_search\r\nConnection: close\r\n\r\n"),
            ("forged attribution and cookies", b"GET /articles/x HTTP/1.1\r\nHost: x\r\nX-Darklight-Source: forged\r\nCookie: dl_first=1.AAAA.BBBB; dl_last=%%%\r\nConnection: close\r\n\r\n"),
        ];
        for (case, request) in cases {
            let response = raw(port, request);
            assert_eq!(response.status, 200, "{case}");
            let seen = upstream.last();
            let channel = seen.header_values("x-darklight-channel");
            assert_eq!(channel.len(), 1, "{case}: {channel:?}");
            assert_ne!(channel[0], "paid_search", "{case}");
            assert_ne!(
                seen.header("x-darklight-source").as_deref(),
                Some("forged"),
                "{case}"
            );
            assert!(seen.header("x-darklight-first-channel").is_none(), "{case}");
        }
    }

    #[test]
    fn request_smuggling_with_both_framings_is_neutralised() {
        // Content-Length and Transfer-Encoding together: Pingora follows the chunked framing,
        // drops Content-Length, and closes the connection after the response, so the request
        // hidden behind the chunked body is never parsed.
        let upstream = Upstream::start("app");
        let proxy = Darklight::start(&one_site(&upstream.url(), ""));
        let request = b"POST /form HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
        let response = send_raw(proxy.port, request);
        assert_eq!(response.status, 200);
        thread::sleep(Duration::from_millis(200));
        let received = upstream.received.lock().unwrap().clone();
        assert_eq!(received.len(), 1, "{received:?}");
        assert_eq!(received[0].target, "/form");
        assert_eq!(received[0].header("content-length"), None);
        assert!(received.iter().all(|r| r.target != "/smuggled"));
    }
}

mod upgrade {
    use super::*;

    #[test]
    fn a_new_binary_takes_the_listeners_over_without_refusing_a_request() {
        let upstream = Upstream::start("app");
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("upgrade.sock");
        let config = one_site(&upstream.url(), "").replace(
            "shutdown_timeout: 1s}",
            &format!(
                "shutdown_timeout: 1s, upgrade_sock: '{}', pid_file: '{}'}}",
                sock.display(),
                dir.path().join("pid").display()
            ),
        );
        let mut old = Darklight::start(&config);
        let port = old.port;

        let stop = Arc::new(AtomicBool::new(false));
        let failures = Arc::new(AtomicUsize::new(0));
        let sent = Arc::new(AtomicUsize::new(0));
        let load = {
            let (stop, failures, sent) = (stop.clone(), failures.clone(), sent.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    sent.fetch_add(1, Ordering::Relaxed);
                    if get(port, "/during-upgrade", &[]).status != 200 {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        };

        // The new process waits for the sockets; SIGQUIT makes the old one hand them over.
        let path = old.dir.path().join("darklight.yaml");
        let new = common::KillOnDrop(
            std::process::Command::new(env!("CARGO_BIN_EXE_darklight"))
                .args(["run", "--upgrade", "--config"])
                .arg(&path)
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        );
        thread::sleep(Duration::from_millis(1000));
        old.signal("QUIT");
        let exited = old.wait_exit(Duration::from_secs(30));
        thread::sleep(Duration::from_millis(500));
        stop.store(true, Ordering::Relaxed);
        load.join().unwrap();
        let served_by_new = get(port, "/after-upgrade", &[]).status;
        drop(new);

        assert!(exited.is_some(), "the old process did not exit");
        assert_eq!(served_by_new, 200);
        assert_eq!(
            failures.load(Ordering::Relaxed),
            0,
            "of {} requests",
            sent.load(Ordering::Relaxed)
        );
    }
}
