//! OpenTelemetry tracing: one SERVER span per request, carrying the classification, exported
//! in batches over OTLP (gRPC or HTTP/protobuf) or to standard output, off the request path.
//!
//! The configuration ([`config`]), its completion from the `OTEL_*` environment
//! ([`settings`]), route matching ([`route`]) and client address truncation ([`address`]) are
//! pure and build without the `telemetry` feature. Span building ([`attributes`], [`span`],
//! [`record`]), sampling ([`recorder`]) and export ([`Telemetry`]) need it.
//!
//! Trace context follows W3C Trace Context (`traceparent`, `tracestate`): by default darklight
//! continues the client's trace and sends its own span to the upstream as the parent, so the
//! application's spans nest under darklight's (see [`config::TraceContextMode`]).

pub mod address;
pub mod config;
pub mod route;
pub mod settings;

#[cfg(feature = "telemetry")]
pub mod attributes;
#[cfg(feature = "telemetry")]
mod otlp_export;
#[cfg(feature = "telemetry")]
pub mod otlp_tls;
#[cfg(feature = "telemetry")]
pub mod otlp_wire;
#[cfg(feature = "telemetry")]
mod pipeline;
#[cfg(feature = "telemetry")]
mod provider;
#[cfg(feature = "telemetry")]
pub mod record;
#[cfg(feature = "telemetry")]
pub mod recorder;
#[cfg(feature = "telemetry")]
pub mod span;
#[cfg(feature = "telemetry")]
pub mod stats;

pub use config::{
    AttributeConfig, BatchConfig, ClientAddressMode, ExporterKind, OtlpCompression, OtlpConfig,
    OtlpProtocol, RouteConfig, SamplerKind, TelemetryConfig, TraceContextMode,
};
#[cfg(feature = "telemetry")]
pub use otlp_tls::{CollectorTls, TlsError};
#[cfg(feature = "telemetry")]
pub use provider::{Telemetry, TelemetryError};
#[cfg(feature = "telemetry")]
pub use recorder::SpanRecorder;
#[cfg(feature = "telemetry")]
pub use span::{RequestSpan, RequestTracer, SpanSettings};
#[cfg(feature = "telemetry")]
pub use stats::{ExportCounts, ExportStats};
