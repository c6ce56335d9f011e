//! The shared preview store for a fleet: previews recorded by any darklight instance are
//! visible to all, through Redis.
//!
//! Every URL is one Redis hash, `<prefix><url key>`, with three fields per platform:
//! `t:<platform>` (Unix time of the latest preview), `p:<platform>` (previews seen) and
//! `a:<platform>` (visits attributed); the key expires after the table's time-to-live.
//!
//! Redis never slows or fails a request:
//! * all I/O runs on a small runtime owned by the store;
//! * writes are fire-and-forget, with a bound on writes in flight (beyond it they are dropped
//!   and counted);
//! * a lookup waits at most `redis.timeout`; on an error or a timeout the caller falls back to
//!   the in-memory table, and Redis is skipped for a few seconds before it is tried again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{PreviewMatch, RedisConfig};
use crate::classify::Name;

/// Writes allowed in flight before new ones are dropped.
const MAX_WRITES_IN_FLIGHT: usize = 1024;
/// How long Redis is skipped after a failure.
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// Why the Redis store could not be created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisStoreError {
    /// The URL is not a valid Redis URL.
    #[error("correlation.redis.url: {0}")]
    Url(String),
    /// The store's runtime could not be started.
    #[error("correlation.redis: cannot start its runtime: {0}")]
    Runtime(String),
}

/// Counters of the store's health, for logs and metrics.
#[derive(Debug, Default)]
pub struct RedisStats {
    /// Operations that failed or timed out.
    pub errors: AtomicU64,
    /// Lookups answered from memory because Redis was unavailable.
    pub fallbacks: AtomicU64,
    /// Writes dropped because too many were in flight.
    pub dropped_writes: AtomicU64,
}

/// The Redis-backed preview store.
pub struct RedisStore {
    /// Always `Some` until dropped; taken in `Drop` to shut down without blocking.
    runtime: Option<tokio::runtime::Runtime>,
    connection: ConnectionManager,
    prefix: String,
    ttl_secs: u64,
    timeout: Duration,
    in_flight: Arc<AtomicUsize>,
    healthy: AtomicBool,
    /// Milliseconds since `started` until which Redis is skipped.
    skip_until_ms: AtomicU64,
    started: Instant,
    stats: Arc<RedisStats>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .field("healthy", &self.healthy.load(Ordering::Relaxed))
            .finish()
    }
}

impl RedisStore {
    /// Prepares the store; it connects lazily, so an unreachable server is not an error here.
    pub fn new(config: &RedisConfig, ttl_secs: u64) -> Result<RedisStore, RedisStoreError> {
        let client = redis::Client::open(config.url.as_str())
            .map_err(|e| RedisStoreError::Url(e.to_string()))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("darklight-redis")
            .enable_all()
            .build()
            .map_err(|e| RedisStoreError::Runtime(e.to_string()))?;
        let timeout = config.timeout.0;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout.max(Duration::from_millis(200))))
            .set_response_timeout(Some(timeout.max(Duration::from_millis(200))))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let connection = {
            let _guard = runtime.enter();
            ConnectionManager::new_lazy_with_config(client, manager_config)
                .map_err(|e| RedisStoreError::Url(e.to_string()))?
        };
        Ok(RedisStore {
            runtime: Some(runtime),
            connection,
            prefix: config.key_prefix.clone(),
            ttl_secs: ttl_secs.max(1),
            timeout,
            in_flight: Arc::new(AtomicUsize::new(0)),
            healthy: AtomicBool::new(true),
            skip_until_ms: AtomicU64::new(0),
            started: Instant::now(),
            stats: Arc::new(RedisStats::default()),
        })
    }

    /// Health counters.
    pub fn stats(&self) -> &Arc<RedisStats> {
        &self.stats
    }

    /// Whether the last operation succeeded.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Records a preview, in the background.
    pub fn record(&self, url: &str, platform: &Name, now: u64) {
        let key = format!("{}{url}", self.prefix);
        let (time_field, count_field) = (format!("t:{platform}"), format!("p:{platform}"));
        let ttl = i64::try_from(self.ttl_secs).unwrap_or(i64::MAX);
        self.spawn_write(move |mut connection| async move {
            redis::pipe()
                .atomic()
                .hset(&key, time_field, now)
                .ignore()
                .hincr(&key, count_field, 1)
                .ignore()
                .expire(&key, ttl)
                .ignore()
                .query_async::<()>(&mut connection)
                .await
        });
    }

    /// Counts a visit attributed to `platform`, in the background.
    pub fn mark_attributed(&self, url: &str, platform: &Name) {
        let key = format!("{}{url}", self.prefix);
        let field = format!("a:{platform}");
        self.spawn_write(move |mut connection| async move {
            connection.hincr::<_, _, _, ()>(&key, field, 1).await
        });
    }

    /// The platforms that previewed `url` within `window_secs`, from Redis; `Err` when Redis
    /// is unavailable (or being skipped after a failure) so the caller uses its memory table.
    pub async fn lookup(
        &self,
        url: &str,
        now: u64,
        window_secs: u64,
    ) -> Result<Option<PreviewMatch>, ()> {
        if self.skipping() {
            self.stats.fallbacks.fetch_add(1, Ordering::Relaxed);
            return Err(());
        }
        let key = format!("{}{url}", self.prefix);
        let Some(runtime) = &self.runtime else {
            return Err(());
        };
        let mut connection = self.connection.clone();
        let task =
            runtime.spawn(async move { connection.hgetall::<_, Vec<(String, String)>>(key).await });
        let fields = match tokio::time::timeout(self.timeout, task).await {
            Ok(Ok(Ok(fields))) => {
                self.mark(true, None);
                fields
            }
            Ok(Ok(Err(e))) => {
                self.mark(false, Some(&e.to_string()));
                return Err(());
            }
            Ok(Err(e)) => {
                self.mark(false, Some(&e.to_string()));
                return Err(());
            }
            Err(_) => {
                self.mark(false, Some("timed out"));
                return Err(());
            }
        };
        Ok(newest_preview(&fields, now, window_secs))
    }

    fn skipping(&self) -> bool {
        let now_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        now_ms < self.skip_until_ms.load(Ordering::Relaxed)
    }

    /// Notes the outcome of an operation; logs transitions between healthy and unavailable,
    /// and after a failure skips Redis for [`RETRY_AFTER`].
    fn mark(&self, ok: bool, error: Option<&str>) {
        let was = self.healthy.swap(ok, Ordering::Relaxed);
        if ok {
            if !was {
                tracing::info!("redis preview store reachable again");
            }
            return;
        }
        self.stats.errors.fetch_add(1, Ordering::Relaxed);
        let now_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let retry_ms = u64::try_from(RETRY_AFTER.as_millis()).unwrap_or(u64::MAX);
        self.skip_until_ms
            .store(now_ms.saturating_add(retry_ms), Ordering::Relaxed);
        if was {
            tracing::warn!(
                error = error.unwrap_or("unknown"),
                "redis preview store unavailable; using the in-memory table"
            );
        }
    }

    fn spawn_write<F, Fut>(&self, write: F)
    where
        F: FnOnce(ConnectionManager) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = redis::RedisResult<()>> + Send,
    {
        let Some(runtime) = &self.runtime else { return };
        if self.skipping() {
            return;
        }
        if self.in_flight.fetch_add(1, Ordering::AcqRel) >= MAX_WRITES_IN_FLIGHT {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            self.stats.dropped_writes.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let connection = self.connection.clone();
        let in_flight = Arc::clone(&self.in_flight);
        let stats = Arc::clone(&self.stats);
        let timeout = self.timeout.max(Duration::from_millis(200));
        runtime.spawn(async move {
            let outcome = tokio::time::timeout(timeout, write(connection)).await;
            if !matches!(outcome, Ok(Ok(()))) {
                stats.errors.fetch_add(1, Ordering::Relaxed);
            }
            in_flight.fetch_sub(1, Ordering::AcqRel);
        });
    }
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        // The store may be dropped on an async task (a reload); shutting the runtime down in
        // the background never blocks there.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The most recent preview within the window among `t:<platform>` fields.
fn newest_preview(fields: &[(String, String)], now: u64, window_secs: u64) -> Option<PreviewMatch> {
    let fresh: Vec<(&str, u64)> = fields
        .iter()
        .filter_map(|(field, value)| {
            let platform = field.strip_prefix("t:")?;
            let at: u64 = value.parse().ok()?;
            (now.saturating_sub(at) <= window_secs && at <= now.saturating_add(300))
                .then_some((platform, at))
        })
        .collect();
    let (platform, at) = fresh.iter().max_by_key(|(_, at)| *at)?;
    Some(PreviewMatch {
        platform: Name::from(*platform),
        age_secs: now.saturating_sub(*at),
        platforms: fresh.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_preview_within_the_window() {
        let fields = vec![
            ("t:slack".to_string(), "1000".to_string()),
            ("p:slack".to_string(), "3".to_string()),
            ("t:whatsapp".to_string(), "1500".to_string()),
            ("t:telegram".to_string(), "100".to_string()),
            ("t:broken".to_string(), "x".to_string()),
        ];
        let found = newest_preview(&fields, 1600, 1000).unwrap();
        assert_eq!(found.platform.as_str(), "whatsapp");
        assert_eq!(found.age_secs, 100);
        assert_eq!(found.platforms, 2, "telegram is outside the window");
        assert_eq!(newest_preview(&fields, 10_000, 1000), None);
        assert_eq!(newest_preview(&[], 1, 1), None);
    }

    #[test]
    fn bad_urls_are_errors() {
        let config = RedisConfig {
            url: "http://not-redis".to_string(),
            ..RedisConfig::default()
        };
        assert!(RedisStore::new(&config, 60).is_err());
    }
}
