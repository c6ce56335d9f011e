//! The ready reverse-proxy application: routing by `Host`, upstream selection, forwarding
//! headers, error pages and the access log.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use http::header;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorType, Result};

use pingora::modules::http::HttpModules;
use pingora::modules::http::compression::ResponseCompressionBuilder;

use crate::config::{self, Config};
use crate::routing::{SiteIndex, SiteRouter, normalize_host};
use crate::telemetry::route::RouteError;
use crate::telemetry::{RequestSpan, RequestTracer, SpanSettings};

use super::plugin::{DarklightContext, DarklightModule, Engine, EngineError};
use super::upstream::{PreparedPool, UpstreamError, UpstreamPool};

/// Why the proxy could not be built from a configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// An upstream could not be prepared.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The classification or attribution settings did not compile.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// A site's `routes` did not compile.
    #[error(transparent)]
    Routes(#[from] RouteError),
}

/// One site at run time.
pub struct Site {
    /// Name from the configuration, used in logs and spans.
    pub name: String,
    /// Send the client's `Host` upstream unchanged.
    pub preserve_host: bool,
    /// The upstreams and their balancer.
    pub pool: UpstreamPool,
}

/// Everything a request needs, built once from the configuration and then read-only.
pub struct ProxyState {
    /// Sites in configuration order.
    pub sites: Vec<Site>,
    /// Host to site.
    pub router: SiteRouter,
    /// Classification and attribution, shared with the plugin module.
    pub engine: Arc<Engine>,
    /// Keep and extend client-sent forwarding headers.
    pub trust_forwarded_headers: bool,
    /// Write one log line per request.
    pub access_log: bool,
    /// One span per request, when telemetry is enabled.
    pub telemetry: Option<RequestTracer>,
}

/// A site whose pool is built but whose health checks are not yet started.
struct PreparedSite {
    name: String,
    preserve_host: bool,
    pool: PreparedPool,
}

/// Sites whose pools are built but whose health checks are not yet started.
pub struct PreparedState {
    sites: Vec<PreparedSite>,
    router: SiteRouter,
    engine: Engine,
    trust_forwarded_headers: bool,
    access_log: bool,
    spans: SpanSettings,
    tracer: Option<opentelemetry_sdk::trace::SdkTracer>,
}

impl PreparedState {
    /// Compiles a validated configuration: resolves upstreams, builds balancers and rules.
    pub fn new(config: &Config) -> Result<Self, BuildError> {
        let engine = Engine::from_config(config)?;
        let mut sites = Vec::with_capacity(config.sites.len());
        for site in &config.sites {
            sites.push(PreparedSite {
                name: site.name.clone(),
                preserve_host: site.preserve_host,
                pool: PreparedPool::new(site)?,
            });
        }
        Ok(PreparedState {
            sites,
            router: config::site_router(config),
            engine,
            trust_forwarded_headers: config.server.trust_forwarded_headers,
            access_log: config.log.access_log,
            spans: SpanSettings::new(config)?,
            tracer: None,
        })
    }

    /// Records one span per request with `tracer` (from [`crate::telemetry::Telemetry`]).
    pub fn trace_with(&mut self, tracer: Option<opentelemetry_sdk::trace::SdkTracer>) {
        self.tracer = tracer;
    }

    /// Finishes the state; `run_health_checks` starts a site's health-checked balancer as a
    /// background service and returns the handle requests share with it.
    pub fn into_state(
        self,
        mut run_health_checks: impl FnMut(
            &str,
            pingora::lb::LoadBalancer<pingora::lb::selection::RoundRobin>,
        ) -> Arc<
            pingora::lb::LoadBalancer<pingora::lb::selection::RoundRobin>,
        >,
    ) -> ProxyState {
        let sites = self
            .sites
            .into_iter()
            .map(|site| Site {
                pool: site
                    .pool
                    .into_pool(|balancer| run_health_checks(&site.name, balancer)),
                name: site.name,
                preserve_host: site.preserve_host,
            })
            .collect();
        ProxyState {
            sites,
            router: self.router,
            engine: Arc::new(self.engine),
            trust_forwarded_headers: self.trust_forwarded_headers,
            access_log: self.access_log,
            telemetry: self.tracer.map(|t| RequestTracer::new(t, self.spans)),
        }
    }
}

/// Per-request state carried across Pingora's phases.
pub struct RequestContext {
    started: Instant,
    site: Option<SiteIndex>,
    upstream: Option<SocketAddr>,
    trace: Option<RequestSpan>,
}

/// The darklight reverse proxy, a Pingora [`ProxyHttp`] application.
pub struct DarklightProxy {
    state: Arc<ProxyState>,
    metrics: Option<Arc<crate::admin::metrics::Metrics>>,
}

impl DarklightProxy {
    /// Wraps a built state.
    pub fn new(state: Arc<ProxyState>) -> Self {
        DarklightProxy {
            state,
            metrics: None,
        }
    }

    /// Counts every finished request in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<crate::admin::metrics::Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }
}

/// Name of the response header that names the error darklight generated, for debugging.
const ERROR_HEADER: &str = "x-darklight-error";

#[async_trait]
impl ProxyHttp for DarklightProxy {
    type CTX = RequestContext;

    fn new_ctx(&self) -> Self::CTX {
        RequestContext {
            started: Instant::now(),
            site: None,
            upstream: None,
            trace: None,
        }
    }

    fn init_downstream_modules(&self, modules: &mut HttpModules) {
        // Pingora's default (disabled) compression module, which overriding this drops.
        modules.add_module(ResponseCompressionBuilder::enable(0));
        modules.add_module(DarklightModule::builder(Arc::clone(&self.state.engine)));
    }

    async fn early_request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<()> {
        if let Some(tracer) = &self.state.telemetry {
            ctx.trace = Some(super::spans::begin(tracer, session));
        }
        let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        if let Some(module) = session.downstream_modules_ctx.get_mut::<DarklightContext>() {
            module.tls = tls;
        }
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
        let request = session.req_header();
        // An absolute-form target's authority wins over `Host` (RFC 9112 section 3.2.2).
        let host = request
            .uri
            .authority()
            .map(|a| a.as_str())
            .or_else(|| {
                request
                    .headers
                    .get(header::HOST)
                    .and_then(|v| v.to_str().ok())
            })
            .and_then(normalize_host);
        let site = match &host {
            Some(host) => self.state.router.route(host),
            None => self.state.router.route(""),
        };
        let Some(site) = site else {
            write_plain_error(
                session,
                404,
                "no-site",
                "404 Not Found: no site is configured for this host.\n",
            )
            .await?;
            return Ok(true);
        };
        ctx.site = Some(site);
        Ok(false)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut Self::CTX,
    ) -> Result<Box<HttpPeer>> {
        let site = ctx
            .site
            .and_then(|i| self.state.sites.get(i))
            .ok_or_else(|| Error::explain(ErrorType::HTTPStatus(404), "no site for request"))?;
        let target = site.pool.select().ok_or_else(|| {
            Error::explain(
                ErrorType::ConnectNoRoute,
                format!("site `{}` has no healthy upstream", site.name),
            )
        })?;
        ctx.upstream = Some(target.address);
        Ok(target.peer())
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        let client_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        let original_host = session
            .req_header()
            .headers
            .get(header::HOST)
            .cloned()
            .or_else(|| {
                session
                    .req_header()
                    .uri
                    .authority()
                    .and_then(|a| http::HeaderValue::from_str(a.as_str()).ok())
            });
        super::forwarded::apply(
            upstream_request,
            client_ip,
            tls,
            original_host.as_ref(),
            self.state.trust_forwarded_headers,
        )?;

        if let Some(site) = ctx.site.and_then(|i| self.state.sites.get(i))
            && !site.preserve_host
            && let Some(target) = ctx.upstream.and_then(|a| site.pool.target(a))
        {
            upstream_request.insert_header(header::HOST, target.host_header())?;
        }
        if let (Some(tracer), Some(mut trace)) = (&self.state.telemetry, ctx.trace.take()) {
            let result = super::spans::on_upstream_request(
                tracer,
                &mut trace,
                session,
                ctx,
                &self.state,
                upstream_request,
            );
            ctx.trace = Some(trace);
            result?;
        }
        Ok(())
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        _ctx: &mut Self::CTX,
    ) -> FailToProxy {
        let (code, kind, text) = error_page(e);
        if code > 0
            && let Err(write_error) = write_plain_error(session, code, kind, text).await
        {
            tracing::debug!(error = %write_error, "could not send the error page");
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, error: Option<&Error>, ctx: &mut Self::CTX) {
        if let (Some(tracer), Some(mut trace)) = (&self.state.telemetry, ctx.trace.take()) {
            super::spans::finish(tracer, &mut trace, session, error, ctx, &self.state);
        }
        if let Some(metrics) = &self.metrics {
            super::observe::record(metrics, session, error, ctx, &self.state);
        }
        if !self.state.access_log {
            return;
        }
        super::access_log::write(session, error, ctx, &self.state);
    }
}

impl RequestContext {
    /// When the request started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// The site that served the request.
    pub fn site(&self) -> Option<SiteIndex> {
        self.site
    }

    /// The upstream the request was sent to.
    pub fn upstream(&self) -> Option<SocketAddr> {
        self.upstream
    }
}

/// Maps a proxy failure to a status, a short machine-readable kind, and a plain page.
fn error_page(e: &Error) -> (u16, &'static str, &'static str) {
    use pingora::ErrorSource;
    match e.etype() {
        ErrorType::HTTPStatus(404) => (
            404,
            "no-site",
            "404 Not Found: no site is configured for this host.\n",
        ),
        ErrorType::HTTPStatus(code) if (400..500).contains(code) => {
            (*code, "client", "The request was refused.\n")
        }
        ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout => (
            504,
            "upstream-timeout",
            "504 Gateway Timeout: the upstream server did not answer in time.\n",
        ),
        ErrorType::ConnectNoRoute => (
            502,
            "no-upstream",
            "502 Bad Gateway: no healthy upstream server is available.\n",
        ),
        _ => match e.esource() {
            ErrorSource::Upstream => (
                502,
                "upstream",
                "502 Bad Gateway: the upstream server is unavailable or answered badly.\n",
            ),
            ErrorSource::Downstream => match e.etype() {
                ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => {
                    (0, "client-gone", "")
                }
                _ => (400, "bad-request", "400 Bad Request.\n"),
            },
            ErrorSource::Internal | ErrorSource::Unset => {
                (500, "internal", "500 Internal Server Error.\n")
            }
        },
    }
}

/// Writes a short plain-text error response and closes the connection afterwards.
async fn write_plain_error(
    session: &mut Session,
    code: u16,
    kind: &'static str,
    text: &'static str,
) -> Result<()> {
    let mut response = ResponseHeader::build(code, Some(5))?;
    response.insert_header(header::CONTENT_TYPE, "text/plain; charset=utf-8")?;
    response.insert_header(header::CONTENT_LENGTH, text.len())?;
    response.insert_header(header::CACHE_CONTROL, "no-store")?;
    response.insert_header(ERROR_HEADER, kind)?;
    session
        .as_downstream_mut()
        .write_error_response(response, Bytes::from_static(text.as_bytes()))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_pages_by_cause() {
        let cases = [
            (
                ErrorType::ConnectRefused,
                pingora::ErrorSource::Upstream,
                502,
            ),
            (
                ErrorType::ConnectTimedout,
                pingora::ErrorSource::Upstream,
                504,
            ),
            (ErrorType::ReadTimedout, pingora::ErrorSource::Upstream, 504),
            (
                ErrorType::ConnectNoRoute,
                pingora::ErrorSource::Internal,
                502,
            ),
            (
                ErrorType::HTTPStatus(404),
                pingora::ErrorSource::Internal,
                404,
            ),
            (
                ErrorType::ConnectionClosed,
                pingora::ErrorSource::Downstream,
                0,
            ),
            (
                ErrorType::InvalidHTTPHeader,
                pingora::ErrorSource::Downstream,
                400,
            ),
        ];
        for (etype, source, expected) in cases {
            let error = Error::create(etype.clone(), source, None, None);
            assert_eq!(error_page(&error).0, expected, "{etype:?}");
        }
    }
}
