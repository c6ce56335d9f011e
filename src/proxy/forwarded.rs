//! Forwarding headers: `X-Forwarded-For`, `X-Forwarded-Proto`, `X-Forwarded-Host`, `Forwarded`.
//!
//! By default darklight is the edge: whatever the client sent in these headers is dropped and
//! replaced, so a visitor cannot forge its address. Behind a trusted load balancer
//! (`server.trust_forwarded_headers: true`) the existing values are kept and extended.

use std::net::IpAddr;

use http::{HeaderName, HeaderValue};
use pingora::Result;

use crate::address_text::AddressText;

use super::header_edits::{HeaderEdits, WireName};

static X_FORWARDED_FOR: WireName = WireName::from_static("x-forwarded-for", "X-Forwarded-For");
static X_FORWARDED_PROTO: WireName =
    WireName::from_static("x-forwarded-proto", "X-Forwarded-Proto");
static X_FORWARDED_HOST: WireName = WireName::from_static("x-forwarded-host", "X-Forwarded-Host");
static FORWARDED: WireName = WireName::from_static("forwarded", "Forwarded");
static X_REAL_IP: WireName = WireName::from_static("x-real-ip", "X-Real-IP");

/// Every forwarding header a client may send, dropped unless trusted.
static CLIENT_SENT: [&WireName; 5] = [
    &X_FORWARDED_FOR,
    &X_FORWARDED_PROTO,
    &X_FORWARDED_HOST,
    &FORWARDED,
    &X_REAL_IP,
];

/// True for a name in [`CLIENT_SENT`]. Most names are ruled out by their length alone, where
/// comparing each with all five costs some hundred instructions a request.
fn is_client_sent(name: &HeaderName) -> bool {
    let name = name.as_str();
    matches!(name.len(), 9 | 15..=17) && CLIENT_SENT.iter().any(|h| h.name.as_str() == name)
}

/// Sets the forwarding headers on the request sent upstream.
pub fn apply(
    request: &mut dyn HeaderEdits,
    client_ip: Option<IpAddr>,
    tls: bool,
    original_host: Option<&HeaderValue>,
    trust_incoming: bool,
) -> Result<()> {
    let proto = if tls { "https" } else { "http" };
    let (existing_for, existing_forwarded) = if trust_incoming {
        let headers = request.headers();
        (
            joined(headers, &X_FORWARDED_FOR),
            joined(headers, &FORWARDED),
        )
    } else {
        // Clients seldom send any: one look over the request's names spares a lookup of each.
        let sent = request.headers().keys().any(is_client_sent);
        if sent {
            for header in CLIENT_SENT {
                request.remove(&header.name);
            }
        }
        (None, None)
    };

    // The client address, written once (on the stack) and used by both headers.
    let client = client_ip.map(AddressText::ip);
    if let Some(client) = &client {
        let value = match existing_for {
            Some(mut previous) => {
                previous.push_str(", ");
                previous.push_str(client.as_str());
                HeaderValue::try_from(previous)
            }
            None => HeaderValue::from_str(client.as_str()),
        };
        if let Ok(value) = value {
            request.set_named(&X_FORWARDED_FOR, value)?;
        }
    }
    if !(trust_incoming && request.headers().contains_key(&X_FORWARDED_PROTO.name)) {
        request.set_named(&X_FORWARDED_PROTO, HeaderValue::from_static(proto))?;
    }
    let host = original_host.filter(|h| is_token_safe(h.as_bytes()));
    if let Some(host) = host
        && !(trust_incoming && request.headers().contains_key(&X_FORWARDED_HOST.name))
    {
        request.set_named(&X_FORWARDED_HOST, host.clone())?;
    }

    let value = forwarded_value(
        existing_forwarded,
        client_ip,
        client.as_ref().map_or("", AddressText::as_str),
        proto,
        host.and_then(|h| h.to_str().ok()),
    );
    // Takes the buffer as it is; the parts were checked to be header-safe.
    if let Ok(value) = HeaderValue::try_from(value) {
        request.set_named(&FORWARDED, value)?;
    }
    Ok(())
}

/// The `Forwarded` value, `for=…;proto=…;host="…"` after any `previous` one, written into a
/// buffer of exactly its length: the header value then takes the buffer over without a second
/// allocation.
fn forwarded_value(
    previous: Option<String>,
    client_ip: Option<IpAddr>,
    client: &str,
    proto: &str,
    host: Option<&str>,
) -> String {
    let for_len = match client_ip {
        Some(IpAddr::V6(_)) => "for=\"[]\"".len() + client.len(),
        Some(IpAddr::V4(_)) => "for=".len() + client.len(),
        None => "for=unknown".len(),
    };
    let length =
        for_len + ";proto=".len() + proto.len() + host.map_or(0, |h| ";host=\"\"".len() + h.len());
    let mut value = match previous {
        Some(mut previous) => {
            previous.reserve_exact(", ".len() + length);
            previous.push_str(", ");
            previous
        }
        None => String::with_capacity(length),
    };
    match client_ip {
        Some(IpAddr::V6(_)) => {
            value.push_str("for=\"[");
            value.push_str(client);
            value.push_str("]\"");
        }
        Some(IpAddr::V4(_)) => {
            value.push_str("for=");
            value.push_str(client);
        }
        None => value.push_str("for=unknown"),
    }
    value.push_str(";proto=");
    value.push_str(proto);
    if let Some(host) = host {
        value.push_str(";host=\"");
        value.push_str(host);
        value.push('"');
    }
    value
}

/// All values of a header joined with `, `, as a list-valued header reads.
fn joined(headers: &http::HeaderMap, header: &WireName) -> Option<String> {
    let mut values = headers
        .get_all(&header.name)
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
    use pingora::http::RequestHeader;

    use super::super::header_edits::edit_headers;
    use super::*;

    /// `headers` as an HTTP/1 client sent them, with [`apply`] run on them in the plain form
    /// (`preserve_case` false) or the case-preserving one.
    fn applied(
        headers: &[(&str, &str)],
        preserve_case: bool,
        client_ip: Option<&str>,
        tls: bool,
        host: Option<&HeaderValue>,
        trust_incoming: bool,
    ) -> RequestHeader {
        let mut request = RequestHeader::build("GET", b"/", None).unwrap_or_else(|e| panic!("{e}"));
        for (name, value) in headers {
            request
                .append_header(name.to_string(), *value)
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let client_ip = client_ip.map(|ip| ip.parse().unwrap_or_else(|e| panic!("{e}")));
        edit_headers(&mut request, preserve_case, 4, |edits| {
            apply(edits, client_ip, tls, host, trust_incoming)
        })
        .unwrap_or_else(|e| panic!("{e}"));
        request
    }

    fn header(request: &RequestHeader, name: &WireName) -> Option<String> {
        joined(&request.headers, name)
    }

    #[test]
    fn edge_mode_replaces_client_values() {
        let sent = [
            ("X-Forwarded-For", "6.6.6.6"),
            ("Forwarded", "for=6.6.6.6"),
            ("X-Real-IP", "6.6.6.6"),
            ("X-Forwarded-Proto", "https"),
        ];
        let host = HeaderValue::from_static("example.com");
        for preserve_case in [false, true] {
            let r = applied(
                &sent,
                preserve_case,
                Some("203.0.113.9"),
                false,
                Some(&host),
                false,
            );
            assert_eq!(header(&r, &X_FORWARDED_FOR).as_deref(), Some("203.0.113.9"));
            assert_eq!(header(&r, &X_FORWARDED_PROTO).as_deref(), Some("http"));
            assert_eq!(
                header(&r, &X_FORWARDED_HOST).as_deref(),
                Some("example.com")
            );
            assert_eq!(
                header(&r, &FORWARDED).as_deref(),
                Some("for=203.0.113.9;proto=http;host=\"example.com\"")
            );
            assert_eq!(header(&r, &X_REAL_IP), None);
            assert_eq!(r.headers.len(), 4, "{preserve_case}");
        }
    }

    /// Each client-sent forwarding header is dropped even when it comes alone.
    #[test]
    fn edge_mode_drops_each_forged_header_alone() {
        for forged in CLIENT_SENT {
            let sent = [("Accept", "*/*"), (forged.name.as_str(), "6.6.6.6")];
            let r = applied(&sent, false, Some("203.0.113.9"), true, None, false);
            let values = header(&r, forged);
            assert!(
                values.as_deref().is_none_or(|v| !v.contains("6.6.6.6")),
                "{}: {values:?}",
                forged.name
            );
            assert_eq!(header(&r, &X_REAL_IP), None);
        }
    }

    #[test]
    fn client_sent_names_are_recognised_by_name_not_length() {
        for header in CLIENT_SENT {
            assert!(is_client_sent(&header.name), "{}", header.name);
        }
        for other in [
            "x-forwarded-port",
            "x-forwarded-prefix",
            "x-forwarded",
            "x-real-id",
            "forwardex",
            "host",
            "user-agent",
            "x-darklight-channel",
        ] {
            let name = HeaderName::from_static(other);
            assert!(!is_client_sent(&name), "{other}");
        }
    }

    #[test]
    fn trusted_mode_appends() {
        let sent = [
            ("X-Forwarded-For", "198.51.100.1"),
            ("X-Forwarded-For", "198.51.100.2"),
            ("Forwarded", "for=198.51.100.1"),
            ("X-Forwarded-Proto", "https"),
        ];
        for preserve_case in [false, true] {
            let r = applied(&sent, preserve_case, Some("::1"), false, None, true);
            assert_eq!(
                header(&r, &X_FORWARDED_FOR).as_deref(),
                Some("198.51.100.1, 198.51.100.2, ::1")
            );
            assert_eq!(header(&r, &X_FORWARDED_PROTO).as_deref(), Some("https"));
            assert_eq!(
                header(&r, &FORWARDED).as_deref(),
                Some("for=198.51.100.1, for=\"[::1]\";proto=http")
            );
        }
    }

    #[test]
    fn hostile_host_is_not_copied_into_forwarded() {
        let host = HeaderValue::from_static("a\"b");
        for preserve_case in [false, true] {
            let r = applied(&[], preserve_case, None, true, Some(&host), false);
            assert_eq!(
                header(&r, &FORWARDED).as_deref(),
                Some("for=unknown;proto=https")
            );
            assert_eq!(header(&r, &X_FORWARDED_HOST), None);
        }
    }

    #[test]
    fn forwarded_value_fills_its_buffer_exactly() {
        for (ip, client) in [
            (Some("203.0.113.9"), "203.0.113.9"),
            (Some("2001:db8::1"), "2001:db8::1"),
            (None, ""),
        ] {
            let ip: Option<IpAddr> = ip.map(|ip| ip.parse().unwrap_or_else(|e| panic!("{e}")));
            for host in [Some("example.com"), None] {
                for proto in ["http", "https"] {
                    let value = forwarded_value(None, ip, client, proto, host);
                    assert_eq!(value.len(), value.capacity(), "{value}");
                    let previous = forwarded_value(
                        Some("for=198.51.100.1".to_owned()),
                        ip,
                        client,
                        proto,
                        host,
                    );
                    assert_eq!(previous, format!("for=198.51.100.1, {value}"));
                }
            }
        }
    }

    #[test]
    fn names_are_titled_when_case_is_preserved() {
        let host = HeaderValue::from_static("example.com");
        let r = applied(&[], true, Some("192.0.2.1"), false, Some(&host), false);
        let names: Vec<&[u8]> = r
            .case_header_iter()
            .map(|(name, _)| name.as_slice())
            .collect();
        assert_eq!(
            names,
            [
                &b"X-Forwarded-For"[..],
                b"X-Forwarded-Proto",
                b"X-Forwarded-Host",
                b"Forwarded"
            ]
        );
    }
}
