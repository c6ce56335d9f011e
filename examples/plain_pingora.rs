//! A plain Pingora passthrough proxy with no middleware, built from the same Pingora as
//! darklight: the baseline of the load comparison (`benches/load/compare.sh`).
//!
//! Usage: `plain_pingora LISTEN UPSTREAM [THREADS]`, e.g.
//! `plain_pingora 127.0.0.1:8091 127.0.0.1:8090 1`. `UPSTREAM` and `THREADS` may also come from
//! the `PLAIN_UPSTREAM` and `PLAIN_THREADS` environment variables.

use std::net::SocketAddr;

use async_trait::async_trait;
use pingora::prelude::HttpPeer;
use pingora::proxy::{ProxyHttp, Session, http_proxy_service};
use pingora::server::Server;
use pingora::server::configuration::ServerConf;

/// The allocator the `darklight` binary uses, so that the comparison measures the middleware,
/// not the allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Sends every request to one upstream, unchanged.
struct Passthrough {
    upstream: SocketAddr,
}

#[async_trait]
impl ProxyHttp for Passthrough {
    type CTX = ();

    fn new_ctx(&self) -> Self::CTX {}

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut Self::CTX,
    ) -> pingora::Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }
}

fn usage(message: &str) -> ! {
    eprintln!("plain_pingora: {message}\nusage: plain_pingora LISTEN UPSTREAM [THREADS]");
    std::process::exit(2)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let listen = args
        .next()
        .unwrap_or_else(|| usage("missing the listen address"));
    let upstream = args
        .next()
        .or_else(|| std::env::var("PLAIN_UPSTREAM").ok())
        .unwrap_or_else(|| usage("missing the upstream address"));
    let upstream: SocketAddr = upstream
        .parse()
        .unwrap_or_else(|_| usage("the upstream must be IP:port"));
    let threads = args
        .next()
        .or_else(|| std::env::var("PLAIN_THREADS").ok())
        .map_or(Ok(1), |t| t.parse::<usize>())
        .unwrap_or_else(|_| usage("threads must be a number"));

    let conf = ServerConf {
        threads,
        grace_period_seconds: Some(1),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = http_proxy_service(&server.configuration, Passthrough { upstream });
    proxy.add_tcp(&listen);
    server.add_service(proxy);
    server.run_forever();
}
