//! Attribution: what the application behind darklight receives. Pure: no I/O, no clock.
//!
//! For each request the [`Attributor`] decides the headers sent upstream (the classification and
//! the stored first touch), which client-sent headers to drop so attribution cannot be forged,
//! and which signed first-touch / last-touch cookies to set. The caller passes the time and the
//! request facts; nothing here reads a socket or the environment.

mod config;
mod cookie_memo;
mod headers;
mod touch;

pub use config::{AttributionConfig, CookieConfig, HeaderConfig, SecureMode};
pub use headers::{HeaderField, HeaderNames, VALUE_LIMIT, header_value};
pub use touch::{FIELD_LIMIT, SigningKeys, Touch};

use http::{HeaderName, HeaderValue};

use crate::classify::{Channel, Classification};

use cookie_memo::{CookieKind, MemoOwner};

/// The privacy signals' header names, parsed once (a lookup by `&str` parses the name anew).
const SEC_GPC: HeaderName = HeaderName::from_static("sec-gpc");
const DNT: HeaderName = HeaderName::from_static("dnt");

/// Why attribution settings could not be compiled.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AttributionError {
    /// A header name built from the configuration is not valid.
    #[error("attribution.headers: {0}")]
    HeaderName(String),
    /// The cookie signing secret is missing or too weak, or a cookie setting is invalid.
    #[error("attribution.cookies: {0}")]
    Cookies(String),
}

/// Cookies a visitor sent, already verified.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredTouches {
    /// The verified first touch, if a valid cookie carried one.
    pub first: Option<Touch>,
    /// The verified last touch, if a valid cookie carried one.
    pub last: Option<Touch>,
    /// A darklight cookie was present but failed verification (forged, expired, malformed).
    pub rejected: bool,
}

/// Request facts that decide whether cookies may be set at all.
#[derive(Debug, Clone, Copy, Default)]
pub struct CookieContext<'a> {
    /// The request path, for exclusions.
    pub path: &'a str,
    /// `Sec-GPC: 1` was sent.
    pub global_privacy_control: bool,
    /// `DNT: 1` was sent.
    pub do_not_track: bool,
    /// The client connection is TLS (for `Secure` in `auto` mode).
    pub tls: bool,
}

/// What to do for one request.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Headers to add to the upstream request.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// `Set-Cookie` values for the response, if the response may carry cookies.
    pub set_cookies: Vec<HeaderValue>,
    /// Why no cookie is set, when that was decided from the request alone.
    pub cookies_withheld: Option<&'static str>,
    /// The first touch in force after this request (stored, or this visit when new).
    pub first_touch: Option<Touch>,
}

/// Compiled attribution settings.
#[derive(Debug, Clone)]
pub struct Attributor {
    enabled: bool,
    names: HeaderNames,
    cookies: Option<CookieSettings>,
}

#[derive(Debug, Clone)]
struct CookieSettings {
    first_name: String,
    last_name: String,
    max_age_secs: u64,
    domain: Option<String>,
    secure: SecureMode,
    keys: SigningKeys,
    /// Whose entries the cookie memos keep for these settings (values built and verified).
    memo: MemoOwner,
    exclude: Option<regex::RegexSet>,
    allow_shared_cache: bool,
    honor_dnt: bool,
}

impl Attributor {
    /// Compiles the settings. `secret_from_env` looks up environment variables (passed in so
    /// this stays pure and testable).
    pub fn new(
        config: &AttributionConfig,
        secret_from_env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, AttributionError> {
        let h = &config.headers;
        let fields = h
            .fields
            .clone()
            .unwrap_or_else(|| HeaderField::ALL.to_vec());
        let compact = h.compact.then_some(h.compact_name.as_str());
        let names =
            HeaderNames::new(&h.prefix, &fields, compact).map_err(AttributionError::HeaderName)?;
        let cookies = match config::resolve_secrets(&config.cookies, &secret_from_env)? {
            None => None,
            Some((current, previous)) => {
                let previous: Vec<&[u8]> = previous.iter().map(|s| s.as_bytes()).collect();
                let c = &config.cookies;
                Some(CookieSettings {
                    first_name: c.first_touch_name.clone(),
                    last_name: c.last_touch_name.clone(),
                    max_age_secs: c.max_age.0.as_secs(),
                    domain: c.domain.clone(),
                    secure: c.secure,
                    keys: SigningKeys::new(current.as_bytes(), &previous),
                    memo: MemoOwner::new(),
                    exclude: exclusion_set(&c.exclude_paths)?,
                    allow_shared_cache: c.allow_shared_cache,
                    honor_dnt: c.honor_dnt,
                })
            }
        };
        Ok(Attributor {
            enabled: config.enabled,
            names,
            cookies,
        })
    }

    /// Whether attribution is on.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Whether signed cookies are configured (a secret is present).
    pub fn cookies_enabled(&self) -> bool {
        self.enabled && self.cookies.is_some()
    }

    /// The first-touch cookie name, if cookies are on; the classifier reads it.
    pub fn first_touch_cookie(&self) -> Option<&str> {
        self.cookies.as_ref().map(|c| c.first_name.as_str())
    }

    /// True for client-sent headers that must be dropped before ours are added.
    pub fn is_reserved_header(&self, name: &str) -> bool {
        self.names.is_reserved(name)
    }

    /// Makes the header values of the rules' names once (`Classifier::rule_names`), so that
    /// requests carrying them share those values instead of making new ones.
    pub fn learn_values<'a>(&mut self, rule_names: impl IntoIterator<Item = &'a str>) {
        self.names.learn_values(rule_names);
    }

    /// Every header name this configuration can add to a request.
    pub fn header_names(&self) -> impl Iterator<Item = &http::HeaderName> {
        self.names.all()
    }

    /// Reads and verifies darklight's cookies from the request's `Cookie` header values.
    pub fn read_cookies<'a>(
        &self,
        cookie_headers: impl Iterator<Item = &'a str>,
        now: u64,
    ) -> StoredTouches {
        let Some(settings) = &self.cookies else {
            return StoredTouches::default();
        };
        let mut stored = StoredTouches::default();
        for pair in cookie_headers.flat_map(|h| h.split(';')) {
            let Some((name, value)) = pair.trim().split_once('=') else {
                continue;
            };
            let value = value.trim().trim_matches('"');
            let (slot, kind) = if name == settings.first_name {
                (&mut stored.first, CookieKind::FirstTouch)
            } else if name == settings.last_name {
                (&mut stored.last, CookieKind::LastTouch)
            } else {
                continue;
            };
            if slot.is_some() {
                continue;
            }
            // A visitor sends the same value with every request: verified once per thread.
            let touch = cookie_memo::verified_touch(settings.memo, kind, value, || {
                settings.keys.verify(settings.name(kind), value)
            });
            match touch.filter(|touch| touch.is_current(now, settings.max_age_secs)) {
                Some(touch) => *slot = Some(touch),
                None => stored.rejected = true,
            }
        }
        stored
    }

    /// Decides the upstream headers and the cookies for one request.
    pub fn plan(
        &self,
        classification: &Classification,
        stored: &StoredTouches,
        context: &CookieContext<'_>,
        now: u64,
    ) -> Plan {
        if !self.enabled {
            return Plan::default();
        }
        let mut plan = Plan {
            headers: self.names.build(classification, stored.first.as_ref()),
            first_touch: stored.first.clone(),
            ..Plan::default()
        };
        let Some(settings) = &self.cookies else {
            plan.cookies_withheld = Some("no_secret");
            return plan;
        };
        if let Some(reason) = settings.withheld(classification, context) {
            plan.cookies_withheld = Some(reason);
            return plan;
        }
        let current = Touch::from_classification(classification, now);
        let secure = match settings.secure {
            SecureMode::Auto => context.tls,
            SecureMode::Always => true,
            SecureMode::Never => false,
        };
        if stored.first.is_none() {
            plan.set_cookies
                .push(settings.set_cookie(CookieKind::FirstTouch, &current, secure));
            plan.first_touch = Some(current.clone());
        }
        if !matches!(classification.channel, Channel::Direct | Channel::Internal) {
            plan.set_cookies
                .push(settings.set_cookie(CookieKind::LastTouch, &current, secure));
        }
        plan
    }

    /// Plans one request straight from its headers: reads and verifies darklight's cookies,
    /// reads the privacy signals (`Sec-GPC: 1`, `DNT: 1`), then [`Attributor::plan`].
    pub fn plan_request(
        &self,
        classification: &Classification,
        headers: &http::HeaderMap,
        path: &str,
        tls: bool,
        now: u64,
    ) -> Plan {
        let cookies = headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok());
        let stored = self.read_cookies(cookies, now);
        let flag = |name: &HeaderName| {
            headers
                .get(name)
                .is_some_and(|v| v.as_bytes().trim_ascii() == b"1")
        };
        let context = CookieContext {
            path,
            global_privacy_control: flag(&SEC_GPC),
            do_not_track: flag(&DNT),
            tls,
        };
        self.plan(classification, &stored, &context, now)
    }

    /// Whether a response with these `Cache-Control` values may carry `Set-Cookie`: never on
    /// shared-cacheable responses (`public`, `s-maxage`) unless explicitly allowed.
    pub fn response_allows_cookies<'a>(
        &self,
        cache_control: impl Iterator<Item = &'a str>,
    ) -> bool {
        let Some(settings) = &self.cookies else {
            return false;
        };
        if settings.allow_shared_cache {
            return true;
        }
        !cache_control
            .flat_map(|v| v.split(','))
            .map(|d| d.trim().split('=').next().unwrap_or("").trim())
            .any(|d| d.eq_ignore_ascii_case("public") || d.eq_ignore_ascii_case("s-maxage"))
    }
}

/// One matcher for every excluded path, compiled once.
fn exclusion_set(
    patterns: &[crate::classify::PathPattern],
) -> Result<Option<regex::RegexSet>, AttributionError> {
    if patterns.is_empty() {
        return Ok(None);
    }
    regex::RegexSet::new(patterns.iter().map(|p| p.regex_source()))
        .map(Some)
        .map_err(|e| AttributionError::Cookies(format!("exclude_paths: {e}")))
}

impl CookieSettings {
    fn withheld(
        &self,
        classification: &Classification,
        context: &CookieContext<'_>,
    ) -> Option<&'static str> {
        if classification.is_bot || classification.preview_bot.is_some() {
            Some("bot")
        } else if context.global_privacy_control {
            Some("global_privacy_control")
        } else if self.honor_dnt && context.do_not_track {
            Some("do_not_track")
        } else if self
            .exclude
            .as_ref()
            .is_some_and(|set| set.is_match(context.path))
        {
            Some("excluded_path")
        } else {
            None
        }
    }

    /// The `Set-Cookie` value for `touch`: the same for every visitor with the same touch in
    /// the same second, so built once per thread and second (see [`cookie_memo`]).
    fn set_cookie(&self, kind: CookieKind, touch: &Touch, secure: bool) -> HeaderValue {
        cookie_memo::set_cookie_value(self.memo, kind, secure, touch, || {
            self.build_set_cookie(self.name(kind), touch, secure)
        })
    }

    /// The configured name of the cookie `kind`.
    fn name(&self, kind: CookieKind) -> &str {
        match kind {
            CookieKind::FirstTouch => &self.first_name,
            CookieKind::LastTouch => &self.last_name,
        }
    }

    fn build_set_cookie(&self, name: &str, touch: &Touch, secure: bool) -> HeaderValue {
        let mut text = String::with_capacity(256);
        text.push_str(name);
        text.push('=');
        self.keys.encode_into(name, touch, &mut text);
        text.push_str("; Path=/; Max-Age=");
        text.push_str(itoa::Buffer::new().format(self.max_age_secs));
        text.push_str("; HttpOnly; SameSite=Lax");
        if let Some(domain) = &self.domain {
            text.push_str("; Domain=");
            text.push_str(domain);
        }
        if secure {
            text.push_str("; Secure");
        }
        // Takes the buffer as it is: every part is visible ASCII (base64url, a checked name and
        // domain).
        HeaderValue::try_from(text).unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

#[cfg(test)]
mod tests;
