//! Offline classification of request logs, behind `darklight classify`.
//!
//! Input is read line by line; each line is detected on its own as either
//!
//! * a JSON object: `{"url": "https://example.com/a?utm_source=x", "referer": "...",
//!   "user_agent": "...", "method": "GET", "headers": {"Sec-Fetch-Site": "none"}}` —
//!   `url` is required (absolute, or a path starting with `/`), everything else is
//!   optional, header names are case-insensitive, other keys are ignored; or
//! * an nginx/Apache "combined" (or "common") access-log line:
//!   `1.2.3.4 - - [10/Oct/2024:13:55:36 +0000] "GET /a HTTP/1.1" 200 123 "referer" "user agent"`.
//!
//! Blank lines and lines starting with `#` are skipped. Each classified line is written
//! as one JSON object: `line`, `url`, then the [`Classification`] fields. A bad line is
//! reported as `line N: why` on the error writer and skipped; only failing to read the
//! input or to write the output stops the run.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, BufRead, Write};

use serde::Serialize;
use serde_json::Value;

use crate::classify::{
    Channel, Classification, Classifier, RequestFacts, SiteProfile, normalize_host,
};

/// How `classify_stream` behaves.
#[derive(Clone, Debug)]
pub struct OfflineOptions {
    /// Only count (for [`OfflineReport::write_summary`]); write no per-line JSON.
    pub summary: bool,
    /// Host assumed for lines that name none (access logs usually do not).
    pub default_host: String,
    /// Bad lines kept in the report (all are written to the error writer).
    pub max_kept_errors: usize,
}

impl Default for OfflineOptions {
    fn default() -> Self {
        OfflineOptions {
            summary: false,
            default_host: String::new(),
            max_kept_errors: 1000,
        }
    }
}

/// Why a run stopped.
#[non_exhaustive]
#[derive(thiserror::Error, Debug)]
pub enum OfflineError {
    /// The input could not be read.
    #[error("reading the input failed: {0}")]
    Read(#[source] io::Error),
    /// The output (or the error writer) could not be written.
    #[error("writing the output failed: {0}")]
    Write(#[source] io::Error),
}

/// A line that could not be classified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadLine {
    /// 1-based line number.
    pub line: u64,
    /// What is wrong with it.
    pub message: String,
}

/// Counts of one run.
#[derive(Clone, Debug, Default)]
pub struct OfflineReport {
    /// Lines classified.
    pub classified: u64,
    /// Blank and comment lines.
    pub skipped: u64,
    /// Lines that could not be classified.
    pub bad: u64,
    /// The first bad lines (up to `max_kept_errors`).
    pub bad_lines: Vec<BadLine>,
    visits: BTreeMap<(Channel, String), u64>,
}

impl OfflineReport {
    /// Visits counted for a channel and source (`None`: no source).
    pub fn visits(&self, channel: Channel, source: Option<&str>) -> u64 {
        self.visits
            .get(&(channel, source.unwrap_or("-").to_owned()))
            .copied()
            .unwrap_or(0)
    }

    /// Writes the visits per channel and source as aligned text columns, most visits
    /// first (ties by channel, then source), then the totals.
    pub fn write_summary<W: Write + ?Sized>(&self, out: &mut W) -> io::Result<()> {
        let mut rows: Vec<(&str, &str, u64)> = self
            .visits
            .iter()
            .map(|((channel, source), count)| (channel.as_str(), source.as_str(), *count))
            .collect();
        rows.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(b.0)).then(a.1.cmp(b.1)));
        let total = self.classified.to_string();
        let channel_width = rows
            .iter()
            .map(|r| r.0.len())
            .chain([7, 5])
            .max()
            .unwrap_or(7);
        let source_width = rows.iter().map(|r| r.1.len()).chain([6]).max().unwrap_or(6);
        let count_width = rows
            .iter()
            .map(|r| r.2.to_string().len())
            .chain([6, total.len()])
            .max()
            .unwrap_or(6);
        writeln!(
            out,
            "{:<channel_width$}  {:<source_width$}  {:>count_width$}",
            "channel", "source", "visits"
        )?;
        for (channel, source, count) in &rows {
            writeln!(
                out,
                "{channel:<channel_width$}  {source:<source_width$}  {count:>count_width$}"
            )?;
        }
        writeln!(
            out,
            "{:<channel_width$}  {:<source_width$}  {total:>count_width$}",
            "total", ""
        )?;
        if self.bad > 0 {
            writeln!(out, "{} bad line(s) skipped", self.bad)?;
        }
        Ok(())
    }
}

/// One request read from a line, owning its text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OwnedRequest {
    /// The URL or path as given.
    pub url: String,
    /// Request method.
    pub method: String,
    /// Host, lowercase (empty when unknown).
    pub host: String,
    /// Path.
    pub path: String,
    /// Query string without `?`.
    pub query: Option<String>,
    /// `Referer`.
    pub referer: Option<String>,
    /// `User-Agent`.
    pub user_agent: Option<String>,
    /// Other headers, names lowercased.
    pub headers: HashMap<String, String>,
}

impl OwnedRequest {
    /// Borrows the request as classifier facts.
    pub fn facts(&self) -> RequestFacts<'_> {
        let header = |name: &str| {
            self.headers
                .get(name)
                .map(String::as_str)
                .filter(|v| !v.is_empty())
        };
        RequestFacts {
            method: &self.method,
            host: std::borrow::Cow::Borrowed(&self.host),
            path: &self.path,
            query: self.query.as_deref(),
            referer: self.referer.as_deref().or_else(|| header("referer")),
            user_agent: self.user_agent.as_deref().or_else(|| header("user-agent")),
            x_requested_with: header("x-requested-with"),
            sec_ch_ua: header("sec-ch-ua"),
            sec_ch_ua_mobile: header("sec-ch-ua-mobile"),
            sec_ch_ua_platform: header("sec-ch-ua-platform"),
            sec_fetch_site: header("sec-fetch-site"),
            sec_fetch_mode: header("sec-fetch-mode"),
            sec_fetch_dest: header("sec-fetch-dest"),
            sec_purpose: header("sec-purpose"),
            purpose: header("purpose").or_else(|| header("x-moz")),
            attribution_cookie: None,
        }
    }
}

/// One output line.
#[derive(Serialize)]
struct OutputRecord<'a> {
    line: u64,
    url: &'a str,
    #[serde(flatten)]
    classification: &'a Classification,
}

/// Classifies every line of `input`, writing one JSON object per line to `output` and
/// `line N: why` for each bad line to `errors`.
pub fn classify_stream<R: BufRead, W: Write, E: Write>(
    mut input: R,
    mut output: W,
    mut errors: E,
    classifier: &Classifier,
    site: &SiteProfile,
    options: &OfflineOptions,
) -> Result<OfflineReport, OfflineError> {
    let mut report = OfflineReport::default();
    let mut buffer = Vec::new();
    let mut line_number = 0u64;
    loop {
        buffer.clear();
        let read = input
            .read_until(b'\n', &mut buffer)
            .map_err(OfflineError::Read)?;
        if read == 0 {
            break;
        }
        line_number += 1;
        let text = String::from_utf8_lossy(&buffer);
        let text = text.trim();
        if text.is_empty() || text.starts_with('#') {
            report.skipped += 1;
            continue;
        }
        let request = match parse_line(text, &options.default_host) {
            Ok(request) => request,
            Err(message) => {
                writeln!(errors, "line {line_number}: {message}").map_err(OfflineError::Write)?;
                report.bad += 1;
                if report.bad_lines.len() < options.max_kept_errors {
                    report.bad_lines.push(BadLine {
                        line: line_number,
                        message,
                    });
                }
                continue;
            }
        };
        let classification = classifier.classify(&request.facts(), site);
        report.classified += 1;
        let source = classification.source.as_deref().unwrap_or("-").to_owned();
        *report
            .visits
            .entry((classification.channel, source))
            .or_insert(0) += 1;
        if !options.summary {
            let record = OutputRecord {
                line: line_number,
                url: &request.url,
                classification: &classification,
            };
            serde_json::to_writer(&mut output, &record)
                .map_err(|e| OfflineError::Write(io::Error::other(e)))?;
            output.write_all(b"\n").map_err(OfflineError::Write)?;
        }
    }
    output.flush().map_err(OfflineError::Write)?;
    Ok(report)
}

/// Parses one input line (JSON object or combined/common log line).
pub fn parse_line(line: &str, default_host: &str) -> Result<OwnedRequest, String> {
    if line.starts_with('{') {
        parse_json_line(line, default_host)
    } else {
        parse_log_line(line, default_host)
            .ok_or_else(|| "not a JSON object or combined log line".to_owned())?
    }
}

fn parse_json_line(line: &str, default_host: &str) -> Result<OwnedRequest, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("invalid JSON: {e}"))?;
    let Value::Object(object) = value else {
        return Err("not a JSON object or combined log line".to_owned());
    };
    let text = |key: &str| -> Result<Option<String>, String> {
        match object.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(format!("`{key}` must be a string")),
        }
    };
    let url = text("url")?.ok_or_else(|| "JSON line has no `url` string".to_owned())?;
    let mut headers = HashMap::new();
    match object.get("headers") {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for (name, value) in map {
                let Value::String(value) = value else {
                    return Err(format!("header `{name}` must be a string"));
                };
                headers.insert(name.to_ascii_lowercase(), value.clone());
            }
        }
        Some(_) => return Err("`headers` must be an object".to_owned()),
    }
    let referer = text("referer")?.or(text("referrer")?);
    let user_agent = text("user_agent")?;
    let method = text("method")?.unwrap_or_else(|| "GET".to_owned());
    let explicit_host = text("host")?.or_else(|| headers.get("host").cloned());
    build_request(
        url,
        method,
        explicit_host,
        referer,
        user_agent,
        headers,
        default_host,
    )
}

fn build_request(
    url: String,
    method: String,
    explicit_host: Option<String>,
    referer: Option<String>,
    user_agent: Option<String>,
    headers: HashMap<String, String>,
    default_host: &str,
) -> Result<OwnedRequest, String> {
    let (authority, rest) = if let Some((_, after)) = url.split_once("://").filter(|(scheme, _)| {
        scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")
    }) {
        let end = after.find(['/', '?', '#']).unwrap_or(after.len());
        (
            after.get(..end).unwrap_or(""),
            after.get(end..).unwrap_or(""),
        )
    } else if url.starts_with('/') {
        ("", url.as_str())
    } else {
        return Err(format!(
            "url `{}` is neither absolute (http/https) nor a path",
            shorten(&url)
        ));
    };
    let rest = rest.split_once('#').map_or(rest, |(r, _)| r);
    let (path, query) = match rest.split_once('?') {
        Some((path, query)) => (path, Some(query.to_owned())),
        None => (rest, None),
    };
    let path = if path.is_empty() { "/" } else { path }.to_owned();
    let host = explicit_host
        .as_deref()
        .filter(|h| !h.is_empty())
        .or(Some(authority).filter(|a| !a.is_empty()))
        .unwrap_or(default_host);
    let host = normalize_host(host).into_owned();
    Ok(OwnedRequest {
        method,
        host,
        path,
        query,
        referer: referer.filter(|r| !r.is_empty() && r != "-"),
        user_agent: user_agent.filter(|u| !u.is_empty() && u != "-"),
        headers,
        url,
    })
}

fn shorten(text: &str) -> String {
    match text.char_indices().nth(60) {
        Some((end, _)) => format!("{}…", text.get(..end).unwrap_or("")),
        None => text.to_owned(),
    }
}

/// Parses `ip ident user [time] "request" status bytes ["referer" "user agent" ...]`.
/// `None` when the line does not have that shape; `Some(Err)` when it does but cannot
/// be classified (e.g. request `-`).
fn parse_log_line(line: &str, default_host: &str) -> Option<Result<OwnedRequest, String>> {
    let mut rest = line;
    for _ in 0..3 {
        let (field, after) = rest.split_once(' ')?;
        if field.is_empty() {
            return None;
        }
        rest = after;
    }
    let rest = rest.strip_prefix('[')?;
    let (_time, rest) = rest.split_once("] ")?;
    let (request, rest) = quoted(rest)?;
    let rest = rest.trim_start();
    let (status, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    if status.len() != 3 || !status.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let rest = rest.trim_start();
    let (_bytes, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    let rest = rest.trim_start();
    let (referer, user_agent) = if rest.is_empty() {
        (None, None)
    } else {
        let (referer, rest) = quoted(rest)?;
        let (user_agent, _) = quoted(rest.trim_start())?;
        (Some(referer), Some(user_agent))
    };
    let mut parts = request.split(' ');
    let method = parts.next().unwrap_or("").to_owned();
    let Some(target) = parts.next().filter(|t| !t.is_empty()) else {
        return Some(Err(format!(
            "request line `{}` has no target",
            shorten(&request)
        )));
    };
    Some(build_request(
        target.to_owned(),
        method,
        None,
        referer,
        user_agent,
        HashMap::new(),
        default_host,
    ))
}

/// Reads a `"…"` field with `\"`, `\\` and `\xHH` escapes; returns it and the rest.
fn quoted(text: &str) -> Option<(String, &str)> {
    let body = text.strip_prefix('"')?;
    let mut out = Vec::with_capacity(body.len().min(512));
    let bytes = body.as_bytes();
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'"' => {
                let rest = body.get(i + 1..)?;
                return Some((String::from_utf8_lossy(&out).into_owned(), rest));
            }
            b'\\' => match bytes.get(i + 1) {
                Some(b'x') => {
                    let hex = body.get(i + 2..i + 4)?;
                    out.push(u8::from_str_radix(hex, 16).ok()?);
                    i += 4;
                }
                Some(&escaped) => {
                    out.push(escaped);
                    i += 2;
                }
                None => return None,
            },
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn combined_log_line() {
        let r = parse_line(
            r#"203.0.113.9 - - [10/Oct/2024:13:55:36 +0000] "GET /a/b?utm_source=x HTTP/1.1" 200 512 "https://www.google.com/" "Mozilla/5.0 \"quoted\" \x22x\x22""#,
            "example.com",
        )
        .unwrap();
        assert_eq!(r.method, "GET");
        assert_eq!(r.path, "/a/b");
        assert_eq!(r.query.as_deref(), Some("utm_source=x"));
        assert_eq!(r.host, "example.com");
        assert_eq!(r.referer.as_deref(), Some("https://www.google.com/"));
        assert_eq!(
            r.user_agent.as_deref(),
            Some("Mozilla/5.0 \"quoted\" \"x\"")
        );
    }

    #[test]
    fn common_log_line_and_dash_referer() {
        let r = parse_line(
            r#"::1 - bob [10/Oct/2024:13:55:36 +0000] "HEAD / HTTP/1.0" 304 -"#,
            "",
        )
        .unwrap();
        assert_eq!(r.method, "HEAD");
        assert_eq!(r.referer, None);
        let r = parse_line(r#"1.2.3.4 - - [t] "GET /x HTTP/1.1" 200 1 "-" "-""#, "").unwrap();
        assert_eq!(r.referer, None);
        assert_eq!(r.user_agent, None);
    }

    #[test]
    fn json_line() {
        let r = parse_line(
            r#"{"url":"https://Shop.Example/p?q=1#frag","headers":{"Sec-Fetch-Site":"none","Referer":"https://t.co/"}}"#,
            "",
        )
        .unwrap();
        assert_eq!(r.host, "shop.example");
        assert_eq!(r.path, "/p");
        assert_eq!(r.query.as_deref(), Some("q=1"));
        let facts = r.facts();
        assert_eq!(facts.sec_fetch_site, Some("none"));
        assert_eq!(facts.referer, Some("https://t.co/"));
    }

    #[test]
    fn bad_lines() {
        assert_eq!(
            parse_line("hello world", "").unwrap_err(),
            "not a JSON object or combined log line"
        );
        assert!(
            parse_line("{\"url\": 3}", "")
                .unwrap_err()
                .contains("must be a string")
        );
        assert!(
            parse_line("{nope", "")
                .unwrap_err()
                .starts_with("invalid JSON")
        );
        assert!(parse_line("{\"url\":\"example.com/x\"}", "").is_err());
    }
}
