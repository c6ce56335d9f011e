//! A recorded span in compact form: what the request path keeps and queues for export.
//!
//! A span carries some twenty attribute values, and in the SDK's form each is its own string
//! inside a 56-byte key-value, written by the request thread and read back much later by the
//! export thread. A [`SpanRecord`] instead copies the request's text into one buffer and keeps
//! the classification as it is (its names are shared). The attributes come out only at export,
//! through the same builders either way: written straight into the OTLP encoder
//! ([`SpanRecord::visit_attributes`]), or as the SDK's key-values for other exporters
//! ([`SpanRecord::into_span_data`]), so a span's content does not depend on the path it took.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::time::SystemTime;

use opentelemetry::trace::{Event, SpanContext, SpanId, SpanKind, Status};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};

use super::attributes::{self, AttributeSink, RequestInfo, keys};
use super::span::{SpanEnd, SpanStart};
use crate::attribution::Touch;
use crate::classify::Classification;

/// Attributes a span can carry: request (10), routing (2), classification and first touch
/// (20), response and error (2), with room to spare.
const MAX_ATTRIBUTES: usize = 40;

/// A piece of [`SpanRecord::text`].
#[derive(Debug, Clone, Copy, Default)]
struct Text {
    start: u32,
    end: u32,
}

/// Everything a request's span records, owned, with its text in one buffer.
#[derive(Debug)]
pub struct SpanRecord {
    context: SpanContext,
    parent_span_id: SpanId,
    parent_is_remote: bool,
    start_time: SystemTime,
    end_time: SystemTime,
    text: String,
    method: Text,
    path: Text,
    query: Option<Text>,
    route: Option<Text>,
    user_agent: Option<Text>,
    server_address: Option<Text>,
    site: Option<Text>,
    scheme: &'static str,
    server_port: Option<u16>,
    protocol_version: Option<&'static str>,
    client_address: Option<IpAddr>,
    upstream: Option<SocketAddr>,
    classification: Option<Classification>,
    first_touch: Option<Touch>,
    status: Option<u16>,
    /// The proxy error's kind and message.
    error: Option<(String, String)>,
}

impl SpanRecord {
    /// A started span: its own `context`, the remote `parent` it continues (if any), when the
    /// request arrived, and what is known about it.
    pub fn new(
        context: SpanContext,
        parent: Option<&SpanContext>,
        start_time: SystemTime,
        start: &SpanStart<'_>,
    ) -> SpanRecord {
        let request = &start.request;
        let lengths = [
            Some(request.method),
            Some(request.path),
            request.query,
            request.route,
            request.user_agent,
            request.server_address,
            start.site,
        ];
        let mut text = String::with_capacity(lengths.iter().flatten().map(|s| s.len()).sum());
        let mut put = |value: &str| {
            let start = text.len();
            text.push_str(value);
            Text {
                start: u32::try_from(start).unwrap_or(u32::MAX),
                end: u32::try_from(text.len()).unwrap_or(u32::MAX),
            }
        };
        let method = put(request.method);
        let path = put(request.path);
        let query = request.query.map(&mut put);
        let route = request.route.map(&mut put);
        let user_agent = request.user_agent.map(&mut put);
        let server_address = request.server_address.map(&mut put);
        let site = start.site.map(&mut put);
        SpanRecord {
            context,
            parent_span_id: parent.map_or(SpanId::INVALID, SpanContext::span_id),
            parent_is_remote: parent.is_some_and(SpanContext::is_remote),
            start_time,
            end_time: start_time,
            text,
            method,
            path,
            query,
            route,
            user_agent,
            server_address,
            site,
            scheme: request.scheme,
            server_port: request.server_port,
            protocol_version: request.protocol_version,
            client_address: request.client_address,
            upstream: start.upstream,
            classification: start.classification.cloned(),
            first_touch: start.plan.and_then(|plan| plan.first_touch.clone()),
            status: None,
            error: None,
        }
    }

    /// The span's own context.
    pub fn context(&self) -> &SpanContext {
        &self.context
    }

    /// Notes how and when the request ended.
    pub fn end(&mut self, end: &SpanEnd<'_>, at: SystemTime) {
        self.end_time = at;
        self.status = end.status;
        self.error = end
            .error
            .as_ref()
            .map(|(kind, message)| ((*kind).to_string(), message.clone()));
    }

    fn text(&self, piece: Text) -> &str {
        self.text
            .get(piece.start as usize..piece.end as usize)
            .unwrap_or("")
    }

    fn request_info(&self) -> RequestInfo<'_> {
        RequestInfo {
            method: self.text(self.method),
            path: self.text(self.path),
            query: self.query.map(|t| self.text(t)),
            scheme: self.scheme,
            user_agent: self.user_agent.map(|t| self.text(t)),
            server_address: self.server_address.map(|t| self.text(t)),
            server_port: self.server_port,
            protocol_version: self.protocol_version,
            client_address: self.client_address,
            route: self.route.map(|t| self.text(t)),
        }
    }

    /// Passes every attribute of the span to `sink`, in the order the SDK's form has them.
    pub fn visit_attributes(&self, sink: &mut impl AttributeSink) {
        let request = self.request_info();
        attributes::request_attributes(&request, sink);
        attributes::routing_attributes(self.site.map(|t| self.text(t)), self.upstream, sink);
        if let Some(classification) = &self.classification {
            attributes::classification_attributes(classification, self.first_touch.as_ref(), sink);
        }
        attributes::response_attributes(self.status, sink);
        if let Some(error_type) = self.error_type() {
            sink.text(keys::ERROR_TYPE, &error_type);
        }
    }

    /// `error.type`, when the request failed.
    fn error_type(&self) -> Option<Cow<'static, str>> {
        let kind = self.error.as_ref().map(|(kind, _)| kind.as_str());
        attributes::error_type(self.status, kind)
    }

    /// The span's name in two parts (`GET`, then the route when known), as
    /// [`attributes::span_name`] joins them.
    pub fn name_parts(&self) -> (&'static str, Option<&str>) {
        (
            attributes::span_method(self.text(self.method)),
            self.route.map(|t| self.text(t)),
        )
    }

    /// The parent span's id (invalid for a new trace) and whether it is remote.
    pub fn parent(&self) -> (SpanId, bool) {
        (self.parent_span_id, self.parent_is_remote)
    }

    /// When the request arrived and ended.
    pub fn times(&self) -> (SystemTime, SystemTime) {
        (self.start_time, self.end_time)
    }

    /// The span's status: an error when the request failed, with the proxy error's message
    /// (`HTTP 503` for a 5xx alone); unset otherwise.
    pub fn status(&self) -> Status {
        if self.error_type().is_none() {
            return Status::Unset;
        }
        match &self.error {
            Some((_, message)) => Status::error(message.clone()),
            None => Status::error(format!("HTTP {}", self.status.unwrap_or(0))),
        }
    }

    /// The `exception` event's type and message, when the proxy failed.
    pub fn exception(&self) -> Option<(Cow<'static, str>, &str)> {
        let (_, message) = self.error.as_ref()?;
        Some((self.error_type()?, message))
    }

    /// The span in the SDK's form, with every attribute, for the exporters.
    pub fn into_span_data(self, scope: &InstrumentationScope) -> SpanData {
        let mut attributes = Vec::with_capacity(MAX_ATTRIBUTES);
        self.visit_attributes(&mut attributes);
        let request = self.request_info();
        let name = attributes::span_name(request.method, request.route);
        let mut events = SpanEvents::default();
        if let Some((error_type, message)) = self.exception() {
            events.events.push(Event::new(
                "exception",
                self.end_time,
                vec![
                    KeyValue::new("exception.type", error_type),
                    KeyValue::new("exception.message", message.to_string()),
                ],
                0,
            ));
        }
        let status = self.status();
        SpanData {
            span_context: self.context,
            parent_span_id: self.parent_span_id,
            parent_span_is_remote: self.parent_is_remote,
            span_kind: SpanKind::Server,
            name,
            start_time: self.start_time,
            end_time: self.end_time,
            attributes,
            dropped_attributes_count: 0,
            events,
            links: SpanLinks::default(),
            status,
            instrumentation_scope: scope.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{TraceFlags, TraceId, TraceState};

    use super::*;

    fn context() -> SpanContext {
        SpanContext::new(
            TraceId::from(7),
            SpanId::from(9),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        )
    }

    fn value(span: &SpanData, key: &str) -> Option<String> {
        span.attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| kv.value.to_string())
    }

    /// Every piece of text comes back where it was put, absent pieces stay absent.
    #[test]
    fn text_pieces_round_trip() {
        let start = SpanStart {
            request: RequestInfo {
                method: "PATCH",
                path: "/a/ü",
                query: Some("x=1"),
                scheme: "https",
                user_agent: None,
                server_address: Some("news.example"),
                server_port: Some(8443),
                protocol_version: Some("1.1"),
                client_address: Some("192.0.2.0".parse().unwrap()),
                route: Some("/a/*"),
            },
            site: Some("news"),
            ..SpanStart::default()
        };
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(10);
        let record = SpanRecord::new(context(), None, at, &start);
        assert_eq!(record.text.len(), record.text.capacity());
        let info = record.request_info();
        assert_eq!(info.method, "PATCH");
        assert_eq!(info.path, "/a/ü");
        assert_eq!(info.query, Some("x=1"));
        assert_eq!(info.user_agent, None);
        assert_eq!(info.server_address, Some("news.example"));
        assert_eq!(info.route, Some("/a/*"));
        let span = record.into_span_data(&InstrumentationScope::builder("t").build());
        assert_eq!(span.name, "PATCH /a/*");
        assert_eq!(value(&span, keys::SITE).as_deref(), Some("news"));
        assert_eq!(value(&span, keys::SERVER_PORT).as_deref(), Some("8443"));
        assert_eq!(
            value(&span, keys::CLIENT_ADDRESS).as_deref(),
            Some("192.0.2.0")
        );
        assert_eq!(value(&span, keys::USER_AGENT_ORIGINAL), None);
        assert_eq!(span.start_time, at);
        assert_eq!(span.parent_span_id, SpanId::INVALID);
    }

    /// A proxy error gives `error.type`, an error status with its message and an
    /// `exception` event; a 5xx alone gives the status code as its type.
    #[test]
    fn errors_become_status_type_and_event() {
        let scope = InstrumentationScope::builder("t").build();
        let cases = [
            (
                Some(502),
                Some(("ConnectRefused", "refused")),
                Some("ConnectRefused"),
                1,
            ),
            (Some(503), None, Some("503"), 0),
            (Some(404), None, None, 0),
        ];
        for (status, error, error_type, events) in cases {
            let mut record = SpanRecord::new(
                context(),
                None,
                SystemTime::UNIX_EPOCH,
                &SpanStart::default(),
            );
            let end = SpanEnd {
                status,
                error: error.map(|(kind, message)| (kind, message.to_string())),
            };
            record.end(&end, SystemTime::UNIX_EPOCH);
            let span = record.into_span_data(&scope);
            assert_eq!(value(&span, keys::ERROR_TYPE).as_deref(), error_type);
            assert_eq!(
                matches!(span.status, Status::Error { .. }),
                error_type.is_some()
            );
            assert_eq!(span.events.len(), events, "{status:?}");
        }
    }
}
