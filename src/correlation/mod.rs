//! Share-preview correlation: a link-preview fetch reveals where a link was just shared.
//!
//! When someone pastes a link into WhatsApp, Slack, Telegram or iMessage, the app fetches a
//! preview within seconds, before anyone clicks. darklight records those fetches per URL in a
//! bounded [`PreviewTable`]; when a visit to the same URL then arrives with no referrer, it is
//! attributed to the platform of the most recent preview: channel `dark_social`, source = the
//! platform, reason `preview_correlation`. The confidence decays with the time since the
//! preview (halving every `half_life`) and is divided among the platforms that previewed the
//! URL within the window.
//!
//! Everything here is pure but for the shared table; times are passed in.

#[cfg(feature = "redis")]
mod redis;
mod table;

#[cfg(feature = "redis")]
pub use redis::{RedisStats, RedisStore, RedisStoreError};

use serde::Deserialize;

use crate::classify::{Channel, Classification, Name, RequestFacts, Signal};
use crate::config::HumanDuration;

pub use table::{
    PLATFORMS_PER_URL, PreviewCounters, PreviewMatch, PreviewTable, TableStats, URL_TEXT_LIMIT,
};

/// Confidence of a correlation made right after the preview, from a single platform.
const FRESH_CONFIDENCE: f32 = 0.9;
/// Below this, a correlation is not worth reporting.
const MIN_CONFIDENCE: f32 = 0.05;

/// The `correlation:` YAML section.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorrelationConfig {
    /// Record previews and correlate visits.
    pub enabled: bool,
    /// How long a preview is remembered.
    pub ttl: HumanDuration,
    /// How long after a preview a visit may be attributed to it (at most `ttl`).
    pub window: HumanDuration,
    /// The confidence halves every `half_life` after the preview.
    pub half_life: HumanDuration,
    /// Hard bound on URLs tracked; the oldest are evicted past it.
    pub max_entries: usize,
    /// Query parameters that identify content (`id`, `p`…); all others are ignored in the key.
    pub key_params: Vec<String>,
    /// Where previews are kept.
    pub store: StoreKind,
    /// Settings for `store: redis`.
    pub redis: RedisConfig,
}

impl Default for CorrelationConfig {
    fn default() -> Self {
        let hours = |h: u64| HumanDuration(std::time::Duration::from_secs(h * 3600));
        CorrelationConfig {
            enabled: true,
            ttl: hours(24),
            window: hours(24),
            half_life: hours(6),
            max_entries: 200_000,
            key_params: Vec::new(),
            store: StoreKind::Memory,
            redis: RedisConfig::default(),
        }
    }
}

/// The preview store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// This process only (default).
    #[default]
    Memory,
    /// Shared by a fleet through Redis, with the memory table as the fallback.
    Redis,
}

/// Redis connection settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// `redis://host:port/db`.
    pub url: String,
    /// Longest wait for one Redis operation on the request path.
    pub timeout: HumanDuration,
    /// Prefix of every key darklight writes.
    pub key_prefix: String,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: "redis://127.0.0.1:6379/0".to_string(),
            timeout: HumanDuration(std::time::Duration::from_millis(50)),
            key_prefix: "darklight:preview:".to_string(),
        }
    }
}

/// Compiled correlation settings.
#[derive(Debug, Clone)]
pub struct Correlation {
    key_params: Vec<String>,
    window_secs: u64,
    half_life_secs: f64,
}

/// What correlation did with one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Not a preview nor a visit to look up.
    Ignored,
    /// A preview fetch, recorded for this platform.
    Recorded(Name),
    /// A visit looked up with no usable preview.
    NoMatch,
    /// A visit attributed to this platform.
    Attributed(Name),
}

/// What correlation has to do for one request, with the table key it concerns.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Nothing.
    Ignore,
    /// Record a preview of `key` by `platform`.
    Record {
        /// The URL key.
        key: String,
        /// The preview platform.
        platform: Name,
    },
    /// Look `key` up.
    Lookup {
        /// The URL key.
        key: String,
    },
}

/// What to do with a request, decided from its classification alone.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// A preview fetch: record it for this platform.
    Record(Name),
    /// A visit that may have come from a recent preview: look it up.
    Lookup,
    /// Nothing to do.
    Ignore,
}

impl Correlation {
    /// Compiles the settings.
    pub fn new(config: &CorrelationConfig) -> Correlation {
        Correlation {
            key_params: config.key_params.clone(),
            window_secs: config.window.0.as_secs().min(config.ttl.0.as_secs()),
            half_life_secs: config.half_life.0.as_secs_f64().max(1.0),
        }
    }

    /// How long after a preview a visit may be attributed.
    pub fn window_secs(&self) -> u64 {
        self.window_secs
    }

    /// Whether `classification` is a preview to record, a visit to look up, or neither.
    ///
    /// Only navigations that arrived without a usable referrer are looked up (`direct` or
    /// `dark_social`); not bots, prefetches, non-GET requests, internal navigation, or home
    /// pages and section fronts, which people type too often to attribute.
    pub fn action(&self, method: &str, classification: &Classification) -> Action {
        if let Some(platform) = &classification.preview_bot {
            return Action::Record(platform.clone());
        }
        let navigation = matches!(method, "GET" | "HEAD");
        let unattributed = matches!(
            classification.channel,
            Channel::Direct | Channel::DarkSocial
        ) && classification.source.is_none();
        let excluded = classification.is_bot
            || [
                Signal::Prefetch,
                Signal::NonGetMethod,
                Signal::NotNavigation,
                Signal::ShallowPath,
            ]
            .iter()
            .any(|s| classification.reasons.has(*s));
        if navigation && unattributed && !excluded {
            Action::Lookup
        } else {
            Action::Ignore
        }
    }

    /// The table key for a request: host, path without trailing slash, and the identifying
    /// query parameters in a fixed order.
    pub fn url_key(&self, host: &str, path: &str, query: Option<&str>) -> String {
        let path = match path.trim_end_matches('/') {
            "" => "/",
            trimmed => trimmed,
        };
        let mut key = String::with_capacity(host.len() + path.len() + 16);
        key.push_str(host);
        key.push_str(path);
        if let Some(query) = query.filter(|_| !self.key_params.is_empty()) {
            let mut pairs: Vec<&str> = query
                .split('&')
                .filter(|pair| {
                    let name = pair.split('=').next().unwrap_or("");
                    self.key_params.iter().any(|p| p == name)
                })
                .collect();
            pairs.sort_unstable();
            for (i, pair) in pairs.iter().enumerate() {
                key.push(if i == 0 { '?' } else { '&' });
                key.push_str(pair);
            }
        }
        key
    }

    /// What correlation has to do for this request, with its table key.
    pub fn step(&self, facts: &RequestFacts<'_>, classification: &Classification) -> Step {
        match self.action(facts.method, classification) {
            Action::Ignore => Step::Ignore,
            Action::Record(platform) => Step::Record {
                key: self.url_key(&facts.host, facts.path, facts.query),
                platform,
            },
            Action::Lookup => Step::Lookup {
                key: self.url_key(&facts.host, facts.path, facts.query),
            },
        }
    }

    /// Records a preview fetch in `table`, or attributes a referrer-less visit to the most
    /// recent preview of the same URL, rewriting `classification`.
    pub fn correlate(
        &self,
        table: &PreviewTable,
        facts: &RequestFacts<'_>,
        classification: &mut Classification,
        now: u64,
    ) -> Outcome {
        match self.step(facts, classification) {
            Step::Ignore => Outcome::Ignored,
            Step::Record { key, platform } => {
                table.record(&key, &platform, now);
                Outcome::Recorded(platform)
            }
            Step::Lookup { key } => {
                let found = table.lookup(&key, now, self.window_secs);
                self.conclude(table, &key, found, classification)
            }
        }
    }

    /// Applies a lookup's result: attributes the visit and counts it in `table`.
    pub fn conclude(
        &self,
        table: &PreviewTable,
        key: &str,
        found: Option<PreviewMatch>,
        classification: &mut Classification,
    ) -> Outcome {
        match found {
            Some(found) if self.attribute(classification, &found) => {
                table.mark_attributed(key, &found.platform);
                Outcome::Attributed(found.platform)
            }
            _ => Outcome::NoMatch,
        }
    }

    /// Rewrites a visit's classification after a preview match; false when the match is too
    /// old or too ambiguous to count.
    pub fn attribute(&self, classification: &mut Classification, found: &PreviewMatch) -> bool {
        let confidence = self.confidence(found);
        if confidence < MIN_CONFIDENCE {
            return false;
        }
        classification.channel = Channel::DarkSocial;
        classification.source = Some(found.platform.clone());
        classification.medium = None;
        classification.confidence = confidence;
        classification
            .reasons
            .push(Signal::PreviewCorrelation, Some(found.platform.clone()));
        true
    }

    /// Confidence of a match: halves every half-life, shared among the platforms.
    pub fn confidence(&self, found: &PreviewMatch) -> f32 {
        let decay = (-(found.age_secs as f64) / self.half_life_secs).exp2();
        let shared = 1.0 / found.platforms.max(1) as f64;
        (f64::from(FRESH_CONFIDENCE) * decay * shared) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn correlation(yaml: &str) -> Correlation {
        Correlation::new(&serde_yaml::from_str(yaml).unwrap())
    }

    fn visit(channel: Channel) -> Classification {
        let mut c = Classification::unclassified();
        c.channel = channel;
        c
    }

    #[test]
    fn keys_ignore_tracking_parameters_and_trailing_slashes() {
        let c = correlation("key_params: [id, p]");
        let cases = [
            (("example.com", "/a/", None), "example.com/a"),
            (("example.com", "/", Some("utm_source=x")), "example.com/"),
            (
                ("example.com", "/a", Some("p=2&utm_source=x&id=7")),
                "example.com/a?id=7&p=2",
            ),
            (("example.com", "/a", Some("fbclid=abc")), "example.com/a"),
        ];
        for ((host, path, query), expected) in cases {
            assert_eq!(c.url_key(host, path, query), expected);
        }
        let plain = correlation("{}");
        assert_eq!(plain.url_key("h", "/a", Some("id=7")), "h/a");
    }

    #[test]
    fn actions_by_classification() {
        let c = correlation("{}");
        let mut preview = visit(Channel::PreviewBot);
        preview.preview_bot = Some(Name::from("slack"));
        preview.is_bot = true;
        assert_eq!(
            c.action("GET", &preview),
            Action::Record(Name::from("slack"))
        );

        assert_eq!(c.action("GET", &visit(Channel::DarkSocial)), Action::Lookup);
        assert_eq!(c.action("GET", &visit(Channel::Direct)), Action::Lookup);
        assert_eq!(c.action("POST", &visit(Channel::Direct)), Action::Ignore);
        assert_eq!(
            c.action("GET", &visit(Channel::OrganicSearch)),
            Action::Ignore
        );

        let mut from_app = visit(Channel::DarkSocial);
        from_app.source = Some(Name::from("whatsapp"));
        assert_eq!(
            c.action("GET", &from_app),
            Action::Ignore,
            "already attributed"
        );
        let mut home = visit(Channel::Direct);
        home.reasons.push(Signal::ShallowPath, None);
        assert_eq!(c.action("GET", &home), Action::Ignore);
        let mut prefetch = visit(Channel::Direct);
        prefetch.reasons.push(Signal::Prefetch, None);
        assert_eq!(c.action("GET", &prefetch), Action::Ignore);
        let mut bot = visit(Channel::Bot);
        bot.is_bot = true;
        assert_eq!(c.action("GET", &bot), Action::Ignore);
    }

    #[test]
    fn confidence_decays_and_is_shared() {
        let c = correlation("half_life: 1h");
        let found = |age_secs, platforms| PreviewMatch {
            platform: Name::from("slack"),
            age_secs,
            platforms,
        };
        let fresh = c.confidence(&found(0, 1));
        let hour = c.confidence(&found(3600, 1));
        let shared = c.confidence(&found(0, 2));
        assert!((fresh - 0.9).abs() < 1e-6);
        assert!((hour - 0.45).abs() < 1e-6);
        assert!((shared - 0.45).abs() < 1e-6);

        let mut visit = visit(Channel::DarkSocial);
        assert!(c.attribute(&mut visit, &found(60, 1)));
        assert_eq!(visit.channel, Channel::DarkSocial);
        assert_eq!(visit.source.as_deref(), Some("slack"));
        assert!(visit.reasons.contains("preview_correlation:slack"));

        let mut stale = super::tests::visit(Channel::Direct);
        assert!(!c.attribute(&mut stale, &found(10 * 3600, 1)));
        assert_eq!(stale.channel, Channel::Direct, "too old to matter");
    }

    #[test]
    fn config_rejects_unknown_keys() {
        assert!(serde_yaml::from_str::<CorrelationConfig>("ttl: 1h\nsize: 3").is_err());
        assert!(serde_yaml::from_str::<CorrelationConfig>("store: disk").is_err());
    }
}
