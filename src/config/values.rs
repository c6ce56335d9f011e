//! Small configuration value types that validate themselves while they are deserialised.
//!
//! Checking inside `Deserialize` means a bad value is reported with the line and column
//! serde_yaml knows at that moment, instead of after parsing when positions are gone.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A duration written the human way: `500ms`, `5s`, `2m`, `1h 30m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(text.trim())
            .map(HumanDuration)
            .map_err(|e| {
                de::Error::custom(format!(
                    "invalid duration `{text}`: {e} (write it like `500ms`, `5s` or `2m`)"
                ))
            })
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&humantime::format_duration(self.0).to_string())
    }
}

/// An `IP:port` socket address to listen on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenAddress(pub SocketAddr);

impl<'de> Deserialize<'de> for ListenAddress {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse_socket_address(&text)
            .map(ListenAddress)
            .map_err(de::Error::custom)
    }
}

impl fmt::Display for ListenAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Parses `IP:port` with a message that shows the expected form.
pub(crate) fn parse_socket_address(text: &str) -> Result<SocketAddr, String> {
    text.trim().parse::<SocketAddr>().map_err(|_| {
        format!("invalid address `{text}`: expected IP:port such as `0.0.0.0:8080` or `[::1]:8080`")
    })
}

/// Whether an upstream is reached over plain TCP or TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamScheme {
    /// `http://`
    Http,
    /// `https://`: TLS to the upstream, SNI from the host name.
    Https,
}

/// An upstream origin written as a URL: `http://127.0.0.1:3000`, `https://origin.internal`.
///
/// Only scheme, host and port are allowed: darklight forwards the client's path unchanged, so a
/// path here would be silently ignored, which is worse than an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamUrl {
    /// Plain or TLS.
    pub scheme: UpstreamScheme,
    /// Host name or IP literal (without brackets).
    pub host: String,
    /// Port, defaulted from the scheme.
    pub port: u16,
    /// The text as written, for messages.
    pub original: String,
}

impl UpstreamUrl {
    /// Parses and checks an upstream URL.
    pub fn parse(text: &str) -> Result<Self, String> {
        let trimmed = text.trim();
        let parsed = url::Url::parse(trimmed).map_err(|e| {
            format!(
                "invalid upstream `{text}`: {e} (expected a URL such as `http://127.0.0.1:3000`)"
            )
        })?;
        let scheme = match parsed.scheme() {
            "http" => UpstreamScheme::Http,
            "https" => UpstreamScheme::Https,
            other => {
                return Err(format!(
                    "invalid upstream `{text}`: scheme `{other}` is not supported (use http or https)"
                ));
            }
        };
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(format!(
                "invalid upstream `{text}`: credentials in the URL are not supported"
            ));
        }
        if !matches!(parsed.path(), "" | "/")
            || parsed.query().is_some()
            || parsed.fragment().is_some()
        {
            return Err(format!(
                "invalid upstream `{text}`: only scheme, host and port are allowed; the client's path is forwarded as is"
            ));
        }
        let host = match parsed.host() {
            Some(url::Host::Domain(d)) => d.to_ascii_lowercase(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            None => return Err(format!("invalid upstream `{text}`: no host")),
        };
        let port = parsed.port_or_known_default().unwrap_or(match scheme {
            UpstreamScheme::Http => 80,
            UpstreamScheme::Https => 443,
        });
        Ok(UpstreamUrl {
            scheme,
            host,
            port,
            original: trimmed.to_string(),
        })
    }
}

impl<'de> Deserialize<'de> for UpstreamUrl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        UpstreamUrl::parse(&text).map_err(de::Error::custom)
    }
}

impl fmt::Display for UpstreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.original)
    }
}

/// A site host pattern: an exact name (`www.example.com`) or a wildcard (`*.example.com`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    /// Matches this host only.
    Exact(String),
    /// Matches any subdomain of this suffix (stored without the `*.`), not the suffix itself.
    Wildcard(String),
}

impl HostPattern {
    /// Parses a host pattern, lower-casing it and refusing ports, paths and inner wildcards.
    pub fn parse(text: &str) -> Result<Self, String> {
        let lowered = text.trim().trim_end_matches('.').to_ascii_lowercase();
        let (wildcard, name) = match lowered.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, lowered.as_str()),
        };
        let valid = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
            && !name.starts_with('.')
            && !name.contains("..");
        if !valid {
            return Err(format!(
                "invalid host `{text}`: expected a host name such as `www.example.com` or `*.example.com` (no port, no scheme)"
            ));
        }
        Ok(if wildcard {
            HostPattern::Wildcard(name.to_string())
        } else {
            HostPattern::Exact(name.to_string())
        })
    }
}

impl<'de> Deserialize<'de> for HostPattern {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        HostPattern::parse(&text).map_err(de::Error::custom)
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(name) => f.write_str(name),
            HostPattern::Wildcard(suffix) => write!(f, "*.{suffix}"),
        }
    }
}

/// Log verbosity, as in `RUST_LOG` levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Errors and warnings.
    Warn,
    /// Normal operation, including the access log.
    #[default]
    Info,
    /// Detailed.
    Debug,
    /// Everything.
    Trace,
}

impl LogLevel {
    /// The directive understood by `tracing_subscriber::EnvFilter`.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

/// A listen entry written either as `"0.0.0.0:8080"` or as a mapping with TLS settings.
pub(crate) struct StringOrStruct<T>(pub T);

impl<'de, T> Deserialize<'de> for StringOrStruct<T>
where
    T: Deserialize<'de> + From<ListenAddress>,
{
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Either<T>(std::marker::PhantomData<T>);
        impl<'de, T> Visitor<'de> for Either<T>
        where
            T: Deserialize<'de> + From<ListenAddress>,
        {
            type Value = T;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an address such as `0.0.0.0:8080` or a mapping with `address`")
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<T, E> {
                parse_socket_address(value)
                    .map(|a| T::from(ListenAddress(a)))
                    .map_err(E::custom)
            }
            fn visit_map<M: de::MapAccess<'de>>(self, map: M) -> Result<T, M::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map))
            }
        }
        deserializer
            .deserialize_any(Either(std::marker::PhantomData))
            .map(StringOrStruct)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_urls() {
        let ok = UpstreamUrl::parse("http://127.0.0.1:3000").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (ok.scheme, ok.host.as_str(), ok.port),
            (UpstreamScheme::Http, "127.0.0.1", 3000)
        );
        let tls =
            UpstreamUrl::parse("https://Origin.Example.com/").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (tls.scheme, tls.host.as_str(), tls.port),
            (UpstreamScheme::Https, "origin.example.com", 443)
        );
        let v6 = UpstreamUrl::parse("http://[::1]:81").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(v6.host, "::1");
        for bad in [
            "127.0.0.1:3000",
            "ftp://x",
            "http://x/path",
            "http://u:p@x",
            "http://x?q",
            "",
        ] {
            assert!(UpstreamUrl::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn host_patterns() {
        assert_eq!(
            HostPattern::parse("WWW.Example.com."),
            Ok(HostPattern::Exact("www.example.com".into()))
        );
        assert_eq!(
            HostPattern::parse("*.example.com"),
            Ok(HostPattern::Wildcard("example.com".into()))
        );
        for bad in ["", "*.", "a..b", "x.com:80", "http://x", "a.*.b", "*"] {
            assert!(HostPattern::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn durations() {
        let d: HumanDuration = serde_yaml::from_str("1500ms").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(d.0, Duration::from_millis(1500));
        assert!(serde_yaml::from_str::<HumanDuration>("soon").is_err());
    }
}
