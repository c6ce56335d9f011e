//! What each fuzz target feeds to darklight, shared by the `cargo fuzz` targets and by the
//! main crate's `tests/fuzz_regressions.rs` (which includes this file as a module), so a saved
//! crash input is replayed through exactly the code the fuzzer ran.
//!
//! Every function takes raw bytes and must return normally whatever they are: errors are
//! fine, panics are bugs. Only the pure core is used (no Pingora, no I/O).

#![allow(clippy::expect_used)]

use std::path::Path;
use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use darklight::attribution::{AttributionConfig, Attributor, FIELD_LIMIT, SigningKeys, Touch};
use darklight::classify::{
    Channel, ClassificationConfig, Classifier, Name, RequestFacts, SiteClassificationConfig,
    SiteProfile,
};
use hmac::{Hmac, Mac};
use http::header::CACHE_CONTROL;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};

/// The signing secret of the fuzzed cookies (any 32-byte-or-longer text).
const SECRET: &str = "fuzz-secret-fuzz-secret-fuzz-secret!";
/// The first-touch cookie name (darklight's default).
const FIRST_TOUCH: &str = "dl_first";
/// The last-touch cookie name (darklight's default).
const LAST_TOUCH: &str = "dl_last";
/// A fixed clock, so runs are reproducible.
const NOW: u64 = 1_790_000_000;
/// darklight's default cookie lifetime (90 days).
const MAX_AGE_SECS: u64 = 90 * 86_400;

fn classifier() -> &'static Classifier {
    static CLASSIFIER: OnceLock<Classifier> = OnceLock::new();
    CLASSIFIER.get_or_init(|| Classifier::builtin().expect("built-in rules compile"))
}

/// A site with its own hosts, glob and regex landing paths and an extra internal host.
fn site() -> &'static SiteProfile {
    static SITE: OnceLock<SiteProfile> = OnceLock::new();
    SITE.get_or_init(|| {
        let config: SiteClassificationConfig = serde_yaml::from_str(
            "shallow_paths: [\"/tag/*\", \"re:^/\\\\d{4}/?$\"]\n\
             deep_paths: [\"/p/**\"]\n\
             internal_hosts: [\"*.checkout.example\"]\n",
        )
        .expect("site classification config");
        let hosts = ["www.example.com".to_owned(), "*.example.org".to_owned()];
        SiteProfile::new(&hosts, &config).expect("site profile")
    })
}

fn attributor() -> &'static Attributor {
    static ATTRIBUTOR: OnceLock<Attributor> = OnceLock::new();
    ATTRIBUTOR.get_or_init(|| {
        let config: AttributionConfig =
            serde_yaml::from_str(&format!("cookies: {{secret: \"{SECRET}\"}}"))
                .expect("attribution config");
        Attributor::new(&config, |_| None).expect("attributor")
    })
}

fn keys() -> &'static SigningKeys {
    static KEYS: OnceLock<SigningKeys> = OnceLock::new();
    KEYS.get_or_init(|| SigningKeys::new(SECRET.as_bytes(), &[b"an-older-secret"]))
}

/// The classifier target: the input is read like an HTTP/1 request head.
///
/// The first line is `METHOD URI` (an unparsable method is `GET`, an unparsable URI `/`);
/// every further line is `name: value`, appended to the header map when the name is a
/// valid header name and the value a valid `HeaderValue` (non-UTF-8 bytes included). The
/// request is then classified with the built-in rules against a configured site and the
/// permissive default, and its attribution is planned as the proxy does.
pub fn classify_request(data: &[u8]) {
    let mut lines = data
        .split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line));
    let request_line = lines.next().unwrap_or_default();
    let (method, uri) = match request_line.iter().position(|&b| b == b' ') {
        Some(space) => (&request_line[..space], &request_line[space + 1..]),
        None => (request_line, &b""[..]),
    };
    let method = Method::from_bytes(method).unwrap_or(Method::GET);
    let uri = Uri::try_from(uri).unwrap_or_else(|_| Uri::from_static("/"));
    let mut headers = HeaderMap::new();
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) else {
            continue;
        };
        if headers.try_append(name, value).is_err() {
            break;
        }
    }

    let attributor = attributor();
    let cookie_name = attributor.first_touch_cookie().unwrap_or("");
    let facts = RequestFacts::from_http(&method, &uri, &headers, cookie_name);
    let _ = facts.is_prefetch();
    let _ = classifier().classify(&facts, &SiteProfile::permissive_default());
    let classification = classifier().classify(&facts, site());
    let _ = site().is_shallow(facts.path);

    let tls = uri.scheme_str() == Some("https");
    let _ = attributor.plan_request(&classification, &headers, facts.path, tls, NOW);
    let cache_control = headers
        .get_all(CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok());
    let _ = attributor.response_allows_cookies(cache_control);
    for name in headers.keys() {
        let _ = attributor.is_reserved_header(name.as_str());
    }
}

/// The cookie target, on the input as (lossy) UTF-8 text.
///
/// * the text as a cookie value for [`SigningKeys::decode`] (both cookie names), and as
///   `Cookie` header values (one per line) for [`Attributor::read_cookies`];
/// * the input as a payload signed with the right key, so the parsing behind the HMAC check
///   is reached too;
/// * a round trip: a [`Touch`] built from the input, encoded then decoded, must come back as
///   encoding sanitises it (control characters dropped, fields bounded to [`FIELD_LIMIT`]).
pub fn cookies(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let keys = keys();
    for name in [FIRST_TOUCH, LAST_TOUCH] {
        let _ = keys.decode(name, &text, NOW, MAX_AGE_SECS);
    }
    let _ = attributor().read_cookies(text.split('\n'), NOW);

    let forged_but_signed = signed_value(FIRST_TOUCH, data);
    let _ = keys.decode(FIRST_TOUCH, &forged_but_signed, NOW, MAX_AGE_SECS);
    let header = format!("{LAST_TOUCH}=x; {FIRST_TOUCH}=\"{forged_but_signed}\"");
    let _ = attributor().read_cookies(std::iter::once(header.as_str()), NOW);

    round_trip(data);
}

/// A cookie value carrying `payload`, signed as darklight signs: HMAC-SHA256 over the cookie
/// name, a zero byte and the payload, truncated to 16 bytes.
fn signed_value(name: &str, payload: &[u8]) -> String {
    let mut mac =
        Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).expect("HMAC takes any key");
    mac.update(name.as_bytes());
    mac.update(&[0]);
    mac.update(payload);
    let tag = mac.finalize().into_bytes();
    format!(
        "1.{}.{}",
        URL_SAFE_NO_PAD.encode(payload),
        URL_SAFE_NO_PAD.encode(&tag[..16])
    )
}

/// Encodes a touch made from the input and checks that it decodes to what was encoded.
///
/// Byte 0 picks the channel, bytes 1..9 are the timestamp (little endian, zero-padded),
/// the rest is lossy UTF-8 split on `\n` into source, medium and campaign.
fn round_trip(data: &[u8]) {
    let Some((&channel, rest)) = data.split_first() else {
        return;
    };
    let channel = Channel::ALL[usize::from(channel) % Channel::ALL.len()];
    let (stamp, rest) = rest.split_at(rest.len().min(8));
    let mut timestamp = [0u8; 8];
    timestamp[..stamp.len()].copy_from_slice(stamp);
    let timestamp = u64::from_le_bytes(timestamp);
    let text = String::from_utf8_lossy(rest);
    let mut fields = text.splitn(3, '\n');
    let (source, medium, campaign) = (fields.next(), fields.next(), fields.next());
    let touch = Touch {
        channel,
        source: source.map(Name::from),
        medium: medium.map(Name::from),
        campaign: campaign.map(str::to_owned),
        timestamp,
    };
    let expected = Touch {
        channel,
        source: sanitized(source).map(Name::from),
        medium: sanitized(medium).map(Name::from),
        campaign: sanitized(campaign),
        timestamp,
    };
    let value = keys().encode(FIRST_TOUCH, &touch);
    let decoded = keys().decode(FIRST_TOUCH, &value, timestamp, MAX_AGE_SECS);
    assert_eq!(decoded, Some(expected), "cookie value {value:?}");
    assert_eq!(
        keys().decode(LAST_TOUCH, &value, timestamp, MAX_AGE_SECS),
        None,
        "a first-touch value must not verify as a last touch"
    );
}

/// A field as encoding keeps it: control characters dropped, at most [`FIELD_LIMIT`] bytes
/// cut on a character boundary, empty meaning absent.
fn sanitized(field: Option<&str>) -> Option<String> {
    let kept: String = field?.chars().filter(|c| !c.is_control()).collect();
    let mut end = kept.len().min(FIELD_LIMIT);
    while !kept.is_char_boundary(end) {
        end -= 1;
    }
    let kept = &kept[..end];
    (!kept.is_empty()).then(|| kept.to_owned())
}

/// The rule-loader target, on the input as (lossy) UTF-8 text.
///
/// The text as a `classification:` section (compiled with [`Classifier::new`]), as a site's
/// `classification:` settings (compiled into a [`SiteProfile`]), and as a whole configuration
/// file through `darklight::config::parse`; a file that parses is compiled as the proxy
/// compiles it (rules, site profiles, host router, attribution).
pub fn config_yaml(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(rules) = serde_yaml::from_str::<ClassificationConfig>(&text) {
        let _ = Classifier::new(&rules);
    }
    if let Ok(site) = serde_yaml::from_str::<SiteClassificationConfig>(&text) {
        let _ = SiteProfile::new(&["www.example.com".to_owned()], &site);
    }
    match darklight::config::parse(&text, Path::new("fuzz.yaml")) {
        Err(error) => {
            let _ = error.to_string();
        }
        Ok(config) => {
            let _ = Classifier::new(&config.classification);
            for site in &config.sites {
                let hosts: Vec<String> = site.hosts.iter().map(ToString::to_string).collect();
                let _ = SiteProfile::new(&hosts, &site.classification);
            }
            let router = darklight::config::site_router(&config);
            let _ = router.route("www.example.com");
            let _ = Attributor::new(&config.attribution, |_| None);
        }
    }
}
