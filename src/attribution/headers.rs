//! The request headers the upstream application receives, and their sanitising.
//!
//! Names are built once from the configured prefix. Values never carry CR/LF or non-ASCII:
//! anything outside visible ASCII is percent-encoded, and every value is bounded in length, so a
//! hostile `utm_campaign` can neither split headers nor bloat them.

use std::fmt::Write as _;

use http::{HeaderName, HeaderValue};
use serde::Deserialize;

use crate::classify::{Channel, Classification};
use crate::lookup_map::LookupMap;

use super::touch::Touch;

/// Longest header value darklight sends, in bytes.
pub const VALUE_LIMIT: usize = 256;

/// A piece of the classification that can be sent upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeaderField {
    /// `<prefix>Channel`
    Channel,
    /// `<prefix>Source`
    Source,
    /// `<prefix>Medium`
    Medium,
    /// `<prefix>In-App`
    InApp,
    /// `<prefix>Campaign`, `-Campaign-Source`, `-Campaign-Medium`, `-Campaign-Term`,
    /// `-Campaign-Content`, `-Campaign-Id`, `-Click-Id`
    Campaign,
    /// `<prefix>Confidence`
    Confidence,
    /// `<prefix>Bot` (`crawler` or `preview:<platform>`)
    Bot,
    /// `<prefix>Reasons`
    Reasons,
    /// `<prefix>First-Channel`, `-First-Source`, `-First-Medium`, `-First-Campaign`, `-First-Seen`
    FirstTouch,
}

impl HeaderField {
    /// Every field, the default set.
    pub const ALL: [HeaderField; 9] = [
        HeaderField::Channel,
        HeaderField::Source,
        HeaderField::Medium,
        HeaderField::InApp,
        HeaderField::Campaign,
        HeaderField::Confidence,
        HeaderField::Bot,
        HeaderField::Reasons,
        HeaderField::FirstTouch,
    ];
}

/// Suffixes appended to the prefix, per field.
const SUFFIXES: [(HeaderField, &[&str]); 9] = [
    (HeaderField::Channel, &["channel"]),
    (HeaderField::Source, &["source"]),
    (HeaderField::Medium, &["medium"]),
    (HeaderField::InApp, &["in-app"]),
    (
        HeaderField::Campaign,
        &[
            "campaign",
            "campaign-source",
            "campaign-medium",
            "campaign-term",
            "campaign-content",
            "campaign-id",
            "click-id",
        ],
    ),
    (HeaderField::Confidence, &["confidence"]),
    (HeaderField::Bot, &["bot"]),
    (HeaderField::Reasons, &["reasons"]),
    (
        HeaderField::FirstTouch,
        &[
            "first-channel",
            "first-source",
            "first-medium",
            "first-campaign",
            "first-seen",
        ],
    ),
];

/// Header names compiled from the configuration, in a fixed slot order.
#[derive(Debug, Clone)]
pub struct HeaderNames {
    /// Lower-case prefix, for stripping client-sent copies.
    prefix: String,
    /// Slots indexed like the flattened [`SUFFIXES`]; `None` when the field is trimmed.
    slots: Vec<Option<HeaderName>>,
    /// The single structured header, when enabled.
    compact: Option<HeaderName>,
    /// Values made once for the texts most requests carry.
    known: KnownValues,
}

/// Header values made once for the finite texts a classification carries (channels, rule
/// names, confidences, bot kinds). A request shares them: a value made per request costs a new
/// buffer, and a second allocation when Pingora clones the request for the upstream (the
/// clone turns the buffer into a shared one).
#[derive(Debug, Clone, Default)]
struct KnownValues {
    /// By their text.
    values: LookupMap<Box<str>, HeaderValue>,
    /// `preview:<name>` for every rule name (the preview platforms among them), by name.
    previews: LookupMap<Box<str>, HeaderValue>,
}

impl KnownValues {
    fn new<'a>(rule_names: impl IntoIterator<Item = &'a str>) -> KnownValues {
        let mut known = KnownValues::default();
        let mut learn = |text: &str| {
            known.values.insert(text.into(), header_value(text));
        };
        for channel in Channel::ALL {
            learn(channel.as_str());
        }
        learn(CRAWLER);
        for hundredths in 0..=100u8 {
            learn(two_decimals(f32::from(hundredths) / 100.0, &mut [0; 4]));
        }
        for name in rule_names {
            learn(name);
            known
                .previews
                .insert(name.into(), header_value(&preview_text(name)));
        }
        known
    }

    /// The value for `text`: shared when known, else made safe and new.
    fn value(&self, text: &str) -> HeaderValue {
        match self.values.get(text) {
            Some(value) => value.clone(),
            None => header_value(text),
        }
    }

    /// The bot value of a preview fetcher of `platform`.
    fn preview(&self, platform: &str) -> HeaderValue {
        match self.previews.get(platform) {
            Some(value) => value.clone(),
            None => header_value(&preview_text(platform)),
        }
    }
}

/// The bot value of a crawler.
const CRAWLER: &str = "crawler";

fn preview_text(platform: &str) -> String {
    format!("preview:{platform}")
}

/// Slot indices into [`HeaderNames::slots`], matching the flattened [`SUFFIXES`].
mod slot {
    pub const CHANNEL: usize = 0;
    pub const SOURCE: usize = 1;
    pub const MEDIUM: usize = 2;
    pub const IN_APP: usize = 3;
    pub const CAMPAIGN: usize = 4;
    pub const CAMPAIGN_SOURCE: usize = 5;
    pub const CAMPAIGN_MEDIUM: usize = 6;
    pub const CAMPAIGN_TERM: usize = 7;
    pub const CAMPAIGN_CONTENT: usize = 8;
    pub const CAMPAIGN_ID: usize = 9;
    pub const CLICK_ID: usize = 10;
    pub const CONFIDENCE: usize = 11;
    pub const BOT: usize = 12;
    pub const REASONS: usize = 13;
    pub const FIRST_CHANNEL: usize = 14;
    pub const FIRST_SOURCE: usize = 15;
    pub const FIRST_MEDIUM: usize = 16;
    pub const FIRST_CAMPAIGN: usize = 17;
    pub const FIRST_SEEN: usize = 18;
}

impl HeaderNames {
    /// Builds the names; `prefix` and `compact` were validated as header names already.
    pub fn new(
        prefix: &str,
        fields: &[HeaderField],
        compact: Option<&str>,
    ) -> Result<Self, String> {
        let prefix = prefix.to_ascii_lowercase();
        let mut slots = Vec::new();
        for (field, suffixes) in SUFFIXES {
            for suffix in suffixes {
                let name = if fields.contains(&field) {
                    let text = format!("{prefix}{suffix}");
                    Some(
                        HeaderName::from_bytes(text.as_bytes())
                            .map_err(|_| format!("`{text}` is not a valid header name"))?,
                    )
                } else {
                    None
                };
                slots.push(name);
            }
        }
        let compact = compact
            .map(|c| {
                HeaderName::from_bytes(c.to_ascii_lowercase().as_bytes())
                    .map_err(|_| format!("`{c}` is not a valid header name"))
            })
            .transpose()?;
        Ok(HeaderNames {
            prefix,
            slots,
            compact,
            known: KnownValues::default(),
        })
    }

    /// Prepares the values of the rules' names (see `KnownValues`); values outside them are
    /// still sent, made per request.
    pub fn learn_values<'a>(&mut self, rule_names: impl IntoIterator<Item = &'a str>) {
        self.known = KnownValues::new(rule_names);
    }

    /// True for a client-sent header darklight owns and must drop: anything under the
    /// prefix, and the compact header.
    pub fn is_reserved(&self, name: &str) -> bool {
        let starts = name.len() >= self.prefix.len()
            && name.as_bytes()[..self.prefix.len()].eq_ignore_ascii_case(self.prefix.as_bytes());
        starts
            || self
                .compact
                .as_ref()
                .is_some_and(|c| c.as_str().eq_ignore_ascii_case(name))
    }

    /// Every configured name, the compact header's included.
    pub fn all(&self) -> impl Iterator<Item = &HeaderName> {
        self.slots.iter().flatten().chain(self.compact.as_ref())
    }

    /// The headers to add for this classification and stored first touch, in a stable order.
    pub fn build(
        &self,
        classification: &Classification,
        first_touch: Option<&Touch>,
    ) -> Vec<(HeaderName, HeaderValue)> {
        let mut out = Vec::with_capacity(12);
        let known = &self.known;
        // `make` runs only for a configured field with a non-empty value.
        let mut add =
            |slot: usize, value: Option<&str>, make: fn(&KnownValues, &str) -> HeaderValue| {
                if let (Some(Some(name)), Some(value)) = (self.slots.get(slot), value)
                    && !value.is_empty()
                {
                    out.push((name.clone(), make(known, value)));
                }
            };
        let shared = KnownValues::value;
        let fresh = |_: &KnownValues, value: &str| header_value(value);
        let c = classification;
        add(slot::CHANNEL, Some(c.channel.as_str()), shared);
        add(slot::SOURCE, c.source.as_deref(), shared);
        add(slot::MEDIUM, c.medium.as_deref(), shared);
        add(slot::IN_APP, c.in_app.as_deref(), shared);
        add(slot::CAMPAIGN, c.campaign.name.as_deref(), fresh);
        add(slot::CAMPAIGN_SOURCE, c.campaign.source.as_deref(), shared);
        add(slot::CAMPAIGN_MEDIUM, c.campaign.medium.as_deref(), shared);
        add(slot::CAMPAIGN_TERM, c.campaign.term.as_deref(), fresh);
        add(slot::CAMPAIGN_CONTENT, c.campaign.content.as_deref(), fresh);
        add(slot::CAMPAIGN_ID, c.campaign.id.as_deref(), fresh);
        add(
            slot::CLICK_ID,
            c.campaign.click_id.as_ref().map(|id| id.param.as_str()),
            shared,
        );
        add(
            slot::CONFIDENCE,
            Some(two_decimals(c.confidence, &mut [0; 4])),
            shared,
        );
        match (&c.preview_bot, c.is_bot) {
            (Some(platform), _) => add(slot::BOT, Some(platform), KnownValues::preview),
            (None, true) => add(slot::BOT, Some(CRAWLER), shared),
            (None, false) => {}
        }
        // The reasons text is allocated before `add` checks its slot: skip it when trimmed.
        if let Some(Some(_)) = self.slots.get(slot::REASONS) {
            add(slot::REASONS, Some(&reasons_text(c)), fresh);
        }
        if let Some(first) = first_touch {
            add(slot::FIRST_CHANNEL, Some(first.channel.as_str()), shared);
            add(slot::FIRST_SOURCE, first.source.as_deref(), shared);
            add(slot::FIRST_MEDIUM, first.medium.as_deref(), shared);
            add(slot::FIRST_CAMPAIGN, first.campaign.as_deref(), fresh);
            add(
                slot::FIRST_SEEN,
                Some(itoa::Buffer::new().format(first.timestamp)),
                fresh,
            );
        }
        if let Some(compact) = &self.compact {
            out.push((compact.clone(), compact_value(c, first_touch)));
        }
        out
    }
}

fn reasons_text(classification: &Classification) -> String {
    let reasons = &classification.reasons;
    let mut text = String::with_capacity(reasons.text_len());
    reasons.push_text(&mut text);
    text
}

/// The single-header form, an RFC 8941 dictionary:
/// `channel=dark_social, source="whatsapp", confidence=0.80`.
fn compact_value(c: &Classification, first: Option<&Touch>) -> HeaderValue {
    let mut text = String::with_capacity(128);
    let _ = write!(text, "channel={}", c.channel.as_str());
    let mut string_member = |key: &str, value: Option<&str>| {
        if let Some(value) = value.filter(|v| !v.is_empty()) {
            let _ = write!(text, ", {key}=");
            push_sf_string(&mut text, value);
        }
    };
    string_member("source", c.source.as_deref());
    string_member("medium", c.medium.as_deref());
    string_member("in_app", c.in_app.as_deref());
    string_member("campaign", c.campaign.name.as_deref());
    string_member(
        "click_id",
        c.campaign.click_id.as_ref().map(|id| id.param.as_str()),
    );
    string_member("preview_bot", c.preview_bot.as_deref());
    if let Some(first) = first {
        string_member("first_channel", Some(first.channel.as_str()));
        string_member("first_source", first.source.as_deref());
    }
    text.push_str(", confidence=");
    text.push_str(two_decimals(c.confidence, &mut [0; 4]));
    if c.is_bot {
        text.push_str(", bot");
    }
    header_value(&text)
}

/// Appends an RFC 8941 sf-string: quoted, with `"` and `\` escaped, printable ASCII only.
fn push_sf_string(out: &mut String, value: &str) {
    out.push('"');
    for c in bounded(value).chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            _ => out.push('?'),
        }
    }
    out.push('"');
}

fn bounded(value: &str) -> &str {
    let mut end = value.len().min(VALUE_LIMIT / 2);
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    &value[..end]
}

/// A safe header value: visible ASCII and spaces kept, everything else percent-encoded,
/// bounded to [`VALUE_LIMIT`] bytes.
pub fn header_value(value: &str) -> HeaderValue {
    // The usual case: already safe, short and trimmed, so one copy and no second pass.
    if value.len() <= VALUE_LIMIT
        && value
            .bytes()
            .all(|b| (0x20..0x7f).contains(&b) && b != b'%')
        && value.trim() == value
        && let Ok(header) = HeaderValue::from_str(value)
    {
        return header;
    }
    let mut text = String::with_capacity(value.len().min(VALUE_LIMIT));
    for byte in value.bytes() {
        let piece_len = if (0x20..0x7f).contains(&byte) && byte != b'%' {
            1
        } else {
            3
        };
        if text.len() + piece_len > VALUE_LIMIT {
            break;
        }
        if piece_len == 1 {
            text.push(byte as char);
        } else {
            let _ = write!(text, "%{byte:02X}");
        }
    }
    let trimmed = text.trim();
    if trimmed.len() != text.len() {
        text = trimmed.to_string();
    }
    // `text` is visible ASCII only, so the conversion (which takes the buffer rather than
    // copying it) cannot fail.
    HeaderValue::try_from(text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A confidence in `0..=1` as two decimals (`0.80`), written into `buf`: the text of
/// `format!("{:.2}")` without its allocation.
fn two_decimals(confidence: f32, buf: &mut [u8; 4]) -> &str {
    // A float-to-int `as` cast saturates (NaN becomes 0); the clamp bounds the rest.
    let hundredths = ((confidence.clamp(0.0, 1.0) * 100.0).round() as u8).min(100);
    buf[0] = b'0' + hundredths / 100;
    buf[1] = b'.';
    buf[2] = b'0' + (hundredths / 10) % 10;
    buf[3] = b'0' + hundredths % 10;
    std::str::from_utf8(buf).unwrap_or("0.00")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_safe_and_bounded() {
        assert_eq!(header_value("plain value"), "plain value");
        assert_eq!(header_value("a\r\nX-Evil: 1"), "a%0D%0AX-Evil: 1");
        assert_eq!(header_value("été 100%"), "%C3%A9t%C3%A9 100%25");
        let long = header_value(&"é".repeat(1000));
        assert!(long.len() <= VALUE_LIMIT);
        assert!(long.to_str().is_ok());
    }

    #[test]
    fn reserved_names_cover_the_prefix_and_compact_header() {
        let names = HeaderNames::new("X-Darklight-", &HeaderField::ALL, Some("X-Darklight"))
            .unwrap_or_else(|e| panic!("{e}"));
        for name in ["x-darklight-channel", "X-DARKLIGHT-ANYTHING", "x-darklight"] {
            assert!(names.is_reserved(name), "{name}");
        }
        for name in ["x-darklightx", "x-dark", "referer"] {
            assert!(!names.is_reserved(name), "{name}");
        }
    }

    #[test]
    fn confidence_formats_like_the_standard_library() {
        for (confidence, text) in [
            (0.0, "0.00"),
            (0.8, "0.80"),
            (0.123, "0.12"),
            (0.995, "1.00"),
            (1.0, "1.00"),
            (7.5, "1.00"),
            (-1.0, "0.00"),
            (f32::NAN, "0.00"),
        ] {
            assert_eq!(two_decimals(confidence, &mut [0; 4]), text, "{confidence}");
        }
        for confidence in (0..=100).map(|i| i as f32 / 100.0) {
            assert_eq!(
                two_decimals(confidence, &mut [0; 4]),
                format!("{confidence:.2}")
            );
        }
    }

    #[test]
    fn sf_strings_escape_quotes() {
        let mut out = String::new();
        push_sf_string(&mut out, "a\"b\\c\u{7f}é");
        assert_eq!(out, "\"a\\\"b\\\\c??\"");
    }
}
