//! The `telemetry:` YAML section and the per-site `routes:` list.
//!
//! Every value is checked while it is deserialised, so a bad one is reported with its line and
//! column. These types are part of the pure core: they build without the `telemetry` feature.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use crate::classify::PathPattern;
use crate::config::HumanDuration;

/// Span export to an OpenTelemetry collector.
///
/// Unset values fall back to the standard `OTEL_*` environment variables, then to defaults
/// (see [`super::settings`]).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// Record and export one span per request.
    pub enabled: bool,
    /// Where spans go; `OTEL_TRACES_EXPORTER` when unset, else `otlp`.
    pub exporter: Option<ExporterKind>,
    /// The OTLP exporter's transport and collector.
    pub otlp: OtlpConfig,
    /// `service.name`; `OTEL_SERVICE_NAME` when unset, else `darklight`.
    #[serde(deserialize_with = "optional_non_empty")]
    pub service_name: Option<String>,
    /// `deployment.environment.name`, such as `production`.
    #[serde(deserialize_with = "optional_non_empty")]
    pub environment: Option<String>,
    /// More resource attributes; they win over `OTEL_RESOURCE_ATTRIBUTES`.
    pub resource: BTreeMap<String, String>,
    /// Which traces are recorded; `OTEL_TRACES_SAMPLER` when unset.
    pub sampler: Option<SamplerKind>,
    /// The ratio of the `traceidratio` samplers; `OTEL_TRACES_SAMPLER_ARG` when unset.
    #[serde(deserialize_with = "optional_ratio")]
    pub sampler_ratio: Option<f64>,
    /// W3C trace context handling between the client, darklight and the upstream.
    pub trace_context: TraceContextMode,
    /// Which optional attributes spans carry.
    pub attributes: AttributeConfig,
    /// The export queue and batches.
    pub batch: BatchConfig,
}

/// Where finished spans go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExporterKind {
    /// An OpenTelemetry collector (or Jaeger, Tempo…) over OTLP.
    Otlp,
    /// One JSON line per span on standard output, for local use.
    Stdout,
    /// Spans are recorded (trace context still flows) but not exported.
    None,
}

impl ExporterKind {
    /// The name used in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            ExporterKind::Otlp => "otlp",
            ExporterKind::Stdout => "stdout",
            ExporterKind::None => "none",
        }
    }
}

/// How OTLP request bodies are compressed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OtlpCompression {
    /// Sent as encoded.
    #[default]
    None,
    /// gzip: a batch shrinks several times, for some CPU on the export thread. For a collector
    /// across a network that is paid by the byte.
    Gzip,
}

impl OtlpCompression {
    /// Parses an `OTEL_EXPORTER_OTLP_COMPRESSION` value.
    pub fn parse(text: &str) -> Option<OtlpCompression> {
        match text.trim() {
            "none" => Some(OtlpCompression::None),
            "gzip" => Some(OtlpCompression::Gzip),
            _ => None,
        }
    }
}

/// The OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OtlpProtocol {
    /// OTLP/gRPC, usually port 4317.
    Grpc,
    /// OTLP/HTTP with protobuf bodies (`POST /v1/traces`), usually port 4318.
    Http,
}

impl OtlpProtocol {
    /// The name used in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            OtlpProtocol::Grpc => "grpc",
            OtlpProtocol::Http => "http",
        }
    }
}

/// The OTLP exporter's settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpConfig {
    /// `grpc` or `http`; `OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL` when unset, else `grpc`.
    pub protocol: Option<OtlpProtocol>,
    /// The collector URL; `OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT` when unset.
    #[serde(deserialize_with = "optional_endpoint")]
    pub endpoint: Option<String>,
    /// How long one export may take; `OTEL_EXPORTER_OTLP_(TRACES_)TIMEOUT` when unset, else 10s.
    pub timeout: Option<HumanDuration>,
    /// `none` or `gzip`; `OTEL_EXPORTER_OTLP_(TRACES_)COMPRESSION` when unset, else `none`.
    pub compression: Option<OtlpCompression>,
    /// PEM file of the certificate authorities trusted for an `https://` collector, instead of
    /// the system's; `OTEL_EXPORTER_OTLP_(TRACES_)CERTIFICATE` when unset.
    #[serde(deserialize_with = "optional_non_empty")]
    pub certificate: Option<String>,
    /// PEM file of the certificate darklight presents to the collector (mutual TLS);
    /// `OTEL_EXPORTER_OTLP_(TRACES_)CLIENT_CERTIFICATE` when unset. Needs `client_key`.
    #[serde(deserialize_with = "optional_non_empty")]
    pub client_certificate: Option<String>,
    /// PEM file of that certificate's private key;
    /// `OTEL_EXPORTER_OTLP_(TRACES_)CLIENT_KEY` when unset.
    #[serde(deserialize_with = "optional_non_empty")]
    pub client_key: Option<String>,
}

/// A sampler, named as in `OTEL_TRACES_SAMPLER`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SamplerKind {
    /// Record every trace.
    AlwaysOn,
    /// Record nothing.
    AlwaysOff,
    /// Record a ratio of traces, by trace id.
    #[serde(rename = "traceidratio")]
    TraceIdRatio,
    /// Follow the client's sampled flag; record every new trace.
    #[serde(rename = "parentbased_always_on")]
    ParentBasedAlwaysOn,
    /// Follow the client's sampled flag; record no new trace.
    #[serde(rename = "parentbased_always_off")]
    ParentBasedAlwaysOff,
    /// Follow the client's sampled flag; record a ratio of new traces.
    #[serde(rename = "parentbased_traceidratio")]
    ParentBasedTraceIdRatio,
}

impl SamplerKind {
    /// Parses an `OTEL_TRACES_SAMPLER` value.
    pub fn parse(text: &str) -> Option<SamplerKind> {
        Some(match text.trim() {
            "always_on" => SamplerKind::AlwaysOn,
            "always_off" => SamplerKind::AlwaysOff,
            "traceidratio" => SamplerKind::TraceIdRatio,
            "parentbased_always_on" => SamplerKind::ParentBasedAlwaysOn,
            "parentbased_always_off" => SamplerKind::ParentBasedAlwaysOff,
            "parentbased_traceidratio" => SamplerKind::ParentBasedTraceIdRatio,
            _ => return None,
        })
    }

    /// The name used in the configuration and in `OTEL_TRACES_SAMPLER`.
    pub fn as_str(self) -> &'static str {
        match self {
            SamplerKind::AlwaysOn => "always_on",
            SamplerKind::AlwaysOff => "always_off",
            SamplerKind::TraceIdRatio => "traceidratio",
            SamplerKind::ParentBasedAlwaysOn => "parentbased_always_on",
            SamplerKind::ParentBasedAlwaysOff => "parentbased_always_off",
            SamplerKind::ParentBasedTraceIdRatio => "parentbased_traceidratio",
        }
    }

    /// True for the samplers that take a ratio.
    pub fn uses_ratio(self) -> bool {
        matches!(
            self,
            SamplerKind::TraceIdRatio | SamplerKind::ParentBasedTraceIdRatio
        )
    }
}

/// What darklight does with W3C `traceparent`/`tracestate` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TraceContextMode {
    /// Continue the client's trace and send darklight's span to the upstream as the parent.
    #[default]
    Continue,
    /// Start a new trace whatever the client sent; the upstream gets darklight's span (the
    /// client's headers are replaced). For edges facing untrusted clients.
    Inject,
    /// Continue the client's trace; forward the client's headers to the upstream unchanged.
    Extract,
    /// Start a new trace; forward the client's headers unchanged.
    Ignore,
}

impl TraceContextMode {
    /// The client's `traceparent` becomes the parent of darklight's span.
    pub fn extracts(self) -> bool {
        matches!(self, TraceContextMode::Continue | TraceContextMode::Extract)
    }

    /// The upstream request carries darklight's span context instead of the client's.
    pub fn injects(self) -> bool {
        matches!(self, TraceContextMode::Continue | TraceContextMode::Inject)
    }
}

/// Optional span attributes, off where they can carry personal data.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AttributeConfig {
    /// Record `url.query` (campaign parameters are recorded as `darklight.campaign.*` anyway).
    pub url_query: bool,
    /// Record `client.address`: `off`, `truncated` (IPv4 /24, IPv6 /48) or `full`.
    pub client_address: ClientAddressMode,
}

/// How much of the client's IP address spans carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAddressMode {
    /// No `client.address`.
    #[default]
    Off,
    /// The network only: IPv4 /24 (`203.0.113.0`), IPv6 /48 (`2001:db8:1::`).
    Truncated,
    /// The whole address.
    Full,
}

/// The export queue between requests and the exporter.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default, try_from = "RawBatchConfig")]
pub struct BatchConfig {
    /// Spans waiting for export; when full, new spans are dropped (and counted).
    pub max_queue_size: usize,
    /// Most spans in one export.
    pub max_export_batch_size: usize,
    /// Longest wait before a partial batch is exported.
    pub scheduled_delay: HumanDuration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_queue_size: 2048,
            max_export_batch_size: 512,
            scheduled_delay: HumanDuration(Duration::from_secs(5)),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBatchConfig {
    #[serde(default)]
    max_queue_size: Option<usize>,
    #[serde(default)]
    max_export_batch_size: Option<usize>,
    #[serde(default)]
    scheduled_delay: Option<HumanDuration>,
}

impl TryFrom<RawBatchConfig> for BatchConfig {
    type Error = String;

    fn try_from(raw: RawBatchConfig) -> Result<BatchConfig, String> {
        let defaults = BatchConfig::default();
        let batch = BatchConfig {
            max_queue_size: raw.max_queue_size.unwrap_or(defaults.max_queue_size),
            max_export_batch_size: raw
                .max_export_batch_size
                .unwrap_or(defaults.max_export_batch_size),
            scheduled_delay: raw.scheduled_delay.unwrap_or(defaults.scheduled_delay),
        };
        if batch.max_queue_size == 0 || batch.max_export_batch_size == 0 {
            return Err("`max_queue_size` and `max_export_batch_size` must be at least 1".into());
        }
        if batch.max_export_batch_size > batch.max_queue_size {
            return Err(format!(
                "`max_export_batch_size` ({}) cannot be larger than `max_queue_size` ({})",
                batch.max_export_batch_size, batch.max_queue_size
            ));
        }
        if batch.scheduled_delay.0.is_zero() {
            return Err("`scheduled_delay` must be longer than 0s".into());
        }
        Ok(batch)
    }
}

/// One entry of a site's `routes:`: a path pattern and the low-cardinality route it stands for.
///
/// Written as a pattern alone (`/articles/**`, the route is then the pattern as written) or as
/// `{path: "re:^/\d{4}/", name: "/{year}/"}`.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteConfig {
    /// Which paths belong to the route (glob or `re:` regex, as in `shallow_paths`).
    pub path: PathPattern,
    /// The route, used in the span name and `http.route`.
    pub name: String,
}

impl<'de> Deserialize<'de> for RouteConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Written {
            path: PathPattern,
            #[serde(default)]
            name: Option<String>,
        }

        struct RouteVisitor;
        impl<'de> Visitor<'de> for RouteVisitor {
            type Value = RouteConfig;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a path pattern such as `/articles/*` or a mapping with `path` and `name`",
                )
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<RouteConfig, E> {
                let path: PathPattern = value.parse().map_err(E::custom)?;
                Ok(RouteConfig {
                    name: path.as_str().to_string(),
                    path,
                })
            }
            fn visit_map<M: de::MapAccess<'de>>(self, map: M) -> Result<RouteConfig, M::Error> {
                let written = Written::deserialize(de::value::MapAccessDeserializer::new(map))?;
                let name = match written.name {
                    Some(name) if name.trim().is_empty() => {
                        return Err(de::Error::custom("a route `name` cannot be empty"));
                    }
                    Some(name) => name,
                    None => written.path.as_str().to_string(),
                };
                Ok(RouteConfig {
                    path: written.path,
                    name,
                })
            }
        }
        deserializer.deserialize_any(RouteVisitor)
    }
}

fn optional_non_empty<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    let value = Option::<String>::deserialize(deserializer)?;
    match value {
        Some(text) if text.trim().is_empty() => {
            Err(de::Error::custom("this value cannot be empty"))
        }
        other => Ok(other),
    }
}

fn optional_ratio<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<f64>, D::Error> {
    let value = Option::<f64>::deserialize(deserializer)?;
    if let Some(ratio) = value {
        check_ratio(ratio).map_err(de::Error::custom)?;
    }
    Ok(value)
}

/// Checks a sampling ratio: a number from 0 to 1.
pub(crate) fn check_ratio(ratio: f64) -> Result<f64, String> {
    if (0.0..=1.0).contains(&ratio) {
        Ok(ratio)
    } else {
        Err(format!(
            "invalid sampler ratio `{ratio}`: use a number from 0 to 1, such as 0.1"
        ))
    }
}

fn optional_endpoint<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    let value = Option::<String>::deserialize(deserializer)?;
    match value {
        Some(text) => check_endpoint(&text).map(Some).map_err(de::Error::custom),
        None => Ok(None),
    }
}

/// Checks a collector URL: `http://` or `https://`, a host, no query.
pub(crate) fn check_endpoint(text: &str) -> Result<String, String> {
    let trimmed = text.trim();
    let parsed = url::Url::parse(trimmed).map_err(|e| {
        format!("invalid endpoint `{text}`: {e} (expected a URL such as `http://127.0.0.1:4317`)")
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "invalid endpoint `{text}`: scheme `{}` is not supported (use http or https)",
            parsed.scheme()
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty)
        || parsed.query().is_some()
        || parsed.fragment().is_some()
    {
        return Err(format!(
            "invalid endpoint `{text}`: expected a URL such as `http://127.0.0.1:4317`"
        ));
    }
    Ok(trimmed.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_context_modes() {
        let cases = [
            (TraceContextMode::Continue, true, true),
            (TraceContextMode::Inject, false, true),
            (TraceContextMode::Extract, true, false),
            (TraceContextMode::Ignore, false, false),
        ];
        for (mode, extracts, injects) in cases {
            assert_eq!(mode.extracts(), extracts, "{mode:?}");
            assert_eq!(mode.injects(), injects, "{mode:?}");
        }
    }

    #[test]
    fn sampler_names_round_trip() {
        for name in [
            "always_on",
            "always_off",
            "traceidratio",
            "parentbased_always_on",
            "parentbased_always_off",
            "parentbased_traceidratio",
        ] {
            let parsed = SamplerKind::parse(name).unwrap_or_else(|| panic!("{name}"));
            assert_eq!(parsed.as_str(), name);
        }
        assert_eq!(SamplerKind::parse("jaeger_remote"), None);
    }

    fn config_error(telemetry: &str) -> String {
        let text = format!(
            "listen: [127.0.0.1:8080]\nsites:\n  - name: a\n    upstreams: [http://127.0.0.1:1]\ntelemetry:\n{telemetry}"
        );
        match crate::config::parse(&text, std::path::Path::new("test.yaml")) {
            Ok(_) => panic!("expected an error for:\n{text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn errors_carry_line_and_column() {
        let cases = [
            (
                "  sampler_ratio: 2\n",
                "test.yaml:6:3: telemetry: invalid sampler ratio `2`",
            ),
            (
                "  exporter: jaeger\n",
                "test.yaml:6:13: telemetry.exporter: unknown variant `jaeger`",
            ),
            (
                "  sampler: sometimes\n",
                "test.yaml:6:12: telemetry.sampler: unknown variant `sometimes`",
            ),
            (
                "  otlp:\n    endpoint: jaeger:4317\n",
                "test.yaml:7:5: telemetry.otlp: invalid endpoint `jaeger:4317`",
            ),
            (
                "  trace_context: both\n",
                "test.yaml:6:18: telemetry.trace_context: unknown variant `both`",
            ),
            (
                "  attributes: {client_address: half}\n",
                "test.yaml:6:32: telemetry.attributes.client_address: unknown variant `half`",
            ),
            (
                "  batch: {max_queue_size: 10, max_export_batch_size: 20}\n",
                "test.yaml:6:3: telemetry: `max_export_batch_size` (20) cannot be larger",
            ),
            (
                "  exporters: none\n",
                "test.yaml:6:3: telemetry: unknown field `exporters`",
            ),
        ];
        for (telemetry, expected) in cases {
            let message = config_error(telemetry);
            assert!(
                message.starts_with(expected),
                "got: {message}\nwant: {expected}"
            );
        }
    }

    #[test]
    fn full_section_parses() {
        let text = "listen: [127.0.0.1:8080]\nsites:\n  - name: a\n    upstreams: [http://127.0.0.1:1]\n    routes: [/articles/*, {path: '/tag/**', name: '/tag/{name}'}]\ntelemetry:\n  enabled: true\n  exporter: otlp\n  otlp: {protocol: http, endpoint: 'http://c:4318', timeout: 2s}\n  service_name: edge\n  environment: production\n  resource: {team: growth}\n  sampler: parentbased_traceidratio\n  sampler_ratio: 0.25\n  trace_context: inject\n  attributes: {url_query: true, client_address: truncated}\n  batch: {max_queue_size: 100, max_export_batch_size: 10, scheduled_delay: 1s}\n";
        let config = crate::config::parse(text, std::path::Path::new("test.yaml"))
            .unwrap_or_else(|e| panic!("{e}"));
        let telemetry = &config.telemetry;
        assert!(telemetry.enabled);
        assert_eq!(telemetry.otlp.protocol, Some(OtlpProtocol::Http));
        assert_eq!(
            telemetry.sampler,
            Some(SamplerKind::ParentBasedTraceIdRatio)
        );
        assert_eq!(telemetry.trace_context, TraceContextMode::Inject);
        assert_eq!(
            telemetry.attributes.client_address,
            ClientAddressMode::Truncated
        );
        assert_eq!(telemetry.batch.max_queue_size, 100);
        assert_eq!(config.sites[0].routes.len(), 2);
        assert_eq!(config.sites[0].routes[1].name, "/tag/{name}");
        let defaults = TelemetryConfig::default();
        assert!(!defaults.enabled);
        assert_eq!(defaults.batch.max_queue_size, 2048);
        assert_eq!(defaults.trace_context, TraceContextMode::Continue);
    }

    #[test]
    fn endpoints() {
        assert!(check_endpoint("http://jaeger:4317").is_ok());
        assert!(check_endpoint("https://otel.example.com/v1/traces").is_ok());
        for bad in ["jaeger:4317", "ftp://x", "http://x/?q=1", ""] {
            assert!(check_endpoint(bad).is_err(), "{bad}");
        }
    }
}
