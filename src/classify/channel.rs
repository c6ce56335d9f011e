//! The marketing channel a visit is attributed to, and small helpers to name it.
//!
//! Channels follow the usual analytics vocabulary, plus the three darklight adds:
//! `dark_social` (a private share that arrives without a referrer), `preview_bot`
//! (a link-unfurling fetch by a chat or social app) and `bot`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Where a visit came from, at the granularity analytics reports use.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// Typed, bookmarked, or otherwise unattributable arrival on a shallow page.
    Direct,
    /// A deep link opened without a referrer: most likely shared privately (chat, email, SMS).
    DarkSocial,
    /// An unpaid search-engine result.
    OrganicSearch,
    /// A search ad (click id or paid campaign medium).
    PaidSearch,
    /// An unpaid post on a social network.
    OrganicSocial,
    /// A social-network ad.
    PaidSocial,
    /// A link in an email (webmail referrer, mail app, or email campaign).
    Email,
    /// A link opened from a web messenger that left its referrer (web.whatsapp.com, Slack…).
    Messaging,
    /// A link from a text message campaign.
    Sms,
    /// A link on another website.
    Referral,
    /// A navigation inside the site itself.
    Internal,
    /// A tagged campaign whose medium does not map to a more specific channel.
    Campaign,
    /// A link-preview (unfurl) fetch by a chat or social app, not a human visit.
    PreviewBot,
    /// A crawler, monitor or scripted client.
    Bot,
}

impl Channel {
    /// Every channel, in declaration order (for docs, tests and summaries).
    pub const ALL: [Channel; 14] = [
        Channel::Direct,
        Channel::DarkSocial,
        Channel::OrganicSearch,
        Channel::PaidSearch,
        Channel::OrganicSocial,
        Channel::PaidSocial,
        Channel::Email,
        Channel::Messaging,
        Channel::Sms,
        Channel::Referral,
        Channel::Internal,
        Channel::Campaign,
        Channel::PreviewBot,
        Channel::Bot,
    ];

    /// The snake_case name used in JSON, span attributes and configuration.
    pub const fn as_str(self) -> &'static str {
        match self {
            Channel::Direct => "direct",
            Channel::DarkSocial => "dark_social",
            Channel::OrganicSearch => "organic_search",
            Channel::PaidSearch => "paid_search",
            Channel::OrganicSocial => "organic_social",
            Channel::PaidSocial => "paid_social",
            Channel::Email => "email",
            Channel::Messaging => "messaging",
            Channel::Sms => "sms",
            Channel::Referral => "referral",
            Channel::Internal => "internal",
            Channel::Campaign => "campaign",
            Channel::PreviewBot => "preview_bot",
            Channel::Bot => "bot",
        }
    }

    /// The analytics "medium" conventionally reported with this channel, when there is one.
    pub(crate) const fn default_medium(self) -> Option<&'static str> {
        match self {
            Channel::OrganicSearch => Some("organic"),
            Channel::PaidSearch => Some("cpc"),
            Channel::OrganicSocial => Some("social"),
            Channel::PaidSocial => Some("paid_social"),
            Channel::Email => Some("email"),
            Channel::Messaging => Some("messaging"),
            Channel::Sms => Some("sms"),
            Channel::Referral => Some("referral"),
            Channel::DarkSocial
            | Channel::Direct
            | Channel::Internal
            | Channel::Campaign
            | Channel::PreviewBot
            | Channel::Bot => None,
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
