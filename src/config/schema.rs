//! The YAML schema, as sysadmins write it. Every struct refuses unknown keys.

use std::path::PathBuf;

use serde::Deserialize;

use super::values::{
    HostPattern, HumanDuration, ListenAddress, LogLevel, StringOrStruct, UpstreamUrl,
};
use crate::attribution::AttributionConfig;
use crate::classify::{ClassificationConfig, SiteClassificationConfig};
use crate::correlation::CorrelationConfig;
use crate::limits::LimitsConfig;
use crate::telemetry::RouteConfig;
pub use crate::telemetry::TelemetryConfig;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Addresses the proxy accepts clients on.
    #[serde(deserialize_with = "listeners")]
    pub listen: Vec<Listener>,
    /// Process-wide settings (threads, shutdown, forwarded headers).
    #[serde(default)]
    pub server: ServerSettings,
    /// Logging.
    #[serde(default)]
    pub log: LogSettings,
    /// Runs the built-in demo origin inside the darklight process.
    #[serde(default)]
    pub demo: Option<DemoSettings>,
    /// The sites darklight fronts, routed by `Host`.
    pub sites: Vec<SiteConfig>,
    /// Classification rules added to, or overriding, the built-in source database.
    #[serde(default)]
    pub classification: ClassificationConfig,
    /// What the application behind darklight receives.
    #[serde(default)]
    pub attribution: AttributionConfig,
    /// Span export.
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// Share-preview correlation.
    #[serde(default)]
    pub correlation: CorrelationConfig,
    /// Request size limits.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// The admin listener (preview counters, later metrics and status).
    #[serde(default)]
    pub admin: Option<AdminSettings>,
}

/// The admin listener: operator endpoints, never exposed to visitors.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    /// Where it listens; keep it on loopback or a private network.
    #[serde(default = "admin_listen")]
    pub listen: ListenAddress,
}

fn admin_listen() -> ListenAddress {
    ListenAddress(std::net::SocketAddr::from(([127, 0, 0, 1], 9090)))
}

fn listeners<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<Listener>, D::Error> {
    let entries = Vec::<StringOrStruct<Listener>>::deserialize(deserializer)?;
    if entries.is_empty() {
        return Err(serde::de::Error::custom(
            "`listen` needs at least one address, such as `0.0.0.0:8080`",
        ));
    }
    Ok(entries.into_iter().map(|e| e.0).collect())
}

/// One listening socket, plain TCP or TLS.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// `IP:port`.
    pub address: ListenAddress,
    /// Terminate TLS on this socket with these files.
    #[serde(default)]
    pub tls: Option<ListenerTls>,
}

impl From<ListenAddress> for Listener {
    fn from(address: ListenAddress) -> Self {
        Listener { address, tls: None }
    }
}

/// Certificates for a TLS listener (PEM files): `{cert, key}` for one, or `certificates:
/// [{cert, key}, …]` for several, chosen per connection by SNI.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "ListenerTlsFields")]
pub struct ListenerTls {
    /// Certificate and key pairs; the first also answers clients that send no known name.
    pub certificates: Vec<CertificateFiles>,
    /// Offer HTTP/2 to clients through ALPN.
    pub http2: bool,
}

/// One certificate chain and its private key.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateFiles {
    /// Certificate chain, PEM; its DNS names (subject alternative names) select it.
    pub cert: PathBuf,
    /// Private key, PEM.
    pub key: PathBuf,
}

/// `tls` as written, before the two forms are merged.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListenerTlsFields {
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    #[serde(default)]
    certificates: Vec<CertificateFiles>,
    #[serde(default = "yes")]
    http2: bool,
}

impl TryFrom<ListenerTlsFields> for ListenerTls {
    type Error = String;

    fn try_from(fields: ListenerTlsFields) -> Result<Self, Self::Error> {
        let mut certificates = match (fields.cert, fields.key) {
            (Some(cert), Some(key)) => vec![CertificateFiles { cert, key }],
            (None, None) => Vec::new(),
            _ => return Err("`tls` needs both `cert` and `key`".to_string()),
        };
        certificates.extend(fields.certificates);
        if certificates.is_empty() {
            return Err(
                "`tls` needs `cert` and `key`, or `certificates: [{cert, key}, …]`".to_string(),
            );
        }
        Ok(ListenerTls {
            certificates,
            http2: fields.http2,
        })
    }
}

/// Process-wide settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Worker threads for the proxy; 0 means one per CPU.
    pub threads: usize,
    /// How long in-flight requests may finish after SIGTERM before darklight stops.
    pub grace_period: HumanDuration,
    /// How long services may take to stop after the grace period.
    pub shutdown_timeout: HumanDuration,
    /// Keep `X-Forwarded-For`/`Forwarded` sent by the client and append to them. Only enable
    /// behind a trusted load balancer: otherwise clients can forge their address.
    pub trust_forwarded_headers: bool,
    /// Send header names upstream as the client spelled them (and darklight's own titled,
    /// `X-Forwarded-For`), at some cost per request; by default they go in lower case, as
    /// an HTTP/2 client sends them.
    pub preserve_header_case: bool,
    /// Idle upstream connections kept for reuse, across all upstreams.
    pub upstream_keepalive_pool: usize,
    /// Certificate authorities (PEM) trusted when verifying `https://` upstreams, instead of
    /// the system's roots: for origins behind a private CA.
    pub upstream_ca_file: Option<PathBuf>,
    /// Socket through which a new darklight (`run --upgrade`) takes the listeners over.
    pub upgrade_sock: PathBuf,
    /// Where the process id is written.
    pub pid_file: PathBuf,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            threads: 0,
            grace_period: HumanDuration(std::time::Duration::from_secs(10)),
            shutdown_timeout: HumanDuration(std::time::Duration::from_secs(5)),
            trust_forwarded_headers: false,
            preserve_header_case: false,
            upstream_keepalive_pool: 128,
            upstream_ca_file: None,
            upgrade_sock: PathBuf::from("/tmp/darklight-upgrade.sock"),
            pid_file: PathBuf::from("/tmp/darklight.pid"),
        }
    }
}

/// Logging settings; `RUST_LOG`, when set, wins over `level`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// Verbosity.
    pub level: LogLevel,
    /// Line format.
    pub format: LogFormat,
    /// One line per request, target `darklight::access`.
    pub access_log: bool,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            level: LogLevel::Info,
            format: LogFormat::Text,
            access_log: true,
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable `key=value` lines.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// The built-in demo origin.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoSettings {
    /// Where the demo origin listens; keep it on loopback.
    #[serde(default = "demo_listen")]
    pub listen: ListenAddress,
}

fn demo_listen() -> ListenAddress {
    ListenAddress(std::net::SocketAddr::from(([127, 0, 0, 1], 3000)))
}

/// One site: the hosts it answers for and where its requests go.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    /// A short name, used in logs and spans.
    pub name: String,
    /// Host names (`www.example.com`) and wildcards (`*.example.com`). A site with no hosts is
    /// the default site.
    #[serde(default)]
    pub hosts: Vec<HostPattern>,
    /// Serve requests whose `Host` matches no site. At most one site may be the default.
    #[serde(default)]
    pub default: bool,
    /// Origin servers, used round-robin.
    #[serde(deserialize_with = "upstreams")]
    pub upstreams: Vec<UpstreamUrl>,
    /// Active health checks; without them every upstream is always eligible.
    #[serde(default)]
    pub health_check: Option<HealthCheckConfig>,
    /// TLS settings for `https://` upstreams.
    #[serde(default)]
    pub upstream_tls: UpstreamTlsConfig,
    /// Upstream timeouts.
    #[serde(default)]
    pub timeouts: TimeoutConfig,
    /// Send the client's `Host` to the upstream (true) or the upstream's own host (false).
    #[serde(default = "yes")]
    pub preserve_host: bool,
    /// Site-specific classification: landing paths that are not deep links, and so on.
    #[serde(default)]
    pub classification: SiteClassificationConfig,
    /// Low-cardinality routes for span names (`GET /articles/*`), first match wins.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
}

fn upstreams<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<UpstreamUrl>, D::Error> {
    let list = Vec::<UpstreamUrl>::deserialize(deserializer)?;
    if list.is_empty() {
        return Err(serde::de::Error::custom(
            "`upstreams` needs at least one upstream, such as `http://127.0.0.1:3000`",
        ));
    }
    Ok(list)
}

fn yes() -> bool {
    true
}

/// Active health checking of a site's upstreams.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// `tcp` (connect only) or `http` (a GET that must answer 2xx).
    #[serde(default)]
    pub kind: HealthCheckKind,
    /// Time between checks.
    #[serde(default = "health_interval")]
    pub interval: HumanDuration,
    /// Path requested by `http` checks.
    #[serde(default = "health_path")]
    pub path: String,
    /// `Host` sent by `http` checks; defaults to the upstream host.
    #[serde(default)]
    pub host: Option<String>,
}

fn health_interval() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(5))
}

fn health_path() -> String {
    "/".to_string()
}

/// How an upstream is probed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthCheckKind {
    /// A TCP (or TLS) connection must succeed.
    #[default]
    Tcp,
    /// An HTTP GET must return a 2xx status.
    Http,
}

/// TLS towards `https://` upstreams.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamTlsConfig {
    /// SNI and certificate name to use; defaults to the upstream URL's host.
    pub sni: Option<String>,
    /// Verify the upstream certificate chain and host name.
    pub verify: bool,
}

impl Default for UpstreamTlsConfig {
    fn default() -> Self {
        UpstreamTlsConfig {
            sni: None,
            verify: true,
        }
    }
}

/// Upstream timeouts; a slow upstream gets a 504, a dead one a 502.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimeoutConfig {
    /// TCP (and TLS) connection establishment.
    pub connect: HumanDuration,
    /// Waiting for each read from the upstream, including the response header.
    pub read: HumanDuration,
    /// Waiting for each write to the upstream.
    pub write: HumanDuration,
    /// How long an idle kept-alive upstream connection is kept.
    pub idle: HumanDuration,
}

impl Default for TimeoutConfig {
    fn default() -> Self {
        let secs = |s| HumanDuration(std::time::Duration::from_secs(s));
        TimeoutConfig {
            connect: secs(5),
            read: secs(60),
            write: secs(60),
            idle: secs(60),
        }
    }
}
