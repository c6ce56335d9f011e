//! darklight as a Pingora plugin: an [`HttpModule`] that classifies each request, replaces any
//! client-sent attribution headers with its own, and sets the signed attribution cookies.
//!
//! Any Pingora [`ProxyHttp`](pingora::proxy::ProxyHttp) installs it in
//! `init_downstream_modules`:
//!
//! ```no_run
//! use std::sync::Arc;
//! use pingora::modules::http::HttpModules;
//! use pingora::modules::http::compression::ResponseCompressionBuilder;
//! use darklight::proxy::plugin::{DarklightModule, Engine};
//!
//! fn init_downstream_modules(modules: &mut HttpModules) {
//!     // Keep Pingora's default module, which overriding this method would otherwise drop.
//!     modules.add_module(ResponseCompressionBuilder::enable(0));
//!     let engine = Engine::builtin().expect("built-in rules compile");
//!     modules.add_module(DarklightModule::builder(Arc::new(engine)));
//! }
//! ```
//!
//! The proxy then reads the result in any later phase with
//! `session.downstream_modules_ctx.get::<DarklightContext>()`.
//!
//! The module fails open: whatever happens, it never fails the request.

use std::any::Any;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use http::HeaderName;
use pingora::Result;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::modules::http::{HttpModule, HttpModuleBuilder, Module, ModuleBuilder};

use crate::attribution::{AttributionConfig, AttributionError, Attributor, Plan};
use crate::classify::{Classification, Classifier, RequestFacts, RuleError, SiteProfile};
use crate::config::Config;
use crate::correlation::{Correlation, PreviewTable, StoreKind};
#[cfg(feature = "redis")]
use crate::correlation::{Outcome, RedisStore, Step};
use crate::routing::SiteRouter;

use super::header_edits::HeaderEdits;

/// Everything the module needs, compiled once and shared by every request.
pub struct Engine {
    classifier: Classifier,
    attributor: Attributor,
    /// The attribution header names as sent on the wire (`X-Darklight-Channel`), built once:
    /// Pingora otherwise titles a name anew for every header of every request. In the order
    /// an attribution plan lists its headers, so one pass finds every planned header's.
    wire_names: Vec<(HeaderName, Bytes)>,
    router: SiteRouter,
    profiles: Vec<SiteProfile>,
    fallback: SiteProfile,
    correlation: Option<Correlator>,
}

/// Share-preview correlation settings and the stores they use.
struct Correlator {
    settings: Correlation,
    table: Arc<PreviewTable>,
    #[cfg(feature = "redis")]
    redis: Option<Arc<RedisStore>>,
}

impl Correlator {
    /// Records a preview or attributes a visit. With a Redis store, previews go to both stores
    /// and lookups ask Redis first (other instances' previews), the memory table when Redis
    /// is unavailable.
    async fn correlate(
        &self,
        facts: &RequestFacts<'_>,
        classification: &mut Classification,
        now: u64,
    ) {
        #[cfg(feature = "redis")]
        if let Some(redis) = &self.redis {
            match self.settings.step(facts, classification) {
                Step::Ignore => {}
                Step::Record { key, platform } => {
                    self.table.record(&key, &platform, now);
                    redis.record(&key, &platform, now);
                }
                Step::Lookup { key } => {
                    let window = self.settings.window_secs();
                    let found = match redis.lookup(&key, now, window).await {
                        Ok(found) => found,
                        Err(()) => self.table.lookup(&key, now, window),
                    };
                    let outcome = self
                        .settings
                        .conclude(&self.table, &key, found, classification);
                    if let Outcome::Attributed(platform) = outcome {
                        redis.mark_attributed(&key, &platform);
                    }
                }
            }
            return;
        }
        self.settings
            .correlate(&self.table, facts, classification, now);
    }
}

/// Why an [`Engine`] could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// Classification rules did not compile.
    #[error("classification: {0}")]
    Rules(#[from] RuleError),
    /// Attribution settings are invalid.
    #[error(transparent)]
    Attribution(#[from] AttributionError),
    /// The Redis preview store cannot be set up.
    #[error("correlation: {0}")]
    Redis(String),
}

impl Engine {
    /// Built-in rules, default attribution settings (headers only unless
    /// `DARKLIGHT_COOKIE_SECRET` is set), one permissive site profile.
    pub fn builtin() -> Result<Engine, EngineError> {
        Ok(Engine::new(
            Classifier::builtin()?,
            Attributor::new(&AttributionConfig::default(), |name| {
                std::env::var(name).ok()
            })?,
        ))
    }

    /// An engine with the given parts and one permissive site profile for every host.
    pub fn new(classifier: Classifier, mut attributor: Attributor) -> Engine {
        attributor.learn_values(classifier.rule_names());
        Engine {
            wire_names: wire_names(&attributor),
            classifier,
            attributor,
            router: SiteRouter::default(),
            profiles: Vec::new(),
            fallback: SiteProfile::permissive_default(),
            correlation: None,
        }
    }

    /// Adds share-preview correlation backed by `table` (shared, so it outlives reloads).
    pub fn with_correlation(mut self, settings: Correlation, table: Arc<PreviewTable>) -> Engine {
        self.correlation = Some(Correlator {
            settings,
            table,
            #[cfg(feature = "redis")]
            redis: None,
        });
        self
    }

    /// Shares previews with a fleet through `store` (correlation must be on).
    #[cfg(feature = "redis")]
    pub fn with_redis(mut self, store: Arc<RedisStore>) -> Engine {
        if let Some(correlator) = &mut self.correlation {
            correlator.redis = Some(store);
        }
        self
    }

    /// The Redis store, when one is configured.
    #[cfg(feature = "redis")]
    pub fn redis_store(&self) -> Option<&Arc<RedisStore>> {
        self.correlation.as_ref().and_then(|c| c.redis.as_ref())
    }

    /// The engine for a darklight configuration: its rules, its attribution settings (the
    /// secret may come from the environment), one profile per site, and a new preview table.
    pub fn from_config(config: &Config) -> Result<Engine, EngineError> {
        Engine::from_config_reusing(config, None)
    }

    /// Like [`Engine::from_config`], keeping the preview stores of `previous` (a reload keeps
    /// what was learnt; a changed size or time-to-live applies from the next restart).
    pub fn from_config_reusing(
        config: &Config,
        previous: Option<&Engine>,
    ) -> Result<Engine, EngineError> {
        let classifier = Classifier::new(&config.classification)?;
        let attributor = Attributor::new(&config.attribution, |name| std::env::var(name).ok())?;
        let mut profiles = Vec::with_capacity(config.sites.len());
        for site in &config.sites {
            let hosts: Vec<String> = site.hosts.iter().map(ToString::to_string).collect();
            profiles.push(SiteProfile::new(&hosts, &site.classification)?);
        }
        let engine = Engine {
            router: crate::config::site_router(config),
            profiles,
            ..Engine::new(classifier, attributor)
        };
        let settings = &config.correlation;
        if !settings.enabled {
            return Ok(engine);
        }
        let previous = previous.and_then(|e| e.correlation.as_ref());
        let table = previous.map(|c| Arc::clone(&c.table)).unwrap_or_else(|| {
            Arc::new(PreviewTable::new(
                settings.max_entries,
                settings.ttl.0.as_secs(),
                unix_now(),
            ))
        });
        let engine = engine.with_correlation(Correlation::new(settings), table);
        match settings.store {
            StoreKind::Memory => Ok(engine),
            #[cfg(feature = "redis")]
            StoreKind::Redis => {
                let store = match previous.and_then(|c| c.redis.as_ref()) {
                    Some(store) => Arc::clone(store),
                    None => Arc::new(
                        RedisStore::new(&settings.redis, settings.ttl.0.as_secs())
                            .map_err(|e| EngineError::Redis(e.to_string()))?,
                    ),
                };
                Ok(engine.with_redis(store))
            }
            #[cfg(not(feature = "redis"))]
            StoreKind::Redis => Err(EngineError::Redis(
                "this darklight was built without the `redis` feature".to_string(),
            )),
        }
    }

    /// The preview table, when correlation is on.
    pub fn preview_table(&self) -> Option<&Arc<PreviewTable>> {
        self.correlation.as_ref().map(|c| &c.table)
    }

    /// The classification rules.
    pub fn classifier(&self) -> &Classifier {
        &self.classifier
    }

    /// The attribution settings.
    pub fn attributor(&self) -> &Attributor {
        &self.attributor
    }

    fn profile(&self, host: &str) -> &SiteProfile {
        self.router
            .route(host)
            .and_then(|i| self.profiles.get(i))
            .unwrap_or(&self.fallback)
    }

    /// Classifies a request and plans its attribution. Pure but for the clock value given.
    pub async fn evaluate(
        &self,
        request: &RequestHeader,
        tls: bool,
        now: u64,
    ) -> (Classification, Plan) {
        let cookie_name = self.attributor.first_touch_cookie().unwrap_or("");
        let facts =
            RequestFacts::from_http(&request.method, &request.uri, &request.headers, cookie_name);
        let mut classification = self.classifier.classify(&facts, self.profile(&facts.host));
        if let Some(c) = &self.correlation {
            c.correlate(&facts, &mut classification, now).await;
        }
        let plan =
            self.attributor
                .plan_request(&classification, &request.headers, facts.path, tls, now);
        (classification, plan)
    }
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The engine in force, swapped whole by a reload; each request keeps the one it started with.
pub type EngineHandle = Arc<ArcSwap<Engine>>;

/// The plugin's builder, installed once in `init_downstream_modules`.
pub struct DarklightModule {
    engine: EngineHandle,
    /// Add the planned headers to the request; off when the proxy adds them upstream itself.
    adds_headers: bool,
}

impl DarklightModule {
    /// A module builder sharing `engine`.
    pub fn builder(engine: Arc<Engine>) -> ModuleBuilder {
        DarklightModule::reloadable(Arc::new(ArcSwap::new(engine)))
    }

    /// A module builder that uses whatever engine `engine` holds when a request starts, so
    /// the rules can be replaced while serving.
    pub fn reloadable(engine: EngineHandle) -> ModuleBuilder {
        Box::new(DarklightModule {
            engine,
            adds_headers: true,
        })
    }

    /// Like [`DarklightModule::reloadable`], but the planned headers stay in
    /// [`DarklightContext::plan`] for the proxy to add to each upstream request with
    /// [`DarklightContext::add_planned_headers`] (in `upstream_request_filter`), where it adds
    /// its own: all of them go in at once, into a map with room for them. Client-sent headers
    /// under the prefix are still removed here.
    pub fn reloadable_leaving_headers(engine: EngineHandle) -> ModuleBuilder {
        Box::new(DarklightModule {
            engine,
            adds_headers: false,
        })
    }
}

impl HttpModuleBuilder for DarklightModule {
    fn init(&self) -> Module {
        Box::new(DarklightContext {
            engine: self.engine.load_full(),
            adds_headers: self.adds_headers,
            tls: false,
            classification: None,
            plan: Plan::default(),
            cookies_set: 0,
            evaluation: None,
        })
    }
}

/// Per-request state of the plugin, readable by the proxy through the module context.
pub struct DarklightContext {
    engine: Arc<Engine>,
    adds_headers: bool,
    /// The client connection is TLS; set by the proxy in `early_request_filter` so cookies get
    /// `Secure` in `auto` mode.
    pub tls: bool,
    /// The classification of this request, once its header was seen.
    pub classification: Option<Classification>,
    /// The attribution decided for it.
    pub plan: Plan,
    /// How many `Set-Cookie` headers were added to the response.
    pub cookies_set: usize,
    /// Time spent classifying the request and planning its attribution, for metrics.
    pub evaluation: Option<std::time::Duration>,
}

#[async_trait]
impl HttpModule for DarklightContext {
    async fn request_header_filter(&mut self, request: &mut RequestHeader) -> Result<()> {
        let attributor = self.engine.attributor();
        if attributor.enabled() {
            strip_reserved(request, attributor);
        }
        let started = std::time::Instant::now();
        let (classification, plan) = self.engine.evaluate(request, self.tls, unix_now()).await;
        self.evaluation = Some(started.elapsed());
        self.classification = Some(classification);
        self.plan = plan;
        if self.adds_headers {
            self.add_planned_headers(request);
            // The values are in the request now: nothing reads them from the plan afterwards.
            self.plan.headers.clear();
        }
        Ok(())
    }

    async fn response_header_filter(
        &mut self,
        response: &mut ResponseHeader,
        _end_of_stream: bool,
    ) -> Result<()> {
        if self.plan.set_cookies.is_empty() || response.status.is_informational() {
            return Ok(());
        }
        let cache_control = response
            .headers
            .get_all(http::header::CACHE_CONTROL)
            .iter()
            .filter_map(|v| v.to_str().ok());
        if !self
            .engine
            .attributor()
            .response_allows_cookies(cache_control)
        {
            self.plan.cookies_withheld = Some("shared_cache");
            return Ok(());
        }
        for cookie in std::mem::take(&mut self.plan.set_cookies) {
            match response.append_header(http::header::SET_COOKIE, cookie) {
                Ok(_) => self.cookies_set += 1,
                Err(e) => tracing::warn!(error = %e, "could not add attribution cookie"),
            }
        }
        Ok(())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

impl DarklightContext {
    /// Adds the planned attribution headers to `request`, each under its title-cased name
    /// when `request` keeps spellings. The module does so itself unless built with
    /// [`DarklightModule::reloadable_leaving_headers`]; then the proxy calls it on each upstream
    /// request, and the plan keeps the headers so that every attempt at the upstream gets them.
    pub fn add_planned_headers(&self, request: &mut dyn HeaderEdits) {
        let keeps_spelling = request.keeps_spelling();
        let spellings = &self.engine.wire_names;
        let mut ahead = spellings.iter();
        for (name, value) in &self.plan.headers {
            // The titled spelling is looked up only for a request that keeps it: further along
            // the list, where the plan's order puts it, else anywhere in it.
            let wire = if keeps_spelling {
                ahead
                    .find(|(known, _)| known == name)
                    .or_else(|| spellings.iter().find(|(known, _)| known == name))
                    .map(|(_, titled)| titled.clone())
                    .unwrap_or_default()
            } else {
                Bytes::new()
            };
            if let Err(e) = request.set(name, &wire, value.clone()) {
                tracing::warn!(header = %name, error = %e, "could not add attribution header");
            }
        }
    }
}

/// Each attribution header name in title case (`x-darklight-in-app` → `X-Darklight-In-App`),
/// the form HTTP/1 peers conventionally see.
fn wire_names(attributor: &Attributor) -> Vec<(HeaderName, Bytes)> {
    let mut names = Vec::new();
    for name in attributor.header_names() {
        let mut upper = true;
        let titled: Vec<u8> = name
            .as_str()
            .bytes()
            .map(|b| {
                let out = if upper { b.to_ascii_uppercase() } else { b };
                upper = b == b'-';
                out
            })
            .collect();
        names.push((name.clone(), Bytes::from(titled)));
    }
    names
}

/// Removes every client-sent header in darklight's namespace; allocates only when one is there.
fn strip_reserved(request: &mut RequestHeader, attributor: &Attributor) {
    let forged: Vec<HeaderName> = request
        .headers
        .keys()
        .filter(|name| attributor.is_reserved_header(name.as_str()))
        .cloned()
        .collect();
    for name in forged {
        request.remove_header(&name);
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderMap;

    use super::super::header_edits::edit_headers;
    use super::*;

    /// A request from Facebook's in-app browser, with a forged attribution header.
    fn request() -> RequestHeader {
        let mut request =
            RequestHeader::build("GET", b"/articles/x", None).unwrap_or_else(|e| panic!("{e}"));
        for (name, value) in [
            ("Host", "news.example.com"),
            (
                "User-Agent",
                "Mozilla/5.0 (iPhone) Mobile/15E148 [FBAN/FBIOS;FBAV/440.0]",
            ),
            ("X-Darklight-Channel", "forged"),
        ] {
            request
                .append_header(name, value)
                .unwrap_or_else(|e| panic!("{e}"));
        }
        request
    }

    /// Runs the module built by `builder` on `request`; returns its context.
    async fn filtered(builder: ModuleBuilder, request: &mut RequestHeader) -> Module {
        let mut module = builder.init();
        module
            .request_header_filter(request)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        module
    }

    fn context(module: &Module) -> &DarklightContext {
        module
            .as_any()
            .downcast_ref::<DarklightContext>()
            .unwrap_or_else(|| panic!("not a DarklightContext"))
    }

    fn engine() -> EngineHandle {
        let engine = Engine::builtin().unwrap_or_else(|e| panic!("{e}"));
        Arc::new(ArcSwap::new(Arc::new(engine)))
    }

    #[tokio::test]
    async fn the_module_adds_its_headers_titled_and_drops_forged_ones() {
        let mut request = request();
        let module = filtered(DarklightModule::reloadable(engine()), &mut request).await;
        let channel: Vec<_> = request
            .headers
            .get_all("x-darklight-channel")
            .iter()
            .collect();
        assert_eq!(channel.len(), 1);
        assert_ne!(channel.first().map(|v| v.as_bytes()), Some(&b"forged"[..]));
        let spelled: Vec<&[u8]> = request
            .case_header_iter()
            .map(|(name, _)| name.as_slice())
            .collect();
        assert!(
            spelled.contains(&&b"X-Darklight-Channel"[..]),
            "{spelled:?}"
        );
        assert!(spelled.contains(&&b"X-Darklight-In-App"[..]), "{spelled:?}");
        // Moved into the request: the plan no longer holds them.
        assert!(context(&module).plan.headers.is_empty());
        assert!(context(&module).classification.is_some());
    }

    #[tokio::test]
    async fn a_module_leaving_headers_keeps_them_for_each_upstream_request() {
        let mut request = request();
        let module = filtered(
            DarklightModule::reloadable_leaving_headers(engine()),
            &mut request,
        )
        .await;
        assert!(!request.headers.contains_key("x-darklight-channel"));
        let context = context(&module);
        assert!(!context.plan.headers.is_empty());
        for _attempt in 0..2 {
            let mut upstream = HeaderMap::new();
            context.add_planned_headers(&mut upstream);
            assert_eq!(upstream.len(), context.plan.headers.len());
            assert!(upstream.contains_key("x-darklight-in-app"));
        }
    }

    /// The darklight header names a request spells on the wire.
    fn darklight_spellings(request: &RequestHeader) -> Vec<String> {
        request
            .case_header_iter()
            .map(|(name, _)| String::from_utf8_lossy(name.as_slice()).into_owned())
            .filter(|name| name.to_ascii_lowercase().starts_with("x-darklight-"))
            .collect()
    }

    #[tokio::test]
    async fn every_planned_header_is_titled_in_any_order() {
        let mut request = request();
        let mut module = filtered(
            DarklightModule::reloadable_leaving_headers(engine()),
            &mut request,
        )
        .await;
        let Some(context) = module.as_any_mut().downcast_mut::<DarklightContext>() else {
            panic!("not a DarklightContext");
        };
        let planned = context.plan.headers.len();
        assert!(planned >= 4, "{planned} headers planned");
        // In the plan's order (one pass over the spellings), then reversed (a search each).
        for reversed in [false, true] {
            if reversed {
                context.plan.headers.reverse();
            }
            let mut upstream =
                RequestHeader::build("GET", b"/", None).unwrap_or_else(|e| panic!("{e}"));
            edit_headers(&mut upstream, true, planned, |edits| {
                context.add_planned_headers(edits);
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{e}"));
            let spelled = darklight_spellings(&upstream);
            assert_eq!(spelled.len(), planned, "{spelled:?}");
            for name in &spelled {
                let titled = name
                    .split('-')
                    .all(|word| word.chars().next().is_some_and(|c| c.is_ascii_uppercase()));
                assert!(titled, "{name} in {spelled:?}");
            }
        }
    }
}
