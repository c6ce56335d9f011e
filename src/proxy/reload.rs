//! Hot reload and the services that must follow it.
//!
//! On SIGHUP the configuration file is read again, validated fully and compiled (rules,
//! attribution, upstream pools) off the request path; only then are the new state and engine
//! swapped in, atomically. Requests in flight finish with the snapshot they started with, and
//! no connection is dropped. A broken file is logged and the old configuration keeps serving.
//! The preview table (and Redis store) carries over, so nothing learnt is lost.
//!
//! Listeners, the admin and demo addresses, telemetry export, threads and logging are set up
//! once at start: a change there is reported and takes effect at the next restart (or a
//! zero-downtime upgrade, see the README).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use super::app::{PreparedState, StateHandle};
use super::plugin::EngineHandle;
use super::tls::CertStore;
use crate::admin::metrics::Metrics;
use crate::config::{self, Config};

/// How often the health-check service looks for due checks.
const HEALTH_TICK: Duration = Duration::from_millis(100);
/// The longest a site's first probe waits after startup (or the reload that added the site).
/// Upstreams count as healthy until probed; an upstream starting alongside darklight (the demo
/// origin, a sidecar) gets this long to listen before a failed probe takes it out of rotation
/// for a whole interval.
const FIRST_CHECK_DELAY: Duration = Duration::from_secs(1);

/// Runs the active health checks of whatever sites are configured now.
pub struct HealthChecks {
    state: StateHandle,
}

impl HealthChecks {
    /// Checks the pools of the state in `state`, following reloads.
    pub fn new(state: StateHandle) -> HealthChecks {
        HealthChecks { state }
    }
}

#[async_trait]
impl BackgroundService for HealthChecks {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut last_run: HashMap<String, Instant> = HashMap::new();
        let mut first_seen: HashMap<String, Instant> = HashMap::new();
        let mut tick = tokio::time::interval(HEALTH_TICK);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            let state = self.state.load_full();
            for site in &state.sites {
                let Some(interval) = site.pool.health_check_interval() else {
                    continue;
                };
                let due = match last_run.get(&site.name) {
                    Some(at) => at.elapsed() >= interval,
                    None => {
                        let seen = first_seen
                            .entry(site.name.clone())
                            .or_insert_with(Instant::now);
                        seen.elapsed() >= interval.min(FIRST_CHECK_DELAY)
                    }
                };
                if due {
                    last_run.insert(site.name.clone(), Instant::now());
                    site.pool.run_health_check().await;
                }
            }
        }
    }
}

/// Counts of reload attempts, for logs and metrics.
#[derive(Debug, Default)]
pub struct ReloadStats {
    /// Reloads applied.
    pub succeeded: AtomicU64,
    /// Reloads refused (the old configuration kept serving).
    pub failed: AtomicU64,
}

/// How often a pending SIGHUP is looked for.
const SIGNAL_POLL: Duration = Duration::from_millis(100);

/// Reloads the configuration on SIGHUP.
///
/// The signal handler is installed when the reloader is built, before the server starts, so
/// a SIGHUP that arrives while darklight is still starting is kept for later instead of
/// ending the process (the default action).
pub struct Reloader {
    hangup: Arc<AtomicBool>,
    path: PathBuf,
    current: std::sync::Mutex<Config>,
    state: StateHandle,
    engine: EngineHandle,
    tracer: Option<opentelemetry_sdk::trace::SdkTracer>,
    stats: Arc<ReloadStats>,
    metrics: Option<Arc<Metrics>>,
    certificates: Vec<Arc<CertStore>>,
}

impl Reloader {
    /// A reloader for the file at `path`, whose current contents are `config`.
    pub fn new(
        path: PathBuf,
        config: Config,
        state: StateHandle,
        engine: EngineHandle,
        tracer: Option<opentelemetry_sdk::trace::SdkTracer>,
    ) -> Reloader {
        let hangup = Arc::new(AtomicBool::new(false));
        if let Err(e) =
            signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&hangup))
        {
            tracing::error!(error = %e, "cannot listen for SIGHUP: reload is disabled");
        }
        Reloader {
            hangup,
            path,
            current: std::sync::Mutex::new(config),
            state,
            engine,
            tracer,
            stats: Arc::new(ReloadStats::default()),
            metrics: None,
            certificates: Vec::new(),
        }
    }

    /// Reports reloads to `metrics` and refreshes its site and source labels.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Reloader {
        self.metrics = Some(metrics);
        self
    }

    /// Re-reads these TLS listeners' certificates on every reload (in `listen` order).
    pub fn with_certificates(mut self, certificates: Vec<Arc<CertStore>>) -> Reloader {
        self.certificates = certificates;
        self
    }

    /// Reload counters.
    pub fn stats(&self) -> Arc<ReloadStats> {
        Arc::clone(&self.stats)
    }

    /// Reads, validates and applies the file once; the old configuration stays on error.
    pub async fn reload(&self) -> Result<(), String> {
        let path = self.path.clone();
        let previous_engine = self.engine.load_full();
        let tracer = self.tracer.clone();
        // Reading the file and resolving upstream names block: keep them off the runtime.
        let built = tokio::task::spawn_blocking(move || {
            let config = config::load(&path).map_err(|e| e.to_string())?;
            let mut prepared = PreparedState::new_reusing(&config, Some(&previous_engine))
                .map_err(|e| format!("{}: {e}", path.display()))?;
            prepared.trace_with(tracer);
            Ok::<_, String>((config, prepared.into_state()))
        })
        .await
        .map_err(|e| format!("reload task failed: {e}"))?;
        let (config, state) = match built {
            Ok(built) => built,
            Err(error) => {
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                if let Some(metrics) = &self.metrics {
                    metrics.config_reloaded(false);
                }
                return Err(error);
            }
        };
        self.reload_certificates(&config);
        {
            let current = self.current.lock().unwrap_or_else(|p| p.into_inner());
            for section in restart_only_changes(&current, &config) {
                tracing::warn!(
                    section = %section,
                    "configuration change needs a restart to take effect; the rest is applied"
                );
            }
        }
        let engine = Arc::clone(&state.engine);
        self.engine.store(engine);
        self.state.store(Arc::new(state));
        if let Some(metrics) = &self.metrics {
            metrics.describe(&config, &self.engine.load_full());
            metrics.config_reloaded(true);
        }
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = config;
        self.stats.succeeded.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Renewed certificate files are picked up on every reload; a listener whose files were
    /// changed in the configuration switches to them. A certificate that fails to load keeps
    /// the previous one (the store logs and counts it).
    fn reload_certificates(&self, config: &Config) {
        let tls_listeners = config.listen.iter().filter_map(|l| l.tls.as_ref());
        for (store, tls) in self.certificates.iter().zip(tls_listeners) {
            if let Err(error) = store.replace(tls.certificates.clone()) {
                tracing::error!(%error, "certificate reload failed; the previous certificates stay");
            }
        }
    }
}

/// Sections that are read only at start and differ between `old` and `new`.
fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let differs =
        |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") != format!("{b:?}");
    let mut changed = Vec::new();
    if differs(&old.listen, &new.listen) {
        changed.push("listen");
    }
    if differs(&old.server, &new.server) {
        changed.push("server");
    }
    if differs(&old.log, &new.log) {
        changed.push("log");
    }
    if differs(&old.demo, &new.demo) {
        changed.push("demo");
    }
    if differs(&old.admin, &new.admin) {
        changed.push("admin");
    }
    if differs(&old.telemetry, &new.telemetry) {
        changed.push("telemetry");
    }
    changed
}

#[async_trait]
impl BackgroundService for Reloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(SIGNAL_POLL);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            if !self.hangup.swap(false, Ordering::AcqRel) {
                continue;
            }
            tracing::info!(path = %self.path.display(), "SIGHUP: reloading configuration");
            match self.reload().await {
                Ok(()) => tracing::info!("configuration reloaded"),
                Err(error) => tracing::error!(
                    %error,
                    "configuration reload refused; the previous configuration keeps serving"
                ),
            }
        }
    }
}
