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

use super::app::{PreparedState, ProxyState, StateHandle};
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
        let mut schedule = ProbeSchedule::default();
        let mut checked: Option<Arc<ProxyState>> = None;
        let mut tick = tokio::time::interval(HEALTH_TICK);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            let state = self.state.load_full();
            if !checked
                .as_ref()
                .is_some_and(|last| Arc::ptr_eq(last, &state))
            {
                schedule.retain(|name| {
                    state.sites.iter().any(|site| {
                        site.name == name && site.pool.health_check_interval().is_some()
                    })
                });
                checked = Some(Arc::clone(&state));
            }
            for site in &state.sites {
                let Some(interval) = site.pool.health_check_interval() else {
                    continue;
                };
                if schedule.due(&site.name, interval, Instant::now()) {
                    schedule.ran(&site.name, Instant::now());
                    site.pool.run_health_check().await;
                }
            }
        }
    }
}

/// When each site's next probe is due: an interval after its last probe, or, before its first,
/// [`FIRST_CHECK_DELAY`] (at most the interval) after the site was first seen.
#[derive(Debug, Default)]
struct ProbeSchedule {
    sites: HashMap<String, Probed>,
}

#[derive(Debug, Clone, Copy)]
enum Probed {
    /// Not yet probed; configured since then.
    Never { seen: Instant },
    /// Last probed then.
    At(Instant),
}

impl ProbeSchedule {
    /// True when `site`, probed every `interval`, is due at `now`. A site seen for the first
    /// time starts its first delay now.
    fn due(&mut self, site: &str, interval: Duration, now: Instant) -> bool {
        let first_delay = interval.min(FIRST_CHECK_DELAY);
        match self.sites.get(site) {
            Some(Probed::At(at)) => now.saturating_duration_since(*at) >= interval,
            Some(Probed::Never { seen }) => now.saturating_duration_since(*seen) >= first_delay,
            None => {
                self.sites
                    .insert(site.to_owned(), Probed::Never { seen: now });
                first_delay.is_zero()
            }
        }
    }

    /// Records that `site` was probed at `now`.
    fn ran(&mut self, site: &str, now: Instant) {
        match self.sites.get_mut(site) {
            Some(probed) => *probed = Probed::At(now),
            None => {
                self.sites.insert(site.to_owned(), Probed::At(now));
            }
        }
    }

    /// Forgets the sites no longer checked: the map stays as small as the configuration, and a
    /// site added back by a later reload waits its first delay again.
    fn retain(&mut self, checked: impl Fn(&str) -> bool) {
        self.sites.retain(|name, _| checked(name));
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
    tracer: Option<crate::telemetry::SpanRecorder>,
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
        tracer: Option<crate::telemetry::SpanRecorder>,
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

#[cfg(test)]
mod tests {
    use super::*;

    const INTERVAL: Duration = Duration::from_secs(5);

    #[test]
    fn first_probe_waits_the_first_delay_then_every_interval() {
        let mut schedule = ProbeSchedule::default();
        let start = Instant::now();
        assert!(!schedule.due("news", INTERVAL, start));
        assert!(!schedule.due("news", INTERVAL, start + FIRST_CHECK_DELAY / 2));
        assert!(schedule.due("news", INTERVAL, start + FIRST_CHECK_DELAY));
        let probed = start + FIRST_CHECK_DELAY;
        schedule.ran("news", probed);
        assert!(!schedule.due("news", INTERVAL, probed + INTERVAL / 2));
        assert!(schedule.due("news", INTERVAL, probed + INTERVAL));
    }

    #[test]
    fn an_interval_shorter_than_the_first_delay_bounds_it() {
        let mut schedule = ProbeSchedule::default();
        let start = Instant::now();
        let short = FIRST_CHECK_DELAY / 4;
        assert!(!schedule.due("news", short, start));
        assert!(schedule.due("news", short, start + short));
        assert!(schedule.due("zero", Duration::ZERO, start));
    }

    #[test]
    fn a_site_removed_and_added_back_waits_its_first_delay_again() {
        let mut schedule = ProbeSchedule::default();
        let start = Instant::now();
        assert!(!schedule.due("news", INTERVAL, start));
        assert!(!schedule.due("shop", INTERVAL, start));
        schedule.ran("news", start + FIRST_CHECK_DELAY);
        schedule.ran("shop", start + FIRST_CHECK_DELAY);

        // A reload removes "news"; "shop" stays.
        schedule.retain(|name| name == "shop");
        assert_eq!(schedule.sites.len(), 1);

        // Added back long after its last probe: a fresh first delay, not an immediate probe.
        let back = start + INTERVAL * 10;
        assert!(!schedule.due("news", INTERVAL, back));
        assert!(schedule.due("news", INTERVAL, back + FIRST_CHECK_DELAY));
        assert!(schedule.due("shop", INTERVAL, back));
    }

    #[test]
    fn a_clock_reading_before_the_last_probe_is_not_due() {
        let mut schedule = ProbeSchedule::default();
        let now = Instant::now() + INTERVAL;
        schedule.ran("news", now);
        assert!(!schedule.due("news", INTERVAL, now - Duration::from_secs(1)));
    }
}
