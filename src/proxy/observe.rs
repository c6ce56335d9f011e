//! Metrics for a finished request: what the session, the plugin and the proxy context know,
//! handed to [`Metrics`] without copying.

use pingora::proxy::Session;
use pingora::{Error, ErrorSource, ErrorType};

use crate::admin::metrics::{Metrics, RequestRecord, UpstreamErrorKind};

use super::app::{ProxyState, RequestContext};
use super::plugin::DarklightContext;

/// Counts a finished request (and its upstream failure, if any).
pub fn record(
    metrics: &Metrics,
    session: &Session,
    module: Option<&DarklightContext>,
    error: Option<&Error>,
    ctx: &RequestContext,
    state: &ProxyState,
) {
    let classification = module.and_then(|m| m.classification.as_ref());
    let site = ctx
        .site()
        .and_then(|i| state.sites.get(i))
        .map(|s| s.name.as_str());
    metrics.record_request(&RequestRecord {
        site,
        channel: classification.map(|c| c.channel),
        source: classification.and_then(|c| c.source.as_deref()),
        in_app: classification.and_then(|c| c.in_app.as_deref()),
        path: session.req_header().uri.path(),
        status: session.response_written().map_or(0, |r| r.status.as_u16()),
        duration: ctx.started().elapsed(),
        classification: module.and_then(|m| m.evaluation),
    });
    if let Some(kind) = error.and_then(upstream_error_kind) {
        metrics.record_upstream_error(site, kind);
    }
}

/// The kind of an upstream failure; `None` for failures on the client's side or inside.
fn upstream_error_kind(error: &Error) -> Option<UpstreamErrorKind> {
    let kind = match error.etype() {
        ErrorType::ConnectRefused => UpstreamErrorKind::ConnectRefused,
        ErrorType::ConnectTimedout => UpstreamErrorKind::ConnectTimeout,
        ErrorType::ReadTimedout => UpstreamErrorKind::ReadTimeout,
        ErrorType::WriteTimedout => UpstreamErrorKind::WriteTimeout,
        ErrorType::ConnectNoRoute => UpstreamErrorKind::NoHealthyUpstream,
        ErrorType::TLSHandshakeFailure
        | ErrorType::TLSHandshakeTimedout
        | ErrorType::InvalidCert
        | ErrorType::HandshakeError => UpstreamErrorKind::Tls,
        _ if error.esource() != &ErrorSource::Upstream => return None,
        ErrorType::InvalidHTTPHeader
        | ErrorType::H1Error
        | ErrorType::H2Error
        | ErrorType::ConnectionClosed
        | ErrorType::ReadError
        | ErrorType::WriteError => UpstreamErrorKind::Protocol,
        _ => UpstreamErrorKind::Other,
    };
    // Timeouts and TLS failures are only the upstream's when Pingora says so (the client's
    // side can time out too); a missing healthy upstream is raised internally.
    match (kind, error.esource()) {
        (UpstreamErrorKind::NoHealthyUpstream, _) | (_, ErrorSource::Upstream) => Some(kind),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_errors_are_classified_by_kind() {
        let cases = [
            (
                ErrorType::ConnectRefused,
                ErrorSource::Upstream,
                Some(UpstreamErrorKind::ConnectRefused),
            ),
            (
                ErrorType::ReadTimedout,
                ErrorSource::Upstream,
                Some(UpstreamErrorKind::ReadTimeout),
            ),
            (ErrorType::ReadTimedout, ErrorSource::Downstream, None),
            (
                ErrorType::ConnectNoRoute,
                ErrorSource::Internal,
                Some(UpstreamErrorKind::NoHealthyUpstream),
            ),
            (
                ErrorType::InvalidHTTPHeader,
                ErrorSource::Upstream,
                Some(UpstreamErrorKind::Protocol),
            ),
            (ErrorType::InvalidHTTPHeader, ErrorSource::Downstream, None),
            (ErrorType::HTTPStatus(404), ErrorSource::Internal, None),
        ];
        for (etype, source, expected) in cases {
            let error = Error::create(etype.clone(), source, None, None);
            assert_eq!(upstream_error_kind(&error), expected, "{etype:?}");
        }
    }
}
