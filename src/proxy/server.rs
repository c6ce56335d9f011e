//! Builds the Pingora server for a configuration: the proxy service with its listeners, one
//! health-check service per checked site, and the demo origin when configured.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;

use pingora::apps::http_app::HttpServer;
use pingora::proxy::http_proxy_service_with_name;
use pingora::server::Server;
use pingora::server::configuration::ServerConf;
use pingora::services::background::background_service;
use pingora::services::listening::Service;

use arc_swap::ArcSwap;
use tokio::net::TcpSocket;

use super::app::{BuildError, DarklightProxy, PreparedState, StateHandle};
use super::demo::DemoOrigin;
use super::plugin::EngineHandle;
use super::reload::{HealthChecks, Reloader};
use super::tls::{CertStore, TlsError};
use crate::admin::AdminApp;
use crate::admin::metrics::Metrics;
use crate::config::Config;
use crate::correlation::PreviewTable;
use crate::telemetry::Telemetry;

/// Why darklight could not start serving.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The configuration could not be turned into a running proxy.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// A listen address cannot be bound (in use, or not an address of this machine).
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address from the configuration.
        address: String,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// The TLS certificate or key could not be loaded.
    #[error("listener {address}: cannot load TLS certificate/key: {reason}")]
    Tls {
        /// The listener address.
        address: String,
        /// Pingora's message.
        reason: String,
    },
}

/// Builds a ready-to-run Pingora server for `config`, without spans.
///
/// Listen addresses are probed first so that a port already in use is a clear error here
/// rather than a failure inside Pingora's startup.
pub fn build_server(config: &Config) -> Result<Server, RunError> {
    build_server_with_telemetry(config, &Telemetry::disabled())
}

/// Builds a ready-to-run Pingora server for `config` that records spans with `telemetry`
/// (started by the caller, which shuts it down after [`Server::run`] returns).
pub fn build_server_with_telemetry(
    config: &Config,
    telemetry: &Telemetry,
) -> Result<Server, RunError> {
    build(config, telemetry, &RunOptions::default()).map(|built| built.server)
}

/// How the server is started, beyond its configuration.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// The configuration file, re-read on SIGHUP; without it, reload is off.
    pub config_path: Option<std::path::PathBuf>,
    /// Take the listening sockets over from a running darklight (zero-downtime upgrade).
    pub upgrade: bool,
}

/// A built server with the handles that outlive it.
pub struct BuiltServer {
    /// The server, ready to run.
    pub server: Server,
    /// The metrics the proxy records and the admin listener serves.
    pub metrics: Arc<Metrics>,
    /// The certificates of each TLS listener, in `listen` order (reloaded on SIGHUP).
    pub certificates: Vec<Arc<CertStore>>,
}

/// Builds the server with span recording, metrics, SIGHUP reload and upgrade as `options` say.
pub fn build(
    config: &Config,
    telemetry: &Telemetry,
    options: &RunOptions,
) -> Result<BuiltServer, RunError> {
    // When upgrading, the old process still holds the ports and hands them over.
    if !options.upgrade {
        probe_listeners(config)?;
    }

    let conf = ServerConf {
        threads: match config.server.threads {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        },
        grace_period_seconds: Some(config.server.grace_period.0.as_secs()),
        graceful_shutdown_timeout_seconds: Some(config.server.shutdown_timeout.0.as_secs()),
        upstream_keepalive_pool_size: config.server.upstream_keepalive_pool,
        upgrade_sock: config.server.upgrade_sock.to_string_lossy().into_owned(),
        pid_file: config.server.pid_file.to_string_lossy().into_owned(),
        ca_file: config
            .server
            .upstream_ca_file
            .as_ref()
            .map(|p| p.to_string_lossy().into_owned()),
        ..ServerConf::default()
    };
    let opt = pingora::server::configuration::Opt {
        upgrade: options.upgrade,
        ..Default::default()
    };
    let mut server = Server::new_with_opt_and_conf(Some(opt), conf);
    server.bootstrap();

    let mut prepared = PreparedState::new(config)?;
    prepared.trace_with(telemetry.recorder());
    let state = prepared.into_state();

    let metrics = Arc::new(Metrics::new());
    metrics.describe(config, &state.engine);
    metrics.watch_spans(telemetry.stats());
    let previews = state.engine.preview_table().cloned();
    if let Some(table) = &previews {
        server.add_service(background_service(
            "preview table expiry",
            PreviewExpiry(Arc::clone(table)),
        ));
    }
    if let Some(admin) = &config.admin {
        let mut service = Service::new(
            "darklight admin".to_string(),
            HttpServer::new_app(AdminApp::new(previews.clone()).with_metrics(Arc::clone(&metrics))),
        );
        service.add_tcp(&admin.listen.to_string());
        server.add_service(service);
    }

    let engine: EngineHandle = Arc::new(ArcSwap::new(Arc::clone(&state.engine)));
    let state: StateHandle = Arc::new(ArcSwap::new(Arc::new(state)));
    server.add_service(background_service(
        "health checks",
        HealthChecks::new(Arc::clone(&state)),
    ));
    let mut proxy = http_proxy_service_with_name(
        &server.configuration,
        DarklightProxy::new(Arc::clone(&state), Arc::clone(&engine))
            .with_metrics(Arc::clone(&metrics)),
        "darklight proxy",
    );
    let mut certificates = Vec::new();
    for listener in &config.listen {
        let address = listener.address.to_string();
        match &listener.tls {
            None => proxy.add_tcp(&address),
            Some(tls) => {
                let tls_error = |error: TlsError| RunError::Tls {
                    address: address.clone(),
                    reason: error.to_string(),
                };
                let store = Arc::new(
                    CertStore::load(&address, tls.certificates.clone()).map_err(tls_error)?,
                );
                let settings =
                    CertStore::listener_settings(&store, tls.http2).map_err(tls_error)?;
                proxy.add_tls_with_settings(&address, None, settings);
                certificates.push(store);
            }
        }
    }
    metrics.watch_certificates(certificates.clone());
    server.add_service(proxy);

    if let Some(path) = &options.config_path {
        server.add_service(background_service(
            "configuration reload",
            Reloader::new(
                path.clone(),
                config.clone(),
                state,
                engine,
                telemetry.recorder(),
            )
            .with_metrics(Arc::clone(&metrics))
            .with_certificates(certificates.clone()),
        ));
    }

    if let Some(demo) = &config.demo {
        let mut origin = Service::new("demo origin".to_string(), HttpServer::new_app(DemoOrigin));
        origin.add_tcp(&demo.listen.to_string());
        server.add_service(origin);
    }
    Ok(BuiltServer {
        server,
        metrics,
        certificates,
    })
}

/// Builds a server that runs only the demo origin, for `darklight demo`.
pub fn build_demo_server(listen: &str) -> Result<Server, RunError> {
    probe(listen)?;
    let mut server = Server::new_with_opt_and_conf(None, ServerConf::default());
    server.bootstrap();
    let mut origin = Service::new("demo origin".to_string(), HttpServer::new_app(DemoOrigin));
    origin.add_tcp(listen);
    server.add_service(origin);
    Ok(server)
}

/// Drops expired previews every minute, so an idle table shrinks too.
struct PreviewExpiry(Arc<PreviewTable>);

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for PreviewExpiry {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = tick.tick() => self.0.expire(super::plugin::unix_now()),
                _ = shutdown.changed() => return,
            }
        }
    }
}

fn probe_listeners(config: &Config) -> Result<(), RunError> {
    let demo = config.demo.iter().map(|d| d.listen);
    let admin = config.admin.iter().map(|a| a.listen);
    for address in config
        .listen
        .iter()
        .map(|l| l.address)
        .chain(demo)
        .chain(admin)
    {
        probe(&address.to_string())?;
    }
    Ok(())
}

/// Checks that `address` can be bound, without listening on it. A probe that listened would
/// accept connections until it closed, then reset them, and leave the port closed until
/// Pingora listens: a client or health check would take the port as ready, then fail.
fn probe(address: &str) -> Result<(), RunError> {
    let error = |source| RunError::Bind {
        address: address.to_string(),
        source,
    };
    let mut failure = None;
    // A name may stand for several addresses: any that binds will do, as for a listener.
    for socket_address in address.to_socket_addrs().map_err(error)? {
        match bind_only(socket_address) {
            Ok(_) => return Ok(()),
            Err(e) => failure = Some(e),
        }
    }
    Err(error(failure.unwrap_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, "no address to bind")
    })))
}

/// A TCP socket bound to `address`, not listening. `SO_REUSEADDR` is set as on Pingora's
/// listeners, so connections of an earlier run still in `TIME_WAIT` do not count as the port
/// being in use; a socket listening on it still does.
fn bind_only(address: SocketAddr) -> io::Result<TcpSocket> {
    let socket = match address {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use std::net::{TcpListener, TcpStream};

    use super::*;

    /// An address of 127.0.0.1 with a port nothing listens on now.
    fn unused_address() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        listener.local_addr().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_probed_port_accepts_no_connection() {
        let address = unused_address();
        let socket = bind_only(address).unwrap_or_else(|e| panic!("{e}"));
        let connected = TcpStream::connect(address);
        assert_eq!(
            connected.as_ref().map_err(io::Error::kind).err(),
            Some(io::ErrorKind::ConnectionRefused),
            "{connected:?}"
        );
        drop(socket);
    }

    #[test]
    fn a_free_port_passes_and_stays_free() {
        let address = unused_address();
        assert!(probe(&address.to_string()).is_ok());
        assert!(
            TcpListener::bind(address).is_ok(),
            "the probe kept {address}"
        );
    }

    #[test]
    fn a_port_in_use_is_reported_with_its_address() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let address = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("{e}"))
            .to_string();
        match probe(&address) {
            Err(RunError::Bind {
                address: reported,
                source,
            }) => {
                assert_eq!(reported, address);
                assert_eq!(source.kind(), io::ErrorKind::AddrInUse);
            }
            other => panic!("expected a bind error, got {other:?}"),
        }
    }

    #[test]
    fn an_address_of_no_local_interface_is_refused() {
        // TEST-NET-1 (RFC 5737) is never assigned to this machine.
        let error = probe("192.0.2.1:8080").err();
        assert!(
            matches!(&error, Some(RunError::Bind { source, .. })
                if source.kind() == io::ErrorKind::AddrNotAvailable),
            "{error:?}"
        );
    }
}
