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
use pingora::{Error, ErrorType, OrErr, Result};

use pingora::modules::http::HttpModules;
use pingora::modules::http::compression::ResponseCompressionBuilder;

use crate::config::{self, Config};
use crate::limits::LimitsConfig;
use crate::routing::{SiteIndex, SiteRouter, normalize_host};
use crate::telemetry::route::RouteError;
use crate::telemetry::{RequestSpan, RequestTracer, SpanSettings};

use arc_swap::ArcSwap;

use super::header_edits::{HeaderEdits, WireName, edit_headers};
use super::plugin::{DarklightContext, DarklightModule, Engine, EngineError, EngineHandle};
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
    /// Keep the spelling of header names on the upstream request (see
    /// [`super::header_edits`]).
    pub preserve_header_case: bool,
    /// Write one log line per request.
    pub access_log: bool,
    /// One span per request, when telemetry is enabled.
    pub telemetry: Option<RequestTracer>,
    /// Request size limits.
    pub limits: LimitsConfig,
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
    preserve_header_case: bool,
    access_log: bool,
    spans: SpanSettings,
    tracer: Option<crate::telemetry::SpanRecorder>,
    limits: LimitsConfig,
}

impl PreparedState {
    /// Compiles a validated configuration: resolves upstreams, builds balancers and rules.
    pub fn new(config: &Config) -> Result<Self, BuildError> {
        PreparedState::new_reusing(config, None)
    }

    /// Like [`PreparedState::new`], keeping what `previous` learnt (the preview stores).
    pub fn new_reusing(config: &Config, previous: Option<&Engine>) -> Result<Self, BuildError> {
        let engine = Engine::from_config_reusing(config, previous)?;
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
            preserve_header_case: config.server.preserve_header_case,
            access_log: config.log.access_log,
            spans: SpanSettings::new(config)?,
            tracer: None,
            limits: config.limits.clone(),
        })
    }

    /// Records one span per request with `tracer` (from [`crate::telemetry::Telemetry`]).
    pub fn trace_with(&mut self, tracer: Option<crate::telemetry::SpanRecorder>) {
        self.tracer = tracer;
    }

    /// Finishes the state.
    pub fn into_state(self) -> ProxyState {
        let sites = self
            .sites
            .into_iter()
            .map(|site| Site {
                pool: site.pool.into_pool(),
                name: site.name,
                preserve_host: site.preserve_host,
            })
            .collect();
        ProxyState {
            sites,
            router: self.router,
            engine: Arc::new(self.engine),
            trust_forwarded_headers: self.trust_forwarded_headers,
            preserve_header_case: self.preserve_header_case,
            access_log: self.access_log,
            telemetry: self.tracer.map(|t| RequestTracer::new(t, self.spans)),
            limits: self.limits,
        }
    }
}

/// The state in force, swapped whole by a reload; each request keeps the one it started with.
pub type StateHandle = Arc<ArcSwap<ProxyState>>;

/// Per-request state carried across Pingora's phases.
pub struct RequestContext {
    /// The configuration snapshot this request uses from start to end.
    state: Arc<ProxyState>,
    started: Instant,
    site: Option<SiteIndex>,
    upstream: Option<SocketAddr>,
    trace: Option<RequestSpan>,
}

/// The darklight reverse proxy, a Pingora [`ProxyHttp`] application.
pub struct DarklightProxy {
    state: StateHandle,
    engine: EngineHandle,
    metrics: Option<Arc<crate::admin::metrics::Metrics>>,
}

impl DarklightProxy {
    /// Serves whatever state `state` holds; a reload stores a new state there and the
    /// matching engine in `engine` (which the plugin module reads).
    pub fn new(state: StateHandle, engine: EngineHandle) -> Self {
        DarklightProxy {
            state,
            engine,
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
            state: self.state.load_full(),
            started: Instant::now(),
            site: None,
            upstream: None,
            trace: None,
        }
    }

    fn init_downstream_modules(&self, modules: &mut HttpModules) {
        // Pingora's default (disabled) compression module, which overriding this drops.
        modules.add_module(ResponseCompressionBuilder::enable(0));
        // The planned headers go in with darklight's others, in `upstream_request_filter`.
        modules.add_module(DarklightModule::reloadable_leaving_headers(Arc::clone(
            &self.engine,
        )));
    }

    async fn early_request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<()> {
        let request = session.req_header();
        let uri_bytes = request.uri.path_and_query().map_or(0, |p| p.as_str().len());
        let headers = request
            .headers
            .iter()
            .map(|(name, value)| (name.as_str().len(), value.len()));
        if let Err(exceeded) = ctx
            .state
            .limits
            .check(uri_bytes, request.headers.len(), headers)
        {
            return Error::e_explain(
                ErrorType::HTTPStatus(exceeded.status()),
                format!("request over a configured limit: {exceeded:?}"),
            );
        }
        if let Some(tracer) = &ctx.state.telemetry {
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
            Some(host) => ctx.state.router.route(host),
            None => ctx.state.router.route(""),
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
            .and_then(|i| ctx.state.sites.get(i))
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
        let state = Arc::clone(&ctx.state);
        let module = session.downstream_modules_ctx.get::<DarklightContext>();
        // Forwarding (4), `Host`, the trace context (2) and the attribution headers.
        let additional = 7 + module.map_or(0, |m| m.plan.headers.len());
        let mut trace = ctx.trace.take();
        let result = edit_headers(
            upstream_request,
            state.preserve_header_case,
            additional,
            |headers| {
                add_proxy_headers(session, ctx, &state, headers)?;
                if let Some(module) = module {
                    module.add_planned_headers(headers);
                }
                if let (Some(tracer), Some(trace)) = (&state.telemetry, trace.as_mut()) {
                    super::spans::on_upstream_request(
                        tracer, trace, session, module, ctx, &state, headers,
                    )?;
                }
                Ok(())
            },
        );
        ctx.trace = trace;
        result
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
        let state = Arc::clone(&ctx.state);
        // The plugin's context, looked up once for the span, the metrics and the log line.
        let module = session.downstream_modules_ctx.get::<DarklightContext>();
        if let (Some(tracer), Some(mut trace)) = (&state.telemetry, ctx.trace.take()) {
            super::spans::finish(tracer, &mut trace, session, module, error, ctx, &state);
        }
        if let Some(metrics) = &self.metrics {
            super::observe::record(metrics, session, module, error, ctx, &state);
        }
        if state.access_log {
            super::access_log::write(session, module, error, ctx, &state);
        }
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

/// The forwarding headers, and the upstream's own `Host` when the site does not keep the
/// client's.
fn add_proxy_headers(
    session: &Session,
    ctx: &RequestContext,
    state: &ProxyState,
    headers: &mut dyn HeaderEdits,
) -> Result<()> {
    let client_ip = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip());
    let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
    let request = session.req_header();
    let from_uri;
    let original_host = match request.headers.get(header::HOST) {
        Some(host) => Some(host),
        None => {
            from_uri = request
                .uri
                .authority()
                .and_then(|a| http::HeaderValue::from_str(a.as_str()).ok());
            from_uri.as_ref()
        }
    };
    super::forwarded::apply(
        headers,
        client_ip,
        tls,
        original_host,
        state.trust_forwarded_headers,
    )?;
    if let Some(site) = ctx.site.and_then(|i| state.sites.get(i))
        && !site.preserve_host
        && let Some(target) = ctx.upstream.and_then(|a| site.pool.target(a))
    {
        let value = match target.host_value() {
            Some(host) => host.clone(),
            None => http::HeaderValue::try_from(target.host_header())
                .or_err(ErrorType::InvalidHTTPHeader, "invalid upstream host")?,
        };
        headers.set_named(&HOST, value)?;
    }
    Ok(())
}

/// `Host`, titled as Pingora titles it.
static HOST: WireName = WireName::from_static("host", "Host");

/// Maps a proxy failure to a status, a short machine-readable kind, and a plain page.
fn error_page(e: &Error) -> (u16, &'static str, &'static str) {
    use pingora::ErrorSource;
    match e.etype() {
        ErrorType::HTTPStatus(404) => (
            404,
            "no-site",
            "404 Not Found: no site is configured for this host.\n",
        ),
        ErrorType::HTTPStatus(414) => (414, "limit", "414 URI Too Long.\n"),
        ErrorType::HTTPStatus(431) => (431, "limit", "431 Request Header Fields Too Large.\n"),
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
