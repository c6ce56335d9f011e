//! What an operator relies on: Prometheus metrics and the status page on the admin listener
//! (rendered by a real headless Chromium), and TLS termination with SNI, HTTP/2 through ALPN
//! and certificate reloads.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Darklight, TestCa, Upstream, free_port, get, wait_for_port};

const PHONE: &str = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36";

/// Polls `/metrics` until `done` accepts it, within the ready timeout (requests are counted
/// just after their response is sent).
fn metrics_until(admin: u16, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + common::READY_TIMEOUT;
    loop {
        let text = get(admin, "/metrics", &[]).text();
        if done(&text) {
            return text;
        }
        assert!(Instant::now() < deadline, "metrics never matched:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends one request of each of several channels.
fn send_mixed_traffic(port: u16) {
    let requests: [(&str, &[(&str, &str)]); 6] = [
        // Dark social: a deep link with no referrer from a phone browser.
        (
            "/articles/2026/11/the-recipe-everyone-forwarded",
            &[("User-Agent", PHONE)],
        ),
        (
            "/articles/2026/11/the-recipe-everyone-forwarded",
            &[("User-Agent", PHONE)],
        ),
        (
            "/articles/2026/09/a-field-guide-to-link-previews",
            &[("User-Agent", PHONE)],
        ),
        (
            "/",
            &[
                ("User-Agent", PHONE),
                ("Referer", "https://www.google.com/"),
            ],
        ),
        (
            "/news/",
            &[
                ("User-Agent", PHONE),
                ("Referer", "https://web.whatsapp.com/"),
            ],
        ),
        (
            "/articles/2026/11/x",
            &[("User-Agent", "WhatsApp/2.23.20.0 A")],
        ),
    ];
    for (path, headers) in requests {
        assert_eq!(get(port, path, headers).status, 200, "{path}");
    }
}

fn admin_config(upstream: &Upstream, admin: u16, dead: u16) -> String {
    format!(
        "listen: [127.0.0.1:{{PORT}}]\n\
         log: {{access_log: false}}\n\
         admin: {{listen: 127.0.0.1:{admin}}}\n\
         sites:\n\
         \x20 - name: news\n\
         \x20   upstreams: [{}]\n\
         \x20 - name: dead\n\
         \x20   hosts: [dead.example]\n\
         \x20   upstreams: [http://127.0.0.1:{dead}]\n",
        upstream.url()
    )
}

#[test]
fn metrics_follow_the_text_exposition_format_and_count_requests() {
    let upstream = Upstream::start("origin");
    let admin = free_port();
    let dead = free_port();
    let proxy = Darklight::start(&admin_config(&upstream, admin, dead));
    wait_for_port(admin);
    send_mixed_traffic(proxy.port);
    let failed = get(
        proxy.port,
        "/",
        &[("Host", "dead.example"), ("User-Agent", PHONE)],
    );
    assert_eq!(failed.status, 502);

    let response = get(admin, "/metrics", &[]);
    assert_eq!(
        response.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = metrics_until(admin, |t| {
        t.contains("darklight_upstream_errors_total{site=\"dead\",kind=\"connect_refused\"} 1")
            && t.contains("darklight_classification_duration_seconds_count 7")
    });
    for line in [
        "darklight_requests_total{site=\"news\",channel=\"dark_social\",source=\"none\",status=\"2xx\"} 3",
        "darklight_requests_total{site=\"news\",channel=\"organic_search\",source=\"google\",status=\"2xx\"} 1",
        "darklight_requests_total{site=\"news\",channel=\"preview_bot\",source=\"whatsapp\",status=\"2xx\"} 1",
        "darklight_requests_total{site=\"dead\",channel=\"direct\",source=\"none\",status=\"5xx\"} 1",
        "darklight_request_duration_seconds_count 7",
        "darklight_config_reloads_total{result=\"success\"} 0",
        "darklight_config_last_reload_successful 1",
        "darklight_spans_dropped_total 0",
    ] {
        assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
    }
    assert!(
        text.contains("darklight_requests_total{site=\"news\",channel=\"messaging\""),
        "{text}"
    );

    // Every sample belongs to a family announced by HELP and TYPE, names follow the
    // conventions, and values are numbers.
    let mut families: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            if kind == "counter" {
                assert!(name.ends_with("_total"), "{line}");
            }
            assert!(name.starts_with("darklight_"), "{line}");
            families.push((name.to_string(), kind.to_string()));
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap();
        assert!(value.parse::<f64>().is_ok(), "{line}");
        let name = series.split('{').next().unwrap();
        let (family, kind) = families.last().unwrap();
        let belongs = match kind.as_str() {
            "histogram" => [
                format!("{family}_bucket"),
                format!("{family}_sum"),
                format!("{family}_count"),
            ]
            .contains(&name.to_string()),
            _ => name == family,
        };
        assert!(belongs, "`{line}` is not part of `{family}`");
    }
    for help in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let name = help.split(' ').nth(2).unwrap();
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "no HELP for {name}"
        );
    }
}

/// A Chromium binary, when one is installed.
fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|name| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|dir| dir.join(name))
                    .find(|path| path.is_file())
            })
        })
}

/// Runs headless Chromium on `url` and returns the DOM after the page's scripts ran.
fn dump_dom(browser: &Path, url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(["--dump-dom", url])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut dom = String::new();
        stdout.read_to_string(&mut dom).unwrap();
        dom
    });
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within 90 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let dom = reader.join().unwrap();
    if dom.trim().is_empty() {
        let mut errors = String::new();
        let _ = child.stderr.take().unwrap().read_to_string(&mut errors);
        panic!("chromium printed no DOM:\n{errors}");
    }
    dom
}

#[test]
fn status_page_chart_renders_in_headless_chromium() {
    let Some(browser) = chromium() else {
        assert!(
            std::env::var_os("DARKLIGHT_REQUIRE_CHROMIUM").is_none(),
            "chromium is required (DARKLIGHT_REQUIRE_CHROMIUM is set) but not installed"
        );
        eprintln!(
            "SKIPPED status_page_chart_renders_in_headless_chromium: chromium is not installed \
             and could not be installed (`make browser` installs Debian's `chromium`)"
        );
        return;
    };
    let upstream = Upstream::start("origin");
    let admin = free_port();
    let proxy = Darklight::start(&admin_config(&upstream, admin, free_port()));
    wait_for_port(admin);
    send_mixed_traffic(proxy.port);
    metrics_until(admin, |t| {
        t.contains("darklight_request_duration_seconds_count 6\n")
    });

    let dom = dump_dom(&browser, &format!("http://127.0.0.1:{admin}/status"));
    // The share chart has one bar per channel seen, and the browser laid each one out.
    let channels = ["dark_social", "organic_search", "messaging", "preview_bot"];
    for channel in channels {
        assert!(
            dom.contains(&format!("class=\"share\" data-channel=\"{channel}\"")),
            "no {channel} bar in:\n{dom}"
        );
    }
    assert!(
        dom.contains(&format!(
            "data-chart=\"share\" data-rendered=\"{}\"",
            channels.len()
        )) || dom.contains(&format!("data-rendered=\"{}\"", channels.len())),
        "the share chart was not laid out:\n{dom}"
    );
    assert!(
        dom.contains("/articles/2026/11/the-recipe-everyone-forwarded"),
        "{dom}"
    );
    assert!(dom.contains("<td>news</td>"), "{dom}");
    let share = dom.split("id=\"channels\"").nth(1).unwrap();
    assert!(
        share.contains("50.0%"),
        "dark social is 3 of 6 requests:\n{dom}"
    );
}

// ---- TLS -------------------------------------------------------------------------------------

/// Connects with SNI `host`, completes the handshake (verifying the certificate for `host`)
/// and returns the connection, the server certificate's subject and the ALPN protocol.
fn handshake(
    config: &Arc<rustls::ClientConfig>,
    port: u16,
    host: &str,
) -> (
    rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    String,
    Option<Vec<u8>>,
) {
    let name = rustls::pki_types::ServerName::try_from(host.to_string()).unwrap();
    let connection = rustls::ClientConnection::new(Arc::clone(config), name).unwrap();
    let socket = TcpStream::connect(("127.0.0.1", port)).unwrap();
    socket.set_read_timeout(Some(common::IO_TIMEOUT)).unwrap();
    socket.set_write_timeout(Some(common::IO_TIMEOUT)).unwrap();
    let mut stream = rustls::StreamOwned::new(connection, socket);
    while stream.conn.is_handshaking() {
        stream
            .conn
            .complete_io(&mut stream.sock)
            .unwrap_or_else(|e| panic!("TLS handshake with SNI {host} failed: {e}"));
    }
    let leaf = stream.conn.peer_certificates().unwrap()[0].clone();
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf.as_ref()).unwrap();
    let subject = parsed.subject().to_string();
    let alpn = stream.conn.alpn_protocol().map(<[u8]>::to_vec);
    (stream, subject, alpn)
}

#[test]
fn tls_listener_picks_the_certificate_by_sni_and_offers_http2() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let (a_cert, a_key) = ca.issue(dir.path(), "a.example", "a");
    let (b_cert, b_key) = ca.issue(dir.path(), "b.example", "b");
    let upstream = Upstream::start("origin");
    let config = format!(
        "listen:\n\
         \x20 - address: 127.0.0.1:{{PORT}}\n\
         \x20   tls:\n\
         \x20     certificates:\n\
         \x20       - {{cert: {}, key: {}}}\n\
         \x20       - {{cert: {}, key: {}}}\n\
         sites:\n\
         \x20 - name: app\n\
         \x20   upstreams: [{}]\n",
        a_cert.display(),
        a_key.display(),
        b_cert.display(),
        b_key.display(),
        upstream.url()
    );
    let proxy = Darklight::start(&config);
    let both = ca.client(&[b"h2", b"http/1.1"]);

    let (_, subject, alpn) = handshake(&both, proxy.port, "a.example");
    assert_eq!(subject, "CN=a.example");
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
    let (mut h2, subject, alpn) = handshake(&both, proxy.port, "b.example");
    assert_eq!(subject, "CN=b.example");
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
    // The server speaks HTTP/2 on it: after the client preface its first frame is SETTINGS.
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .unwrap();
    h2.flush().unwrap();
    let mut frame = [0u8; 9];
    h2.read_exact(&mut frame).unwrap();
    assert_eq!(frame[3], 0x04, "first frame is SETTINGS: {frame:?}");

    // HTTP/1.1 clients still work, and the upstream learns the request came over TLS.
    let http1 = ca.client(&[b"http/1.1"]);
    let (mut stream, _, alpn) = handshake(&http1, proxy.port, "a.example");
    assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
    stream
        .write_all(
            format!("GET /tls HTTP/1.1\r\nHost: a.example\r\nUser-Agent: {PHONE}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
    let response = common::read_response(&mut std::io::BufReader::new(stream));
    assert_eq!(response.status, 200);
    assert_eq!(
        upstream.last().header("x-forwarded-proto").as_deref(),
        Some("https")
    );
}

#[test]
fn certificate_store_reload_swaps_certificates_for_new_handshakes() {
    use darklight::config::CertificateFiles;
    use darklight::proxy::tls::CertStore;

    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let (cert, key) = ca.issue(dir.path(), "www.example", "site");
    let store = Arc::new(CertStore::load("test", vec![CertificateFiles { cert, key }]).unwrap());
    let _ = rustls::crypto::ring::default_provider().install_default();
    let server = Arc::new(
        rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&store) as Arc<dyn rustls::server::ResolvesServerCert>),
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for socket in listener.incoming() {
            let Ok(mut socket) = socket else { continue };
            let mut connection = rustls::ServerConnection::new(Arc::clone(&server)).unwrap();
            while connection.is_handshaking() {
                if connection.complete_io(&mut socket).is_err() {
                    break;
                }
            }
        }
    });
    let client = ca.client(&[]);
    let serial = |host: &str| {
        let (stream, _, _) = handshake(&client, port, host);
        let leaf = stream.conn.peer_certificates().unwrap()[0].clone();
        let (_, parsed) = x509_parser::parse_x509_certificate(leaf.as_ref()).unwrap();
        parsed.raw_serial().to_vec()
    };
    let before = serial("www.example");

    // Renewal: new files for the same name, then reload.
    ca.issue(dir.path(), "www.example", "site");
    assert_eq!(store.reload().unwrap(), 1);
    let after = serial("www.example");
    assert_ne!(before, after, "new handshakes get the renewed certificate");

    // A broken renewal keeps the certificate in use.
    std::fs::write(dir.path().join("site.crt"), "garbage").unwrap();
    assert!(store.reload().is_err());
    assert_eq!(serial("www.example"), after);
}

#[test]
fn tls_configuration_forms() {
    let parse = |tls: &str| {
        darklight::config::parse(
            &format!(
                "listen:\n  - address: 127.0.0.1:8443\n    tls: {tls}\nsites:\n  - name: a\n    upstreams: [http://127.0.0.1:1]\n"
            ),
            Path::new("t.yaml"),
        )
    };
    let single = parse("{cert: a.crt, key: a.key}").unwrap();
    let tls = single.listen[0].tls.as_ref().unwrap();
    assert_eq!(tls.certificates.len(), 1);
    assert!(tls.http2);
    let several =
        parse("{cert: a.crt, key: a.key, http2: false, certificates: [{cert: b.crt, key: b.key}]}")
            .unwrap();
    let tls = several.listen[0].tls.as_ref().unwrap();
    assert_eq!(tls.certificates.len(), 2);
    assert_eq!(tls.certificates[1].cert, Path::new("b.crt"));
    assert!(!tls.http2);
    for (bad, message) in [
        ("{cert: a.crt}", "needs both `cert` and `key`"),
        ("{http2: true}", "needs `cert` and `key`, or `certificates"),
        ("{certificates: [{cert: a.crt}]}", "missing field `key`"),
    ] {
        let error = parse(bad).unwrap_err().to_string();
        assert!(
            error.starts_with("t.yaml:2:") || error.starts_with("t.yaml:3:"),
            "{error}"
        );
        assert!(error.contains(message), "{error}");
    }
}

#[test]
fn grafana_dashboard_uses_only_metrics_darklight_exports() {
    let dashboard: serde_json::Value = serde_json::from_str(include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/grafana-dashboard.json"
    )))
    .unwrap();
    let exporter = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/src/admin/metrics.rs"));
    let mut expressions = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            expressions.push(target["expr"].as_str().unwrap().to_string());
        }
    }
    assert!(expressions.len() > 10);
    for expr in &expressions {
        let mut rest = expr.as_str();
        while let Some(start) = rest.find("darklight_") {
            let name: String = rest[start..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .filter(|base| base.ends_with("_seconds"))
                .unwrap_or(&name);
            assert!(
                exporter.contains(&format!("\"{family}\""))
                    || exporter.contains(&format!("\"{family}{{")),
                "the dashboard queries `{name}`, which darklight does not export ({expr})"
            );
            rest = &rest[start + name.len()..];
        }
    }
}

#[test]
fn https_upstreams_get_sni_and_are_verified() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let (other_cert, other_key) = ca.issue(dir.path(), "other.example", "other");
    let (origin_cert, origin_key) = ca.issue(dir.path(), "origin.example", "origin");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.cert.pem()).unwrap();
    let echo = Upstream::start("origin");
    // The "origin": a darklight TLS listener that serves `other.example` unless the client
    // asks for `origin.example` by SNI.
    let origin = Darklight::start(&format!(
        "listen:\n\
         \x20 - address: 127.0.0.1:{{PORT}}\n\
         \x20   tls:\n\
         \x20     certificates:\n\
         \x20       - {{cert: {}, key: {}}}\n\
         \x20       - {{cert: {}, key: {}}}\n\
         sites:\n\
         \x20 - name: origin\n\
         \x20   upstreams: [{}]\n",
        other_cert.display(),
        other_key.display(),
        origin_cert.display(),
        origin_key.display(),
        echo.url()
    ));
    let front = |sni: &str| {
        Darklight::start(&format!(
            "listen: [127.0.0.1:{{PORT}}]\n\
             server: {{upstream_ca_file: {}}}\n\
             sites:\n\
             \x20 - name: app\n\
             \x20   upstreams: ['https://127.0.0.1:{}']\n\
             \x20   upstream_tls: {{sni: {sni}}}\n",
            ca_file.display(),
            origin.port
        ))
    };
    // Right SNI: the origin serves the matching certificate and verification passes.
    let good = front("origin.example");
    let response = get(good.port, "/through-tls", &[("User-Agent", PHONE)]);
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(echo.last().target, "/through-tls");
    // Wrong SNI: the certificate does not match the name darklight verifies: 502.
    let wrong = front("missing.example");
    assert_eq!(get(wrong.port, "/", &[("User-Agent", PHONE)]).status, 502);
}

#[test]
fn sighup_picks_up_renewed_certificates_and_counts_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let (cert, key) = ca.issue(dir.path(), "www.example", "site");
    let upstream = Upstream::start("origin");
    let admin = common::free_port();
    let proxy = Darklight::start(&format!(
        "listen:\n\
         \x20 - address: 127.0.0.1:{{PORT}}\n\
         \x20   tls: {{cert: {}, key: {}}}\n\
         admin: {{listen: 127.0.0.1:{admin}}}\n\
         sites:\n\
         \x20 - name: app\n\
         \x20   upstreams: [{}]\n",
        cert.display(),
        key.display(),
        upstream.url()
    ));
    let client = ca.client(&[]);
    let serial = || {
        let (stream, _, _) = handshake(&client, proxy.port, "www.example");
        let leaf = stream.conn.peer_certificates().unwrap()[0].clone();
        let (_, parsed) = x509_parser::parse_x509_certificate(leaf.as_ref()).unwrap();
        parsed.raw_serial().to_vec()
    };
    let before = serial();
    ca.issue(dir.path(), "www.example", "site");
    proxy.signal("HUP");
    proxy.wait_for_log("configuration reloaded");
    assert_ne!(
        serial(),
        before,
        "the renewed certificate is served after SIGHUP"
    );
    let metrics = metrics_until(admin, |m| {
        m.contains("darklight_config_reloads_total{result=\"success\"} 1")
    });
    assert!(
        metrics.contains("darklight_config_reloads_total{result=\"failure\"} 0"),
        "{metrics}"
    );
}
