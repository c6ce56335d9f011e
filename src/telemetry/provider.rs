//! Telemetry for the process: built once at startup from the resolved settings (sampler,
//! export thread, exporter), shut down (exporting what is queued) when darklight stops.

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::Sampler;

use super::config::{BatchConfig, SamplerKind, TelemetryConfig};
use super::otlp_export::OtlpExporter;
use super::pipeline::{
    ExportThread, GuardedExporter, Pacing, QueueDepth, RecordExporter, StdoutExporter,
};
use super::recorder::SpanRecorder;
use super::settings::{self, ExporterSettings, SamplerSettings, SettingsError, TelemetrySettings};
use super::stats::ExportStats;

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TelemetryError {
    /// The `OTEL_*` environment does not complete the configuration.
    #[error("telemetry: {0}")]
    Settings(#[from] SettingsError),
    /// The OTLP exporter could not be built (bad endpoint, TLS setup).
    #[error("telemetry: cannot build the OTLP exporter for {endpoint}: {reason}")]
    Exporter {
        /// The collector URL.
        endpoint: String,
        /// The exporter's message.
        reason: String,
    },
    /// The exporter's background runtime could not be started.
    #[error("telemetry: cannot start the export thread: {0}")]
    Runtime(#[source] std::io::Error),
}

/// Span recording and export for the whole process; inert when telemetry is disabled.
#[derive(Debug, Default)]
pub struct Telemetry {
    active: Option<Active>,
}

#[derive(Debug)]
struct Active {
    recorder: SpanRecorder,
    /// Absent when spans are recorded for trace context only (no exporter).
    export: Option<ExportThread>,
    settings: TelemetrySettings,
    stats: Arc<ExportStats>,
    /// Runs OTLP network I/O; dropped after the export thread is shut down.
    runtime: Option<tokio::runtime::Runtime>,
}

impl Telemetry {
    /// Telemetry that records nothing.
    pub fn disabled() -> Telemetry {
        Telemetry::default()
    }

    /// Starts telemetry for `config`, completed from the process environment. Never connects:
    /// the collector may be down, spans then wait in the queue or are dropped.
    pub fn start(config: &TelemetryConfig) -> Result<Telemetry, TelemetryError> {
        if !config.enabled {
            return Ok(Telemetry::disabled());
        }
        let host = host_name();
        let settings = settings::resolve(config, |name| std::env::var(name).ok(), host.as_deref())?;
        Telemetry::start_with(&settings, &config.batch)
    }

    /// Starts telemetry with already resolved settings.
    pub fn start_with(
        settings: &TelemetrySettings,
        batch: &BatchConfig,
    ) -> Result<Telemetry, TelemetryError> {
        let stats = Arc::new(ExportStats::default());
        let resource = Resource::builder_empty()
            .with_attributes(
                settings
                    .resource
                    .iter()
                    .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
            )
            .build();
        let scope = InstrumentationScope::builder("darklight")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build();
        let sampler = sampler(settings.sampler);

        // Spans queued for export, shared by the queue, the exporter's guard and pacing.
        let depth = Arc::new(QueueDepth::default());
        let mut runtime = None;
        let export = match &settings.exporter {
            ExporterSettings::None => None,
            ExporterSettings::Stdout => {
                let exporter = StdoutExporter::new(settings.service_name());
                let guarded = guarded(exporter, None, Duration::from_secs(10), &depth, &stats);
                Some(start_export(
                    guarded, &resource, scope, batch, &depth, &stats,
                )?)
            }
            ExporterSettings::Otlp {
                protocol,
                endpoint,
                timeout,
                headers,
                compression,
                tls,
            } => {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name("darklight-telemetry")
                    .enable_all()
                    .build()
                    .map_err(TelemetryError::Runtime)?;
                let exporter = {
                    // tonic and hyper bind their background tasks to the runtime they are built in.
                    let _entered = rt.enter();
                    OtlpExporter::new(*protocol, endpoint, *timeout, headers, *compression, tls)
                        .map_err(|e| TelemetryError::Exporter {
                            endpoint: endpoint.clone(),
                            reason: e.0,
                        })?
                };
                let exporter =
                    exporter.with_pacing(Pacing::new(Arc::clone(&depth), batch.max_queue_size));
                let guarded = guarded(
                    exporter,
                    Some(rt.handle().clone()),
                    *timeout,
                    &depth,
                    &stats,
                );
                let started = start_export(guarded, &resource, scope, batch, &depth, &stats)?;
                runtime = Some(rt);
                Some(started)
            }
        };
        let (recorder, export) = match export {
            Some((queue, thread)) => (SpanRecorder::queued(sampler, queue), Some(thread)),
            None => (SpanRecorder::discarding(sampler), None),
        };
        Ok(Telemetry {
            active: Some(Active {
                recorder,
                export,
                settings: settings.clone(),
                stats,
                runtime,
            }),
        })
    }

    /// True when spans are recorded.
    pub fn enabled(&self) -> bool {
        self.active.is_some()
    }

    /// The recorder requests use, when enabled.
    pub fn recorder(&self) -> Option<SpanRecorder> {
        self.active.as_ref().map(|a| a.recorder.clone())
    }

    /// The resolved settings, when enabled.
    pub fn settings(&self) -> Option<&TelemetrySettings> {
        self.active.as_ref().map(|a| &a.settings)
    }

    /// The export counters (all zero when disabled).
    pub fn stats(&self) -> Arc<ExportStats> {
        self.active
            .as_ref()
            .map_or_else(Arc::default, |a| Arc::clone(&a.stats))
    }

    /// Exports what is queued and stops, within about `timeout`; spans still queued after
    /// that are lost (and logged).
    pub fn shutdown(self, timeout: Duration) {
        let Some(active) = self.active else { return };
        if let Some(export) = active.export
            && !export.shutdown(timeout)
        {
            tracing::warn!(target: "darklight::telemetry", timeout = ?timeout, "telemetry did not flush every span before stopping");
        }
        let counts = active.stats.counts();
        tracing::info!(
            target: "darklight::telemetry",
            exported = counts.exported,
            dropped = counts.dropped,
            failed = counts.failed,
            "telemetry stopped"
        );
        if let Some(runtime) = active.runtime {
            runtime.shutdown_timeout(Duration::from_millis(500));
        }
    }
}

fn guarded<E: RecordExporter + 'static>(
    exporter: E,
    runtime: Option<tokio::runtime::Handle>,
    timeout: Duration,
    depth: &Arc<QueueDepth>,
    stats: &Arc<ExportStats>,
) -> GuardedExporter<E> {
    GuardedExporter::new(
        exporter,
        runtime,
        timeout,
        Arc::clone(depth),
        Arc::clone(stats),
    )
}

/// Starts the export thread for `exporter`, which labels spans with `resource`.
fn start_export<E: RecordExporter + 'static>(
    mut exporter: GuardedExporter<E>,
    resource: &Resource,
    scope: InstrumentationScope,
    batch: &BatchConfig,
    depth: &Arc<QueueDepth>,
    stats: &Arc<ExportStats>,
) -> Result<(super::pipeline::SpanQueue, ExportThread), TelemetryError> {
    exporter.set_resource(resource);
    ExportThread::start(exporter, scope, batch, Arc::clone(depth), Arc::clone(stats))
        .map_err(TelemetryError::Runtime)
}

fn sampler(settings: SamplerSettings) -> Sampler {
    let ratio = Sampler::TraceIdRatioBased(settings.ratio);
    match settings.kind {
        SamplerKind::AlwaysOn => Sampler::AlwaysOn,
        SamplerKind::AlwaysOff => Sampler::AlwaysOff,
        SamplerKind::TraceIdRatio => ratio,
        SamplerKind::ParentBasedAlwaysOn => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
        SamplerKind::ParentBasedAlwaysOff => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
        SamplerKind::ParentBasedTraceIdRatio => Sampler::ParentBased(Box::new(ratio)),
    }
}

/// The machine's host name, for `host.name`.
fn host_name() -> Option<String> {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
}
