//! The client address as spans may record it: not at all, truncated to its network, or whole.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::config::ClientAddressMode;

/// The `client.address` value for `ip` under `mode`; `None` when it is not recorded.
///
/// Truncation keeps the IPv4 /24 and the IPv6 /48 (an IPv4-mapped IPv6 address is truncated
/// as IPv4), enough to see networks and countries without identifying a person.
pub fn client_address(ip: IpAddr, mode: ClientAddressMode) -> Option<IpAddr> {
    match mode {
        ClientAddressMode::Off => None,
        ClientAddressMode::Full => Some(ip),
        ClientAddressMode::Truncated => Some(truncate(ip)),
    }
}

/// IPv4 to /24, IPv6 to /48.
pub fn truncate(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(truncate_v4(v4)),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(truncate_v4(v4)),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], 0, 0, 0, 0, 0))
            }
        },
    }
}

fn truncate_v4(ip: Ipv4Addr) -> Ipv4Addr {
    let [a, b, c, _] = ip.octets();
    Ipv4Addr::new(a, b, c, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_by_family() {
        let cases = [
            ("203.0.113.77", "203.0.113.0"),
            ("10.1.2.3", "10.1.2.0"),
            ("2001:db8:1234:5678::1", "2001:db8:1234::"),
            ("::ffff:198.51.100.9", "198.51.100.0"),
            ("::1", "::"),
        ];
        for (input, expected) in cases {
            let ip: IpAddr = input.parse().unwrap();
            assert_eq!(truncate(ip).to_string(), expected, "{input}");
        }
    }

    #[test]
    fn modes() {
        let ip: IpAddr = "203.0.113.77".parse().unwrap();
        assert_eq!(client_address(ip, ClientAddressMode::Off), None);
        assert_eq!(client_address(ip, ClientAddressMode::Full), Some(ip));
        assert_eq!(
            client_address(ip, ClientAddressMode::Truncated).map(|a| a.to_string()),
            Some("203.0.113.0".to_string())
        );
    }
}
