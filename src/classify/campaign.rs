//! Campaign signals from the landing URL's query: `utm_*` parameters and ad-network
//! click ids.
//!
//! The query is scanned once, left to right, without decoding anything but the values
//! that are kept. Values are percent-decoded (`+` is a space), trimmed and cut to
//! [`MAX_CAMPAIGN_VALUE_LEN`] bytes; invalid UTF-8 is replaced. The first occurrence of a
//! parameter wins. Parameter names are matched case-insensitively.

use serde::Serialize;

use super::name::Name;
use super::text::{truncate_on_char_boundary, with_ascii_lowercase};
use crate::lookup_map::LookupMap;

/// Longest campaign value kept, in bytes (longer values are cut on a character boundary).
pub const MAX_CAMPAIGN_VALUE_LEN: usize = 200;

/// Raw values longer than this are ignored rather than decoded.
const MAX_RAW_VALUE_LEN: usize = 4096;

/// The `utm_*` values of the landing URL and the click id found in it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Campaign {
    /// `utm_source`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// `utm_medium`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub medium: Option<String>,
    /// `utm_campaign`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `utm_term`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub term: Option<String>,
    /// `utm_content`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// `utm_id`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The ad-network click id present, if any (its value is not kept).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub click_id: Option<ClickId>,
}

impl Campaign {
    /// True when at least one `utm_*` parameter was present.
    pub fn has_utm(&self) -> bool {
        self.source.is_some()
            || self.medium.is_some()
            || self.name.is_some()
            || self.term.is_some()
            || self.content.is_some()
            || self.id.is_some()
    }

    /// True when nothing was found.
    pub fn is_empty(&self) -> bool {
        !self.has_utm() && self.click_id.is_none()
    }
}

/// A click-id parameter and the network that adds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ClickId {
    /// The query parameter, e.g. `gclid`.
    pub param: Name,
    /// The network that adds it, e.g. `google`.
    pub network: Name,
}

/// What one pass over the query found.
#[derive(Debug, Default)]
pub(crate) struct QueryScan {
    /// The `utm_*` values (click id left empty).
    pub(crate) campaign: Campaign,
    /// Index (= priority) of the highest-priority click-id rule present.
    pub(crate) click_id_rule: Option<u32>,
}

/// Scans a raw query string. `click_ids` maps lowercase parameter names to rule indexes.
pub(crate) fn scan_query(query: &str, click_ids: &LookupMap<Box<str>, u32>) -> QueryScan {
    let mut scan = QueryScan::default();
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if value.is_empty() || key.is_empty() {
            continue;
        }
        if key.len() > 4 && key.as_bytes()[..4].eq_ignore_ascii_case(b"utm_") {
            let slot = match key.get(4..).unwrap_or("") {
                k if k.eq_ignore_ascii_case("source") => &mut scan.campaign.source,
                k if k.eq_ignore_ascii_case("medium") => &mut scan.campaign.medium,
                k if k.eq_ignore_ascii_case("campaign") => &mut scan.campaign.name,
                k if k.eq_ignore_ascii_case("term") => &mut scan.campaign.term,
                k if k.eq_ignore_ascii_case("content") => &mut scan.campaign.content,
                k if k.eq_ignore_ascii_case("id") => &mut scan.campaign.id,
                _ => continue,
            };
            if slot.is_none() {
                *slot = decode_value(value);
            }
            continue;
        }
        if let Some(&rule) = with_ascii_lowercase(key, |k| click_ids.get(k)) {
            if scan.click_id_rule.is_none_or(|current| rule < current) {
                scan.click_id_rule = Some(rule);
            }
        }
    }
    scan
}

/// Percent-decodes a query value (`+` is a space), trims it and bounds its length.
/// Empty results are `None`.
pub(crate) fn decode_value(raw: &str) -> Option<String> {
    if raw.len() > MAX_RAW_VALUE_LEN {
        return None;
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len().min(MAX_CAMPAIGN_VALUE_LEN + 4));
    let mut i = 0;
    while i < bytes.len() && out.len() < MAX_CAMPAIGN_VALUE_LEN + 4 {
        let b = bytes[i];
        match b {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                let hi = bytes.get(i + 1).and_then(|c| (*c as char).to_digit(16));
                let lo = bytes.get(i + 2).and_then(|c| (*c as char).to_digit(16));
                match (hi, lo) {
                    (Some(hi), Some(lo)) => {
                        out.push((hi * 16 + lo) as u8);
                        i += 3;
                    }
                    _ => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    let text = String::from_utf8_lossy(&out);
    let text = truncate_on_char_boundary(text.trim(), MAX_CAMPAIGN_VALUE_LEN).trim();
    if text.is_empty() {
        None
    } else {
        Some(text.to_owned())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ids() -> LookupMap<Box<str>, u32> {
        [("gclid", 0), ("fbclid", 5), ("sccid", 3)]
            .into_iter()
            .map(|(k, v)| (Box::from(k), v))
            .collect()
    }

    #[test]
    fn utm_values_are_decoded_and_first_wins() {
        let scan = scan_query(
            "utm_source=News%20Letter&UTM_Medium=e+mail&utm_source=other&utm_campaign=%E2%82%AC5&x=1",
            &ids(),
        );
        let c = scan.campaign;
        assert_eq!(c.source.as_deref(), Some("News Letter"));
        assert_eq!(c.medium.as_deref(), Some("e mail"));
        assert_eq!(c.name.as_deref(), Some("€5"));
        assert!(c.has_utm());
    }

    #[test]
    fn click_id_priority_and_case() {
        let scan = scan_query("fbclid=a&ScCid=b", &ids());
        assert_eq!(scan.click_id_rule, Some(3));
        assert_eq!(scan_query("gclid=&fbclid=x", &ids()).click_id_rule, Some(5));
    }

    #[test]
    fn values_are_bounded() {
        let long = "a".repeat(1000);
        assert_eq!(decode_value(&long).unwrap().len(), MAX_CAMPAIGN_VALUE_LEN);
        assert_eq!(decode_value("%zz%").unwrap(), "%zz%");
        assert_eq!(decode_value("%FF").unwrap(), "\u{FFFD}");
        assert_eq!(decode_value("+++"), None);
    }
}
