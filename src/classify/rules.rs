//! The rule schema (the built-in `config/sources.yaml` and the user's `classification:`
//! section share it) and its compilation into lookup tables.
//!
//! Every pattern is validated while it is deserialised, so a bad pattern in a YAML file
//! is reported with its line and column. Compilation merges the user's rules over the
//! built-in ones: an entry with the same name (click ids: the same `param`; mediums: the
//! same value) replaces the built-in entry, and user entries are checked before built-in
//! ones. Within one layer, a name, host, app or token claimed twice is an error.

use std::collections::{HashMap, HashSet};
use std::fmt;

use serde::{Deserialize, Deserializer};

use super::channel::Channel;
use super::name::Name;
use super::referrer::{HostPattern, HostTable};
use super::text::deserialize_parsed;
use super::user_agent::{UaCategory, UaMatcher, UaMatcherBuilder, UaToken};
use crate::lookup_map::LookupMap;

/// The built-in source database, compiled into the binary.
pub const BUILTIN_SOURCES_YAML: &str = include_str!("../../config/sources.yaml");

/// Why a rule set could not be compiled.
#[non_exhaustive]
#[derive(thiserror::Error, Debug)]
pub enum RuleError {
    /// The built-in database does not parse (a packaging bug, caught by the test suite).
    #[error("built-in source database config/sources.yaml: {0}")]
    Builtin(String),
    /// Two entries of the same list have the same name.
    #[error("{list} entry `{name}` is defined twice")]
    DuplicateName {
        /// The list (`sources`, `preview_bots`, `bots`, `click_ids`, `mediums`).
        list: &'static str,
        /// The repeated name.
        name: String,
    },
    /// Two entries of the same layer claim the same host, app, token or value.
    #[error("{what} `{value}` is claimed by both `{first}` and `{second}`")]
    Conflict {
        /// What is claimed (`host`, `app`, `user-agent token`, `utm_medium value`).
        what: &'static str,
        /// The claimed value.
        value: String,
        /// The entry that claimed it first.
        first: String,
        /// The entry that claimed it again.
        second: String,
    },
    /// The user-agent automaton could not be built.
    #[error("user-agent tokens could not be compiled: {0}")]
    Matcher(String),
    /// A site's path patterns could not be compiled together.
    #[error("site `{key}` could not be compiled: {reason}")]
    PathSet {
        /// `shallow_paths` or `deep_paths`.
        key: &'static str,
        /// The regex engine's message.
        reason: String,
    },
    /// A site host is not a host name.
    #[error("site host `{host}` is not usable: {reason}")]
    SiteHost {
        /// The host as given.
        host: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// A rule name: lowercase letters, digits and `_` (it appears in JSON and span attributes).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RuleName(String);

impl RuleName {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn parse(raw: &str) -> Result<RuleName, String> {
        if raw.is_empty() || raw.len() > 64 {
            return Err(format!(
                "invalid name `{raw}`: it must be 1 to 64 characters long"
            ));
        }
        if !raw
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(format!(
                "invalid name `{raw}`: use lowercase letters, digits and `_` (like `hacker_news`)"
            ));
        }
        Ok(RuleName(raw.to_owned()))
    }
}

impl fmt::Display for RuleName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for RuleName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<RuleName, D::Error> {
        deserialize_parsed(deserializer, "a rule name", RuleName::parse)
    }
}

/// An Android package name such as `com.facebook.katana` (matched case-insensitively).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AppPackage(String);

impl AppPackage {
    /// The package name, lowercased.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for AppPackage {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<AppPackage, D::Error> {
        deserialize_parsed(deserializer, "an Android package name", |raw| {
            let valid = raw.contains('.')
                && !raw.starts_with('.')
                && !raw.ends_with('.')
                && !raw.contains("..")
                && raw.len() <= 200
                && raw
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_');
            if valid {
                Ok(AppPackage(raw.to_ascii_lowercase()))
            } else {
                Err(format!(
                    "invalid app package `{raw}`: expected an Android package name like `com.example.app`"
                ))
            }
        })
    }
}

/// A query parameter name for a click id (`gclid`), matched case-insensitively.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ParamName(String);

impl ParamName {
    /// The parameter name, lowercased.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for ParamName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<ParamName, D::Error> {
        deserialize_parsed(deserializer, "a query parameter name", |raw| {
            let valid = !raw.is_empty()
                && raw.len() <= 64
                && raw
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
            if valid && !raw.to_ascii_lowercase().starts_with("utm_") {
                Ok(ParamName(raw.to_ascii_lowercase()))
            } else {
                Err(format!(
                    "invalid click-id parameter `{raw}`: expected a query parameter name like `gclid` (not utm_*)"
                ))
            }
        })
    }
}

/// What kind of place a source is; it decides the channel of its visits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// A search engine: organic_search (paid: paid_search).
    Search,
    /// A social network: organic_social (paid: paid_social).
    Social,
    /// Webmail or a mail app: email.
    Email,
    /// A messenger. A visible referrer is `messaging`; its in-app browser or app
    /// referrer without a page referrer is `dark_social` from that app.
    Messaging,
    /// A text-message app: sms.
    Sms,
    /// An anonymising link shim: the origin is unknown, treated as no referrer.
    Shim,
    /// Any other website worth naming: referral.
    Referral,
}

impl SourceKind {
    /// The channel of a visit whose Referer is on this source.
    pub fn referrer_channel(self) -> Channel {
        match self {
            SourceKind::Search => Channel::OrganicSearch,
            SourceKind::Social => Channel::OrganicSocial,
            SourceKind::Email => Channel::Email,
            SourceKind::Messaging => Channel::Messaging,
            SourceKind::Sms => Channel::Sms,
            SourceKind::Shim => Channel::DarkSocial,
            SourceKind::Referral => Channel::Referral,
        }
    }

    /// The channel of a visit made from this source's app without a page referrer.
    pub fn in_app_channel(self) -> Channel {
        match self {
            SourceKind::Messaging | SourceKind::Shim => Channel::DarkSocial,
            other => other.referrer_channel(),
        }
    }
}

/// One traffic source: where its referrers come from and how its apps identify.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceRule {
    /// Unique name, reported as `source`.
    pub name: RuleName,
    /// What kind of place it is.
    pub kind: SourceKind,
    /// Channel for referrer matches, instead of the kind's default.
    #[serde(default)]
    pub channel: Option<Channel>,
    /// Channel for in-app / app-referrer matches without a page referrer.
    #[serde(default)]
    pub in_app_channel: Option<Channel>,
    /// Name reported as `in_app` (default: `name`), e.g. `google_app` for `google`.
    #[serde(default)]
    pub app_name: Option<RuleName>,
    /// Referrer hosts.
    #[serde(default)]
    pub hosts: Vec<HostPattern>,
    /// In-app browser User-Agent tokens.
    #[serde(default)]
    pub user_agents: Vec<UaToken>,
    /// Android package names (X-Requested-With, `android-app://` referrers).
    #[serde(default)]
    pub apps: Vec<AppPackage>,
    /// `utm_source` values meaning this source (the name always does).
    #[serde(default)]
    pub aliases: Vec<String>,
}

/// A link-preview fetcher.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreviewBotRule {
    /// The platform, reported as `preview_bot` and `source`.
    pub name: RuleName,
    /// User-Agent tokens.
    pub user_agents: Vec<UaToken>,
}

/// How sure a bot match is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BotKind {
    /// A named crawler or monitor.
    #[default]
    Crawler,
    /// An HTTP library or command-line tool: scripted, possibly a person testing.
    Tool,
    /// A catch-all token such as `bot` or `spider`.
    Generic,
}

impl BotKind {
    pub(crate) fn confidence(self) -> f32 {
        match self {
            BotKind::Crawler => 0.95,
            BotKind::Generic => 0.8,
            BotKind::Tool => 0.7,
        }
    }
}

/// A crawler, monitor or scripted client.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BotRule {
    /// Reported as `source` of a bot visit.
    pub name: RuleName,
    /// Named crawler, tool or generic token.
    #[serde(default)]
    pub kind: BotKind,
    /// User-Agent tokens.
    pub user_agents: Vec<UaToken>,
}

/// A click-id query parameter and what it means.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClickIdRule {
    /// The parameter, e.g. `gclid`.
    pub param: ParamName,
    /// The network that adds it, reported as `source`.
    pub source: RuleName,
    /// The channel it means.
    pub channel: Channel,
    /// The medium to report (default: the channel's usual medium).
    #[serde(default)]
    pub medium: Option<String>,
}

/// `utm_medium` values and their channel.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediumRule {
    /// The values (case-insensitive).
    pub values: Vec<String>,
    /// The channel they mean.
    pub channel: Channel,
    /// Channel instead when `utm_source` names a social source.
    #[serde(default)]
    pub with_social_source: Option<Channel>,
    /// Channel instead when `utm_source` names a search source.
    #[serde(default)]
    pub with_search_source: Option<Channel>,
}

/// The lists of one rule layer (the built-in file has exactly these keys).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSet {
    /// Traffic sources.
    #[serde(default)]
    pub sources: Vec<SourceRule>,
    /// Link-preview fetchers, specific before generic.
    #[serde(default)]
    pub preview_bots: Vec<PreviewBotRule>,
    /// Crawlers and tools, specific before generic.
    #[serde(default)]
    pub bots: Vec<BotRule>,
    /// Click-id parameters, highest priority first.
    #[serde(default)]
    pub click_ids: Vec<ClickIdRule>,
    /// `utm_medium` mappings.
    #[serde(default)]
    pub mediums: Vec<MediumRule>,
}

impl RuleSet {
    /// Parses the built-in database.
    pub fn builtin() -> Result<RuleSet, RuleError> {
        serde_yaml::from_str(BUILTIN_SOURCES_YAML).map_err(|e| RuleError::Builtin(e.to_string()))
    }
}

/// The user's `classification:` section: rules added to, or replacing, the built-in ones.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassificationConfig {
    /// Start from the built-in database (default true); false uses only these rules.
    #[serde(default = "default_true")]
    pub builtin: bool,
    /// Sources to add; a name already built in replaces that source.
    #[serde(default)]
    pub sources: Vec<SourceRule>,
    /// Preview fetchers to add or replace; checked before the built-in ones.
    #[serde(default)]
    pub preview_bots: Vec<PreviewBotRule>,
    /// Bots to add or replace; checked before the built-in ones.
    #[serde(default)]
    pub bots: Vec<BotRule>,
    /// Click ids to add or replace (same `param`).
    #[serde(default)]
    pub click_ids: Vec<ClickIdRule>,
    /// `utm_medium` values to add or remap.
    #[serde(default)]
    pub mediums: Vec<MediumRule>,
}

fn default_true() -> bool {
    true
}

impl Default for ClassificationConfig {
    fn default() -> Self {
        ClassificationConfig {
            builtin: true,
            sources: Vec::new(),
            preview_bots: Vec::new(),
            bots: Vec::new(),
            click_ids: Vec::new(),
            mediums: Vec::new(),
        }
    }
}

impl ClassificationConfig {
    fn user_layer(&self) -> RuleSet {
        RuleSet {
            sources: self.sources.clone(),
            preview_bots: self.preview_bots.clone(),
            bots: self.bots.clone(),
            click_ids: self.click_ids.clone(),
            mediums: self.mediums.clone(),
        }
    }
}

/// A source, compiled.
#[derive(Clone, Debug)]
pub(crate) struct CompiledSource {
    pub(crate) name: Name,
    pub(crate) app_name: Name,
    pub(crate) kind: SourceKind,
    pub(crate) referrer_channel: Channel,
    pub(crate) in_app_channel: Channel,
}

/// A click id, compiled.
#[derive(Clone, Debug)]
pub(crate) struct CompiledClickId {
    pub(crate) param: Name,
    pub(crate) network: Name,
    pub(crate) channel: Channel,
    pub(crate) medium: Option<Name>,
}

/// A medium mapping, compiled.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CompiledMedium {
    pub(crate) channel: Channel,
    pub(crate) with_social_source: Option<Channel>,
    pub(crate) with_search_source: Option<Channel>,
}

/// Every rule, compiled into the tables the classifier reads.
#[derive(Clone, Debug)]
pub(crate) struct CompiledRules {
    pub(crate) sources: Vec<CompiledSource>,
    pub(crate) hosts: HostTable<u32>,
    pub(crate) apps: LookupMap<Box<str>, u32>,
    pub(crate) source_names: LookupMap<Box<str>, u32>,
    pub(crate) preview_bots: Vec<Name>,
    pub(crate) bots: Vec<(Name, BotKind)>,
    pub(crate) user_agents: UaMatcher,
    pub(crate) click_ids: Vec<CompiledClickId>,
    pub(crate) click_id_params: LookupMap<Box<str>, u32>,
    pub(crate) mediums: Vec<CompiledMedium>,
    pub(crate) medium_values: LookupMap<Box<str>, u32>,
}

/// Records which layer and entry claimed a key, to report conflicts within a layer and
/// let the user layer win over the built-in one.
struct Claims {
    what: &'static str,
    owners: HashMap<String, (usize, String)>,
}

impl Claims {
    fn new(what: &'static str) -> Claims {
        Claims {
            what,
            owners: HashMap::new(),
        }
    }

    /// True when `key` is new; false when an earlier layer has it; error within a layer.
    fn claim(&mut self, key: String, layer: usize, owner: &str) -> Result<bool, RuleError> {
        match self.owners.get(&key) {
            None => {
                self.owners.insert(key, (layer, owner.to_owned()));
                Ok(true)
            }
            Some((first_layer, first)) if *first_layer == layer => Err(RuleError::Conflict {
                what: self.what,
                value: key,
                first: first.clone(),
                second: owner.to_owned(),
            }),
            Some(_) => Ok(false),
        }
    }
}

fn check_unique_names<'a>(
    list: &'static str,
    names: impl Iterator<Item = &'a str>,
) -> Result<(), RuleError> {
    let mut seen = HashSet::new();
    for name in names {
        if !seen.insert(name) {
            return Err(RuleError::DuplicateName {
                list,
                name: name.to_owned(),
            });
        }
    }
    Ok(())
}

/// Merges the layers (highest priority first) by name.
fn merge<'a, T, K: std::hash::Hash + Eq>(
    layers: &'a [RuleSet],
    list: impl Fn(&'a RuleSet) -> &'a [T],
    key: impl Fn(&'a T) -> K,
) -> Vec<(usize, &'a T)> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (layer, set) in layers.iter().enumerate() {
        let mut layer_keys = Vec::new();
        for item in list(set) {
            let k = key(item);
            if !seen.contains(&k) {
                out.push((layer, item));
                layer_keys.push(k);
            }
        }
        seen.extend(layer_keys);
    }
    out
}

/// Compiles rule layers, highest priority first (user, then built-in).
pub(crate) fn compile(layers: &[RuleSet]) -> Result<CompiledRules, RuleError> {
    for set in layers {
        check_unique_names("sources", set.sources.iter().map(|s| s.name.as_str()))?;
        check_unique_names(
            "preview_bots",
            set.preview_bots.iter().map(|s| s.name.as_str()),
        )?;
        check_unique_names("bots", set.bots.iter().map(|s| s.name.as_str()))?;
        check_unique_names("click_ids", set.click_ids.iter().map(|s| s.param.as_str()))?;
    }
    let mut ua = UaMatcherBuilder::default();
    let mut ua_claims = Claims::new("user-agent token");

    let mut sources = Vec::new();
    let mut hosts = HostTable::default();
    let mut host_claims = Claims::new("host");
    let mut apps = LookupMap::default();
    let mut app_claims = Claims::new("app");
    let mut source_names = LookupMap::default();
    let mut alias_claims = Claims::new("utm_source alias");
    for (layer, rule) in merge(layers, |s| &s.sources, |r| r.name.as_str()) {
        let index = u32::try_from(sources.len()).unwrap_or(u32::MAX);
        let owner = rule.name.as_str();
        for host in &rule.hosts {
            if host_claims.claim(host.as_str().to_owned(), layer, owner)? {
                hosts.insert(host, index);
            }
        }
        for app in &rule.apps {
            if app_claims.claim(app.as_str().to_owned(), layer, owner)? {
                apps.insert(Box::from(app.as_str()), index);
            }
        }
        for token in &rule.user_agents {
            if ua_claims.claim(format!("in-app {:?}", token.key()), layer, owner)? {
                ua.add(UaCategory::InApp, index, token);
            }
        }
        let aliases = std::iter::once(rule.name.as_str().to_owned())
            .chain(rule.aliases.iter().map(|a| a.trim().to_ascii_lowercase()));
        for alias in aliases {
            if alias_claims.claim(alias.clone(), layer, owner)? {
                source_names.insert(alias.into_boxed_str(), index);
            }
        }
        sources.push(CompiledSource {
            name: Name::new(owner),
            app_name: Name::new(rule.app_name.as_ref().map_or(owner, RuleName::as_str)),
            kind: rule.kind,
            referrer_channel: rule.channel.unwrap_or(rule.kind.referrer_channel()),
            in_app_channel: rule.in_app_channel.unwrap_or(rule.kind.in_app_channel()),
        });
    }

    let mut preview_bots = Vec::new();
    for (layer, rule) in merge(layers, |s| &s.preview_bots, |r| r.name.as_str()) {
        let index = u32::try_from(preview_bots.len()).unwrap_or(u32::MAX);
        for token in &rule.user_agents {
            if ua_claims.claim(
                format!("preview {:?}", token.key()),
                layer,
                rule.name.as_str(),
            )? {
                ua.add(UaCategory::PreviewBot, index, token);
            }
        }
        preview_bots.push(Name::new(rule.name.as_str()));
    }

    let mut bots = Vec::new();
    for (layer, rule) in merge(layers, |s| &s.bots, |r| r.name.as_str()) {
        let index = u32::try_from(bots.len()).unwrap_or(u32::MAX);
        for token in &rule.user_agents {
            if ua_claims.claim(format!("bot {:?}", token.key()), layer, rule.name.as_str())? {
                ua.add(UaCategory::Bot, index, token);
            }
        }
        bots.push((Name::new(rule.name.as_str()), rule.kind));
    }

    let mut click_ids = Vec::new();
    let mut click_id_params = LookupMap::default();
    for (_, rule) in merge(layers, |s| &s.click_ids, |r| r.param.as_str()) {
        let index = u32::try_from(click_ids.len()).unwrap_or(u32::MAX);
        click_id_params.insert(Box::from(rule.param.as_str()), index);
        click_ids.push(CompiledClickId {
            param: Name::new(rule.param.as_str()),
            network: Name::new(rule.source.as_str()),
            channel: rule.channel,
            medium: rule.medium.as_deref().map(Name::new),
        });
    }

    let mut mediums = Vec::new();
    let mut medium_values = LookupMap::default();
    let mut medium_claims = Claims::new("utm_medium value");
    for (layer, set) in layers.iter().enumerate() {
        for rule in &set.mediums {
            let index = u32::try_from(mediums.len()).unwrap_or(u32::MAX);
            mediums.push(CompiledMedium {
                channel: rule.channel,
                with_social_source: rule.with_social_source,
                with_search_source: rule.with_search_source,
            });
            for value in &rule.values {
                let value = value.trim().to_ascii_lowercase();
                if medium_claims.claim(value.clone(), layer, rule.channel.as_str())? {
                    medium_values.insert(value.into_boxed_str(), index);
                }
            }
        }
    }

    let user_agents = ua.build().map_err(|e| RuleError::Matcher(e.to_string()))?;
    Ok(CompiledRules {
        sources,
        hosts,
        apps,
        source_names,
        preview_bots,
        bots,
        user_agents,
        click_ids,
        click_id_params,
        mediums,
        medium_values,
    })
}

/// Compiles the configuration: the user layer over the built-in database.
pub(crate) fn compile_config(config: &ClassificationConfig) -> Result<CompiledRules, RuleError> {
    let mut layers = vec![config.user_layer()];
    if config.builtin {
        layers.push(RuleSet::builtin()?);
    }
    compile(&layers)
}
