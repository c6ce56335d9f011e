//! The `attribution:` YAML section.

use serde::Deserialize;
use serde::de::{self, Deserializer};

use super::AttributionError;
use super::headers::HeaderField;
use crate::classify::PathPattern;
use crate::config::HumanDuration;

/// Shortest accepted signing secret, in bytes.
pub const MIN_SECRET_LEN: usize = 32;

/// What the application behind darklight receives.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AttributionConfig {
    /// Turn attribution (headers and cookies) on or off.
    pub enabled: bool,
    /// Upstream request headers.
    pub headers: HeaderConfig,
    /// First-touch / last-touch cookies.
    pub cookies: CookieConfig,
}

impl Default for AttributionConfig {
    fn default() -> Self {
        AttributionConfig {
            enabled: true,
            headers: HeaderConfig::default(),
            cookies: CookieConfig::default(),
        }
    }
}

/// Upstream request headers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeaderConfig {
    /// Prefix of every header name; client-sent headers with it are dropped.
    #[serde(deserialize_with = "header_token")]
    pub prefix: String,
    /// Which fields to send; all when absent.
    pub fields: Option<Vec<HeaderField>>,
    /// Also send one structured-field header with the main values.
    pub compact: bool,
    /// Name of that header.
    #[serde(deserialize_with = "header_token")]
    pub compact_name: String,
}

impl Default for HeaderConfig {
    fn default() -> Self {
        HeaderConfig {
            prefix: "X-Darklight-".to_string(),
            fields: None,
            compact: false,
            compact_name: "X-Darklight".to_string(),
        }
    }
}

/// When to mark cookies `Secure`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SecureMode {
    /// When the client connection is TLS.
    #[default]
    Auto,
    /// Always (TLS terminated in front of darklight).
    Always,
    /// Never.
    Never,
}

/// First-touch / last-touch cookies.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CookieConfig {
    /// Set cookies at all (they also need a secret).
    pub enabled: bool,
    /// First-touch cookie name.
    #[serde(deserialize_with = "cookie_name")]
    pub first_touch_name: String,
    /// Last-touch cookie name.
    #[serde(deserialize_with = "cookie_name")]
    pub last_touch_name: String,
    /// Lifetime; an older cookie is ignored and replaced.
    pub max_age: HumanDuration,
    /// `Domain` attribute, to share cookies across subdomains.
    pub domain: Option<String>,
    /// `Secure` attribute policy.
    pub secure: SecureMode,
    /// HMAC signing secret (32 bytes or more). Prefer `secret_env`.
    #[serde(deserialize_with = "optional_secret")]
    pub secret: Option<String>,
    /// Environment variable holding the secret.
    pub secret_env: String,
    /// Previous secrets, still accepted for verification during a key rotation.
    #[serde(deserialize_with = "secrets")]
    pub previous_secrets: Vec<String>,
    /// Environment variable holding a previous secret.
    pub previous_secret_env: String,
    /// Paths that never get cookies (globs or `re:` regexes, as in `shallow_paths`).
    pub exclude_paths: Vec<PathPattern>,
    /// Allow cookies on responses a shared cache may store (`Cache-Control: public`).
    pub allow_shared_cache: bool,
    /// Treat `DNT: 1` like `Sec-GPC: 1`.
    pub honor_dnt: bool,
}

impl Default for CookieConfig {
    fn default() -> Self {
        CookieConfig {
            enabled: true,
            first_touch_name: "dl_first".to_string(),
            last_touch_name: "dl_last".to_string(),
            max_age: HumanDuration(std::time::Duration::from_secs(90 * 86_400)),
            domain: None,
            secure: SecureMode::Auto,
            secret: None,
            secret_env: "DARKLIGHT_COOKIE_SECRET".to_string(),
            previous_secrets: Vec::new(),
            previous_secret_env: "DARKLIGHT_COOKIE_SECRET_PREVIOUS".to_string(),
            exclude_paths: Vec::new(),
            allow_shared_cache: false,
            honor_dnt: false,
        }
    }
}

/// The signing secrets in force: `None` when cookies are off or no secret is configured.
pub(super) fn resolve_secrets(
    config: &CookieConfig,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Option<(String, Vec<String>)>, AttributionError> {
    if !config.enabled {
        return Ok(None);
    }
    let from_env = env(&config.secret_env).filter(|s| !s.is_empty());
    let Some(current) = from_env.or_else(|| config.secret.clone()) else {
        return Ok(None);
    };
    let mut previous = config.previous_secrets.clone();
    previous.extend(env(&config.previous_secret_env).filter(|s| !s.is_empty()));
    for secret in std::iter::once(&current).chain(&previous) {
        check_secret(secret).map_err(AttributionError::Cookies)?;
    }
    Ok(Some((current, previous)))
}

fn check_secret(secret: &str) -> Result<(), String> {
    if secret.len() < MIN_SECRET_LEN {
        return Err(format!(
            "a signing secret is {} bytes; use at least {MIN_SECRET_LEN} random bytes (e.g. `openssl rand -base64 48`)",
            secret.len()
        ));
    }
    Ok(())
}

fn optional_secret<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    let secret = Option::<String>::deserialize(deserializer)?;
    if let Some(secret) = &secret {
        check_secret(secret).map_err(de::Error::custom)?;
    }
    Ok(secret)
}

fn secrets<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    let secrets = Vec::<String>::deserialize(deserializer)?;
    for secret in &secrets {
        check_secret(secret).map_err(de::Error::custom)?;
    }
    Ok(secrets)
}

fn header_token<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let text = String::deserialize(deserializer)?;
    let valid = !text.is_empty()
        && text.len() <= 64
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if valid {
        Ok(text)
    } else {
        Err(de::Error::custom(format!(
            "invalid header name `{text}`: use letters, digits and `-` (at most 64)"
        )))
    }
}

fn cookie_name<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let text = String::deserialize(deserializer)?;
    let valid = !text.is_empty()
        && text.len() <= 64
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if valid {
        Ok(text)
    } else {
        Err(de::Error::custom(format!(
            "invalid cookie name `{text}`: use letters, digits, `-`, `_` and `.`"
        )))
    }
}
