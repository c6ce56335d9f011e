//! Socket addresses as text, written into a caller's buffer. The standard `Display` goes
//! through the formatter's padding machinery, which costs more than the rest of building a
//! forwarding header; IPv4, the common case, is written directly.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

/// Appends `ip` in its usual text form (`203.0.113.9`, `2001:db8::1`).
pub fn push_ip(out: &mut String, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                out.push_str(itoa::Buffer::new().format(octet));
            }
        }
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// Appends `address` as `203.0.113.9:8080` or `[2001:db8::1]:8080`.
pub fn push_socket_addr(out: &mut String, address: SocketAddr) {
    if address.is_ipv6() {
        out.push('[');
        push_ip(out, address.ip());
        out.push(']');
    } else {
        push_ip(out, address.ip());
    }
    out.push(':');
    out.push_str(itoa::Buffer::new().format(address.port()));
}

/// `address` as a new string, like `address.to_string()` for a scope-less address.
pub fn socket_addr_string(address: SocketAddr) -> String {
    let mut out = String::with_capacity(24);
    push_socket_addr(&mut out, address);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_matches_display() {
        for address in [
            "0.0.0.0:0",
            "9.10.99.100:80",
            "203.0.113.9:8080",
            "255.255.255.255:65535",
            "[::1]:443",
            "[2001:db8::8a2e:370:7334]:9",
            "[::ffff:192.0.2.1]:10000",
        ] {
            let address: SocketAddr = address.parse().unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(socket_addr_string(address), address.to_string());
            let mut ip = String::new();
            push_ip(&mut ip, address.ip());
            assert_eq!(ip, address.ip().to_string());
        }
    }
}
