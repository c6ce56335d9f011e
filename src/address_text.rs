//! Socket addresses as text, written on the stack. The standard `Display` goes through the
//! formatter's padding machinery, which costs more than the rest of building a forwarding
//! header, and a `String` per address is an allocation per request; IPv4, the common case, is
//! written directly.

use std::fmt::{self, Write as _};
use std::net::{IpAddr, SocketAddr};

/// Room for the longest text: `[`, the longest IPv6 text form (45 bytes, with an embedded
/// IPv4 address; `Display` writes at most 39), `]:65535`.
const CAPACITY: usize = 1 + 45 + 2 + 5;

/// An IP or socket address as text, held on the stack.
#[derive(Clone, Copy)]
pub struct AddressText {
    bytes: [u8; CAPACITY],
    len: usize,
}

impl AddressText {
    /// `ip` in its usual text form (`203.0.113.9`, `2001:db8::1`).
    pub fn ip(ip: IpAddr) -> AddressText {
        let mut text = AddressText::empty();
        text.push_ip(ip);
        text
    }

    /// `address` as `203.0.113.9:8080` or `[2001:db8::1]:8080`, like its `Display` for a
    /// scope-less address.
    pub fn socket(address: SocketAddr) -> AddressText {
        let mut text = AddressText::empty();
        if address.is_ipv6() {
            text.push_str("[");
            text.push_ip(address.ip());
            text.push_str("]");
        } else {
            text.push_ip(address.ip());
        }
        text.push_str(":");
        text.push_str(itoa::Buffer::new().format(address.port()));
        text
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        // Only whole `str`s are ever copied in, so the bytes are always UTF-8.
        self.bytes
            .get(..self.len)
            .and_then(|bytes| std::str::from_utf8(bytes).ok())
            .unwrap_or("")
    }

    fn empty() -> AddressText {
        AddressText {
            bytes: [0; CAPACITY],
            len: 0,
        }
    }

    fn push_ip(&mut self, ip: IpAddr) {
        match ip {
            IpAddr::V4(v4) => {
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        self.push_str(".");
                    }
                    self.push_str(itoa::Buffer::new().format(octet));
                }
            }
            IpAddr::V6(v6) => {
                let _ = write!(self, "{v6}");
            }
        }
    }

    /// Appends `text` whole, or nothing when it does not fit (no address text is that long).
    fn push_str(&mut self, text: &str) {
        let end = self.len + text.len();
        if let Some(room) = self.bytes.get_mut(self.len..end) {
            room.copy_from_slice(text.as_bytes());
            self.len = end;
        }
    }
}

impl fmt::Write for AddressText {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let before = self.len;
        self.push_str(text);
        if self.len == before && !text.is_empty() {
            return Err(fmt::Error);
        }
        Ok(())
    }
}

impl fmt::Debug for AddressText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
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
            "[::ffff:255.255.255.255]:65535",
            // The longest text form (45 bytes), which `Display` writes as eight full groups
            // (39 bytes, the longest it writes).
            "[ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255]:65535",
        ] {
            let address: SocketAddr = address.parse().unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(AddressText::socket(address).as_str(), address.to_string());
            assert_eq!(
                AddressText::ip(address.ip()).as_str(),
                address.ip().to_string()
            );
        }
    }
}
