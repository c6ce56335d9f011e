//! The headers darklight adds to and removes from the upstream request, in either of the two
//! forms a Pingora request can take.
//!
//! A Pingora [`RequestHeader`] parsed from an HTTP/1 client keeps a second map with every name
//! as spelled on the wire. Adding a header there parses and copies its name again and inserts
//! it into both maps, which outgrow the room the parsed request left them: about 1,500
//! instructions a header. By default (`server.preserve_header_case: false`) darklight drops
//! that second map from the upstream request and edits its plain [`HeaderMap`], with room
//! reserved once; names then go upstream in lower case (Pingora titles a few standard ones
//! such as `Host`), as an HTTP/2 client's always do.

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue};
use pingora::http::RequestHeader;
use pingora::{ErrorType, OrErr, Result};

/// A header name in both forms: lower case for lookups, and as written to an HTTP/1 peer
/// when the request keeps the case of its names.
#[derive(Debug, Clone)]
pub struct WireName {
    /// The name, lower case.
    pub name: HeaderName,
    /// The name as sent when case is preserved (`X-Forwarded-For`).
    pub wire: Bytes,
}

impl WireName {
    /// `lower` must be a valid lower-case header name and `wire` the same name in any case.
    pub const fn from_static(lower: &'static str, wire: &'static str) -> WireName {
        WireName {
            name: HeaderName::from_static(lower),
            wire: Bytes::from_static(wire.as_bytes()),
        }
    }
}

/// What darklight needs of the upstream request's headers.
pub trait HeaderEdits {
    /// The headers as they are now.
    fn headers(&self) -> &HeaderMap;

    /// True when [`HeaderEdits::set`] uses its `wire` spelling, so it is worth looking up.
    fn keeps_spelling(&self) -> bool;

    /// Removes every value of `name`; cheap when it is absent.
    fn remove(&mut self, name: &HeaderName);

    /// Replaces every value of `name` with `value`; `wire` is the spelling to keep, if the
    /// form keeps spellings (empty: `name` as it is).
    fn set(&mut self, name: &HeaderName, wire: &Bytes, value: HeaderValue) -> Result<()>;

    /// [`HeaderEdits::set`] for a name known in both forms.
    fn set_named(&mut self, header: &WireName, value: HeaderValue) -> Result<()> {
        self.set(&header.name, &header.wire, value)
    }
}

/// The case-preserving form: every edit goes through Pingora, which keeps `wire` as spelled.
impl HeaderEdits for RequestHeader {
    fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    fn keeps_spelling(&self) -> bool {
        self.has_case()
    }

    fn remove(&mut self, name: &HeaderName) {
        // A lookup is much cheaper than a removal when, as usual, the name is absent.
        if self.headers.contains_key(name) {
            self.remove_header(name);
        }
    }

    fn set(&mut self, name: &HeaderName, wire: &Bytes, value: HeaderValue) -> Result<()> {
        if wire.is_empty() {
            self.insert_header(name.clone(), value)
        } else {
            self.insert_header(wire.clone(), value)
        }
    }
}

/// The plain form: names are kept lower case.
impl HeaderEdits for HeaderMap {
    fn headers(&self) -> &HeaderMap {
        self
    }

    fn keeps_spelling(&self) -> bool {
        false
    }

    fn remove(&mut self, name: &HeaderName) {
        HeaderMap::remove(self, name);
    }

    fn set(&mut self, name: &HeaderName, _wire: &Bytes, value: HeaderValue) -> Result<()> {
        self.try_insert(name.clone(), value)
            .or_err(ErrorType::InvalidHTTPHeader, "too many request headers")?;
        Ok(())
    }
}

/// Edits `request`'s headers through `edit`, in the plain form when `preserve_case` is off
/// and the request allows it, with room for `additional` more headers reserved first.
///
/// The plain form needs the request rebuilt from its parts, which keep neither the spelling
/// of names nor a request target that the URI does not reproduce (absolute-form, or bytes
/// that are not UTF-8). Such a request, a rare one, is edited in the case-preserving form.
pub fn edit_headers(
    request: &mut RequestHeader,
    preserve_case: bool,
    additional: usize,
    edit: impl FnOnce(&mut dyn HeaderEdits) -> Result<()>,
) -> Result<()> {
    if preserve_case || !target_survives_parts(request) {
        return edit(request);
    }
    let end_stream = request.send_end_stream();
    let mut parts: Parts = std::mem::replace(request, empty_request()).into();
    // Room is only a hint: when it cannot be had, inserting reports the error.
    let _ = parts.headers.try_reserve(additional);
    let result = edit(&mut parts.headers);
    *request = RequestHeader::from(parts);
    if let Some(end_stream) = end_stream {
        request.set_send_end_stream(end_stream);
    }
    result
}

/// True when the request target written upstream is the one the URI gives, so that a
/// request rebuilt from its parts sends the same target.
fn target_survives_parts(request: &RequestHeader) -> bool {
    let uri = &request.uri;
    let from_uri = uri
        .path_and_query()
        .map(|p| p.as_str())
        .or_else(|| uri.authority().map(|a| a.as_str()))
        .unwrap_or("");
    request.raw_path() == from_uri.as_bytes()
}

/// A request with nothing in it, to stand in while the real one is taken apart; allocates
/// nothing.
fn empty_request() -> RequestHeader {
    RequestHeader::from(http::Request::new(()).into_parts().0)
}

#[cfg(test)]
mod tests {
    use super::*;

    static FORWARDED_FOR: WireName = WireName::from_static("x-forwarded-for", "X-Forwarded-For");

    /// A request as Pingora parses it from an HTTP/1 client: case-preserving.
    fn parsed(target: &[u8], headers: &[(&str, &str)]) -> RequestHeader {
        let mut request = RequestHeader::build("GET", target, Some(headers.len()))
            .unwrap_or_else(|e| panic!("{e}"));
        for (name, value) in headers {
            request
                .append_header(name.to_string(), *value)
                .unwrap_or_else(|e| panic!("{e}"));
        }
        request
    }

    fn wire(request: &RequestHeader) -> String {
        let mut buf = bytes::BytesMut::new();
        request.header_to_h1_wire(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }

    fn add_forwarded_for(headers: &mut dyn HeaderEdits) -> Result<()> {
        headers.set_named(&FORWARDED_FOR, HeaderValue::from_static("192.0.2.7"))
    }

    #[test]
    fn plain_form_lowers_names_and_keeps_values_and_target() {
        let mut request = parsed(b"/a?b=c", &[("User-Agent", "ua"), ("X-Custom", "1")]);
        edit_headers(&mut request, false, 1, add_forwarded_for).unwrap_or_else(|e| panic!("{e}"));
        assert!(!request.has_case());
        assert_eq!(request.raw_path(), b"/a?b=c");
        assert_eq!(request.headers["x-forwarded-for"], "192.0.2.7");
        assert_eq!(request.headers["user-agent"], "ua");
        assert_eq!(
            wire(&request),
            "user-agent: ua\r\nx-custom: 1\r\nx-forwarded-for: 192.0.2.7\r\n"
        );
    }

    #[test]
    fn preserved_form_keeps_every_spelling() {
        let mut request = parsed(b"/", &[("User-Agent", "ua")]);
        edit_headers(&mut request, true, 1, add_forwarded_for).unwrap_or_else(|e| panic!("{e}"));
        assert!(request.has_case());
        assert_eq!(
            wire(&request),
            "User-Agent: ua\r\nX-Forwarded-For: 192.0.2.7\r\n"
        );
    }

    #[test]
    fn targets_the_uri_cannot_reproduce_keep_the_preserving_form() {
        for target in [&b"http://example.com/a?b"[..], b"/caf\xe9"] {
            let mut request = parsed(target, &[("User-Agent", "ua")]);
            edit_headers(&mut request, false, 1, add_forwarded_for)
                .unwrap_or_else(|e| panic!("{e}"));
            assert!(request.has_case(), "{target:?}");
            assert_eq!(request.raw_path(), target);
            assert_eq!(request.headers["x-forwarded-for"], "192.0.2.7");
        }
    }

    #[test]
    fn removal_in_both_forms() {
        for preserve in [false, true] {
            let mut request = parsed(b"/", &[("X-Forwarded-For", "forged"), ("Accept", "*/*")]);
            edit_headers(&mut request, preserve, 0, |headers| {
                headers.remove(&FORWARDED_FOR.name);
                headers.remove(&HeaderName::from_static("x-absent"));
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{e}"));
            assert!(
                !request.headers.contains_key("x-forwarded-for"),
                "{preserve}"
            );
            assert_eq!(request.headers.len(), 1);
        }
    }

    #[test]
    fn an_empty_spelling_stands_for_the_name() {
        for preserve_case in [false, true] {
            let mut request = parsed(b"/", &[]);
            edit_headers(&mut request, preserve_case, 1, |headers| {
                headers.set(
                    &FORWARDED_FOR.name,
                    &Bytes::new(),
                    HeaderValue::from_static("192.0.2.7"),
                )
            })
            .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(wire(&request), "x-forwarded-for: 192.0.2.7\r\n");
        }
    }

    #[test]
    fn http2_end_of_stream_survives_the_plain_form() {
        let mut request = RequestHeader::build_no_case("POST", b"/upload", None)
            .unwrap_or_else(|e| panic!("{e}"));
        request.set_version(http::Version::HTTP_2);
        request.set_send_end_stream(false);
        edit_headers(&mut request, false, 1, add_forwarded_for).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(request.send_end_stream(), Some(false));
        assert_eq!(request.version, http::Version::HTTP_2);
        assert_eq!(request.method, http::Method::POST);
    }

    #[test]
    fn an_error_still_leaves_the_request_whole() {
        let mut request = parsed(b"/p", &[("Accept", "*/*")]);
        let result = edit_headers(&mut request, false, 0, |headers| {
            add_forwarded_for(headers)?;
            Err(pingora::Error::new(ErrorType::InternalError))
        });
        assert!(result.is_err());
        assert_eq!(request.raw_path(), b"/p");
        assert_eq!(request.headers.len(), 2);
    }
}
