//! The signals that led to a classification, for debugging and span attributes.
//!
//! A reason is a short snake_case signal name, optionally followed by `:` and the rule
//! that fired, e.g. `utm_source`, `click_id:gclid`, `referrer_host:google`,
//! `in_app:whatsapp`, `deep_link_no_referrer`, `prefetch`, `preview_bot:slack`.
//! They are kept in a fixed-size inline list, so recording them never allocates.

use std::fmt;

use serde::{Serialize, Serializer};

use super::name::Name;

/// One kind of evidence the classifier can rely on.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Signal {
    /// The User-Agent matched a crawler or tool rule (`bot:<name>`).
    Bot,
    /// The User-Agent matched a link-preview fetcher (`preview_bot:<platform>`).
    PreviewBot,
    /// The query carried `utm_source`.
    UtmSource,
    /// The query carried `utm_medium`.
    UtmMedium,
    /// The query carried `utm_campaign`.
    UtmCampaign,
    /// The query carried `utm_term`.
    UtmTerm,
    /// The query carried `utm_content`.
    UtmContent,
    /// The query carried `utm_id`.
    UtmId,
    /// The query carried an ad-network click id (`click_id:<param>`).
    ClickId,
    /// The Referer host belongs to a known source (`referrer_host:<source>`).
    ReferrerHost,
    /// The Referer host belongs to the site itself.
    ReferrerInternal,
    /// The Referer host is an unknown external site.
    ReferrerExternal,
    /// The Referer is an `android-app://` URL of a known app (`referrer_app:<app>`).
    ReferrerApp,
    /// The Referer is an anonymising link shim that hides the origin (`referrer_shim:<name>`).
    ReferrerShim,
    /// The Referer could not be parsed and was ignored.
    ReferrerInvalid,
    /// The request came from an app's in-app browser (`in_app:<app>`).
    InApp,
    /// The request came from an Android WebView of an unidentified app.
    AndroidWebview,
    /// `Sec-Fetch-Site: none`: a navigation the user started outside any page.
    SecFetchSiteNone,
    /// `Sec-Fetch-Site: same-origin` without a Referer.
    SecFetchSiteSameOrigin,
    /// `Sec-Fetch-Site: same-site` without a Referer.
    SecFetchSiteSameSite,
    /// `Sec-Fetch-Site: cross-site` without a Referer: the referring page withheld it.
    SecFetchSiteCrossSite,
    /// No Referer at all.
    NoReferrer,
    /// No referrer and a deep landing path: the dark social heuristic fired.
    DeepLinkNoReferrer,
    /// No referrer and a home page or section front.
    ShallowPath,
    /// A speculative prefetch or prerender (`Sec-Purpose`/`Purpose`/`X-Moz`).
    Prefetch,
    /// Not a GET or HEAD, so not a landing.
    NonGetMethod,
    /// A subresource or script request (`Sec-Fetch-Mode` other than navigate, or XHR).
    NotNavigation,
    /// A link-preview fetch of the same URL shortly before: the link was just shared there.
    PreviewCorrelation,
}

impl Signal {
    /// The snake_case name of the signal.
    pub const fn as_str(self) -> &'static str {
        match self {
            Signal::Bot => "bot",
            Signal::PreviewBot => "preview_bot",
            Signal::UtmSource => "utm_source",
            Signal::UtmMedium => "utm_medium",
            Signal::UtmCampaign => "utm_campaign",
            Signal::UtmTerm => "utm_term",
            Signal::UtmContent => "utm_content",
            Signal::UtmId => "utm_id",
            Signal::ClickId => "click_id",
            Signal::ReferrerHost => "referrer_host",
            Signal::ReferrerInternal => "referrer_internal",
            Signal::ReferrerExternal => "referrer_external",
            Signal::ReferrerApp => "referrer_app",
            Signal::ReferrerShim => "referrer_shim",
            Signal::ReferrerInvalid => "referrer_invalid",
            Signal::InApp => "in_app",
            Signal::AndroidWebview => "android_webview",
            Signal::SecFetchSiteNone => "sec_fetch_site:none",
            Signal::SecFetchSiteSameOrigin => "sec_fetch_site:same_origin",
            Signal::SecFetchSiteSameSite => "sec_fetch_site:same_site",
            Signal::SecFetchSiteCrossSite => "sec_fetch_site:cross_site",
            Signal::NoReferrer => "no_referrer",
            Signal::DeepLinkNoReferrer => "deep_link_no_referrer",
            Signal::ShallowPath => "shallow_path",
            Signal::Prefetch => "prefetch",
            Signal::NonGetMethod => "non_get_method",
            Signal::NotNavigation => "not_navigation",
            Signal::PreviewCorrelation => "preview_correlation",
        }
    }
}

/// A signal, with the name of the rule that produced it when there is one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reason {
    /// What kind of evidence.
    pub signal: Signal,
    /// Which rule fired (source, app, click-id parameter, platform).
    pub detail: Option<Name>,
}

impl Reason {
    /// Length in bytes of the text form (`click_id:gclid`).
    pub fn text_len(&self) -> usize {
        let signal = self.signal.as_str().len();
        self.detail
            .as_ref()
            .map_or(signal, |d| signal + 1 + d.len())
    }

    /// Appends the text form, the one `Display` prints.
    pub fn push_text(&self, out: &mut String) {
        out.push_str(self.signal.as_str());
        if let Some(detail) = &self.detail {
            out.push(':');
            out.push_str(detail);
        }
    }

    /// True when this reason prints as `text` (e.g. `click_id:gclid`), without allocating.
    pub fn matches(&self, text: &str) -> bool {
        let signal = self.signal.as_str();
        match &self.detail {
            None => text == signal,
            Some(detail) => text
                .strip_prefix(signal)
                .and_then(|rest| rest.strip_prefix(':'))
                .is_some_and(|rest| rest == detail.as_str()),
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.signal.as_str())?;
        if let Some(detail) = &self.detail {
            f.write_str(":")?;
            f.write_str(detail)?;
        }
        Ok(())
    }
}

impl Serialize for Reason {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Most reasons a classification keeps; further ones are dropped.
pub const MAX_REASONS: usize = 8;

/// A short, inline list of reasons (no heap allocation).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reasons {
    items: [Option<Reason>; MAX_REASONS],
    len: usize,
}

impl Reasons {
    /// Appends a reason; silently drops it when the list is full.
    pub fn push(&mut self, signal: Signal, detail: Option<Name>) {
        if let Some(slot) = self.items.get_mut(self.len) {
            *slot = Some(Reason { signal, detail });
            self.len += 1;
        }
    }

    /// Appends a reason without detail.
    pub(crate) fn add(&mut self, signal: Signal) {
        self.push(signal, None);
    }

    /// Appends a reason naming the rule that fired.
    pub(crate) fn add_named(&mut self, signal: Signal, detail: &Name) {
        self.push(signal, Some(detail.clone()));
    }

    /// The reasons in the order they were recorded.
    pub fn iter(&self) -> impl Iterator<Item = &Reason> {
        self.items.iter().take(self.len).flatten()
    }

    /// Number of reasons.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no reason was recorded.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Length in bytes of the comma-separated text form (`in_app:whatsapp,deep_link_no_referrer`),
    /// so a buffer can be sized once.
    pub fn text_len(&self) -> usize {
        let items: usize = self.iter().map(Reason::text_len).sum();
        items + self.len.saturating_sub(1)
    }

    /// Appends the comma-separated text form, the one `Display` prints, without the formatter.
    pub fn push_text(&self, out: &mut String) {
        for (i, reason) in self.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            reason.push_text(out);
        }
    }

    /// True when one reason prints as `text`, e.g. `contains("in_app:whatsapp")`.
    pub fn contains(&self, text: &str) -> bool {
        self.iter().any(|r| r.matches(text))
    }

    /// True when one reason has this signal.
    pub fn has(&self, signal: Signal) -> bool {
        self.iter().any(|r| r.signal == signal)
    }
}

impl fmt::Display for Reasons {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, reason) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{reason}")?;
        }
        Ok(())
    }
}

impl Serialize for Reasons {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reasons(items: &[(Signal, Option<&str>)]) -> Reasons {
        let mut reasons = Reasons::default();
        for (signal, detail) in items {
            reasons.push(*signal, detail.map(Name::new));
        }
        reasons
    }

    /// `push_text` and `text_len` agree with `Display`, the form the headers and spans show.
    #[test]
    fn text_form_matches_display_and_its_length() {
        let cases: [&[(Signal, Option<&str>)]; 4] = [
            &[],
            &[(Signal::NoReferrer, None)],
            &[(Signal::PreviewBot, Some("whatsapp"))],
            &[
                (Signal::PreviewBot, Some("whatsapp")),
                (Signal::DeepLinkNoReferrer, None),
                (Signal::UtmSource, Some("newsletter")),
            ],
        ];
        for items in cases {
            let reasons = reasons(items);
            let mut text = String::new();
            reasons.push_text(&mut text);
            assert_eq!(text, reasons.to_string());
            assert_eq!(reasons.text_len(), text.len(), "{text}");
        }
        let full = reasons(&[(Signal::NoReferrer, None); MAX_REASONS + 2]);
        let mut text = String::new();
        full.push_text(&mut text);
        assert_eq!(text.matches("no_referrer").count(), MAX_REASONS);
        assert_eq!(full.text_len(), text.len());
    }
}
