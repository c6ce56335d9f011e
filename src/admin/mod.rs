//! The admin listener: operator endpoints on a separate, loopback-by-default address.
//!
//! * `GET /` or `/status` — the status page: configuration, traffic per channel over the last
//!   hour, top dark social landing pages and sources ([`status`]).
//! * `GET /metrics` — Prometheus metrics, text exposition format 0.0.4 ([`metrics`]).
//! * `GET /previews?limit=N` — the preview table: statistics and counters per URL and platform
//!   (previews seen, visits attributed), most previewed first, as JSON.
//! * `GET /healthz` — `ok`.

pub mod histogram;
pub mod labels;
pub mod metrics;
pub mod status;
pub mod traffic;

use std::sync::Arc;

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::correlation::PreviewTable;
use metrics::Metrics;

/// Rows `/previews` returns when no `limit` is given.
const DEFAULT_LIMIT: usize = 100;
/// Most rows `/previews` returns.
const MAX_LIMIT: usize = 10_000;

/// The admin application.
pub struct AdminApp {
    previews: Option<Arc<PreviewTable>>,
    metrics: Option<Arc<Metrics>>,
}

impl AdminApp {
    /// Serves the given preview table (none when correlation is off).
    pub fn new(previews: Option<Arc<PreviewTable>>) -> AdminApp {
        AdminApp {
            previews,
            metrics: None,
        }
    }

    /// Also serves `/metrics` and the status page from `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> AdminApp {
        self.metrics = Some(metrics);
        self
    }

    fn previews(&self, query: Option<&str>) -> Response<Vec<u8>> {
        let limit = query
            .into_iter()
            .flat_map(|q| q.split('&'))
            .find_map(|pair| pair.strip_prefix("limit="))
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(DEFAULT_LIMIT)
            .min(MAX_LIMIT);
        let body = match &self.previews {
            None => serde_json::json!({ "enabled": false }),
            Some(table) => serde_json::json!({
                "enabled": true,
                "stats": table.stats(),
                "previews": table.top(limit),
            }),
        };
        let mut text = body.to_string();
        text.push('\n');
        respond(StatusCode::OK, "application/json", text.into_bytes())
    }
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let request = session.req_header();
        if request.method != http::Method::GET && request.method != http::Method::HEAD {
            return respond(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain; charset=utf-8",
                b"only GET\n".to_vec(),
            );
        }
        match (request.uri.path(), &self.metrics) {
            ("/metrics", Some(metrics)) => respond(
                StatusCode::OK,
                metrics::CONTENT_TYPE,
                metrics.render().into_bytes(),
            ),
            ("/" | "/status", Some(metrics)) => {
                let page = status::render(metrics, crate::proxy::plugin::unix_now());
                let mut response = respond(
                    StatusCode::OK,
                    "text/html; charset=utf-8",
                    page.into_bytes(),
                );
                response.headers_mut().insert(
                    http::header::CONTENT_SECURITY_POLICY,
                    http::HeaderValue::from_static(
                        "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'",
                    ),
                );
                response
            }
            ("/previews", _) => self.previews(request.uri.query()),
            ("/healthz", _) => respond(
                StatusCode::OK,
                "text/plain; charset=utf-8",
                b"ok\n".to_vec(),
            ),
            _ => respond(
                StatusCode::NOT_FOUND,
                "text/plain; charset=utf-8",
                b"not found: try /status, /metrics, /previews or /healthz\n".to_vec(),
            ),
        }
    }
}

fn respond(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Response<Vec<u8>> {
    let length = body.len();
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    headers.insert(
        http::header::CONTENT_LENGTH,
        http::HeaderValue::from(length),
    );
    headers.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    response
}
