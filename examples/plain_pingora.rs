//! A plain Pingora passthrough proxy with no middleware, built from the same Pingora as
//! darklight: the baseline of the load comparison (`benches/load/compare.sh`).
//!
//! Usage: `plain_pingora LISTEN UPSTREAM [THREADS]`, e.g.
//! `plain_pingora 127.0.0.1:8091 127.0.0.1:8090 1`. `UPSTREAM` and `THREADS` may also come from
//! the `PLAIN_UPSTREAM` and `PLAIN_THREADS` environment variables.
//!
//! Two switches, off by default, add one piece of darklight's work at a time, to measure what
//! Pingora itself charges for it: `PLAIN_EXTRA_HEADERS=N` adds `N` (at most 16) custom headers
//! to each upstream request, as darklight adds its attribution and forwarding headers;
//! `PLAIN_TIMEOUTS=1` sets darklight's default upstream timeouts.

use std::net::SocketAddr;

use async_trait::async_trait;
use darklight::config::TimeoutConfig;
use darklight::proxy::upstream::set_timeouts;
use pingora::http::RequestHeader;
use pingora::prelude::HttpPeer;
use pingora::proxy::{ProxyHttp, Session, http_proxy_service};
use pingora::server::Server;
use pingora::server::configuration::ServerConf;

/// The allocator the `darklight` binary uses, so that the comparison measures the middleware,
/// not the allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Sends every request to one upstream, unchanged unless a switch says otherwise.
struct Passthrough {
    upstream: SocketAddr,
    /// How many of [`EXTRA_HEADERS`] each upstream request gets (`PLAIN_EXTRA_HEADERS`).
    extra_headers: usize,
    /// darklight's default upstream timeouts, set on each peer as darklight does
    /// (`PLAIN_TIMEOUTS=1`).
    timeouts: Option<TimeoutConfig>,
}

/// Custom header names, as many as darklight adds at most to a request.
const EXTRA_HEADERS: [&str; 16] = [
    "X-Extra-01",
    "X-Extra-02",
    "X-Extra-03",
    "X-Extra-04",
    "X-Extra-05",
    "X-Extra-06",
    "X-Extra-07",
    "X-Extra-08",
    "X-Extra-09",
    "X-Extra-10",
    "X-Extra-11",
    "X-Extra-12",
    "X-Extra-13",
    "X-Extra-14",
    "X-Extra-15",
    "X-Extra-16",
];

#[async_trait]
impl ProxyHttp for Passthrough {
    type CTX = ();

    fn new_ctx(&self) -> Self::CTX {}

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut Self::CTX,
    ) -> pingora::Result<Box<HttpPeer>> {
        let mut peer = Box::new(HttpPeer::new(self.upstream, false, String::new()));
        if let Some(timeouts) = &self.timeouts {
            set_timeouts(&mut peer.options, timeouts);
        }
        Ok(peer)
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        _ctx: &mut Self::CTX,
    ) -> pingora::Result<()> {
        for name in &EXTRA_HEADERS[..self.extra_headers] {
            upstream_request.insert_header(*name, "dark_social")?;
        }
        Ok(())
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

    let extra_headers = std::env::var("PLAIN_EXTRA_HEADERS")
        .map_or(Ok(0), |n| n.parse::<usize>())
        .ok()
        .filter(|n| *n <= EXTRA_HEADERS.len())
        .unwrap_or_else(|| usage("PLAIN_EXTRA_HEADERS must be a number from 0 to 16"));
    let timeouts = match std::env::var("PLAIN_TIMEOUTS").as_deref() {
        Ok("1") => Some(TimeoutConfig::default()),
        Ok("0") | Err(_) => None,
        Ok(_) => usage("PLAIN_TIMEOUTS must be 0 or 1"),
    };

    let conf = ServerConf {
        threads,
        grace_period_seconds: Some(1),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = http_proxy_service(
        &server.configuration,
        Passthrough {
            upstream,
            extra_headers,
            timeouts,
        },
    );
    proxy.add_tcp(&listen);
    server.add_service(proxy);
    server.run_forever();
}
