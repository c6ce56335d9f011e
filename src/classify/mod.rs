//! The pure classification core: request facts in, a [`Classification`] out.
//!
//! No I/O, no async, no proxy types. The rule set ([`Classifier`]) is compiled once
//! from the built-in source database (`config/sources.yaml`, compiled into the binary)
//! and the user's `classification:` section; each site is compiled into a
//! [`SiteProfile`] (its own hosts and its shallow paths). Classifying a request then
//! costs one Aho-Corasick pass over the User-Agent (or a lookup in the thread's memo of the
//! User-Agents it saw last), a few hash lookups and one scan of the query string.
//!
//! # Precedence
//!
//! The first level that has something to say decides the channel; later levels only add
//! supporting reasons (and the in-app browser is always reported).
//!
//! 0. **Bots.** A link-preview fetcher (checked first, since many carry a `bot` token)
//!    is `preview_bot`; a crawler or tool is `bot`. A bot is a bot whatever its URL.
//! 1. **Campaign parameters** (`utm_*`): the medium decides (`cpc` → paid_search, or
//!    paid_social when `utm_source` is a social network; `email` → email…); an unknown
//!    medium is `campaign`.
//! 2. **Click ids** (`gclid`, `fbclid`, `msclkid`…): the network's channel.
//! 3. **The Referer**: the site's own hosts → `internal`; a known source → its channel
//!    (search, social, webmail → email, web messengers → messaging); anything else →
//!    `referral` with the referrer's domain as source. Anonymising shims (`href.li`)
//!    count as no referrer. Without a Referer, `Sec-Fetch-Site: same-origin` or
//!    `same-site` means `internal` (the site's referrer policy withheld it).
//! 4. **Not a landing**: without a referrer, a non-GET/HEAD request, a subresource or
//!    script request (`Sec-Fetch-Mode`/`Sec-Fetch-Dest`, `X-Requested-With:
//!    XMLHttpRequest`) or a prefetch/prerender is `direct` and no heuristic applies.
//! 5. **The app that opened the link**: an `android-app://` referrer, the
//!    `X-Requested-With` package of an Android WebView, or an in-app browser token in the
//!    User-Agent. Messaging apps → `dark_social` from that app; social apps →
//!    `organic_social`; mail apps → `email`; SMS apps → `sms`.
//! 6. **No referrer**: a deep landing path is `dark_social`; the home page or a section
//!    front is `direct`. `Sec-Fetch-Site: none` (the user started the navigation outside
//!    any page) and an Android WebView raise the dark social confidence.

mod campaign;
mod channel;
mod classifier;
mod facts;
mod landing;
mod name;
mod reasons;
mod referrer;
mod rules;
mod text;
mod ua_memo;
mod user_agent;

pub use campaign::{Campaign, ClickId, MAX_CAMPAIGN_VALUE_LEN};
pub use channel::Channel;
pub use classifier::{Classification, Classifier};
pub(crate) use facts::is_plain_host;
pub use facts::{RequestFacts, normalize_host};
pub use landing::{PathPattern, SiteClassificationConfig, SiteProfile};
pub use name::{Name, SourceName};
pub use reasons::{MAX_REASONS, Reason, Reasons, Signal};
pub use referrer::HostPattern;
pub use rules::{
    AppPackage, BUILTIN_SOURCES_YAML, BotKind, BotRule, ClassificationConfig, ClickIdRule,
    MediumRule, ParamName, PreviewBotRule, RuleError, RuleName, RuleSet, SourceKind, SourceRule,
};
pub use user_agent::UaToken;

/// A `GET` of `uri` on `www.example.com` with `headers`, classified by the built-in rules: for
/// the tests of the span attribute builders and the OTLP encoder.
#[cfg(test)]
#[cfg(feature = "telemetry")]
pub(crate) fn classify_for_test(uri: &str, headers: &[(&str, &str)]) -> Classification {
    let classifier = Classifier::builtin().unwrap();
    let profile = SiteProfile::new(&["www.example.com".to_string()], &Default::default())
        .unwrap_or_else(|_| SiteProfile::permissive_default());
    let uri: http::Uri = uri.parse().unwrap();
    let mut map = http::HeaderMap::new();
    map.insert(http::header::HOST, "www.example.com".parse().unwrap());
    for (name, value) in headers {
        map.insert(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    let facts = RequestFacts::from_http(&http::Method::GET, &uri, &map, "dl_first");
    classifier.classify(&facts, &profile)
}
