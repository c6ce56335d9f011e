//! Spans through the real proxy: exported over OTLP/gRPC and OTLP/HTTP to receivers started
//! here on 127.0.0.1, trace context continued from the client and passed to the upstream, and
//! requests served at full speed when the collector is down.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::io::{BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use prost::Message;
use rustls::pki_types::pem::PemObject;

use common::{Darklight, Upstream, get};

/// How long spans may take to reach the receiver.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(20);

const PHONE: &str = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN_ID: &str = "00f067aa0ba902b7";

/// One received span, flattened.
#[derive(Debug, Clone)]
struct Received {
    name: String,
    kind: i32,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    attributes: HashMap<String, String>,
    status_code: i32,
    events: Vec<String>,
    resource: HashMap<String, String>,
}

impl Received {
    fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

fn value_text(value: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

fn flatten(request: ExportTraceServiceRequest) -> Vec<Received> {
    let mut out = Vec::new();
    for resource_spans in request.resource_spans {
        let resource: HashMap<String, String> = resource_spans
            .resource
            .map(|r| {
                r.attributes
                    .into_iter()
                    .map(|kv| (kv.key, value_text(kv.value.as_ref())))
                    .collect()
            })
            .unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                out.push(Received {
                    name: span.name,
                    kind: span.kind,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    attributes: span
                        .attributes
                        .into_iter()
                        .map(|kv| (kv.key, value_text(kv.value.as_ref())))
                        .collect(),
                    status_code: span.status.map_or(0, |s| s.code),
                    events: span.events.into_iter().map(|e| e.name).collect(),
                    resource: resource.clone(),
                });
            }
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

type Store = Arc<Mutex<Vec<Received>>>;

/// Waits until `store` holds at least `count` spans.
fn wait_for_spans(store: &Store, count: usize) -> Vec<Received> {
    let deadline = Instant::now() + EXPORT_TIMEOUT;
    loop {
        let spans = store.lock().unwrap().clone();
        if spans.len() >= count {
            return spans;
        }
        assert!(
            Instant::now() < deadline,
            "expected {count} spans, got {}: {spans:#?}",
            spans.len()
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// An OTLP/gRPC receiver on 127.0.0.1, running on its own tokio runtime.
struct GrpcCollector {
    port: u16,
    spans: Store,
    /// The `authorization` metadata of each export.
    authorizations: Arc<Mutex<Vec<Option<String>>>>,
    /// The `grpc-encoding` (message compression) of each export.
    encodings: Arc<Mutex<Vec<Option<String>>>>,
    /// When each export request arrived, refused or not.
    arrivals: Arc<Mutex<Vec<Instant>>>,
    _runtime: tokio::runtime::Runtime,
}

struct Service {
    spans: Store,
    authorizations: Arc<Mutex<Vec<Option<String>>>>,
    encodings: Arc<Mutex<Vec<Option<String>>>>,
    arrivals: Arc<Mutex<Vec<Instant>>>,
    /// The answer to the first export, instead of accepting it.
    refusal: Mutex<Option<tonic::Status>>,
}

#[tonic::async_trait]
impl TraceService for Service {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let authorization = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        self.authorizations.lock().unwrap().push(authorization);
        self.arrivals.lock().unwrap().push(Instant::now());
        if let Some(refusal) = self.refusal.lock().unwrap().take() {
            return Err(refusal);
        }
        let encoding = request
            .metadata()
            .get("grpc-encoding")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        self.encodings.lock().unwrap().push(encoding);
        self.spans
            .lock()
            .unwrap()
            .extend(flatten(request.into_inner()));
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl GrpcCollector {
    fn start() -> GrpcCollector {
        GrpcCollector::start_with(None)
    }

    /// A receiver speaking gRPC over TLS with `tls` (which may ask for a client certificate).
    fn start_with(tls: Option<tonic::transport::ServerTlsConfig>) -> GrpcCollector {
        GrpcCollector::start_inner(tls, None)
    }

    /// A receiver that answers its first export with `refusal`.
    fn start_refusing_first(refusal: tonic::Status) -> GrpcCollector {
        GrpcCollector::start_inner(None, Some(refusal))
    }

    fn start_inner(
        tls: Option<tonic::transport::ServerTlsConfig>,
        refusal: Option<tonic::Status>,
    ) -> GrpcCollector {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let spans = Store::default();
        let authorizations = Arc::default();
        let encodings = Arc::default();
        let arrivals = Arc::default();
        let service = Service {
            spans: Arc::clone(&spans),
            authorizations: Arc::clone(&authorizations),
            encodings: Arc::clone(&encodings),
            arrivals: Arc::clone(&arrivals),
            refusal: Mutex::new(refusal),
        };
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let mut server = tonic::transport::Server::builder();
            if let Some(tls) = tls {
                server = server.tls_config(tls).unwrap();
            }
            server
                .add_service(
                    TraceServiceServer::new(service)
                        .accept_compressed(tonic::codec::CompressionEncoding::Gzip),
                )
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
                .await
                .unwrap();
        });
        GrpcCollector {
            port,
            spans,
            authorizations,
            encodings,
            arrivals,
            _runtime: runtime,
        }
    }
}

/// An OTLP/HTTP receiver: `POST /v1/traces` with a protobuf body.
struct HttpCollector {
    port: u16,
    spans: Store,
    /// Every export request (its body included), refused or not, with when it arrived.
    requests: Arc<Mutex<Vec<common::Received>>>,
    arrivals: Arc<Mutex<Vec<Instant>>>,
}

/// How an [`HttpCollector`] answers.
#[derive(Debug, Clone, Copy, Default)]
struct HttpBehaviour {
    /// Exports refused (and not stored) before the first accepted.
    refuse_first: usize,
    /// The response head of a refusal; `503 Service Unavailable` when `None`.
    refusal: Option<&'static str>,
    /// Accepted exports report rejected spans ("partial success").
    partial_success: bool,
}

impl HttpCollector {
    fn start() -> HttpCollector {
        HttpCollector::start_on(0, HttpBehaviour::default())
    }

    /// A receiver on a given port (0 picks one).
    fn start_on(port: u16, behaviour: HttpBehaviour) -> HttpCollector {
        HttpCollector::start_with(port, behaviour, None)
    }

    /// A receiver that speaks TLS with `tls`.
    fn start_tls(tls: Arc<rustls::ServerConfig>) -> HttpCollector {
        HttpCollector::start_with(0, HttpBehaviour::default(), Some(tls))
    }

    fn start_with(
        port: u16,
        behaviour: HttpBehaviour,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> HttpCollector {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let spans = Store::default();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let (store, seen, times) = (
            Arc::clone(&spans),
            Arc::clone(&requests),
            Arc::clone(&arrivals),
        );
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (store, seen, times) =
                    (Arc::clone(&store), Arc::clone(&seen), Arc::clone(&times));
                let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
                let tls = tls.clone();
                thread::spawn(move || match tls {
                    Some(config) => {
                        let Ok(connection) = rustls::ServerConnection::new(config) else {
                            return;
                        };
                        let stream = rustls::StreamOwned::new(connection, stream);
                        serve_otlp_http(stream, &store, &seen, &times, behaviour);
                    }
                    None => serve_otlp_http(stream, &store, &seen, &times, behaviour),
                });
            }
        });
        HttpCollector {
            port,
            spans,
            requests,
            arrivals,
        }
    }

    fn paths(&self) -> Vec<String> {
        let requests = self.requests.lock().unwrap();
        requests.iter().map(|r| r.target.clone()).collect()
    }
}

fn serve_otlp_http(
    stream: impl Read + Write,
    store: &Store,
    requests: &Mutex<Vec<common::Received>>,
    arrivals: &Mutex<Vec<Instant>>,
    behaviour: HttpBehaviour,
) {
    let mut reader = BufReader::new(stream);
    while let Some(received) = common::read_request(&mut reader) {
        let writer = reader.get_mut();
        assert_eq!(
            received.header("content-type").as_deref(),
            Some("application/x-protobuf")
        );
        let body = match received.header("content-encoding").as_deref() {
            Some("gzip") => {
                let mut decoded = Vec::new();
                flate2::read::GzDecoder::new(received.body.as_slice())
                    .read_to_end(&mut decoded)
                    .unwrap();
                decoded
            }
            None => received.body.clone(),
            Some(other) => panic!("unexpected content-encoding {other}"),
        };
        let request = ExportTraceServiceRequest::decode(body.as_slice()).unwrap();
        let seen = {
            let mut requests = requests.lock().unwrap();
            requests.push(received);
            arrivals.lock().unwrap().push(Instant::now());
            requests.len()
        };
        if seen <= behaviour.refuse_first {
            let head = behaviour
                .refusal
                .unwrap_or("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n");
            if writer.write_all(head.as_bytes()).is_err() {
                return;
            }
            continue;
        }
        store.lock().unwrap().extend(flatten(request));
        let mut response = ExportTraceServiceResponse::default();
        if behaviour.partial_success {
            response.partial_success = Some(ExportTracePartialSuccess {
                rejected_spans: 1,
                error_message: "span too large".to_string(),
            });
        }
        let response = response.encode_to_vec();
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\n\r\n",
            response.len()
        );
        if writer.write_all(head.as_bytes()).is_err() || writer.write_all(&response).is_err() {
            return;
        }
    }
}

/// A configuration with one default site (with routes) in front of `upstream`, a second site
/// whose upstream refuses connections, and the given `telemetry:` section.
fn config(upstream: &Upstream, telemetry: &str) -> String {
    let closed = common::free_port();
    format!(
        "listen: [127.0.0.1:{{PORT}}]\n\
         server: {{threads: 1, grace_period: 1s, shutdown_timeout: 1s}}\n\
         log: {{access_log: false}}\n\
         sites:\n\
         \x20 - name: news\n\
         \x20   hosts: [news.example.com]\n\
         \x20   default: true\n\
         \x20   upstreams: [{}]\n\
         \x20   routes:\n\
         \x20     - {{path: '/articles/**', name: '/articles/{{slug}}'}}\n\
         \x20 - name: down\n\
         \x20   hosts: [down.example.com]\n\
         \x20   upstreams: [http://127.0.0.1:{closed}]\n\
         telemetry:\n{telemetry}",
        upstream.url()
    )
}

fn span_for<'a>(spans: &'a [Received], path: &str) -> &'a Received {
    spans
        .iter()
        .find(|s| s.attribute("url.path") == Some(path))
        .unwrap_or_else(|| panic!("no span for {path}: {spans:#?}"))
}

#[test]
fn grpc_export_with_classification_and_trace_context() {
    let collector = GrpcCollector::start();
    let upstream = Upstream::start("app");
    let proxy = Darklight::start(&config(
        &upstream,
        &format!(
            "  enabled: true\n\
             \x20 exporter: otlp\n\
             \x20 otlp: {{protocol: grpc, endpoint: 'http://127.0.0.1:{}', timeout: 5s}}\n\
             \x20 service_name: darklight-test\n\
             \x20 environment: test\n\
             \x20 sampler: parentbased_always_on\n\
             \x20 batch: {{scheduled_delay: 100ms}}\n",
            collector.port
        ),
    ));

    let traceparent = format!("00-{TRACE_ID}-{CLIENT_SPAN_ID}-01");
    let dark = get(
        proxy.port,
        "/articles/2026/11/deep-story",
        &[
            ("User-Agent", PHONE),
            ("traceparent", &traceparent),
            ("tracestate", "vendor=abc"),
        ],
    );
    assert_eq!(dark.status, 200);
    let forwarded = upstream.last();
    let email = get(
        proxy.port,
        "/articles/a?utm_source=newsletter&utm_medium=email&utm_campaign=spring",
        &[("User-Agent", PHONE), ("tracestate", "stray=1")],
    );
    assert_eq!(email.status, 200);
    // A tracestate without a traceparent belongs to no trace: the new trace does not carry it.
    let forwarded_email = upstream.last();
    assert!(forwarded_email.header("traceparent").is_some());
    assert!(forwarded_email.header_values("tracestate").is_empty());
    let search = get(
        proxy.port,
        "/about",
        &[
            ("User-Agent", PHONE),
            ("Referer", "https://www.google.com/"),
        ],
    );
    assert_eq!(search.status, 200);
    let preview = get(
        proxy.port,
        "/articles/c",
        &[(
            "User-Agent",
            "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
        )],
    );
    assert_eq!(preview.status, 200);
    let failed = get(
        proxy.port,
        "/broken",
        &[("Host", "down.example.com"), ("User-Agent", PHONE)],
    );
    assert_eq!(failed.status, 502);

    let spans = wait_for_spans(&collector.spans, 5);
    assert_eq!(spans.len(), 5, "{spans:#?}");
    for span in &spans {
        assert_eq!(span.kind, SpanKind::Server as i32, "{}", span.name);
        assert_eq!(
            span.resource.get("service.name").map(String::as_str),
            Some("darklight-test")
        );
        assert_eq!(
            span.resource
                .get("deployment.environment.name")
                .map(String::as_str),
            Some("test")
        );
        assert_eq!(span.attribute("http.request.method"), Some("GET"));
        assert_eq!(span.attribute("url.scheme"), Some("http"));
        assert!(span.attribute("user_agent.original").is_some());
        assert_eq!(span.attribute("network.protocol.version"), Some("1.1"));
        assert!(span.attribute("client.address").is_none(), "off by default");
        assert!(span.attribute("url.query").is_none(), "off by default");
    }

    // Dark social, continuing the client's trace.
    let dark_span = span_for(&spans, "/articles/2026/11/deep-story");
    assert_eq!(dark_span.name, "GET /articles/{slug}");
    assert_eq!(dark_span.attribute("http.route"), Some("/articles/{slug}"));
    assert_eq!(
        dark_span.attribute("darklight.channel"),
        Some("dark_social")
    );
    assert_eq!(dark_span.attribute("darklight.site"), Some("news"));
    assert_eq!(
        dark_span.attribute("darklight.upstream"),
        Some(format!("127.0.0.1:{}", upstream.port).as_str())
    );
    assert_eq!(
        dark_span.attribute("http.response.status_code"),
        Some("200")
    );
    assert_eq!(dark_span.attribute("server.address"), Some("localhost"));
    assert_eq!(dark_span.trace_id, TRACE_ID);
    assert_eq!(dark_span.parent_span_id, CLIENT_SPAN_ID);
    assert_eq!(dark_span.status_code, StatusCode::Unset as i32);

    // The upstream continues darklight's span, not the client's.
    let upstream_parent = forwarded.header("traceparent").unwrap();
    assert_eq!(
        upstream_parent,
        format!("00-{TRACE_ID}-{}-01", dark_span.span_id)
    );
    assert_eq!(forwarded.header_values("traceparent").len(), 1);
    assert_eq!(
        forwarded.header("tracestate").as_deref(),
        Some("vendor=abc")
    );

    // A new trace for a request without traceparent; campaign attributes.
    let email_span = span_for(&spans, "/articles/a");
    assert_eq!(email_span.attribute("darklight.channel"), Some("email"));
    assert_eq!(
        email_span.attribute("darklight.campaign.name"),
        Some("spring")
    );
    assert_eq!(email_span.attribute("darklight.source"), Some("newsletter"));
    assert_ne!(email_span.trace_id, TRACE_ID);
    assert_eq!(email_span.parent_span_id, "");

    let search_span = span_for(&spans, "/about");
    assert_eq!(search_span.name, "GET", "no route matches");
    assert_eq!(
        search_span.attribute("darklight.channel"),
        Some("organic_search")
    );
    assert_eq!(search_span.attribute("darklight.source"), Some("google"));

    let preview_span = span_for(&spans, "/articles/c");
    assert_eq!(
        preview_span.attribute("darklight.channel"),
        Some("preview_bot")
    );
    assert_eq!(
        preview_span.attribute("darklight.preview_bot"),
        Some("slack")
    );
    assert_eq!(preview_span.attribute("darklight.is_bot"), Some("true"));

    // A proxy failure is an error span.
    let failed_span = span_for(&spans, "/broken");
    assert_eq!(failed_span.attribute("darklight.site"), Some("down"));
    assert_eq!(
        failed_span.attribute("http.response.status_code"),
        Some("502")
    );
    assert_eq!(failed_span.status_code, StatusCode::Error as i32);
    assert!(failed_span.attribute("error.type").is_some());
    assert_eq!(failed_span.events, vec!["exception".to_string()]);
}

#[test]
fn trace_context_modes_in_the_proxy() {
    let upstream = Upstream::start("app");
    let traceparent = format!("00-{TRACE_ID}-{CLIENT_SPAN_ID}-01");
    // (mode, upstream keeps the client's traceparent, upstream continues the client's trace)
    for (mode, unchanged, same_trace) in [
        ("inject", false, false),
        ("extract", true, true),
        ("ignore", true, true),
    ] {
        let proxy = Darklight::start(&config(
            &upstream,
            &format!("  enabled: true\n  exporter: none\n  trace_context: {mode}\n"),
        ));
        let response = get(
            proxy.port,
            "/articles/x",
            &[("User-Agent", PHONE), ("traceparent", &traceparent)],
        );
        assert_eq!(response.status, 200);
        let seen = upstream.last().header("traceparent").unwrap();
        assert_eq!(seen == traceparent, unchanged, "{mode}: {seen}");
        assert_eq!(seen.contains(TRACE_ID), same_trace, "{mode}: {seen}");
    }
}

#[test]
fn http_protobuf_export_flushes_on_shutdown() {
    let collector = HttpCollector::start();
    let upstream = Upstream::start("app");
    let mut proxy = Darklight::start(&config(
        &upstream,
        &format!(
            "  enabled: true\n\
             \x20 otlp: {{protocol: http, endpoint: 'http://127.0.0.1:{}'}}\n\
             \x20 attributes: {{url_query: true, client_address: truncated}}\n\
             \x20 batch: {{scheduled_delay: 10m}}\n",
            collector.port
        ),
    ));
    for path in ["/articles/one", "/articles/two?utm_source=x", "/"] {
        assert_eq!(get(proxy.port, path, &[("User-Agent", PHONE)]).status, 200);
    }
    // Nothing is exported before the (long) batch delay...
    thread::sleep(Duration::from_millis(300));
    assert!(collector.spans.lock().unwrap().is_empty());
    // ...but everything is flushed on SIGTERM.
    proxy.signal("TERM");
    let status = proxy.wait_exit(Duration::from_secs(20));
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        proxy.logs()
    );
    let spans = wait_for_spans(&collector.spans, 3);
    assert_eq!(spans.len(), 3);
    assert!(collector.paths().iter().all(|p| p == "/v1/traces"));
    let two = span_for(&spans, "/articles/two");
    assert_eq!(two.attribute("url.query"), Some("utm_source=x"));
    assert_eq!(two.attribute("client.address"), Some("127.0.0.0"));
    assert_eq!(
        two.resource.get("service.name").map(String::as_str),
        Some("darklight")
    );
}

/// Sends `count` requests one after the other; returns how long they took.
fn timed_requests(port: u16, count: usize) -> Duration {
    let started = Instant::now();
    for i in 0..count {
        let response = get(
            port,
            &format!("/articles/2026/11/story-{i}"),
            &[("User-Agent", PHONE)],
        );
        assert_eq!(response.status, 200, "request {i}");
    }
    started.elapsed()
}

#[test]
fn requests_stay_fast_when_the_collector_is_down() {
    // A collector that accepts connections and never answers.
    let black_hole = TcpListener::bind("127.0.0.1:0").unwrap();
    let hole_port = black_hole.local_addr().unwrap().port();
    thread::spawn(move || {
        let mut held = Vec::new();
        for stream in black_hole.incoming().flatten() {
            held.push(stream);
        }
    });
    const REQUESTS: usize = 200;
    let upstream = Upstream::start("app");

    let baseline = {
        let proxy = Darklight::start(&config(&upstream, "  enabled: false\n"));
        timed_requests(proxy.port, REQUESTS)
    };
    let proxy = Darklight::start(&config(
        &upstream,
        &format!(
            "  enabled: true\n\
             \x20 otlp: {{protocol: grpc, endpoint: 'http://127.0.0.1:{hole_port}', timeout: 1s}}\n\
             \x20 batch: {{max_queue_size: 32, max_export_batch_size: 8, scheduled_delay: 50ms}}\n"
        ),
    ));
    let traced = timed_requests(proxy.port, REQUESTS);
    assert!(
        traced < baseline * 3 + Duration::from_secs(1),
        "with a dead collector {REQUESTS} requests took {traced:?}, without telemetry {baseline:?}"
    );
    // The loss is visible in the logs: the queue overflowed, or exports timed out.
    let deadline = Instant::now() + EXPORT_TIMEOUT;
    loop {
        let logs = proxy.logs();
        if logs.contains("span export queue is full") && logs.contains("span export failed") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no export warning in logs:\n{logs}"
        );
        thread::sleep(Duration::from_millis(100));
    }
    // And the proxy still serves.
    assert_eq!(get(proxy.port, "/", &[("User-Agent", PHONE)]).status, 200);
}

#[test]
fn export_recovers_when_the_collector_comes_back() {
    let port = common::free_port();
    let upstream = Upstream::start("app");
    let proxy = Darklight::start(&config(
        &upstream,
        &format!(
            "  enabled: true\n\
             \x20 otlp: {{protocol: http, endpoint: 'http://127.0.0.1:{port}', timeout: 1s}}\n\
             \x20 batch: {{scheduled_delay: 100ms}}\n"
        ),
    ));
    // Nothing listens yet: requests are served and the exports fail.
    for i in 0..5 {
        let response = get(
            proxy.port,
            &format!("/articles/before-{i}"),
            &[("User-Agent", PHONE)],
        );
        assert_eq!(response.status, 200);
    }
    proxy.wait_for_log("span export failed");

    let collector = HttpCollector::start_on(port, HttpBehaviour::default());
    let deadline = Instant::now() + EXPORT_TIMEOUT;
    let mut round = 0;
    loop {
        round += 1;
        let path = format!("/articles/after-{round}");
        assert_eq!(get(proxy.port, &path, &[("User-Agent", PHONE)]).status, 200);
        thread::sleep(Duration::from_millis(300));
        let spans = collector.spans.lock().unwrap().clone();
        if spans.iter().any(|s| {
            s.attribute("url.path")
                .is_some_and(|p| p.starts_with("/articles/after-"))
        }) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no span exported after the collector came back"
        );
    }
}

/// `OTEL_EXPORTER_OTLP_COMPRESSION=gzip` compresses every export: the HTTP body (with
/// `Content-Encoding: gzip`) and the gRPC messages (`grpc-encoding: gzip`).
#[test]
fn exports_are_gzipped_when_asked() {
    let upstream = Upstream::start("app");
    let gzip = ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip");

    let collector = HttpCollector::start();
    let proxy = exporting_quickly(&upstream, "http", collector.port, gzip);
    assert_eq!(
        get(proxy.port, "/articles/one", &[("User-Agent", PHONE)]).status,
        200
    );
    let spans = wait_for_spans(&collector.spans, 1);
    assert_eq!(
        span_for(&spans, "/articles/one").attribute("user_agent.original"),
        Some(PHONE)
    );
    for request in collector.requests.lock().unwrap().iter() {
        assert_eq!(request.header("content-encoding").as_deref(), Some("gzip"));
        assert!(request.body.starts_with(&[0x1f, 0x8b]), "not a gzip stream");
    }
    drop(proxy);

    let collector = GrpcCollector::start();
    let proxy = exporting_quickly(&upstream, "grpc", collector.port, gzip);
    assert_eq!(get(proxy.port, "/articles/two", &[]).status, 200);
    let spans = wait_for_spans(&collector.spans, 1);
    span_for(&spans, "/articles/two");
    let encodings = collector.encodings.lock().unwrap().clone();
    assert!(
        !encodings.is_empty() && encodings.iter().all(|e| e.as_deref() == Some("gzip")),
        "{encodings:?}"
    );
}

/// A TCP relay on 127.0.0.1 to `target`. Its first connection is cut, without a response,
/// once the client has sent more than `cut_after` bytes: a collector that goes away in the
/// middle of an export. Later connections are relayed in full.
fn cutting_relay(target: u16, cut_after: usize) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        for (index, client) in listener.incoming().enumerate() {
            let Ok(client) = client else { continue };
            let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                continue;
            };
            let (mut from_server, mut to_client) =
                (server.try_clone().unwrap(), client.try_clone().unwrap());
            thread::spawn(move || {
                let _ = std::io::copy(&mut from_server, &mut to_client);
                let _ = to_client.shutdown(Shutdown::Both);
            });
            let limit = (index == 0).then_some(cut_after);
            thread::spawn(move || relay_until(client, server, limit));
        }
    });
    port
}

/// Copies `from` to `to` until either closes or more than `limit` bytes would have passed,
/// then closes both.
fn relay_until(mut from: TcpStream, mut to: TcpStream, limit: Option<usize>) {
    let mut buffer = [0u8; 4096];
    let mut sent = 0;
    loop {
        let read = match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        if limit.is_some_and(|limit| sent + read > limit) || to.write_all(&buffer[..read]).is_err()
        {
            break;
        }
        sent += read;
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

/// A gRPC connection that breaks in the middle of an export (tonic reports it as `Unknown`,
/// "transport error") is a passing failure: the batch is sent again on a new connection, not
/// dropped.
#[test]
fn grpc_export_is_sent_again_when_the_connection_breaks_mid_export() {
    let collector = GrpcCollector::start();
    // The HTTP/2 preface and settings pass; the export request does not.
    let relay = cutting_relay(collector.port, 200);
    let upstream = Upstream::start("app");
    let proxy = exporting_quickly(&upstream, "grpc", relay, ("OTEL_SERVICE_NAME", "edge"));
    assert_eq!(get(proxy.port, "/articles/one", &[]).status, 200);
    let spans = wait_for_spans(&collector.spans, 1);
    span_for(&spans, "/articles/one");
    assert!(
        !proxy.logs().contains("span export failed"),
        "{}",
        proxy.logs()
    );
}

/// darklight in front of `upstream`, exporting with `protocol` to a collector on `port` every
/// 100 ms, with one extra environment variable.
fn exporting_quickly(
    upstream: &Upstream,
    protocol: &str,
    port: u16,
    env: (&str, &str),
) -> Darklight {
    Darklight::start_with_env(
        &config(
            upstream,
            &format!(
                "  enabled: true\n\
                 \x20 otlp: {{protocol: {protocol}, endpoint: 'http://127.0.0.1:{port}', timeout: 5s}}\n\
                 \x20 batch: {{scheduled_delay: 100ms}}\n"
            ),
        ),
        &[env],
    )
}

/// darklight exporting over HTTP (with one `OTEL_*` variable set) to a collector that behaves
/// as `behaviour` says, and the upstream it serves.
fn exporting_over_http(
    behaviour: HttpBehaviour,
    env: (&str, &str),
) -> (HttpCollector, Upstream, Darklight) {
    let collector = HttpCollector::start_on(0, behaviour);
    let upstream = Upstream::start("app");
    let proxy = exporting_quickly(&upstream, "http", collector.port, env);
    (collector, upstream, proxy)
}

/// darklight exporting over HTTP to a collector that refuses the first export with the
/// response head `refusal`, and the upstream it serves.
fn exporting_to_a_refusing_collector(
    refusal: &'static str,
) -> (HttpCollector, Upstream, Darklight) {
    exporting_over_http(
        HttpBehaviour {
            refuse_first: 1,
            refusal: Some(refusal),
            ..HttpBehaviour::default()
        },
        ("OTEL_SERVICE_NAME", "edge"),
    )
}

/// A `429` with `Retry-After: 1` holds the batch a second, not the backoff's 100 ms, then sends
/// it again.
#[test]
fn http_export_waits_as_long_as_the_collector_asks() {
    let (collector, _upstream, proxy) = exporting_to_a_refusing_collector(
        "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Length: 0\r\n\r\n",
    );
    assert_sent_again_after_a_second(&proxy, &collector.spans, &collector.arrivals);
}

/// Sends a request through `proxy`, whose collector (with `spans` and the `arrivals` of its
/// export requests) refuses the first export asking for a second's wait: the span arrives,
/// sent again no sooner than asked, and no export failed.
fn assert_sent_again_after_a_second(
    proxy: &Darklight,
    spans: &Store,
    arrivals: &Mutex<Vec<Instant>>,
) {
    assert_eq!(get(proxy.port, "/articles/one", &[]).status, 200);
    let received = wait_for_spans(spans, 1);
    span_for(&received, "/articles/one");
    let arrivals = arrivals.lock().unwrap().clone();
    assert!(arrivals.len() >= 2, "{} export requests", arrivals.len());
    let gap = arrivals[1] - arrivals[0];
    assert!(
        gap >= Duration::from_millis(950),
        "sent again after {gap:?}"
    );
    assert!(
        !proxy.logs().contains("span export failed"),
        "{}",
        proxy.logs()
    );
}

/// `google.rpc.Status` details holding a `RetryInfo` whose delay is `seconds` (under 128),
/// encoded by hand from the protobuf definitions.
fn retry_info_details(seconds: u8) -> Vec<u8> {
    let type_url = b"type.googleapis.com/google.rpc.RetryInfo";
    // RetryInfo { retry_delay (1): Duration { seconds (1) } }
    let retry_info = [0x0a, 0x02, 0x08, seconds];
    // Any { type_url (1), value (2) }
    let mut any = vec![0x0a, type_url.len() as u8];
    any.extend_from_slice(type_url);
    any.extend_from_slice(&[0x12, retry_info.len() as u8]);
    any.extend_from_slice(&retry_info);
    // Status { details (3) }
    let mut status = vec![0x1a, any.len() as u8];
    status.extend(any);
    status
}

/// A gRPC collector that answers `UNAVAILABLE` with a `RetryInfo` of 1 s gets the batch again
/// a second later, not after the backoff's 100 ms.
#[test]
fn grpc_export_waits_as_long_as_the_collectors_retry_info_asks() {
    let refusal = tonic::Status::with_details(
        tonic::Code::Unavailable,
        "busy",
        retry_info_details(1).into(),
    );
    let collector = GrpcCollector::start_refusing_first(refusal);
    let upstream = Upstream::start("app");
    let proxy = exporting_quickly(
        &upstream,
        "grpc",
        collector.port,
        ("OTEL_SERVICE_NAME", "edge"),
    );
    assert_sent_again_after_a_second(&proxy, &collector.spans, &collector.arrivals);
}

/// A `Retry-After` past the export timeout fails that batch at once, with the wait in the log,
/// and the exporter goes on with the next batch instead of sleeping an hour.
#[test]
fn http_export_gives_up_a_batch_when_the_wait_is_past_the_timeout() {
    let (collector, _upstream, proxy) = exporting_to_a_refusing_collector(
        "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 3600\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(get(proxy.port, "/articles/one", &[]).status, 200);
    proxy.wait_for_log("asked to retry after 3600s");
    assert_eq!(get(proxy.port, "/articles/two", &[]).status, 200);
    let spans = wait_for_spans(&collector.spans, 1);
    span_for(&spans, "/articles/two");
    assert!(
        spans
            .iter()
            .all(|s| !format!("{s:?}").contains("/articles/one")),
        "the refused batch was not dropped: {spans:#?}"
    );
}

#[test]
fn http_export_sends_the_collector_headers_and_retries_a_busy_collector() {
    let (collector, _upstream, proxy) = exporting_over_http(
        HttpBehaviour {
            refuse_first: 1,
            partial_success: true,
            ..HttpBehaviour::default()
        },
        (
            "OTEL_EXPORTER_OTLP_HEADERS",
            "Authorization=Bearer%20t0k3n,x-tenant=edge",
        ),
    );
    let paths = ["/articles/one", "/articles/two", "/articles/three"];
    for path in paths {
        assert_eq!(get(proxy.port, path, &[("User-Agent", PHONE)]).status, 200);
    }
    let spans = wait_for_spans(&collector.spans, 3);
    proxy.wait_for_log("accepted only part of an export");
    // The refused batch was sent again, not lost, and not stored twice.
    assert_eq!(spans.len(), 3, "{spans:#?}");
    for path in paths {
        span_for(&spans, path);
    }
    let requests = collector.requests.lock().unwrap().clone();
    assert!(requests.len() >= 2, "{} export requests", requests.len());
    for request in &requests {
        let agent = request.header("user-agent").unwrap_or_default();
        assert!(agent.starts_with("darklight/"), "{agent}");
        assert_eq!(
            request.header("authorization").as_deref(),
            Some("Bearer t0k3n")
        );
        assert_eq!(request.header("x-tenant").as_deref(), Some("edge"));
    }
    assert!(
        !proxy.logs().contains("span export failed"),
        "{}",
        proxy.logs()
    );
}

#[test]
fn grpc_export_sends_the_collector_headers() {
    let collector = GrpcCollector::start();
    let upstream = Upstream::start("app");
    let proxy = exporting_quickly(
        &upstream,
        "grpc",
        collector.port,
        (
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
            "authorization=Basic%20YWI6Y2Q=",
        ),
    );
    assert_eq!(
        get(proxy.port, "/articles/one", &[("User-Agent", PHONE)]).status,
        200
    );
    wait_for_spans(&collector.spans, 1);
    let authorizations = collector.authorizations.lock().unwrap().clone();
    assert!(!authorizations.is_empty());
    assert!(
        authorizations
            .iter()
            .all(|a| a.as_deref() == Some("Basic YWI6Y2Q=")),
        "{authorizations:?}"
    );
}

#[test]
fn a_malformed_collector_header_stops_startup_without_showing_its_value() {
    let stderr = startup_failure(
        "",
        &[
            ("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20x"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
                "x-api-key=line%0Asecret",
            ),
        ],
    );
    assert!(
        stderr.contains("OTEL_EXPORTER_OTLP_TRACES_HEADERS"),
        "{stderr}"
    );
    assert!(!stderr.contains("secret"), "{stderr}");
}

/// Runs darklight with telemetry on (`otlp` adds to the `otlp:` settings) and the environment
/// `env`, expecting it to refuse to start; returns what it wrote to stderr.
fn startup_failure(otlp: &str, env: &[(&str, &str)]) -> String {
    let upstream = Upstream::start("app");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("darklight.yaml");
    let port = common::free_port().to_string();
    let telemetry = format!("  enabled: true\n  otlp: {{timeout: 1s{otlp}}}\n");
    std::fs::write(
        &path,
        config(&upstream, &telemetry).replace("{PORT}", &port),
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_darklight"))
        .args(["run", "--config"])
        .arg(&path)
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("darklight started with otlp settings {otlp:?} and {env:?}");
        }
        thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "{stderr}");
    stderr
}

// ---- TLS to the collector --------------------------------------------------------------------

/// A private authority with the collector's certificate (for `localhost`) and a client
/// certificate for darklight, as PEM files.
struct CollectorPki {
    dir: tempfile::TempDir,
    authority: String,
    server: (String, String),
    client: (String, String),
}

impl CollectorPki {
    fn new() -> CollectorPki {
        let dir = tempfile::tempdir().unwrap();
        let ca = common::TestCa::new();
        let text = |path: std::path::PathBuf| path.to_str().unwrap().to_string();
        let (cert, key) = ca.issue(dir.path(), "localhost", "collector");
        let server = (text(cert), text(key));
        let (cert, key) = ca.issue(dir.path(), "darklight-edge", "client");
        let client = (text(cert), text(key));
        let authority = dir.path().join("authority.pem");
        std::fs::write(&authority, ca.cert.pem()).unwrap();
        CollectorPki {
            authority: text(authority),
            server,
            client,
            dir,
        }
    }

    fn read(path: &str) -> Vec<u8> {
        std::fs::read(path).unwrap()
    }
}

/// A `telemetry:` section exporting with `protocol` to `https://localhost:{port}` every 100 ms;
/// `tls` adds settings to `otlp:` (`, certificate: …`).
fn exporting_over_tls(protocol: &str, port: u16, tls: &str) -> String {
    format!(
        "  enabled: true\n\
         \x20 otlp: {{protocol: {protocol}, endpoint: 'https://localhost:{port}', timeout: 3s{tls}}}\n\
         \x20 batch: {{scheduled_delay: 100ms}}\n"
    )
}

/// Sends a request through `proxy` whose export the collector (holding `spans`) refuses:
/// the request is served, the failed export is logged with `reason`, and its span never
/// arrives.
fn assert_export_fails(proxy: &Darklight, spans: &Store, reason: &str) {
    assert_eq!(get(proxy.port, "/articles/two", &[]).status, 200);
    let logs = proxy.wait_for_log("span export failed");
    let failure = logs
        .lines()
        .find(|line| line.contains("span export failed"))
        .unwrap_or_default();
    assert!(failure.contains(reason), "{failure}");
    let spans = spans.lock().unwrap();
    assert!(
        spans
            .iter()
            .all(|s| s.attribute("url.path") != Some("/articles/two")),
        "exported although refused: {spans:#?}"
    );
}

/// gRPC over TLS to a collector with a private authority that asks for a client certificate:
/// with the authority and the identity configured, spans arrive; without the identity, the
/// collector refuses the handshake, the export fails with the reason in the log, and requests
/// are served regardless.
#[test]
fn grpc_export_over_mutual_tls_with_a_private_authority() {
    let pki = CollectorPki::new();
    let identity = tonic::transport::Identity::from_pem(
        CollectorPki::read(&pki.server.0),
        CollectorPki::read(&pki.server.1),
    );
    let tls = tonic::transport::ServerTlsConfig::new()
        .identity(identity)
        .client_ca_root(tonic::transport::Certificate::from_pem(CollectorPki::read(
            &pki.authority,
        )));
    let collector = GrpcCollector::start_with(Some(tls));
    let upstream = Upstream::start("app");

    let with_identity = format!(
        ", certificate: '{}', client_certificate: '{}', client_key: '{}'",
        pki.authority, pki.client.0, pki.client.1
    );
    let proxy = Darklight::start(&config(
        &upstream,
        &exporting_over_tls("grpc", collector.port, &with_identity),
    ));
    assert_eq!(get(proxy.port, "/articles/one", &[]).status, 200);
    let spans = wait_for_spans(&collector.spans, 1);
    span_for(&spans, "/articles/one");
    drop(proxy);

    let without_identity = format!(", certificate: '{}'", pki.authority);
    let proxy = Darklight::start(&config(
        &upstream,
        &exporting_over_tls("grpc", collector.port, &without_identity),
    ));
    // TLS 1.3 ends the client's handshake before the collector checks for a certificate, so
    // its refusal reaches darklight as the alert or as the connection it closed.
    assert_export_fails(&proxy, &collector.spans, "collector unreachable");
    drop(pki.dir);
}

/// OTLP/HTTP over TLS: the authority named by `OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE` is
/// trusted; without it, the system's roots are, which do not know a private authority, so the
/// export fails naming the certificate problem.
#[test]
fn http_export_over_tls_trusts_the_configured_authority() {
    let pki = CollectorPki::new();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let chain = rustls::pki_types::CertificateDer::pem_file_iter(&pki.server.0)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&pki.server.1).unwrap();
    let server = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let collector = HttpCollector::start_tls(Arc::new(server));
    let upstream = Upstream::start("app");
    let telemetry = exporting_over_tls("http", collector.port, "");

    let proxy = Darklight::start_with_env(
        &config(&upstream, &telemetry),
        &[("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", &pki.authority)],
    );
    assert_eq!(get(proxy.port, "/articles/one", &[]).status, 200);
    let spans = wait_for_spans(&collector.spans, 1);
    span_for(&spans, "/articles/one");
    assert!(collector.paths().iter().all(|p| p == "/v1/traces"));
    drop(proxy);

    let proxy = Darklight::start(&config(&upstream, &telemetry));
    assert_export_fails(&proxy, &collector.spans, "UnknownIssuer");
}

/// A client key that does not belong to the client certificate stops startup, naming both
/// files, rather than failing every export later.
#[test]
fn a_client_key_of_another_certificate_stops_startup() {
    let pki = CollectorPki::new();
    let mismatched = format!(
        ", endpoint: 'https://localhost:4317', client_certificate: '{}', client_key: '{}'",
        pki.client.0, pki.server.1
    );
    let stderr = startup_failure(&mismatched, &[]);
    assert!(
        stderr.contains(&format!(
            "client certificate {} with key {}",
            pki.client.0, pki.server.1
        )),
        "{stderr}"
    );
}
