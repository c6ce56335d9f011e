//! A touch (channel, source, campaign, time) and its signed cookie encoding.
//!
//! Format: `1.<payload>.<tag>`, both parts base64url without padding. The payload is the fields
//! separated by `\x1f`; the tag is HMAC-SHA256 over the cookie name and the payload, truncated
//! to 128 bits. Binding the name means a first-touch value cannot be replayed as a last-touch.
//! Signing keys rotate: the first key signs, every key verifies.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::classify::{Channel, Classification, Name};

type HmacSha256 = Hmac<Sha256>;

/// Format version, first in every cookie value.
const VERSION: &str = "1";
/// Bytes of the HMAC tag kept.
const TAG_LEN: usize = 16;
/// Longest text kept for a source, medium or campaign, in bytes.
pub const FIELD_LIMIT: usize = 64;
/// Longest cookie value accepted for decoding; larger values are refused unread.
const VALUE_LIMIT: usize = 1024;
/// Field separator inside the payload (ASCII unit separator, never in sanitised fields).
const SEPARATOR: char = '\u{1f}';
/// Clock skew tolerated for timestamps slightly in the future.
const FUTURE_SKEW_SECS: u64 = 300;

/// One attributed visit, as kept in a cookie.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Touch {
    /// The visit's channel.
    pub channel: Channel,
    /// Its named source, if any.
    pub source: Option<Name>,
    /// Its medium, if any.
    pub medium: Option<Name>,
    /// The campaign name (`utm_campaign`), if any.
    pub campaign: Option<String>,
    /// When it happened, in seconds since the Unix epoch.
    pub timestamp: u64,
}

impl Touch {
    /// The touch a classification describes, at `now`.
    pub fn from_classification(classification: &Classification, now: u64) -> Touch {
        Touch {
            channel: classification.channel,
            source: classification.source.clone(),
            medium: classification.medium.clone(),
            campaign: classification.campaign.name.as_deref().map(bounded),
            timestamp: now,
        }
    }

    /// True when a cookie holding this touch is still honoured at `now`: not from the future
    /// (beyond a little clock skew) and not older than `max_age_secs`.
    pub fn is_current(&self, now: u64, max_age_secs: u64) -> bool {
        self.timestamp <= now.saturating_add(FUTURE_SKEW_SECS)
            && now.saturating_sub(self.timestamp) <= max_age_secs
    }
}

/// HMAC keys: the first signs, all verify (key rotation).
#[derive(Clone)]
pub struct SigningKeys {
    keys: Vec<HmacSha256>,
}

impl std::fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKeys({} keys)", self.keys.len())
    }
}

impl SigningKeys {
    /// Builds the key set; `current` signs, `previous` are still accepted.
    pub fn new(current: &[u8], previous: &[&[u8]]) -> SigningKeys {
        let keys = std::iter::once(current)
            .chain(previous.iter().copied())
            .filter_map(|k| HmacSha256::new_from_slice(k).ok())
            .collect();
        SigningKeys { keys }
    }

    /// Encodes and signs `touch` as the value of cookie `name`.
    pub fn encode(&self, name: &str, touch: &Touch) -> String {
        let mut out = String::with_capacity(160);
        self.encode_into(name, touch, &mut out);
        out
    }

    /// Like [`SigningKeys::encode`], appending to `out` (so a `Set-Cookie` line is built in one
    /// buffer).
    pub fn encode_into(&self, name: &str, touch: &Touch, out: &mut String) {
        let mut payload = String::with_capacity(96);
        payload.push_str(touch.channel.as_str());
        for field in [
            touch.source.as_deref(),
            touch.medium.as_deref(),
            touch.campaign.as_deref(),
        ] {
            payload.push(SEPARATOR);
            push_sanitized(&mut payload, field.unwrap_or(""));
        }
        payload.push(SEPARATOR);
        payload.push_str(itoa::Buffer::new().format(touch.timestamp));
        let tag = match self.keys.first() {
            Some(key) => tag(key, name, payload.as_bytes()),
            None => [0; TAG_LEN],
        };
        out.push_str(VERSION);
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(payload.as_bytes(), out);
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(tag, out);
    }

    /// Verifies and decodes cookie `name`'s `value`. `None` when it is malformed, forged,
    /// signed by an unknown key, from the future, or older than `max_age_secs`.
    pub fn decode(&self, name: &str, value: &str, now: u64, max_age_secs: u64) -> Option<Touch> {
        self.verify(name, value)
            .filter(|touch| touch.is_current(now, max_age_secs))
    }

    /// Verifies and decodes cookie `name`'s `value` whatever its age: `None` when it is
    /// malformed, forged or signed by an unknown key. The answer for a value never changes
    /// while the keys stay the same.
    pub fn verify(&self, name: &str, value: &str) -> Option<Touch> {
        if value.len() > VALUE_LIMIT {
            return None;
        }
        let mut parts = value.split('.');
        let (version, payload, signature) = (parts.next()?, parts.next()?, parts.next()?);
        if version != VERSION || parts.next().is_some() {
            return None;
        }
        let payload = URL_SAFE_NO_PAD.decode(payload).ok()?;
        let signature = URL_SAFE_NO_PAD.decode(signature).ok()?;
        if signature.len() != TAG_LEN {
            return None;
        }
        let verified = self.keys.iter().any(|key| {
            let mut mac = key.clone();
            mac.update(name.as_bytes());
            mac.update(&[0]);
            mac.update(&payload);
            mac.verify_truncated_left(&signature).is_ok()
        });
        if !verified {
            return None;
        }
        let payload = std::str::from_utf8(&payload).ok()?;
        let mut fields = payload.split(SEPARATOR);
        let channel = parse_channel(fields.next()?)?;
        let source = non_empty(fields.next()?).map(Name::from);
        let medium = non_empty(fields.next()?).map(Name::from);
        let campaign = non_empty(fields.next()?).map(str::to_string);
        let timestamp: u64 = fields.next()?.parse().ok()?;
        if fields.next().is_some() {
            return None;
        }
        Some(Touch {
            channel,
            source,
            medium,
            campaign,
            timestamp,
        })
    }
}

fn tag(key: &HmacSha256, name: &str, payload: &[u8]) -> [u8; TAG_LEN] {
    let mut mac = key.clone();
    mac.update(name.as_bytes());
    mac.update(&[0]);
    mac.update(payload);
    let full = mac.finalize().into_bytes();
    let mut tag = [0; TAG_LEN];
    tag.copy_from_slice(&full[..TAG_LEN]);
    tag
}

fn parse_channel(text: &str) -> Option<Channel> {
    Channel::ALL.iter().copied().find(|c| c.as_str() == text)
}

fn non_empty(text: &str) -> Option<&str> {
    (!text.is_empty()).then_some(text)
}

/// Appends the printable characters of `text` (the separator is a control character, so it
/// goes too), bounded to [`FIELD_LIMIT`] bytes on a character boundary.
fn push_sanitized(out: &mut String, text: &str) {
    let mut room = FIELD_LIMIT;
    for c in text.chars().filter(|c| !c.is_control()) {
        let len = c.len_utf8();
        if len > room {
            break;
        }
        room -= len;
        out.push(c);
    }
}

/// Truncates to [`FIELD_LIMIT`] bytes on a character boundary.
fn bounded(text: &str) -> String {
    let mut end = text.len().min(FIELD_LIMIT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_790_000_000;
    const DAY: u64 = 86_400;

    fn touch() -> Touch {
        Touch {
            channel: Channel::DarkSocial,
            source: Some(Name::from("whatsapp")),
            medium: None,
            campaign: Some("spring sale | 2026 — été".into()),
            timestamp: NOW,
        }
    }

    #[test]
    fn round_trip() {
        let keys = SigningKeys::new(b"0123456789abcdef0123456789abcdef", &[]);
        let value = keys.encode("dl_first", &touch());
        assert!(
            value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)),
            "{value}"
        );
        assert_eq!(
            keys.decode("dl_first", &value, NOW + DAY, 90 * DAY),
            Some(touch())
        );
    }

    #[test]
    fn refuses_tampering_other_names_expiry_and_garbage() {
        let keys = SigningKeys::new(b"0123456789abcdef0123456789abcdef", &[]);
        let value = keys.encode("dl_first", &touch());
        assert_eq!(
            keys.decode("dl_last", &value, NOW, 90 * DAY),
            None,
            "name is bound"
        );
        assert_eq!(
            keys.decode("dl_first", &value, NOW + 91 * DAY, 90 * DAY),
            None,
            "expired"
        );
        assert_eq!(
            keys.decode("dl_first", &value, NOW - DAY, 90 * DAY),
            None,
            "future"
        );
        let mut forged = value.clone().into_bytes();
        let middle = forged.len() / 2;
        forged[middle] = if forged[middle] == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(forged).unwrap_or_default();
        assert_eq!(
            keys.decode("dl_first", &forged, NOW, 90 * DAY),
            None,
            "tampered"
        );
        for garbage in [
            "",
            "1",
            "1..",
            "2.a.b",
            "1.a.b.c",
            "1.!!!.???",
            &"x".repeat(5000),
        ] {
            assert_eq!(
                keys.decode("dl_first", garbage, NOW, 90 * DAY),
                None,
                "{garbage}"
            );
        }
    }

    #[test]
    fn rotation_accepts_previous_key_and_signs_with_current() {
        let old = SigningKeys::new(b"old-key-old-key-old-key-old-key!", &[]);
        let rotated = SigningKeys::new(
            b"new-key-new-key-new-key-new-key!",
            &[b"old-key-old-key-old-key-old-key!"],
        );
        let by_old = old.encode("c", &touch());
        assert_eq!(rotated.decode("c", &by_old, NOW, DAY), Some(touch()));
        let by_new = rotated.encode("c", &touch());
        assert_eq!(old.decode("c", &by_new, NOW, DAY), None);
        let unrelated = SigningKeys::new(b"another-key-another-key-another!", &[]);
        assert_eq!(unrelated.decode("c", &by_old, NOW, DAY), None);
    }

    #[test]
    fn fields_are_bounded_and_cleaned() {
        let keys = SigningKeys::new(b"0123456789abcdef0123456789abcdef", &[]);
        let mut long = touch();
        long.campaign = Some(format!("{}\u{1f}\r\n", "é".repeat(100)));
        let decoded = keys
            .decode("c", &keys.encode("c", &long), NOW, DAY)
            .unwrap_or_else(|| panic!("should decode"));
        let campaign = decoded.campaign.unwrap_or_default();
        assert!(campaign.len() <= FIELD_LIMIT);
        assert!(!campaign.contains(['\u{1f}', '\r', '\n']));
    }
}
