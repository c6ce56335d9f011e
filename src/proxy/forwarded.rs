//! Forwarding headers: `X-Forwarded-For`, `X-Forwarded-Proto`, `X-Forwarded-Host`, `Forwarded`.
//!
//! By default darklight is the edge: whatever the client sent in these headers is dropped and
//! replaced, so a visitor cannot forge its address. Behind a trusted load balancer
//! (`server.trust_forwarded_headers: true`) the existing values are kept and extended.

use std::net::IpAddr;

use http::{HeaderName, HeaderValue};
use pingora::Result;
use pingora::http::RequestHeader;

use crate::address_text::push_ip;

const X_FORWARDED_FOR: &str = "x-forwarded-for";
const X_FORWARDED_PROTO: &str = "x-forwarded-proto";
const X_FORWARDED_HOST: &str = "x-forwarded-host";
const FORWARDED: &str = "forwarded";
const X_REAL_IP: &str = "x-real-ip";

/// The same names, parsed once: a lookup by `&str` parses the name on every call.
const NAMES: [HeaderName; 5] = [
    HeaderName::from_static(X_FORWARDED_FOR),
    HeaderName::from_static(X_FORWARDED_PROTO),
    HeaderName::from_static(X_FORWARDED_HOST),
    HeaderName::from_static(FORWARDED),
    HeaderName::from_static(X_REAL_IP),
];
const XFF: usize = 0;
const XF_PROTO: usize = 1;
const XF_HOST: usize = 2;
const FWD: usize = 3;

/// Sets the forwarding headers on the request sent upstream.
pub fn apply(
    request: &mut RequestHeader,
    client_ip: Option<IpAddr>,
    tls: bool,
    original_host: Option<&HeaderValue>,
    trust_incoming: bool,
) -> Result<()> {
    let proto = if tls { "https" } else { "http" };
    let (existing_for, existing_forwarded) = if trust_incoming {
        (joined(request, &NAMES[XFF]), joined(request, &NAMES[FWD]))
    } else {
        for name in &NAMES {
            // Looking up first is much cheaper than a removal when, as usual, it is absent.
            if request.headers.contains_key(name) {
                request.remove_header(name);
            }
        }
        (None, None)
    };

    // The client address, written once and used by both headers.
    let mut client = String::new();
    if let Some(ip) = client_ip {
        push_ip(&mut client, ip);
        let value = match existing_for {
            Some(mut previous) => {
                previous.push_str(", ");
                previous.push_str(&client);
                HeaderValue::try_from(previous)
            }
            None => HeaderValue::from_str(&client),
        };
        if let Ok(value) = value {
            request.insert_header(X_FORWARDED_FOR, value)?;
        }
    }
    if !(trust_incoming && request.headers.contains_key(&NAMES[XF_PROTO])) {
        request.insert_header(X_FORWARDED_PROTO, HeaderValue::from_static(proto))?;
    }
    let host = original_host.filter(|h| is_token_safe(h.as_bytes()));
    if let Some(host) = host
        && !(trust_incoming && request.headers.contains_key(&NAMES[XF_HOST]))
    {
        request.insert_header(X_FORWARDED_HOST, host.clone())?;
    }

    let mut value = existing_forwarded.map_or_else(
        || String::with_capacity(64),
        |mut previous| {
            previous.push_str(", ");
            previous
        },
    );
    match client_ip {
        Some(IpAddr::V6(_)) => {
            value.push_str("for=\"[");
            value.push_str(&client);
            value.push_str("]\"");
        }
        Some(IpAddr::V4(_)) => {
            value.push_str("for=");
            value.push_str(&client);
        }
        None => value.push_str("for=unknown"),
    }
    value.push_str(";proto=");
    value.push_str(proto);
    if let Some(host) = host.and_then(|h| h.to_str().ok()) {
        value.push_str(";host=\"");
        value.push_str(host);
        value.push('"');
    }
    // Takes the buffer as it is; the parts were checked to be header-safe.
    if let Ok(value) = HeaderValue::try_from(value) {
        request.insert_header(FORWARDED, value)?;
    }
    Ok(())
}

/// All values of a header joined with `, `, as a list-valued header reads.
fn joined(request: &RequestHeader, name: impl http::header::AsHeaderName) -> Option<String> {
    let mut values = request
        .headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok());
    let first = values.next()?.to_string();
    Some(values.fold(first, |mut all, v| {
        all.push_str(", ");
        all.push_str(v);
        all
    }))
}

/// A host value safe to put inside a quoted `Forwarded` parameter.
fn is_token_safe(host: &[u8]) -> bool {
    !host.is_empty()
        && host.len() <= 255
        && host.iter().all(|&b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':' | b'[' | b']')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)]) -> RequestHeader {
        let mut request = RequestHeader::build("GET", b"/", None).unwrap_or_else(|e| panic!("{e}"));
        for (name, value) in headers {
            request
                .append_header(name.to_string(), *value)
                .unwrap_or_else(|e| panic!("{e}"));
        }
        request
    }

    fn header(request: &RequestHeader, name: &str) -> Option<String> {
        joined(request, name)
    }

    #[test]
    fn edge_mode_replaces_client_values() {
        let mut r = request(&[
            ("X-Forwarded-For", "6.6.6.6"),
            ("Forwarded", "for=6.6.6.6"),
            ("X-Real-IP", "6.6.6.6"),
            ("X-Forwarded-Proto", "https"),
        ]);
        let host = HeaderValue::from_static("example.com");
        apply(
            &mut r,
            Some("203.0.113.9".parse().unwrap_or_else(|e| panic!("{e}"))),
            false,
            Some(&host),
            false,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(header(&r, X_FORWARDED_FOR).as_deref(), Some("203.0.113.9"));
        assert_eq!(header(&r, X_FORWARDED_PROTO).as_deref(), Some("http"));
        assert_eq!(header(&r, X_FORWARDED_HOST).as_deref(), Some("example.com"));
        assert_eq!(
            header(&r, FORWARDED).as_deref(),
            Some("for=203.0.113.9;proto=http;host=\"example.com\"")
        );
        assert_eq!(header(&r, X_REAL_IP), None);
    }

    #[test]
    fn trusted_mode_appends() {
        let mut r = request(&[
            ("X-Forwarded-For", "198.51.100.1"),
            ("X-Forwarded-For", "198.51.100.2"),
            ("Forwarded", "for=198.51.100.1"),
            ("X-Forwarded-Proto", "https"),
        ]);
        apply(
            &mut r,
            Some("::1".parse().unwrap_or_else(|e| panic!("{e}"))),
            false,
            None,
            true,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            header(&r, X_FORWARDED_FOR).as_deref(),
            Some("198.51.100.1, 198.51.100.2, ::1")
        );
        assert_eq!(header(&r, X_FORWARDED_PROTO).as_deref(), Some("https"));
        assert_eq!(
            header(&r, FORWARDED).as_deref(),
            Some("for=198.51.100.1, for=\"[::1]\";proto=http")
        );
    }

    #[test]
    fn hostile_host_is_not_copied_into_forwarded() {
        let mut r = request(&[]);
        let host = HeaderValue::from_static("a\"b");
        apply(&mut r, None, true, Some(&host), false).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            header(&r, FORWARDED).as_deref(),
            Some("for=unknown;proto=https")
        );
        assert_eq!(header(&r, X_FORWARDED_HOST), None);
    }
}
