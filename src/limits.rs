//! Request size limits, enforced before any other work on a request.
//!
//! Pingora has hard limits of its own (it refuses more than a few hundred header lines and
//! conflicting `Content-Length` headers with a 400); these are the site's policy on top, with
//! answers that say which limit was hit: `414 URI Too Long` and
//! `431 Request Header Fields Too Large`.

use serde::Deserialize;

/// The `limits:` YAML section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Longest request target (path and query), in bytes.
    pub max_uri_bytes: usize,
    /// Most header lines in one request.
    pub max_headers: usize,
    /// Largest total of header names and values, in bytes.
    pub max_header_bytes: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_uri_bytes: 16 * 1024,
            max_headers: 128,
            max_header_bytes: 64 * 1024,
        }
    }
}

/// Which limit a request broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LimitExceeded {
    /// The request target is too long.
    Uri,
    /// Too many header lines.
    HeaderCount,
    /// The headers are too large in total.
    HeaderBytes,
}

impl LimitExceeded {
    /// The HTTP status that answers it.
    pub fn status(self) -> u16 {
        match self {
            LimitExceeded::Uri => 414,
            LimitExceeded::HeaderCount | LimitExceeded::HeaderBytes => 431,
        }
    }
}

impl LimitsConfig {
    /// Checks one request's target length and headers (their count, and each name and value
    /// length).
    pub fn check(
        &self,
        uri_bytes: usize,
        header_count: usize,
        headers: impl Iterator<Item = (usize, usize)>,
    ) -> Result<(), LimitExceeded> {
        if uri_bytes > self.max_uri_bytes {
            return Err(LimitExceeded::Uri);
        }
        if header_count > self.max_headers {
            return Err(LimitExceeded::HeaderCount);
        }
        let mut total = 0usize;
        for (name, value) in headers {
            total = total.saturating_add(name).saturating_add(value);
            if total > self.max_header_bytes {
                return Err(LimitExceeded::HeaderBytes);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_by_kind() {
        let limits = LimitsConfig {
            max_uri_bytes: 10,
            max_headers: 2,
            max_header_bytes: 20,
        };
        type Case = (usize, Vec<(usize, usize)>, Result<(), LimitExceeded>);
        let cases: [Case; 5] = [
            (10, vec![(4, 4), (4, 4)], Ok(())),
            (11, vec![], Err(LimitExceeded::Uri)),
            (
                1,
                vec![(1, 1), (1, 1), (1, 1)],
                Err(LimitExceeded::HeaderCount),
            ),
            (1, vec![(10, 11)], Err(LimitExceeded::HeaderBytes)),
            (
                1,
                vec![(usize::MAX, usize::MAX)],
                Err(LimitExceeded::HeaderBytes),
            ),
        ];
        for (uri, headers, expected) in cases {
            assert_eq!(
                limits.check(uri, headers.len(), headers.into_iter()),
                expected
            );
        }
        assert_eq!(LimitExceeded::Uri.status(), 414);
        assert_eq!(LimitExceeded::HeaderBytes.status(), 431);
    }
}
