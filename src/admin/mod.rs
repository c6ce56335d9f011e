//! The admin listener: operator endpoints on a separate, loopback-by-default address.
//!
//! * `GET /previews?limit=N` — the preview table: statistics and counters per URL and platform
//!   (previews seen, visits attributed), most previewed first, as JSON.
//! * `GET /healthz` — `ok`.

use std::sync::Arc;

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::correlation::PreviewTable;

/// Rows `/previews` returns when no `limit` is given.
const DEFAULT_LIMIT: usize = 100;
/// Most rows `/previews` returns.
const MAX_LIMIT: usize = 10_000;

/// The admin application.
pub struct AdminApp {
    previews: Option<Arc<PreviewTable>>,
}

impl AdminApp {
    /// Serves the given preview table (none when correlation is off).
    pub fn new(previews: Option<Arc<PreviewTable>>) -> AdminApp {
        AdminApp { previews }
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
        match request.uri.path() {
            "/previews" => self.previews(request.uri.query()),
            "/healthz" => respond(
                StatusCode::OK,
                "text/plain; charset=utf-8",
                b"ok\n".to_vec(),
            ),
            _ => respond(
                StatusCode::NOT_FOUND,
                "text/plain; charset=utf-8",
                b"not found: try /previews or /healthz\n".to_vec(),
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
