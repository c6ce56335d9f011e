//! A bounded soak on loopback: concurrent keep-alive clients with a realistic header mix for
//! `SOAK_SECS` seconds (5 by default; `make soak` runs 300), then every request accounted for:
//! requests sent = responses received = spans exported + spans dropped or lost, as darklight
//! reports when it stops, with resident memory flat from the first third of the run to the end.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{Darklight, Upstream};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

const CLIENTS: usize = 8;

/// Requests the clients rotate through: paths and header sets of real traffic.
const MIX: [(&str, &str); 6] = [
    (
        "/articles/2026/11/story",
        "User-Agent: Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1\r\n",
    ),
    (
        "/articles/2026/11/story",
        "User-Agent: WhatsApp/2.24.9.78 A\r\n",
    ),
    (
        "/news/",
        "User-Agent: Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0 Safari/537.36\r\nReferer: https://www.google.com/\r\n",
    ),
    (
        "/articles/a?utm_source=newsletter&utm_medium=email",
        "User-Agent: Mozilla/5.0 Firefox/133.0\r\n",
    ),
    (
        "/articles/b?fbclid=IwAR2",
        "User-Agent: Mozilla/5.0 (iPhone) [FBAN/FBIOS;FBAV/440.0]\r\n",
    ),
    (
        "/",
        "User-Agent: Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)\r\n",
    ),
];

/// An OTLP/HTTP receiver that counts the spans it is sent.
fn span_sink(count: Arc<AtomicU64>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let count = Arc::clone(&count);
            thread::spawn(move || serve_sink(stream, &count));
        }
    });
    port
}

fn serve_sink(stream: TcpStream, count: &AtomicU64) {
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    while let Some(received) = common::read_request(&mut reader) {
        if let Ok(request) = ExportTraceServiceRequest::decode(received.body.as_slice()) {
            let spans: usize = request
                .resource_spans
                .iter()
                .flat_map(|r| &r.scope_spans)
                .map(|s| s.spans.len())
                .sum();
            count.fetch_add(spans as u64, Ordering::Relaxed);
        }
        let reply =
            "HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n";
        if writer.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

fn resident_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn log_number(logs: &str, line_marker: &str, field: &str) -> u64 {
    let line = logs
        .lines()
        .rev()
        .find(|l| l.contains(line_marker))
        .unwrap_or_else(|| panic!("no `{line_marker}` in logs:\n{logs}"));
    line.split_whitespace()
        .find_map(|pair| pair.strip_prefix(&format!("{field}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {field}= in {line}"))
}

#[test]
fn soak_accounts_for_every_request_with_flat_memory() {
    let seconds: u64 = std::env::var("SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let upstream = Upstream::start("app");
    let exported_to_sink = Arc::new(AtomicU64::new(0));
    let sink = span_sink(Arc::clone(&exported_to_sink));
    let config = format!(
        "listen: [127.0.0.1:{{PORT}}]\n\
         server: {{threads: 2, grace_period: 2s, shutdown_timeout: 2s}}\n\
         log: {{access_log: false}}\n\
         sites:\n\
         \x20 - name: app\n\
         \x20   upstreams: [{}]\n\
         attribution:\n\
         \x20 cookies: {{secret: soak-secret-soak-secret-soak-secret!!}}\n\
         telemetry:\n\
         \x20 enabled: true\n\
         \x20 otlp: {{protocol: http, endpoint: 'http://127.0.0.1:{sink}'}}\n\
         \x20 batch: {{scheduled_delay: 200ms}}\n",
        upstream.url()
    );
    let mut proxy = Darklight::start(&config);
    let pid = proxy.child.id();

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let received = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (stop, sent, received, failed) =
                (stop.clone(), sent.clone(), received.clone(), failed.clone());
            let port = proxy.port;
            thread::spawn(move || {
                let mut n = client;
                while !stop.load(Ordering::Relaxed) {
                    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
                    stream.set_read_timeout(Some(common::IO_TIMEOUT)).unwrap();
                    let mut writer = stream.try_clone().unwrap();
                    let mut reader = BufReader::new(stream);
                    // A connection carries up to 200 requests, then the client reconnects.
                    for _ in 0..200 {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let (path, headers) = MIX[n % MIX.len()];
                        n += 1;
                        let request =
                            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{headers}\r\n");
                        sent.fetch_add(1, Ordering::Relaxed);
                        if writer.write_all(request.as_bytes()).is_err() {
                            failed.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        let response = common::read_response(&mut reader);
                        received.fetch_add(1, Ordering::Relaxed);
                        if response.status != 200 {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();

    let started = Instant::now();
    let mut samples = Vec::new();
    while started.elapsed() < Duration::from_secs(seconds) {
        thread::sleep(Duration::from_millis(500));
        samples.push(resident_kib(pid));
    }
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().unwrap();
    }
    proxy.signal("TERM");
    let status = proxy
        .wait_exit(Duration::from_secs(30))
        .expect("darklight did not stop");
    assert!(status.success(), "{status}");

    let (sent, received, failed) = (
        sent.load(Ordering::Relaxed),
        received.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
    );
    let logs = proxy.logs();
    let exported = log_number(&logs, "telemetry stopped", "exported");
    let dropped = log_number(&logs, "telemetry stopped", "dropped");
    let lost = log_number(&logs, "telemetry stopped", "failed");
    let third = samples.len() / 3;
    let early = samples[..third.max(1)].iter().copied().max().unwrap_or(0);
    let late = samples[samples.len().saturating_sub(third.max(1))..]
        .iter()
        .copied()
        .max()
        .unwrap_or(0);
    println!(
        "soak {seconds}s: sent {sent}, received {received}, failed {failed}; spans exported {exported} \
         (sink counted {}), dropped {dropped}, lost {lost}; RSS early {early} KiB, late {late} KiB",
        exported_to_sink.load(Ordering::Relaxed)
    );
    assert!(
        received > 1000,
        "too little traffic to mean anything: {received}"
    );
    assert_eq!(failed, 0);
    assert_eq!(sent, received);
    assert_eq!(
        exported + dropped + lost,
        received,
        "every request is one span"
    );
    assert_eq!(exported_to_sink.load(Ordering::Relaxed), exported);
    assert!(
        late <= early + early / 10 + 4096,
        "memory grew from {early} KiB to {late} KiB"
    );
}
