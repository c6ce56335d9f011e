//! One access-log line per request, as a structured `tracing` event (target `darklight::access`).
//!
//! The text formatter prints `key=value` pairs and the JSON formatter one object per line, so
//! log shippers can index the classification fields directly.

use pingora::Error;
use pingora::proxy::Session;

use super::app::{ProxyState, RequestContext};
use super::plugin::DarklightContext;

/// Emits the access-log event for a finished request.
pub fn write(
    session: &Session,
    module: Option<&DarklightContext>,
    error: Option<&Error>,
    ctx: &RequestContext,
    state: &ProxyState,
) {
    let request = session.req_header();
    let status = session
        .response_written()
        .map(|r| r.status.as_u16())
        .unwrap_or(0);
    let client = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip().to_string())
        .unwrap_or_default();
    let site = ctx
        .site()
        .and_then(|i| state.sites.get(i))
        .map(|s| s.name.as_str())
        .unwrap_or("-");
    let upstream = ctx
        .upstream()
        .map_or_else(|| "-".to_string(), |a| a.to_string());
    let host = request
        .headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    let duration_ms = ctx.started().elapsed().as_secs_f64() * 1000.0;
    let error = error.map(|e| e.etype().as_str()).unwrap_or("-");
    let classification = module.and_then(|m| m.classification.as_ref());
    let cookies = module.map_or(0, |m| m.cookies_set);
    let channel = classification.map(|c| c.channel.as_str()).unwrap_or("-");
    let source = classification
        .and_then(|c| c.source.as_deref())
        .unwrap_or("-");
    let in_app = classification
        .and_then(|c| c.in_app.as_deref())
        .unwrap_or("-");
    let confidence = classification.map(|c| c.confidence).unwrap_or(0.0);
    tracing::info!(
        target: "darklight::access",
        client = %client,
        method = %request.method,
        host = %host,
        path = %request.uri.path(),
        status,
        bytes = session.body_bytes_sent(),
        duration_ms = format_args!("{duration_ms:.3}"),
        site = %site,
        upstream = %upstream,
        channel = %channel,
        source = %source,
        in_app = %in_app,
        confidence = format_args!("{confidence:.2}"),
        cookies,
        error = %error,
    );
}
