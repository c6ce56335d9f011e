//! The decision: compiled rules plus one request's facts in, a [`Classification`] out.
//!
//! See the [module documentation](super) for the precedence of the signals.

use serde::Serialize;

use super::campaign::{Campaign, ClickId, scan_query};
use super::channel::Channel;
use super::facts::RequestFacts;
use super::landing::SiteProfile;
use super::name::{Name, SourceName};
use super::reasons::{Reasons, Signal};
use super::referrer::{Referrer, parse_referrer, registrable_domain};
use super::rules::{
    ClassificationConfig, CompiledClickId, CompiledRules, CompiledSource, RuleError, SourceKind,
    compile_config,
};
use super::text::with_ascii_lowercase;

/// The outcome for one request: channel, named source, campaign, app and evidence.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Classification {
    /// The channel the visit is attributed to.
    pub channel: Channel,
    /// The named origin (`whatsapp`, `google`, a campaign's `utm_source`, a referrer's domain).
    pub source: Option<SourceName>,
    /// The medium: `utm_medium` for campaigns, else the channel's usual medium (`organic`,
    /// `cpc`, `social`, `email`, `referral`…).
    pub medium: Option<Name>,
    /// The `utm_*` values and click id of the landing URL.
    pub campaign: Campaign,
    /// The app whose in-app browser (or WebView) made the request.
    pub in_app: Option<Name>,
    /// True for crawlers, tools and preview fetchers.
    pub is_bot: bool,
    /// The platform of a link-preview fetch.
    pub preview_bot: Option<Name>,
    /// How sure the classifier is, from 0 to 1.
    pub confidence: f32,
    /// The signals that decided, strongest first.
    pub reasons: Reasons,
}

impl Classification {
    /// A neutral result (direct, confidence 0), for failing open when classification
    /// cannot run.
    pub fn unclassified() -> Classification {
        Classification::with_channel(Channel::Direct)
    }

    fn with_channel(channel: Channel) -> Classification {
        Classification {
            channel,
            source: None,
            medium: None,
            campaign: Campaign::default(),
            in_app: None,
            is_bot: false,
            preview_bot: None,
            confidence: 0.0,
            reasons: Reasons::default(),
        }
    }
}

/// The compiled, immutable rule set; share it between threads.
#[derive(Clone, Debug)]
pub struct Classifier {
    rules: CompiledRules,
    default_mediums: Vec<Option<Name>>,
}

/// Confidence of each decision level.
mod confidence {
    pub(super) const PREVIEW_BOT: f32 = 0.95;
    pub(super) const CAMPAIGN_MAPPED: f32 = 0.9;
    pub(super) const CAMPAIGN_SOURCE_ONLY: f32 = 0.8;
    pub(super) const CAMPAIGN_UNMAPPED: f32 = 0.75;
    pub(super) const CLICK_ID: f32 = 0.9;
    pub(super) const CLICK_ID_ORGANIC: f32 = 0.85;
    pub(super) const REFERRER_KNOWN: f32 = 0.95;
    pub(super) const REFERRER_UNKNOWN: f32 = 0.9;
    pub(super) const INTERNAL: f32 = 0.95;
    pub(super) const INTERNAL_FETCH_METADATA: f32 = 0.7;
    pub(super) const NOT_A_LANDING: f32 = 0.5;
    pub(super) const APP_REFERRER: f32 = 0.85;
    pub(super) const APP_REFERRER_UNKNOWN: f32 = 0.6;
    pub(super) const IN_APP: f32 = 0.8;
    pub(super) const SHALLOW_DIRECT: f32 = 0.6;
    pub(super) const DARK_SOCIAL: f32 = 0.6;
    pub(super) const DARK_SOCIAL_USER_STARTED: f32 = 0.15;
    pub(super) const DARK_SOCIAL_WEBVIEW: f32 = 0.1;
    pub(super) const DARK_SOCIAL_WITHHELD: f32 = -0.05;
}

impl Classifier {
    /// The built-in rules only (`config/sources.yaml`, compiled into the binary).
    pub fn builtin() -> Result<Classifier, RuleError> {
        Classifier::new(&ClassificationConfig::default())
    }

    /// The built-in rules with the user's additions and overrides.
    pub fn new(config: &ClassificationConfig) -> Result<Classifier, RuleError> {
        let rules = compile_config(config)?;
        let default_mediums = Channel::ALL
            .iter()
            .map(|c| c.default_medium().map(Name::new))
            .collect();
        Ok(Classifier {
            rules,
            default_mediums,
        })
    }

    /// Names of all known sources, in priority order (for docs and tests).
    pub fn source_names(&self) -> impl Iterator<Item = &str> {
        self.rules.sources.iter().map(|s| s.name.as_str())
    }

    /// Names of all preview platforms, in priority order.
    pub fn preview_bot_names(&self) -> impl Iterator<Item = &str> {
        self.rules.preview_bots.iter().map(Name::as_str)
    }

    /// Parameter names of all click ids, in priority order.
    pub fn click_id_params(&self) -> impl Iterator<Item = &str> {
        self.rules.click_ids.iter().map(|c| c.param.as_str())
    }

    /// Every name a classification can take from the rules (sources, apps, platforms, bots,
    /// click ids and their networks, mediums), so that consumers can prepare them once.
    pub fn rule_names(&self) -> impl Iterator<Item = &str> {
        let rules = &self.rules;
        let sources = rules
            .sources
            .iter()
            .flat_map(|s| [s.name.as_str(), s.app_name.as_str()]);
        let click_ids = rules.click_ids.iter().flat_map(|c| {
            [Some(&c.param), Some(&c.network), c.medium.as_ref()]
                .into_iter()
                .flatten()
                .map(Name::as_str)
        });
        sources
            .chain(rules.preview_bots.iter().map(Name::as_str))
            .chain(rules.bots.iter().map(|(name, _)| name.as_str()))
            .chain(click_ids)
            .chain(self.default_mediums.iter().flatten().map(Name::as_str))
    }

    fn default_medium(&self, channel: Channel) -> Option<Name> {
        let index = Channel::ALL.iter().position(|c| *c == channel)?;
        self.default_mediums.get(index).cloned().flatten()
    }

    fn source(&self, index: u32) -> Option<&CompiledSource> {
        self.rules.sources.get(index as usize)
    }

    fn app(&self, package: &str) -> Option<&CompiledSource> {
        with_ascii_lowercase(package.trim(), |p| self.rules.apps.get(p).copied())
            .and_then(|i| self.source(i))
    }

    /// Classifies one request. Never fails and never panics; allocates only for campaign
    /// values present in the query, for unknown referrer domains, and when the thread's
    /// User-Agent memo takes a longer text than its entry held (at most 512 bytes).
    pub fn classify(&self, facts: &RequestFacts<'_>, site: &SiteProfile) -> Classification {
        let mut out = Classification::with_channel(Channel::Direct);
        let user_agent = facts.user_agent.unwrap_or("");
        let ua = if user_agent.is_empty() {
            Default::default()
        } else {
            self.rules.user_agents.scan(user_agent)
        };

        // Level 0: bots. A bot is a bot whatever its URL or referrer says.
        if let Some(name) = ua
            .preview_bot
            .and_then(|i| self.rules.preview_bots.get(i as usize))
        {
            out.channel = Channel::PreviewBot;
            out.source = Some(name.clone());
            out.preview_bot = Some(name.clone());
            out.is_bot = true;
            out.confidence = confidence::PREVIEW_BOT;
            out.reasons.add_named(Signal::PreviewBot, name);
            return out;
        }
        if let Some((name, kind)) = ua.bot.and_then(|i| self.rules.bots.get(i as usize)) {
            out.channel = Channel::Bot;
            out.source = Some(name.clone());
            out.is_bot = true;
            out.confidence = kind.confidence();
            out.reasons.add_named(Signal::Bot, name);
            return out;
        }

        // The in-app browser is reported whatever decides the channel.
        let is_xhr = facts
            .x_requested_with
            .is_some_and(|v| v.eq_ignore_ascii_case("XMLHttpRequest"));
        let in_app = facts
            .x_requested_with
            .filter(|_| !is_xhr)
            .and_then(|package| self.app(package))
            .or_else(|| ua.in_app.and_then(|i| self.source(i)));
        out.in_app = in_app.map(|s| s.app_name.clone());

        // Level 1 and 2: campaign parameters, then click ids.
        let scan = facts
            .query
            .map(|q| scan_query(q, &self.rules.click_id_params))
            .unwrap_or_default();
        out.campaign = scan.campaign;
        let click = scan
            .click_id_rule
            .and_then(|i| self.rules.click_ids.get(i as usize));
        out.campaign.click_id = click.map(|c| ClickId {
            param: c.param.clone(),
            network: c.network.clone(),
        });
        let referrer = facts.referer.map(parse_referrer);

        if out.campaign.has_utm() {
            self.decide_campaign(&mut out, click);
            self.add_supporting(&mut out, facts, in_app);
            return out;
        }
        if let Some(click) = click {
            self.decide_click_id(&mut out, click, referrer, in_app);
            self.add_supporting(&mut out, facts, in_app);
            return out;
        }

        // Level 3: the referrer.
        let mut app_referrer = None;
        match referrer {
            Some(Referrer::Web { host }) => {
                if site.is_internal(host, &facts.host) {
                    out.channel = Channel::Internal;
                    out.confidence = confidence::INTERNAL;
                    out.reasons.add(Signal::ReferrerInternal);
                    self.add_supporting(&mut out, facts, in_app);
                    return out;
                }
                let known = with_ascii_lowercase(host, |h| self.rules.hosts.lookup(h).copied())
                    .and_then(|i| self.source(i));
                match known {
                    Some(source) if source.kind == SourceKind::Shim => {
                        out.reasons.add_named(Signal::ReferrerShim, &source.name);
                    }
                    Some(source) => {
                        out.channel = source.referrer_channel;
                        out.source = Some(source.name.clone());
                        out.medium = self.default_medium(out.channel);
                        out.confidence = confidence::REFERRER_KNOWN;
                        out.reasons.add_named(Signal::ReferrerHost, &source.name);
                        self.add_supporting(&mut out, facts, in_app);
                        return out;
                    }
                    None => {
                        let domain = with_ascii_lowercase(host, |h| {
                            Name::new(registrable_domain(h.trim_end_matches('.')))
                        });
                        out.channel = Channel::Referral;
                        out.source = Some(domain);
                        out.medium = self.default_medium(Channel::Referral);
                        out.confidence = confidence::REFERRER_UNKNOWN;
                        out.reasons.add(Signal::ReferrerExternal);
                        self.add_supporting(&mut out, facts, in_app);
                        return out;
                    }
                }
            }
            Some(Referrer::App { package }) => app_referrer = Some(package),
            Some(Referrer::Invalid) => out.reasons.add(Signal::ReferrerInvalid),
            None => {}
        }

        // No usable page referrer. Fetch metadata can still say the navigation started
        // on the site itself (the referrer was withheld by a referrer policy).
        match facts.sec_fetch_site.map(str::trim) {
            Some(site_value) if site_value.eq_ignore_ascii_case("same-origin") => {
                out.channel = Channel::Internal;
                out.confidence = confidence::INTERNAL_FETCH_METADATA;
                out.reasons.add(Signal::SecFetchSiteSameOrigin);
                self.add_supporting(&mut out, facts, in_app);
                return out;
            }
            Some(site_value) if site_value.eq_ignore_ascii_case("same-site") => {
                out.channel = Channel::Internal;
                out.confidence = confidence::INTERNAL_FETCH_METADATA;
                out.reasons.add(Signal::SecFetchSiteSameSite);
                self.add_supporting(&mut out, facts, in_app);
                return out;
            }
            _ => {}
        }

        // Not a landing: no heuristic applies.
        let not_a_landing = if !(facts.method.eq_ignore_ascii_case("GET")
            || facts.method.eq_ignore_ascii_case("HEAD"))
        {
            Some(Signal::NonGetMethod)
        } else if is_xhr || !is_navigation(facts) {
            Some(Signal::NotNavigation)
        } else if facts.is_prefetch() {
            Some(Signal::Prefetch)
        } else {
            None
        };
        if let Some(signal) = not_a_landing {
            out.channel = Channel::Direct;
            out.confidence = confidence::NOT_A_LANDING;
            out.reasons.add(signal);
            self.add_supporting(&mut out, facts, in_app);
            return out;
        }

        // Level 4: the app that opened the link.
        if let Some(package) = app_referrer {
            match self.app(package) {
                Some(source) => {
                    out.channel = source.in_app_channel;
                    out.source = Some(source.name.clone());
                    out.confidence = confidence::APP_REFERRER;
                    out.reasons.add_named(Signal::ReferrerApp, &source.app_name);
                }
                None => {
                    let package = Name::from(package.trim().to_ascii_lowercase());
                    out.channel = Channel::DarkSocial;
                    out.confidence = confidence::APP_REFERRER_UNKNOWN;
                    out.reasons.add_named(Signal::ReferrerApp, &package);
                    out.source = Some(package);
                }
            }
            out.medium = self.default_medium(out.channel);
            self.add_supporting(&mut out, facts, in_app);
            return out;
        }
        if let Some(app) = in_app {
            out.channel = app.in_app_channel;
            out.source = Some(app.name.clone());
            out.medium = self.default_medium(out.channel);
            out.confidence = confidence::IN_APP;
            self.add_supporting(&mut out, facts, in_app);
            return out;
        }

        // Level 5: no referrer at all. Deep links are dark social, shallow pages direct.
        let fetch_site = facts.sec_fetch_site.map(str::trim);
        let user_started = fetch_site.is_some_and(|v| v.eq_ignore_ascii_case("none"));
        let withheld = fetch_site.is_some_and(|v| v.eq_ignore_ascii_case("cross-site"));
        if site.is_shallow(facts.path) {
            out.channel = Channel::Direct;
            out.confidence = confidence::SHALLOW_DIRECT;
            out.reasons.add(Signal::ShallowPath);
        } else {
            out.channel = Channel::DarkSocial;
            let mut score = confidence::DARK_SOCIAL;
            out.reasons.add(Signal::DeepLinkNoReferrer);
            if user_started {
                score += confidence::DARK_SOCIAL_USER_STARTED;
            }
            if withheld {
                score += confidence::DARK_SOCIAL_WITHHELD;
            }
            if is_android_webview(facts) {
                score += confidence::DARK_SOCIAL_WEBVIEW;
                out.reasons.add(Signal::AndroidWebview);
            }
            out.confidence = score;
        }
        if facts.referer.is_none() {
            out.reasons.add(Signal::NoReferrer);
        }
        if user_started {
            out.reasons.add(Signal::SecFetchSiteNone);
        } else if withheld {
            out.reasons.add(Signal::SecFetchSiteCrossSite);
        }
        out.confidence = round_confidence(out.confidence);
        out
    }

    /// utm_* present: the medium (and the kind of the named source) decide.
    fn decide_campaign(&self, out: &mut Classification, click: Option<&CompiledClickId>) {
        let campaign = &out.campaign;
        let known = campaign.source.as_deref().and_then(|s| {
            with_ascii_lowercase(s, |k| self.rules.source_names.get(k).copied())
                .and_then(|i| self.source(i))
        });
        let kind = known.map(|s| s.kind);
        let (channel, score) = match campaign.medium.as_deref() {
            Some(medium) => {
                let rule =
                    with_ascii_lowercase(medium, |m| self.rules.medium_values.get(m).copied())
                        .and_then(|i| self.rules.mediums.get(i as usize));
                match rule {
                    Some(rule) => {
                        let channel = match kind {
                            Some(SourceKind::Social) => rule.with_social_source,
                            Some(SourceKind::Search) => rule.with_search_source,
                            _ => None,
                        };
                        (channel.unwrap_or(rule.channel), confidence::CAMPAIGN_MAPPED)
                    }
                    None => (Channel::Campaign, confidence::CAMPAIGN_UNMAPPED),
                }
            }
            None => match (known, click) {
                (Some(source), _) => (source.referrer_channel, confidence::CAMPAIGN_SOURCE_ONLY),
                (None, Some(click)) => (click.channel, confidence::CAMPAIGN_SOURCE_ONLY),
                (None, None) => (Channel::Campaign, confidence::CAMPAIGN_UNMAPPED),
            },
        };
        out.channel = channel;
        out.source = match (known, campaign.source.as_deref(), click) {
            (Some(source), _, _) => Some(source.name.clone()),
            (None, Some(raw), _) => Some(Name::from(raw.to_lowercase())),
            (None, None, Some(click)) => Some(click.network.clone()),
            (None, None, None) => None,
        };
        out.medium = match campaign.medium.as_deref() {
            Some(medium) => Some(Name::new(medium)),
            None => self.default_medium(channel),
        };
        out.confidence = score;
        let present = [
            (Signal::UtmSource, campaign.source.is_some()),
            (Signal::UtmMedium, campaign.medium.is_some()),
            (Signal::UtmCampaign, campaign.name.is_some()),
            (Signal::UtmTerm, campaign.term.is_some()),
            (Signal::UtmContent, campaign.content.is_some()),
            (Signal::UtmId, campaign.id.is_some()),
        ];
        for (signal, is_present) in present {
            if is_present {
                out.reasons.add(signal);
            }
        }
        if let Some(click) = click {
            out.reasons.add_named(Signal::ClickId, &click.param);
        }
    }

    /// A click id without utm_*: the network's channel. Organic share ids (fbclid is on
    /// every Facebook outbound link, Instagram reuses it) take the social source from a
    /// social referrer or in-app browser when there is one.
    fn decide_click_id(
        &self,
        out: &mut Classification,
        click: &CompiledClickId,
        referrer: Option<Referrer<'_>>,
        in_app: Option<&CompiledSource>,
    ) {
        out.channel = click.channel;
        out.source = Some(click.network.clone());
        out.medium = click
            .medium
            .clone()
            .or_else(|| self.default_medium(click.channel));
        out.confidence = confidence::CLICK_ID;
        out.reasons.add_named(Signal::ClickId, &click.param);
        if click.channel == Channel::OrganicSocial {
            out.confidence = confidence::CLICK_ID_ORGANIC;
            let referrer_source = match referrer {
                Some(Referrer::Web { host }) => {
                    with_ascii_lowercase(host, |h| self.rules.hosts.lookup(h).copied())
                        .and_then(|i| self.source(i))
                }
                _ => None,
            };
            if let Some(source) = referrer_source
                .or(in_app)
                .filter(|s| s.kind == SourceKind::Social)
            {
                out.source = Some(source.name.clone());
            }
        }
    }

    /// Reasons that support, but did not make, the decision.
    fn add_supporting(
        &self,
        out: &mut Classification,
        facts: &RequestFacts<'_>,
        in_app: Option<&CompiledSource>,
    ) {
        if let Some(app) = in_app {
            out.reasons.add_named(Signal::InApp, &app.app_name);
        }
        if facts.is_prefetch() && !out.reasons.has(Signal::Prefetch) {
            out.reasons.add(Signal::Prefetch);
        }
        out.confidence = round_confidence(out.confidence);
    }
}

/// False for requests the browser says are not page navigations (subresources, fetch).
fn is_navigation(facts: &RequestFacts<'_>) -> bool {
    let mode_ok = facts.sec_fetch_mode.is_none_or(|m| {
        let m = m.trim();
        m.eq_ignore_ascii_case("navigate") || m.eq_ignore_ascii_case("nested-navigate")
    });
    let dest_ok = facts.sec_fetch_dest.is_none_or(|d| {
        let d = d.trim();
        ["document", "iframe", "frame", "embed", "object"]
            .iter()
            .any(|ok| d.eq_ignore_ascii_case(ok))
    });
    mode_ok && dest_ok
}

/// An Android WebView (`; wv)` in the UA, or the `Android WebView` client-hint brand).
fn is_android_webview(facts: &RequestFacts<'_>) -> bool {
    facts
        .sec_ch_ua
        .is_some_and(|v| v.contains("Android WebView"))
        || facts.user_agent.is_some_and(|ua| ua.contains("; wv)"))
}

fn round_confidence(value: f32) -> f32 {
    ((value * 100.0).round() / 100.0).clamp(0.0, 1.0)
}
