//! The effective telemetry settings: the `telemetry:` section completed by the standard
//! `OTEL_*` environment variables. Pure: the environment is passed in as a lookup function.
//!
//! # Precedence
//!
//! A value set in the YAML file wins; an unset one is taken from the environment; what neither
//! gives gets darklight's default.
//!
//! | setting | YAML | environment (first set wins) | default |
//! |---|---|---|---|
//! | exporter | `exporter` | `OTEL_TRACES_EXPORTER` (`otlp`, `console`, `none`) | `otlp` |
//! | protocol | `otlp.protocol` | `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`, `OTEL_EXPORTER_OTLP_PROTOCOL` (`grpc`, `http/protobuf`) | `grpc` |
//! | endpoint | `otlp.endpoint` | `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (as is), `OTEL_EXPORTER_OTLP_ENDPOINT` (a base: `/v1/traces` is appended for `http`) | `http://localhost:4317`, or `http://localhost:4318/v1/traces` |
//! | timeout | `otlp.timeout` | `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT`, `OTEL_EXPORTER_OTLP_TIMEOUT` (milliseconds) | 10 s |
//! | headers | — | `OTEL_EXPORTER_OTLP_TRACES_HEADERS`, `OTEL_EXPORTER_OTLP_HEADERS` (`key=value,…`, values percent-encoded) | none |
//! | certificate | `otlp.certificate` | `OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE`, `OTEL_EXPORTER_OTLP_CERTIFICATE` (a PEM file) | the system's roots |
//! | client identity | `otlp.client_certificate`, `otlp.client_key` | `OTEL_EXPORTER_OTLP_(TRACES_)CLIENT_CERTIFICATE`, `OTEL_EXPORTER_OTLP_(TRACES_)CLIENT_KEY` | none |
//! | compression | `otlp.compression` | `OTEL_EXPORTER_OTLP_TRACES_COMPRESSION`, `OTEL_EXPORTER_OTLP_COMPRESSION` (`none`, `gzip`) | `none` |
//! | sampler | `sampler` | `OTEL_TRACES_SAMPLER` | `parentbased_always_on` |
//! | ratio | `sampler_ratio` | `OTEL_TRACES_SAMPLER_ARG` | 1.0 |
//! | `service.name` | `service_name` | `OTEL_SERVICE_NAME`, then `service.name` in `OTEL_RESOURCE_ATTRIBUTES` | `darklight` |
//! | other resource attributes | `resource`, `environment` | `OTEL_RESOURCE_ATTRIBUTES` | `service.version`, `host.name` |
//!
//! For `http`, a YAML endpoint without a path (`http://collector:4318`) gets `/v1/traces`
//! appended; one with a path is used as written.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use super::config::{
    ExporterKind, OtlpCompression, OtlpProtocol, SamplerKind, TelemetryConfig, TraceContextMode,
    check_endpoint, check_ratio,
};

/// Default export timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the environment cannot complete the telemetry settings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SettingsError {
    /// An `OTEL_*` variable holds a value darklight cannot use.
    #[error("environment variable {name}={value:?}: {reason}")]
    Environment {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Only one half of a client identity (certificate and key) is set.
    #[error(
        "otlp: mutual TLS needs a client certificate and its key, but only the {present} is set \
         (otlp.client_certificate and otlp.client_key, or OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE \
         and OTEL_EXPORTER_OTLP_CLIENT_KEY)"
    )]
    HalfClientIdentity {
        /// `certificate` or `key`.
        present: &'static str,
    },
}

/// The exporter, fully resolved.
#[derive(Debug, Clone, PartialEq)]
pub enum ExporterSettings {
    /// OTLP to a collector.
    Otlp {
        /// gRPC or HTTP/protobuf.
        protocol: OtlpProtocol,
        /// The URL requests go to (for `http`, including `/v1/traces`).
        endpoint: String,
        /// The longest one export may take.
        timeout: Duration,
        /// Extra request headers (gRPC metadata), such as the collector's authentication.
        headers: CollectorHeaders,
        /// How request bodies are compressed.
        compression: OtlpCompression,
        /// The PEM files TLS uses for an `https://` collector.
        tls: TlsFiles,
    },
    /// JSON lines on standard output.
    Stdout,
    /// Nothing is exported.
    None,
}

/// Request headers for the collector: valid lower-case names and valid values, in the order
/// given. The values are usually credentials, so `Debug` shows the names only.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct CollectorHeaders(pub Vec<(String, String)>);

impl fmt::Debug for CollectorHeaders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(name, _)| (name, "(hidden)")))
            .finish()
    }
}

/// PEM files for TLS to the collector; read when the exporter is built. Unused for an
/// `http://` endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate authorities trusted instead of the system's.
    pub certificate: Option<PathBuf>,
    /// The client certificate and its private key, presented for mutual TLS.
    pub client_identity: Option<ClientIdentity>,
}

/// A client certificate and its private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// PEM certificate chain, the leaf first.
    pub certificate: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// The sampler, fully resolved.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplerSettings {
    /// Which sampler.
    pub kind: SamplerKind,
    /// Its ratio (used by the `traceidratio` kinds only).
    pub ratio: f64,
}

/// Everything telemetry is built from.
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetrySettings {
    /// Where spans go.
    pub exporter: ExporterSettings,
    /// Which traces are recorded.
    pub sampler: SamplerSettings,
    /// Resource attributes, `service.name` first, without duplicate keys.
    pub resource: Vec<(String, String)>,
    /// W3C trace context handling.
    pub trace_context: TraceContextMode,
}

impl TelemetrySettings {
    /// The `service.name` resource attribute.
    pub fn service_name(&self) -> &str {
        self.resource
            .iter()
            .find(|(k, _)| k == "service.name")
            .map_or("darklight", |(_, v)| v.as_str())
    }
}

/// Completes `config` from the environment (`env` looks a variable up) and the machine's
/// host name.
pub fn resolve(
    config: &TelemetryConfig,
    env: impl Fn(&str) -> Option<String>,
    host_name: Option<&str>,
) -> Result<TelemetrySettings, SettingsError> {
    let var = |name: &str| {
        env(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };

    let exporter_kind = match config.exporter {
        Some(kind) => kind,
        None => match var("OTEL_TRACES_EXPORTER") {
            None => ExporterKind::Otlp,
            Some(value) => match value.as_str() {
                "otlp" => ExporterKind::Otlp,
                "console" | "stdout" => ExporterKind::Stdout,
                "none" => ExporterKind::None,
                _ => {
                    return Err(invalid(
                        "OTEL_TRACES_EXPORTER",
                        value,
                        "use otlp, console or none",
                    ));
                }
            },
        },
    };

    let exporter = match exporter_kind {
        ExporterKind::Stdout => ExporterSettings::Stdout,
        ExporterKind::None => ExporterSettings::None,
        ExporterKind::Otlp => {
            let protocol = match config.otlp.protocol {
                Some(protocol) => protocol,
                None => first_var(
                    &var,
                    &[
                        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
                        "OTEL_EXPORTER_OTLP_PROTOCOL",
                    ],
                )
                .map(|(name, value)| match value.as_str() {
                    "grpc" => Ok(OtlpProtocol::Grpc),
                    "http/protobuf" | "http" => Ok(OtlpProtocol::Http),
                    _ => Err(invalid(name, value, "use grpc or http/protobuf")),
                })
                .transpose()?
                .unwrap_or(OtlpProtocol::Grpc),
            };
            let endpoint = resolve_endpoint(config, protocol, &var)?;
            let timeout = match config.otlp.timeout {
                Some(timeout) => timeout.0,
                None => first_var(
                    &var,
                    &[
                        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
                        "OTEL_EXPORTER_OTLP_TIMEOUT",
                    ],
                )
                .map(|(name, value)| {
                    value
                        .parse::<u64>()
                        .map(Duration::from_millis)
                        .map_err(|_| invalid(name, value, "use a number of milliseconds"))
                })
                .transpose()?
                .unwrap_or(DEFAULT_TIMEOUT),
            };
            let headers = first_var(
                &var,
                &[
                    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
                    "OTEL_EXPORTER_OTLP_HEADERS",
                ],
            )
            .map(|(name, value)| parse_headers(name, value).map(CollectorHeaders))
            .transpose()?
            .unwrap_or_default();
            let compression = match config.otlp.compression {
                Some(compression) => compression,
                None => first_var(
                    &var,
                    &[
                        "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
                        "OTEL_EXPORTER_OTLP_COMPRESSION",
                    ],
                )
                .map(|(name, value)| {
                    OtlpCompression::parse(&value)
                        .ok_or_else(|| invalid(name, value, "use none or gzip"))
                })
                .transpose()?
                .unwrap_or_default(),
            };
            ExporterSettings::Otlp {
                protocol,
                endpoint,
                timeout,
                headers,
                compression,
                tls: resolve_tls(config, &var)?,
            }
        }
    };

    let sampler = resolve_sampler(config, &var)?;
    let resource = resolve_resource(config, &var, host_name);
    Ok(TelemetrySettings {
        exporter,
        sampler,
        resource,
        trace_context: config.trace_context,
    })
}

fn invalid(name: &'static str, value: String, reason: &str) -> SettingsError {
    SettingsError::Environment {
        name,
        value,
        reason: reason.to_string(),
    }
}

fn first_var(
    var: &impl Fn(&str) -> Option<String>,
    names: &[&'static str],
) -> Option<(&'static str, String)> {
    names
        .iter()
        .find_map(|name| var(name).map(|value| (*name, value)))
}

/// A file setting from the YAML, else from the first of `names` set in the environment.
fn file_setting(
    yaml: Option<&String>,
    var: &impl Fn(&str) -> Option<String>,
    names: &[&'static str],
) -> Option<PathBuf> {
    yaml.cloned()
        .or_else(|| first_var(var, names).map(|(_, value)| value))
        .map(PathBuf::from)
}

fn resolve_tls(
    config: &TelemetryConfig,
    var: &impl Fn(&str) -> Option<String>,
) -> Result<TlsFiles, SettingsError> {
    let otlp = &config.otlp;
    let certificate = file_setting(
        otlp.certificate.as_ref(),
        var,
        &[
            "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
            "OTEL_EXPORTER_OTLP_CERTIFICATE",
        ],
    );
    let client_certificate = file_setting(
        otlp.client_certificate.as_ref(),
        var,
        &[
            "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE",
            "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
        ],
    );
    let client_key = file_setting(
        otlp.client_key.as_ref(),
        var,
        &[
            "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY",
            "OTEL_EXPORTER_OTLP_CLIENT_KEY",
        ],
    );
    let client_identity = match (client_certificate, client_key) {
        (Some(certificate), Some(key)) => Some(ClientIdentity { certificate, key }),
        (None, None) => None,
        (Some(_), None) => {
            return Err(SettingsError::HalfClientIdentity {
                present: "certificate",
            });
        }
        (None, Some(_)) => return Err(SettingsError::HalfClientIdentity { present: "key" }),
    };
    Ok(TlsFiles {
        certificate,
        client_identity,
    })
}

fn resolve_endpoint(
    config: &TelemetryConfig,
    protocol: OtlpProtocol,
    var: &impl Fn(&str) -> Option<String>,
) -> Result<String, SettingsError> {
    if let Some(endpoint) = &config.otlp.endpoint {
        return Ok(match protocol {
            OtlpProtocol::Grpc => endpoint.clone(),
            OtlpProtocol::Http => with_traces_path(endpoint, false),
        });
    }
    if let Some(value) = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
        return check_endpoint(&value)
            .map_err(|reason| invalid("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", value, &reason));
    }
    if let Some(value) = var("OTEL_EXPORTER_OTLP_ENDPOINT") {
        let base = check_endpoint(&value)
            .map_err(|reason| invalid("OTEL_EXPORTER_OTLP_ENDPOINT", value, &reason))?;
        return Ok(match protocol {
            OtlpProtocol::Grpc => base,
            OtlpProtocol::Http => with_traces_path(&base, true),
        });
    }
    Ok(match protocol {
        OtlpProtocol::Grpc => "http://localhost:4317".to_string(),
        OtlpProtocol::Http => "http://localhost:4318/v1/traces".to_string(),
    })
}

/// Adds `/v1/traces` to an HTTP endpoint: always for a base URL, else only when it has no path.
fn with_traces_path(endpoint: &str, base: bool) -> String {
    let trimmed = endpoint.trim_end_matches('/');
    let has_path = url::Url::parse(endpoint).is_ok_and(|u| !matches!(u.path(), "" | "/"));
    if has_path && !base {
        endpoint.to_string()
    } else {
        format!("{trimmed}/v1/traces")
    }
}

fn resolve_sampler(
    config: &TelemetryConfig,
    var: &impl Fn(&str) -> Option<String>,
) -> Result<SamplerSettings, SettingsError> {
    let kind = match config.sampler {
        Some(kind) => kind,
        None => match var("OTEL_TRACES_SAMPLER") {
            None => SamplerKind::ParentBasedAlwaysOn,
            Some(value) => SamplerKind::parse(&value).ok_or_else(|| {
                invalid(
                    "OTEL_TRACES_SAMPLER",
                    value,
                    "use always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or parentbased_traceidratio",
                )
            })?,
        },
    };
    let ratio = match config.sampler_ratio {
        Some(ratio) => ratio,
        None if kind.uses_ratio() => match var("OTEL_TRACES_SAMPLER_ARG") {
            None => 1.0,
            Some(value) => value
                .parse::<f64>()
                .map_err(|e| e.to_string())
                .and_then(check_ratio)
                .map_err(|reason| invalid("OTEL_TRACES_SAMPLER_ARG", value, &reason))?,
        },
        None => 1.0,
    };
    Ok(SamplerSettings { kind, ratio })
}

fn resolve_resource(
    config: &TelemetryConfig,
    var: &impl Fn(&str) -> Option<String>,
    host_name: Option<&str>,
) -> Vec<(String, String)> {
    let mut attributes: Vec<(String, String)> = Vec::new();
    let mut set = |key: &str, value: String| match attributes.iter_mut().find(|(k, _)| k == key) {
        Some(slot) => slot.1 = value,
        None => attributes.push((key.to_string(), value)),
    };
    set("service.name", "darklight".to_string());
    set("service.version", env!("CARGO_PKG_VERSION").to_string());
    if let Some(host) = host_name.filter(|h| !h.is_empty()) {
        set("host.name", host.to_string());
    }
    if let Some(text) = var("OTEL_RESOURCE_ATTRIBUTES") {
        for (key, value) in parse_resource_attributes(&text) {
            set(&key, value);
        }
    }
    if let Some(name) = var("OTEL_SERVICE_NAME") {
        set("service.name", name);
    }
    for (key, value) in &config.resource {
        set(key, value.clone());
    }
    if let Some(environment) = &config.environment {
        set("deployment.environment.name", environment.clone());
    }
    if let Some(name) = &config.service_name {
        set("service.name", name.clone());
    }
    attributes
}

/// Parses `OTEL_RESOURCE_ATTRIBUTES`: `key=value` pairs separated by commas, values
/// percent-decoded; malformed pairs are skipped.
pub fn parse_resource_attributes(text: &str) -> Vec<(String, String)> {
    text.split(',')
        .filter_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            let key = key.trim();
            if key.is_empty() {
                return None;
            }
            let value = percent_decode(value.trim())?;
            Some((key.to_string(), value))
        })
        .collect()
}

/// Parses an `OTEL_EXPORTER_OTLP_HEADERS` value: `key=value` pairs separated by commas, values
/// percent-decoded. Unlike resource attributes, a malformed pair is an error: a header left out
/// (the collector's credentials, usually) would fail every export.
fn parse_headers(name: &'static str, text: String) -> Result<Vec<(String, String)>, SettingsError> {
    let mut headers = Vec::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let parsed = pair.split_once('=').and_then(|(key, value)| {
            let key = http::HeaderName::from_bytes(key.trim().as_bytes()).ok()?;
            let value = percent_decode(value.trim())?;
            http::HeaderValue::from_str(&value).ok()?;
            Some((key.as_str().to_string(), value))
        });
        match parsed {
            Some(header) => headers.push(header),
            None => {
                let reason = format!(
                    "{:?} is not a valid key=value header (values percent-encoded)",
                    pair.split_once('=').map_or(pair, |(key, _)| key)
                );
                // The value is not repeated: it may hold credentials.
                return Err(invalid(name, "(not shown)".to_string(), &reason));
            }
        }
    }
    Ok(headers)
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn parse(yaml: &str) -> TelemetryConfig {
        serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("{e}"))
    }

    fn with_env(
        config: &TelemetryConfig,
        vars: &[(&str, &str)],
    ) -> Result<TelemetrySettings, SettingsError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        resolve(config, |name| map.get(name).cloned(), Some("edge-1"))
    }

    fn attribute<'a>(settings: &'a TelemetrySettings, key: &str) -> Option<&'a str> {
        settings
            .resource
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn defaults_without_environment() {
        let settings = with_env(&parse("enabled: true"), &[]).unwrap();
        assert_eq!(
            settings.exporter,
            ExporterSettings::Otlp {
                protocol: OtlpProtocol::Grpc,
                endpoint: "http://localhost:4317".into(),
                timeout: DEFAULT_TIMEOUT,
                headers: CollectorHeaders::default(),
                compression: OtlpCompression::None,
                tls: TlsFiles::default(),
            }
        );
        assert_eq!(settings.sampler.kind, SamplerKind::ParentBasedAlwaysOn);
        assert_eq!(settings.service_name(), "darklight");
        assert_eq!(attribute(&settings, "host.name"), Some("edge-1"));
        assert_eq!(
            attribute(&settings, "service.version"),
            Some(env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(settings.trace_context, TraceContextMode::Continue);
    }

    fn tls(settings: &TelemetrySettings) -> &TlsFiles {
        match &settings.exporter {
            ExporterSettings::Otlp { tls, .. } => tls,
            other => panic!("not OTLP: {other:?}"),
        }
    }

    #[test]
    fn tls_files_precedence() {
        let identity = |certificate: &str, key: &str| {
            Some(ClientIdentity {
                certificate: certificate.into(),
                key: key.into(),
            })
        };
        // (YAML, environment, trusted certificate, client identity)
        type Case<'a> = (
            &'a str,
            &'a [(&'a str, &'a str)],
            Option<&'a str>,
            Option<ClientIdentity>,
        );
        let cases: Vec<Case<'_>> = vec![
            ("{}", &[], None, None),
            (
                "otlp: {certificate: /etc/yaml-ca.pem}",
                &[("OTEL_EXPORTER_OTLP_CERTIFICATE", "/env/ca.pem")],
                Some("/etc/yaml-ca.pem"),
                None,
            ),
            (
                "{}",
                &[
                    ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/env/ca.pem"),
                    (
                        "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
                        "/env/traces-ca.pem",
                    ),
                ],
                Some("/env/traces-ca.pem"),
                None,
            ),
            (
                "otlp: {client_certificate: /y/c.pem, client_key: /y/k.pem}",
                &[],
                None,
                identity("/y/c.pem", "/y/k.pem"),
            ),
            // Each half may come from its own place.
            (
                "otlp: {client_certificate: /y/c.pem}",
                &[
                    ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", "/env/c.pem"),
                    ("OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY", "/env/k.pem"),
                    ("OTEL_EXPORTER_OTLP_CLIENT_KEY", "/env/other-k.pem"),
                ],
                None,
                identity("/y/c.pem", "/env/k.pem"),
            ),
            // Blank variables are unset.
            (
                "{}",
                &[("OTEL_EXPORTER_OTLP_CERTIFICATE", "  ")],
                None,
                None,
            ),
        ];
        for (yaml, env, certificate, identity) in cases {
            let settings = with_env(&parse(yaml), env).unwrap_or_else(|e| panic!("{yaml}: {e}"));
            let files = tls(&settings);
            assert_eq!(
                files.certificate.as_deref(),
                certificate.map(std::path::Path::new),
                "{yaml} {env:?}"
            );
            assert_eq!(files.client_identity, identity, "{yaml} {env:?}");
        }
    }

    #[test]
    fn half_a_client_identity_is_refused() {
        for (yaml, env, present) in [
            ("otlp: {client_certificate: /c.pem}", &[][..], "certificate"),
            (
                "{}",
                &[("OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY", "/k.pem")][..],
                "key",
            ),
        ] {
            let error = with_env(&parse(yaml), env).unwrap_err();
            assert_eq!(error, SettingsError::HalfClientIdentity { present });
            assert!(
                error
                    .to_string()
                    .contains(&format!("only the {present} is set")),
                "{error}"
            );
        }
        let empty = serde_yaml::from_str::<TelemetryConfig>("otlp: {certificate: ''}");
        assert!(empty.is_err(), "an empty path is refused while parsing");
    }

    /// (YAML, environment, expected exporter)
    type EndpointCase<'a> = (&'a str, &'a [(&'a str, &'a str)], ExporterSettings);

    #[test]
    fn exporter_precedence() {
        let otlp = |protocol, endpoint: &str, ms| ExporterSettings::Otlp {
            protocol,
            endpoint: endpoint.to_string(),
            timeout: Duration::from_millis(ms),
            headers: CollectorHeaders::default(),
            compression: OtlpCompression::None,
            tls: TlsFiles::default(),
        };
        let cases: Vec<EndpointCase<'_>> = vec![
            (
                "otlp: {endpoint: 'http://yaml:4317'}",
                &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4317")],
                otlp(OtlpProtocol::Grpc, "http://yaml:4317", 10_000),
            ),
            (
                "{}",
                &[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://base:4317"),
                    ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
                ],
                otlp(OtlpProtocol::Grpc, "http://base:4317", 2500),
            ),
            (
                "{}",
                &[
                    ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://base:4318/"),
                ],
                otlp(OtlpProtocol::Http, "http://base:4318/v1/traces", 10_000),
            ),
            (
                "{}",
                &[
                    ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://base:4318"),
                    ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:4318/custom"),
                ],
                otlp(OtlpProtocol::Http, "http://t:4318/custom", 10_000),
            ),
            (
                "otlp: {protocol: http, endpoint: 'http://c:4318', timeout: 3s}",
                &[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")],
                otlp(OtlpProtocol::Http, "http://c:4318/v1/traces", 3000),
            ),
            (
                "otlp: {protocol: http}",
                &[],
                otlp(
                    OtlpProtocol::Http,
                    "http://localhost:4318/v1/traces",
                    10_000,
                ),
            ),
            (
                "{}",
                &[("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf")],
                otlp(
                    OtlpProtocol::Http,
                    "http://localhost:4318/v1/traces",
                    10_000,
                ),
            ),
            (
                "{}",
                &[("OTEL_TRACES_EXPORTER", "console")],
                ExporterSettings::Stdout,
            ),
            (
                "exporter: none",
                &[("OTEL_TRACES_EXPORTER", "otlp")],
                ExporterSettings::None,
            ),
        ];
        for (yaml, env, expected) in cases {
            let settings = with_env(&parse(yaml), env).unwrap_or_else(|e| panic!("{yaml}: {e}"));
            assert_eq!(settings.exporter, expected, "{yaml} {env:?}");
        }
    }

    /// (YAML, environment, expected sampler, expected ratio)
    type SamplerCase<'a> = (&'a str, &'a [(&'a str, &'a str)], SamplerKind, f64);

    #[test]
    fn sampler_precedence() {
        let cases: [SamplerCase<'_>; 5] = [
            ("{}", &[], SamplerKind::ParentBasedAlwaysOn, 1.0),
            (
                "{}",
                &[
                    ("OTEL_TRACES_SAMPLER", "traceidratio"),
                    ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
                ],
                SamplerKind::TraceIdRatio,
                0.25,
            ),
            (
                "sampler: parentbased_traceidratio",
                &[
                    ("OTEL_TRACES_SAMPLER", "always_off"),
                    ("OTEL_TRACES_SAMPLER_ARG", "0.5"),
                ],
                SamplerKind::ParentBasedTraceIdRatio,
                0.5,
            ),
            (
                "{sampler: traceidratio, sampler_ratio: 0.1}",
                &[("OTEL_TRACES_SAMPLER_ARG", "0.9")],
                SamplerKind::TraceIdRatio,
                0.1,
            ),
            (
                "{}",
                &[("OTEL_TRACES_SAMPLER", "always_off")],
                SamplerKind::AlwaysOff,
                1.0,
            ),
        ];
        for (yaml, env, kind, ratio) in cases {
            let settings = with_env(&parse(yaml), env).unwrap_or_else(|e| panic!("{yaml}: {e}"));
            assert_eq!(settings.sampler.kind, kind, "{yaml} {env:?}");
            assert!(
                (settings.sampler.ratio - ratio).abs() < 1e-9,
                "{yaml} {env:?}"
            );
        }
    }

    fn headers_of(env: &[(&str, &str)]) -> Result<Vec<(String, String)>, SettingsError> {
        with_env(&TelemetryConfig::default(), env).map(|s| match s.exporter {
            ExporterSettings::Otlp { headers, .. } => headers.0,
            other => panic!("not OTLP: {other:?}"),
        })
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn collector_headers_from_the_environment() {
        assert_eq!(headers_of(&[]).unwrap(), vec![]);
        assert_eq!(
            headers_of(&[(
                "OTEL_EXPORTER_OTLP_HEADERS",
                "Authorization=Bearer%20t0k3n, x-scope-orgid = tenant-1 ,"
            )])
            .unwrap(),
            pairs(&[
                ("authorization", "Bearer t0k3n"),
                ("x-scope-orgid", "tenant-1")
            ])
        );
        // The traces variable wins over the general one.
        assert_eq!(
            headers_of(&[
                ("OTEL_EXPORTER_OTLP_HEADERS", "a=1"),
                ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "b=2"),
            ])
            .unwrap(),
            pairs(&[("b", "2")])
        );
        // A value may hold '=' (base64).
        assert_eq!(
            headers_of(&[("OTEL_EXPORTER_OTLP_HEADERS", "api-key=YWJj==")]).unwrap(),
            pairs(&[("api-key", "YWJj==")])
        );
    }

    #[test]
    fn debug_output_hides_header_values() {
        let settings = with_env(
            &TelemetryConfig::default(),
            &[(
                "OTEL_EXPORTER_OTLP_HEADERS",
                "authorization=Bearer%20s3cr3t",
            )],
        )
        .unwrap();
        let shown = format!("{settings:?}");
        assert!(shown.contains("authorization"), "{shown}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
    }

    #[test]
    fn malformed_headers_are_errors_that_hide_the_value() {
        for value in [
            "authorization",
            "bad name=secret",
            "key=line%0Abreak",
            "key=%ZZsecret",
        ] {
            let error = headers_of(&[("OTEL_EXPORTER_OTLP_HEADERS", value)])
                .err()
                .unwrap_or_else(|| panic!("{value:?} should be refused"))
                .to_string();
            assert!(error.contains("OTEL_EXPORTER_OTLP_HEADERS"), "{error}");
            assert!(
                !error.contains("secret") && !error.contains("break"),
                "{error}"
            );
        }
    }

    #[test]
    fn compression_precedence() {
        let compression = |yaml: &str, env: &[(&str, &str)]| match with_env(&parse(yaml), env)
            .unwrap_or_else(|e| panic!("{yaml} {env:?}: {e}"))
            .exporter
        {
            ExporterSettings::Otlp { compression, .. } => compression,
            other => panic!("not OTLP: {other:?}"),
        };
        // (YAML, environment, expected)
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], OtlpCompression);
        let cases: [Case<'_>; 5] = [
            ("{}", &[], OtlpCompression::None),
            (
                "{}",
                &[("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")],
                OtlpCompression::Gzip,
            ),
            (
                "{}",
                &[
                    ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
                    ("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "none"),
                ],
                OtlpCompression::None,
            ),
            (
                "otlp: {compression: gzip}",
                &[("OTEL_EXPORTER_OTLP_COMPRESSION", "none")],
                OtlpCompression::Gzip,
            ),
            (
                "otlp: {compression: none}",
                &[("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "zstd")],
                OtlpCompression::None,
            ),
        ];
        for (yaml, env, expected) in cases {
            assert_eq!(compression(yaml, env), expected, "{yaml} {env:?}");
        }
        for (name, value) in [
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd"),
            ("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "GZIP!"),
        ] {
            let error = headers_of(&[(name, value)]).err().map(|e| e.to_string());
            assert!(
                error
                    .as_deref()
                    .is_some_and(|e| e.contains(name) && e.contains("use none or gzip")),
                "{error:?}"
            );
        }
        let bad = serde_yaml::from_str::<TelemetryConfig>("otlp: {compression: zstd}");
        assert!(
            bad.is_err(),
            "an unknown compression is refused while parsing"
        );
    }

    #[test]
    fn bad_environment_values_are_errors() {
        let cases: [(&str, &str, &str); 5] = [
            ("OTEL_TRACES_SAMPLER", "sometimes", "OTEL_TRACES_SAMPLER"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json", "use grpc"),
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "collector:4317",
                "invalid endpoint",
            ),
            ("OTEL_TRACES_EXPORTER", "zipkin", "use otlp"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "10s", "milliseconds"),
        ];
        for (name, value, expected) in cases {
            let error = with_env(&TelemetryConfig::default(), &[(name, value)])
                .err()
                .unwrap_or_else(|| panic!("{name}={value} should be refused"))
                .to_string();
            assert!(error.contains(expected), "{error}");
        }
        let ratio = with_env(
            &parse("sampler: traceidratio"),
            &[("OTEL_TRACES_SAMPLER_ARG", "2")],
        );
        assert!(ratio.is_err());
    }

    #[test]
    fn resource_precedence() {
        let settings = with_env(
            &parse(
                "{service_name: edge, environment: staging, resource: {team: growth, host.name: pinned}}",
            ),
            &[
                (
                    "OTEL_RESOURCE_ATTRIBUTES",
                    "service.name=from-attrs,team=web,region=eu%2Dwest",
                ),
                ("OTEL_SERVICE_NAME", "from-env"),
            ],
        )
        .unwrap();
        assert_eq!(settings.service_name(), "edge");
        assert_eq!(attribute(&settings, "team"), Some("growth"));
        assert_eq!(attribute(&settings, "region"), Some("eu-west"));
        assert_eq!(attribute(&settings, "host.name"), Some("pinned"));
        assert_eq!(
            attribute(&settings, "deployment.environment.name"),
            Some("staging")
        );

        let env_only = with_env(
            &TelemetryConfig::default(),
            &[("OTEL_RESOURCE_ATTRIBUTES", "service.name=from-attrs")],
        )
        .unwrap();
        assert_eq!(env_only.service_name(), "from-attrs");
        let env_name = with_env(
            &TelemetryConfig::default(),
            &[
                ("OTEL_RESOURCE_ATTRIBUTES", "service.name=from-attrs"),
                ("OTEL_SERVICE_NAME", "from-env"),
            ],
        )
        .unwrap();
        assert_eq!(env_name.service_name(), "from-env");
    }

    #[test]
    fn resource_attribute_parsing() {
        assert_eq!(
            parse_resource_attributes("a=1, b = two%20words ,broken,=x,c=%zz"),
            vec![
                ("a".to_string(), "1".to_string()),
                ("b".to_string(), "two words".to_string())
            ]
        );
    }
}
