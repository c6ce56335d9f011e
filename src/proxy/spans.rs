//! The request span in Pingora's phases: begun in `early_request_filter`, started and
//! propagated to the upstream in `upstream_request_filter`, ended in `logging`.

use http::{HeaderValue, header};
use pingora::proxy::Session;
use pingora::{Error, ErrorType, OrErr};

use crate::telemetry::address::client_address;
use crate::telemetry::attributes::RequestInfo;
use crate::telemetry::span::{SpanEnd, SpanStart, TRACEPARENT, TRACESTATE};
use crate::telemetry::{RequestSpan, RequestTracer};

use super::app::{ProxyState, RequestContext};
use super::header_edits::{HeaderEdits, WireName};
use super::plugin::DarklightContext;

/// The W3C names, lower case in either form, as the specification writes them.
static TRACEPARENT_NAME: WireName = WireName::from_static(TRACEPARENT, TRACEPARENT);
static TRACESTATE_NAME: WireName = WireName::from_static(TRACESTATE, TRACESTATE);

/// Notes the arrival time and the client's trace context.
pub fn begin(tracer: &RequestTracer, session: &Session) -> RequestSpan {
    tracer.begin(&session.req_header().headers)
}

/// Starts the span (when not yet started) from what the session, the plugin's context
/// (`module`, looked up once by the caller) and the proxy context know.
fn ensure_started(
    tracer: &RequestTracer,
    trace: &mut RequestSpan,
    session: &Session,
    module: Option<&DarklightContext>,
    ctx: &RequestContext,
    state: &ProxyState,
) {
    if trace.started() {
        return;
    }
    // Gathered only for a span the sampler records.
    let describe = || {
        let settings = tracer.settings();
        let request = session.req_header();
        let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        let authority = request.uri.authority().map(|a| a.as_str()).or_else(|| {
            request
                .headers
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
        });
        let (host, port) = split_host_port(authority.unwrap_or(""));
        let port = port.or_else(|| {
            session
                .server_addr()
                .and_then(|a| a.as_inet())
                .map(|a| a.port())
        });
        let client = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .and_then(|a| client_address(a.ip(), settings.client_address));
        let path = request.uri.path();
        let site = ctx.site();
        SpanStart {
            request: RequestInfo {
                method: request.method.as_str(),
                path,
                query: if settings.url_query {
                    request.uri.query()
                } else {
                    None
                },
                scheme: if tls { "https" } else { "http" },
                user_agent: request
                    .headers
                    .get(header::USER_AGENT)
                    .and_then(|v| v.to_str().ok()),
                server_address: (!host.is_empty()).then_some(host),
                server_port: port,
                protocol_version: protocol_version(request.version),
                client_address: client,
                route: settings.route(site, path),
            },
            site: site
                .and_then(|i| state.sites.get(i))
                .map(|s| s.name.as_str()),
            upstream: ctx.upstream(),
            classification: module.and_then(|m| m.classification.as_ref()),
            plan: module.map(|m| &m.plan),
        }
    };
    tracer.start_with(trace, describe);
}

/// Starts the span and, when the mode injects, replaces the client's trace context headers on
/// the upstream request with darklight's.
pub fn on_upstream_request(
    tracer: &RequestTracer,
    trace: &mut RequestSpan,
    session: &Session,
    module: Option<&DarklightContext>,
    ctx: &RequestContext,
    state: &ProxyState,
    upstream_request: &mut dyn HeaderEdits,
) -> pingora::Result<()> {
    ensure_started(tracer, trace, session, module, ctx, state);
    if let Some(headers) = tracer.upstream_headers(trace) {
        upstream_request.remove(&TRACESTATE_NAME.name);
        upstream_request.set_named(&TRACEPARENT_NAME, trace_value(headers.traceparent)?)?;
        if let Some(tracestate) = headers.tracestate {
            upstream_request.set_named(&TRACESTATE_NAME, trace_value(tracestate)?)?;
        }
    }
    Ok(())
}

fn trace_value(value: String) -> pingora::Result<HeaderValue> {
    HeaderValue::try_from(value).or_err(ErrorType::InvalidHTTPHeader, "invalid trace context value")
}

/// Ends the span with the response status and the proxy error, if any.
pub fn finish(
    tracer: &RequestTracer,
    trace: &mut RequestSpan,
    session: &Session,
    module: Option<&DarklightContext>,
    error: Option<&Error>,
    ctx: &RequestContext,
    state: &ProxyState,
) {
    ensure_started(tracer, trace, session, module, ctx, state);
    let status = session.response_written().map(|r| r.status.as_u16());
    let end = SpanEnd {
        status,
        error: error.map(|e| (e.etype().as_str(), e.to_string())),
    };
    tracer.finish(trace, &end);
}

/// Splits `host:port` / `[v6]:port`; the port is `None` when absent or not a number.
fn split_host_port(authority: &str) -> (&str, Option<u16>) {
    if let Some(rest) = authority.strip_prefix('[') {
        let Some((host, after)) = rest.split_once(']') else {
            return (authority, None);
        };
        return (host, after.strip_prefix(':').and_then(|p| p.parse().ok()));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => (host, port.parse().ok()),
        None => (authority, None),
    }
}

fn protocol_version(version: http::Version) -> Option<&'static str> {
    Some(match version {
        http::Version::HTTP_09 => "0.9",
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_11 => "1.1",
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_3 => "3",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port() {
        assert_eq!(
            split_host_port("example.com:8080"),
            ("example.com", Some(8080))
        );
        assert_eq!(split_host_port("example.com"), ("example.com", None));
        assert_eq!(split_host_port("[::1]:443"), ("::1", Some(443)));
        assert_eq!(split_host_port("[::1]"), ("::1", None));
        assert_eq!(split_host_port(""), ("", None));
    }
}
