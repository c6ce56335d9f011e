//! Prometheus metrics: counters and histograms on atomics, rendered in the text exposition
//! format 0.0.4 when `/metrics` is scraped.
//!
//! One [`Metrics`] value is shared (`Arc`) by the proxy, which records each finished request,
//! and the admin listener, which renders it. Recording a request costs a few relaxed atomic
//! additions and two hash lookups; it allocates only the first time a label combination is
//! seen. Label values are bounded: sites and sources come from tables filled from the
//! configuration (anything else is `other`), channels and status classes are fixed.
//!
//! Reload code reports to it with [`Metrics::describe`] (the new configuration) and
//! [`Metrics::config_reloaded`] (success or failure).

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use dashmap::DashMap;

use super::histogram::{CLASSIFICATION_BUCKETS_NANOS, Histogram, REQUEST_BUCKETS_NANOS};
use super::labels::LabelTable;
use super::status::ConfigSummary;
use super::traffic::{TrafficWindow, channel_slot, slot_name};
use crate::classify::Channel;
use crate::config::Config;
use crate::correlation::PreviewTable;
use crate::proxy::plugin::{Engine, unix_now};
use crate::proxy::tls::CertStore;
use crate::telemetry::ExportStats;

/// Most distinct site names labelled; more are counted as `other`.
const MAX_SITES: usize = 256;
/// Most distinct source names labelled; more are counted as `other`.
const MAX_SOURCES: usize = 1024;
/// `Content-Type` of the exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Status labels by class: no response written, then 1xx to 5xx.
const STATUS_CLASSES: [&str; 6] = ["none", "1xx", "2xx", "3xx", "4xx", "5xx"];

/// What went wrong talking to an upstream, as counted by `darklight_upstream_errors_total`.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamErrorKind {
    /// The upstream refused the connection.
    ConnectRefused,
    /// Connecting took longer than `timeouts.connect`.
    ConnectTimeout,
    /// The upstream did not answer within `timeouts.read`.
    ReadTimeout,
    /// Sending to the upstream took longer than `timeouts.write`.
    WriteTimeout,
    /// Every upstream of the site was unhealthy.
    NoHealthyUpstream,
    /// The TLS handshake with the upstream failed.
    Tls,
    /// The upstream closed the connection or answered something that is not HTTP.
    Protocol,
    /// Anything else on the upstream side.
    Other,
}

impl UpstreamErrorKind {
    /// Every kind, in label order.
    pub const ALL: [UpstreamErrorKind; 8] = [
        UpstreamErrorKind::ConnectRefused,
        UpstreamErrorKind::ConnectTimeout,
        UpstreamErrorKind::ReadTimeout,
        UpstreamErrorKind::WriteTimeout,
        UpstreamErrorKind::NoHealthyUpstream,
        UpstreamErrorKind::Tls,
        UpstreamErrorKind::Protocol,
        UpstreamErrorKind::Other,
    ];

    /// The `kind` label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            UpstreamErrorKind::ConnectRefused => "connect_refused",
            UpstreamErrorKind::ConnectTimeout => "connect_timeout",
            UpstreamErrorKind::ReadTimeout => "read_timeout",
            UpstreamErrorKind::WriteTimeout => "write_timeout",
            UpstreamErrorKind::NoHealthyUpstream => "no_healthy_upstream",
            UpstreamErrorKind::Tls => "tls",
            UpstreamErrorKind::Protocol => "protocol",
            UpstreamErrorKind::Other => "other",
        }
    }

    fn index(self) -> u32 {
        UpstreamErrorKind::ALL
            .iter()
            .position(|&k| k == self)
            .and_then(|i| u32::try_from(i).ok())
            .unwrap_or(0)
    }
}

/// One finished request, as the proxy saw it (borrowed: recording copies nothing).
#[derive(Debug, Clone, Copy)]
pub struct RequestRecord<'a> {
    /// The site that served it; `None` when no site claims the host.
    pub site: Option<&'a str>,
    /// Its channel; `None` when the request was not classified.
    pub channel: Option<Channel>,
    /// Its source (`whatsapp`, `google`, a referrer domain…).
    pub source: Option<&'a str>,
    /// The app whose in-app browser sent it.
    pub in_app: Option<&'a str>,
    /// The landing path (for the dark social top list).
    pub path: &'a str,
    /// The response status; 0 when none was written.
    pub status: u16,
    /// From the first byte of the request to the end of the response.
    pub duration: Duration,
    /// Time spent classifying it and planning its attribution.
    pub classification: Option<Duration>,
}

/// darklight's metrics, shared by the proxy and the admin listener.
#[derive(Debug)]
pub struct Metrics {
    started: u64,
    sites: LabelTable,
    sources: LabelTable,
    /// Requests by packed (site, source, channel, status class).
    requests: CounterMap<u64>,
    classification: Histogram,
    request_duration: Histogram,
    /// Upstream errors by packed (site, kind).
    upstream_errors: CounterMap<u32>,
    reloads_succeeded: AtomicU64,
    reloads_failed: AtomicU64,
    last_reload_successful: AtomicBool,
    last_successful_reload: AtomicU64,
    spans: ArcSwapOption<ExportStats>,
    previews: ArcSwapOption<PreviewTable>,
    certificates: ArcSwap<Vec<Arc<CertStore>>>,
    traffic: TrafficWindow,
    config: ArcSwap<ConfigSummary>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Empty metrics; the start time is now.
    pub fn new() -> Metrics {
        let now = unix_now();
        Metrics {
            started: now,
            sites: LabelTable::new(MAX_SITES),
            sources: LabelTable::new(MAX_SOURCES),
            requests: CounterMap::default(),
            classification: Histogram::new(CLASSIFICATION_BUCKETS_NANOS),
            request_duration: Histogram::new(REQUEST_BUCKETS_NANOS),
            upstream_errors: CounterMap::default(),
            reloads_succeeded: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
            last_reload_successful: AtomicBool::new(true),
            last_successful_reload: AtomicU64::new(now),
            spans: ArcSwapOption::empty(),
            previews: ArcSwapOption::empty(),
            certificates: ArcSwap::from_pointee(Vec::new()),
            traffic: TrafficWindow::new(),
            config: ArcSwap::from_pointee(ConfigSummary::default()),
        }
    }

    /// Takes in a (new) configuration: its site names and the engine's source names become
    /// label values, and the status page shows its summary. Call it at start and after each
    /// successful reload, before [`Metrics::config_reloaded`].
    pub fn describe(&self, config: &Config, engine: &Engine) {
        self.sites
            .extend(config.sites.iter().map(|site| site.name.as_str()));
        let classifier = engine.classifier();
        self.sources.extend(
            classifier
                .source_names()
                .chain(classifier.preview_bot_names()),
        );
        self.previews.store(engine.preview_table().cloned());
        self.config
            .store(Arc::new(ConfigSummary::new(config, engine, unix_now())));
    }

    /// Counts a configuration reload: `ok` when the new configuration is in use, false when
    /// it was refused and the old one kept. Sets the last-reload gauges.
    pub fn config_reloaded(&self, ok: bool) {
        if ok {
            self.reloads_succeeded.fetch_add(1, Ordering::Relaxed);
            self.last_successful_reload
                .store(unix_now(), Ordering::Relaxed);
        } else {
            self.reloads_failed.fetch_add(1, Ordering::Relaxed);
        }
        self.last_reload_successful.store(ok, Ordering::Relaxed);
    }

    /// Reports the span export counters of this telemetry pipeline.
    pub fn watch_spans(&self, stats: Arc<ExportStats>) {
        self.spans.store(Some(stats));
    }

    /// Reports the expiry of these certificate stores (one per TLS listener).
    pub fn watch_certificates(&self, stores: Vec<Arc<CertStore>>) {
        self.certificates.store(Arc::new(stores));
    }

    /// The configuration summary shown on the status page.
    pub fn config_summary(&self) -> Arc<ConfigSummary> {
        self.config.load_full()
    }

    /// Recent traffic, for the status page.
    pub fn traffic(&self) -> &TrafficWindow {
        &self.traffic
    }

    /// Unix time darklight started.
    pub fn started(&self) -> u64 {
        self.started
    }

    /// Counts a finished request.
    pub fn record_request(&self, request: &RequestRecord<'_>) {
        self.record_request_at(request, unix_now());
    }

    /// Counts a finished request at Unix time `now`.
    pub fn record_request_at(&self, request: &RequestRecord<'_>, now: u64) {
        let site = self.sites.lookup(request.site);
        let source = self.sources.lookup(request.source);
        let channel = u64::try_from(channel_slot(request.channel)).unwrap_or(0);
        let status = u64::from(status_class(request.status));
        let key = (u64::from(site) << 48) | (u64::from(source) << 32) | (channel << 8) | status;
        increment(&self.requests, key);
        self.request_duration.observe(request.duration);
        if let Some(duration) = request.classification {
            self.classification.observe(duration);
        }
        self.traffic.record(now, request.channel);
        if request.channel == Some(Channel::DarkSocial) {
            let source = request.source.or(request.in_app).unwrap_or("unknown");
            self.traffic.record_dark_social(now, request.path, source);
        }
    }

    /// Counts an upstream failure of `site`.
    pub fn record_upstream_error(&self, site: Option<&str>, kind: UpstreamErrorKind) {
        let site = self.sites.lookup(site);
        increment(&self.upstream_errors, (u32::from(site) << 8) | kind.index());
    }

    /// The whole exposition, as `/metrics` serves it.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8192);
        let sites = self.sites.names();
        let sources = self.sources.names();
        let name_of = |names: &[Arc<str>], index: u64| -> String {
            usize::try_from(index)
                .ok()
                .and_then(|i| names.get(i))
                .map_or_else(|| "other".to_string(), |n| escape(n))
        };

        header(
            &mut out,
            "darklight_build_info",
            "gauge",
            "darklight's version; always 1.",
        );
        let _ = writeln!(
            out,
            "darklight_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        header(
            &mut out,
            "darklight_start_time_seconds",
            "gauge",
            "Unix time darklight started.",
        );
        let _ = writeln!(out, "darklight_start_time_seconds {}", self.started);

        header(
            &mut out,
            "darklight_requests_total",
            "counter",
            "Requests served, by site, channel, source (a known rule name, else other) and status class.",
        );
        let mut requests: Vec<(u64, u64)> = self
            .requests
            .iter()
            .map(|e| (*e.key(), e.value().load(Ordering::Relaxed)))
            .collect();
        requests.sort_unstable();
        for (key, count) in requests {
            let site = name_of(&sites, key >> 48);
            let source = name_of(&sources, (key >> 32) & 0xffff);
            let channel = slot_name(usize::try_from((key >> 8) & 0xff).unwrap_or(usize::MAX));
            let status = usize::try_from(key & 0xff)
                .ok()
                .and_then(|i| STATUS_CLASSES.get(i))
                .unwrap_or(&"none");
            let _ = writeln!(
                out,
                "darklight_requests_total{{site=\"{site}\",channel=\"{channel}\",source=\"{source}\",status=\"{status}\"}} {count}"
            );
        }

        header(
            &mut out,
            "darklight_classification_duration_seconds",
            "histogram",
            "Time spent classifying a request and planning its attribution.",
        );
        self.classification
            .render(&mut out, "darklight_classification_duration_seconds");
        header(
            &mut out,
            "darklight_request_duration_seconds",
            "histogram",
            "Time from the request's arrival to the end of its response, upstream included.",
        );
        self.request_duration
            .render(&mut out, "darklight_request_duration_seconds");

        header(
            &mut out,
            "darklight_upstream_errors_total",
            "counter",
            "Requests that failed on the upstream side, by site and kind.",
        );
        let mut errors: Vec<(u32, u64)> = self
            .upstream_errors
            .iter()
            .map(|e| (*e.key(), e.value().load(Ordering::Relaxed)))
            .collect();
        errors.sort_unstable();
        for (key, count) in errors {
            let site = name_of(&sites, u64::from(key >> 8));
            let kind = usize::try_from(key & 0xff)
                .ok()
                .and_then(|i| UpstreamErrorKind::ALL.get(i))
                .map_or("other", |k| k.as_str());
            let _ = writeln!(
                out,
                "darklight_upstream_errors_total{{site=\"{site}\",kind=\"{kind}\"}} {count}"
            );
        }

        let spans = self
            .spans
            .load()
            .as_ref()
            .map(|s| s.counts())
            .unwrap_or_default();
        for (name, help, value) in [
            (
                "darklight_spans_exported_total",
                "Spans the exporter accepted.",
                spans.exported,
            ),
            (
                "darklight_spans_dropped_total",
                "Spans dropped because the export queue was full.",
                spans.dropped,
            ),
            (
                "darklight_spans_failed_total",
                "Spans lost in a failed or timed-out export.",
                spans.failed,
            ),
            (
                "darklight_span_exports_failed_total",
                "Export batches that failed or timed out.",
                spans.failed_exports,
            ),
        ] {
            header(&mut out, name, "counter", help);
            let _ = writeln!(out, "{name} {value}");
        }

        if let Some(table) = self.previews.load().as_ref() {
            let stats = table.stats();
            header(
                &mut out,
                "darklight_preview_table_entries",
                "gauge",
                "URLs in the share-preview table.",
            );
            let _ = writeln!(out, "darklight_preview_table_entries {}", stats.entries);
            for (name, help, value) in [
                (
                    "darklight_preview_fetches_total",
                    "Link-preview fetches recorded in the preview table.",
                    stats.previews_recorded,
                ),
                (
                    "darklight_preview_visits_attributed_total",
                    "Visits attributed to an earlier link preview.",
                    stats.visits_attributed,
                ),
                (
                    "darklight_preview_table_evictions_total",
                    "Preview table entries evicted to stay under max_entries.",
                    stats.evicted,
                ),
                (
                    "darklight_preview_table_expirations_total",
                    "Preview table entries dropped after their time-to-live.",
                    stats.expired,
                ),
            ] {
                header(&mut out, name, "counter", help);
                let _ = writeln!(out, "{name} {value}");
            }
        }

        header(
            &mut out,
            "darklight_config_reloads_total",
            "counter",
            "Configuration reloads, by result (success: in use; failure: refused, old one kept).",
        );
        let _ = writeln!(
            out,
            "darklight_config_reloads_total{{result=\"success\"}} {}",
            self.reloads_succeeded.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "darklight_config_reloads_total{{result=\"failure\"}} {}",
            self.reloads_failed.load(Ordering::Relaxed)
        );
        header(
            &mut out,
            "darklight_config_last_reload_successful",
            "gauge",
            "1 when the last reload succeeded (or none was tried), else 0.",
        );
        let _ = writeln!(
            out,
            "darklight_config_last_reload_successful {}",
            u8::from(self.last_reload_successful.load(Ordering::Relaxed))
        );
        header(
            &mut out,
            "darklight_config_last_reload_success_timestamp_seconds",
            "gauge",
            "Unix time the configuration in use was loaded.",
        );
        let _ = writeln!(
            out,
            "darklight_config_last_reload_success_timestamp_seconds {}",
            self.last_successful_reload.load(Ordering::Relaxed)
        );

        let stores = self.certificates.load();
        if !stores.is_empty() {
            header(
                &mut out,
                "darklight_tls_certificate_expiry_timestamp_seconds",
                "gauge",
                "Unix time a served certificate expires, by listener and certificate name.",
            );
            for store in stores.iter() {
                let listener = escape(store.listener());
                for certificate in store.certificates().iter() {
                    let _ = writeln!(
                        out,
                        "darklight_tls_certificate_expiry_timestamp_seconds{{listener=\"{listener}\",name=\"{}\"}} {}",
                        escape(certificate.name()),
                        certificate.not_after()
                    );
                }
            }
            header(
                &mut out,
                "darklight_tls_certificate_reloads_total",
                "counter",
                "Certificate store reloads, by listener and result (failure: old certificates kept).",
            );
            for store in stores.iter() {
                let listener = escape(store.listener());
                let (succeeded, failed) = store.reload_counts();
                let _ = writeln!(
                    out,
                    "darklight_tls_certificate_reloads_total{{listener=\"{listener}\",result=\"success\"}} {succeeded}"
                );
                let _ = writeln!(
                    out,
                    "darklight_tls_certificate_reloads_total{{listener=\"{listener}\",result=\"failure\"}} {failed}"
                );
            }
        }
        out
    }
}

/// Counters keyed by numbered labels: a bounded set of keys, so foldhash (see
/// [`crate::lookup_map`]) rather than SipHash.
type CounterMap<K> = DashMap<K, AtomicU64, foldhash::fast::RandomState>;

fn increment<K: std::hash::Hash + Eq + Copy>(map: &CounterMap<K>, key: K) {
    if let Some(counter) = map.get(&key) {
        counter.fetch_add(1, Ordering::Relaxed);
        return;
    }
    map.entry(key)
        .or_insert_with(|| AtomicU64::new(0))
        .fetch_add(1, Ordering::Relaxed);
}

fn status_class(status: u16) -> u8 {
    match status {
        100..=599 => u8::try_from(status / 100).unwrap_or(0),
        _ => 0,
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Escapes a label value (backslash, double quote, line feed).
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request<'a>(
        site: Option<&'a str>,
        channel: Channel,
        source: Option<&'a str>,
        status: u16,
    ) -> RequestRecord<'a> {
        RequestRecord {
            site,
            channel: Some(channel),
            source,
            in_app: None,
            path: "/articles/a",
            status,
            duration: Duration::from_millis(3),
            classification: Some(Duration::from_nanos(700)),
        }
    }

    #[test]
    fn requests_are_counted_with_bounded_labels() {
        let metrics = Metrics::new();
        metrics.sites.extend(["news"]);
        metrics.sources.extend(["whatsapp"]);
        let now = 1_790_000_000;
        for _ in 0..3 {
            metrics.record_request_at(
                &request(Some("news"), Channel::DarkSocial, Some("whatsapp"), 200),
                now,
            );
        }
        metrics.record_request_at(
            &request(
                Some("news"),
                Channel::Referral,
                Some("blog.example.org"),
                404,
            ),
            now,
        );
        metrics.record_request_at(&request(None, Channel::Direct, None, 0), now);
        metrics.record_upstream_error(Some("news"), UpstreamErrorKind::ConnectRefused);
        metrics.config_reloaded(false);
        let text = metrics.render();
        for line in [
            "darklight_requests_total{site=\"news\",channel=\"dark_social\",source=\"whatsapp\",status=\"2xx\"} 3",
            "darklight_requests_total{site=\"news\",channel=\"referral\",source=\"other\",status=\"4xx\"} 1",
            "darklight_requests_total{site=\"none\",channel=\"direct\",source=\"none\",status=\"none\"} 1",
            "darklight_upstream_errors_total{site=\"news\",kind=\"connect_refused\"} 1",
            "darklight_classification_duration_seconds_bucket{le=\"0.000001\"} 5",
            "darklight_classification_duration_seconds_count 5",
            "darklight_config_reloads_total{result=\"failure\"} 1",
            "darklight_config_last_reload_successful 0",
            "# TYPE darklight_requests_total counter",
            "darklight_spans_dropped_total 0",
        ] {
            assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
        }
        let (paths, sources) = metrics.traffic().top(5);
        assert_eq!(paths[0].key, "/articles/a");
        assert_eq!(sources[0].key, "whatsapp");
        metrics.config_reloaded(true);
        assert!(
            metrics
                .render()
                .contains("darklight_config_last_reload_successful 1\n")
        );
        assert_eq!(escape("a\"b\\c\n"), "a\\\"b\\\\c\\n");
    }
}
