//! A site's upstream pool: resolved addresses, round-robin selection, optional health checks,
//! and the [`HttpPeer`] settings (TLS, SNI, timeouts) each request is sent with.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use pingora::lb::LoadBalancer;
use pingora::lb::health_check::{HealthCheck, HttpHealthCheck, TcpHealthCheck};
use pingora::lb::selection::RoundRobin;
use pingora::upstreams::peer::{HttpPeer, PeerOptions};

use crate::config::{HealthCheckKind, SiteConfig, TimeoutConfig, UpstreamScheme, UpstreamUrl};
use crate::lookup_map::LookupMap;

/// Why a site's upstreams could not be prepared.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpstreamError {
    /// A host name did not resolve.
    #[error("site `{site}`: upstream `{upstream}` cannot be resolved: {reason}")]
    Resolve {
        /// Site name.
        site: String,
        /// Upstream as written.
        upstream: String,
        /// Resolver message.
        reason: String,
    },
    /// Two upstream URLs of one site resolve to the same address.
    #[error("site `{site}`: upstreams `{first}` and `{second}` are the same address {address}")]
    Duplicate {
        /// Site name.
        site: String,
        /// First upstream as written.
        first: String,
        /// Second upstream as written.
        second: String,
        /// The shared address.
        address: SocketAddr,
    },
    /// Pingora refused the health check request.
    #[error("site `{site}`: health check: {reason}")]
    HealthCheck {
        /// Site name.
        site: String,
        /// What went wrong.
        reason: String,
    },
}

/// How to reach one resolved upstream address.
#[derive(Debug, Clone)]
pub struct UpstreamTarget {
    /// The URL it came from.
    pub url: UpstreamUrl,
    /// Resolved address.
    pub address: SocketAddr,
    /// Pre-built peer, cloned per request (cheap) so the request path builds nothing.
    peer: HttpPeer,
    /// [`UpstreamTarget::host_header`] as a header value, built once (a clone shares it).
    host_value: Option<http::HeaderValue>,
}

impl UpstreamTarget {
    /// A fresh peer for one request.
    pub fn peer(&self) -> Box<HttpPeer> {
        Box::new(self.peer.clone())
    }

    /// The `Host` value to send when the site does not preserve the client's, ready to send;
    /// `None` when the configured host cannot be a header value.
    pub fn host_value(&self) -> Option<&http::HeaderValue> {
        self.host_value.as_ref()
    }

    /// The `Host` value to send when the site does not preserve the client's.
    pub fn host_header(&self) -> String {
        let default_port = match self.url.scheme {
            UpstreamScheme::Http => 80,
            UpstreamScheme::Https => 443,
        };
        let host = if self.url.host.contains(':') {
            format!("[{}]", self.url.host)
        } else {
            self.url.host.clone()
        };
        if self.url.port == default_port {
            host
        } else {
            format!("{host}:{}", self.url.port)
        }
    }
}

/// A site's upstreams, resolved and with their balancer built, before the server runs it.
pub struct PreparedPool {
    balancer: LoadBalancer<RoundRobin>,
    targets: LookupMap<SocketAddr, UpstreamTarget>,
    /// The addresses in configuration order.
    order: Vec<SocketAddr>,
    health_check_interval: Option<std::time::Duration>,
}

impl PreparedPool {
    /// Resolves a site's upstreams and prepares its balancer and health checks.
    pub fn new(site: &SiteConfig) -> Result<Self, UpstreamError> {
        let mut targets: LookupMap<SocketAddr, UpstreamTarget> = LookupMap::default();
        let mut order = Vec::with_capacity(site.upstreams.len());
        for url in &site.upstreams {
            let address = resolve(url).map_err(|reason| UpstreamError::Resolve {
                site: site.name.clone(),
                upstream: url.original.clone(),
                reason,
            })?;
            if let Some(existing) = targets.get(&address) {
                return Err(UpstreamError::Duplicate {
                    site: site.name.clone(),
                    first: existing.url.original.clone(),
                    second: url.original.clone(),
                    address,
                });
            }
            let peer = build_peer(site, url, address);
            let mut target = UpstreamTarget {
                url: url.clone(),
                address,
                peer,
                host_value: None,
            };
            target.host_value = http::HeaderValue::try_from(target.host_header()).ok();
            targets.insert(address, target);
            order.push(address);
        }

        let mut balancer = LoadBalancer::<RoundRobin>::try_from_iter(targets.keys().copied())
            .map_err(|e| UpstreamError::Resolve {
                site: site.name.clone(),
                upstream: String::new(),
                reason: e.to_string(),
            })?;

        if let Some(check) = &site.health_check {
            let first = site.upstreams.first();
            let tls = first.is_some_and(|u| u.scheme == UpstreamScheme::Https);
            let host = check
                .host
                .clone()
                .or_else(|| site.upstream_tls.sni.clone())
                .or_else(|| first.map(|u| u.host.clone()))
                .unwrap_or_default();
            let health: Box<dyn HealthCheck + Send + Sync> = match check.kind {
                HealthCheckKind::Tcp if tls => TcpHealthCheck::new_tls(&host),
                HealthCheckKind::Tcp => TcpHealthCheck::new(),
                HealthCheckKind::Http => Box::new(
                    http_health_check(&host, tls, &check.path).map_err(|reason| {
                        UpstreamError::HealthCheck {
                            site: site.name.clone(),
                            reason,
                        }
                    })?,
                ),
            };
            balancer.set_health_check(health);
        }

        Ok(PreparedPool {
            balancer,
            targets,
            order,
            health_check_interval: site.health_check.as_ref().map(|c| c.interval.0),
        })
    }

    /// Finishes the pool.
    pub fn into_pool(self) -> UpstreamPool {
        UpstreamPool {
            balancer: Arc::new(self.balancer),
            targets: self.targets,
            order: self.order,
            next: AtomicUsize::new(0),
            health_check_interval: self.health_check_interval,
        }
    }
}

/// All upstreams of one site and the balancer that picks among them.
pub struct UpstreamPool {
    balancer: Arc<LoadBalancer<RoundRobin>>,
    targets: LookupMap<SocketAddr, UpstreamTarget>,
    /// The addresses in configuration order, taken in turn when nothing checks their health.
    order: Vec<SocketAddr>,
    /// The turn of the next request, when nothing checks the upstreams' health.
    next: AtomicUsize,
    health_check_interval: Option<std::time::Duration>,
}

impl UpstreamPool {
    /// How often this pool's upstreams are checked, if they are.
    pub fn health_check_interval(&self) -> Option<std::time::Duration> {
        self.health_check_interval
    }

    /// Probes every upstream once and updates which are eligible.
    pub async fn run_health_check(&self) {
        self.balancer.backends().run_health_check(true).await;
    }

    /// Picks the next healthy upstream, round-robin.
    pub fn select(&self) -> Option<&UpstreamTarget> {
        // With no health check every upstream is always eligible: taking them in turn here
        // saves the balancer's health lookup, which hashes the address on every request.
        if self.health_check_interval.is_none() {
            let address = match self.order.as_slice() {
                [only] => only,
                all => all.get(self.next.fetch_add(1, Ordering::Relaxed) % all.len().max(1))?,
            };
            return self.targets.get(address);
        }
        let backend = self.balancer.select(b"", 256)?;
        self.targets.get(backend.addr.as_inet()?)
    }

    /// The upstream at `address`, if it belongs to this pool.
    pub fn target(&self, address: SocketAddr) -> Option<&UpstreamTarget> {
        self.targets.get(&address)
    }

    /// Every upstream of the pool, for summaries.
    pub fn targets(&self) -> impl Iterator<Item = &UpstreamTarget> {
        self.targets.values()
    }
}

fn resolve(url: &UpstreamUrl) -> Result<SocketAddr, String> {
    if let Ok(ip) = url.host.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, url.port));
    }
    (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(|e| e.to_string())?
        .next()
        .ok_or_else(|| "no address found".to_string())
}

/// Sets a site's timeouts on an upstream peer. `connect` bounds the TCP connection alone and
/// with its TLS handshake; see [`TimeoutConfig`] for the others.
pub fn set_timeouts(options: &mut PeerOptions, timeouts: &TimeoutConfig) {
    options.connection_timeout = Some(timeouts.connect.0);
    options.total_connection_timeout = Some(timeouts.connect.0);
    options.read_timeout = Some(timeouts.read.0);
    options.write_timeout = Some(timeouts.write.0);
    options.idle_timeout = Some(timeouts.idle.0);
}

fn build_peer(site: &SiteConfig, url: &UpstreamUrl, address: SocketAddr) -> HttpPeer {
    let tls = url.scheme == UpstreamScheme::Https;
    let sni = if tls {
        site.upstream_tls
            .sni
            .clone()
            .unwrap_or_else(|| url.host.clone())
    } else {
        String::new()
    };
    let mut peer = HttpPeer::new(address, tls, sni);
    set_timeouts(&mut peer.options, &site.timeouts);
    peer.options.verify_cert = site.upstream_tls.verify;
    peer.options.verify_hostname = site.upstream_tls.verify;
    peer
}

fn http_health_check(host: &str, tls: bool, path: &str) -> Result<HttpHealthCheck, String> {
    let mut check = HttpHealthCheck::new(host, tls);
    let mut request = pingora::http::RequestHeader::build("GET", path.as_bytes(), None)
        .map_err(|e| format!("invalid path `{path}`: {e}"))?;
    request
        .insert_header("Host", host)
        .map_err(|e| format!("invalid host `{host}`: {e}"))?;
    request
        .insert_header(
            "User-Agent",
            concat!("darklight-health/", env!("CARGO_PKG_VERSION")),
        )
        .map_err(|e| e.to_string())?;
    check.req = request;
    check.validator = Some(Box::new(|response| {
        if response.status.is_success() {
            Ok(())
        } else {
            pingora::Error::e_explain(
                pingora::ErrorType::Custom("unhealthy status"),
                format!("health check answered {}", response.status),
            )
        }
    }));
    Ok(check)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn pool(site: &str) -> UpstreamPool {
        let yaml = format!("listen: [127.0.0.1:8080]\nsites:\n  - name: app\n{site}");
        let config =
            crate::config::parse(&yaml, Path::new("test.yaml")).unwrap_or_else(|e| panic!("{e}"));
        let site = config.sites.first().unwrap_or_else(|| panic!("no site"));
        PreparedPool::new(site)
            .unwrap_or_else(|e| panic!("{e}"))
            .into_pool()
    }

    fn picks(pool: &UpstreamPool, n: usize) -> Vec<u16> {
        (0..n)
            .map(|_| pool.select().map_or(0, |t| t.address.port()))
            .collect()
    }

    #[test]
    fn unchecked_upstreams_take_turns_in_configuration_order() {
        let three = pool(
            "    upstreams: [http://127.0.0.1:9003, http://127.0.0.1:9001, http://127.0.0.1:9002]\n",
        );
        assert_eq!(picks(&three, 6), [9003, 9001, 9002, 9003, 9001, 9002]);
        let one = pool("    upstreams: [http://127.0.0.1:9001]\n");
        assert_eq!(picks(&one, 3), [9001, 9001, 9001]);
    }

    #[test]
    fn checked_upstreams_are_picked_by_the_balancer() {
        let two = pool(
            "    upstreams: [http://127.0.0.1:9001, http://127.0.0.1:9002]\n    \
             health_check: {kind: tcp, interval: 5s}\n",
        );
        // Not yet probed: both count as healthy and share the requests.
        let mut seen = picks(&two, 4);
        seen.sort_unstable();
        assert_eq!(seen, [9001, 9001, 9002, 9002]);
    }
}
