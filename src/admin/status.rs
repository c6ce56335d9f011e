//! The status page: one self-contained HTML document (inline CSS and SVG drawn on the server,
//! no external resource) with the configuration in use, the share of traffic per channel over
//! the last hour, requests per minute, and the top dark social landing pages and sources.
//!
//! Everything taken from requests (paths, sources) is HTML-escaped: visitors choose them.

use std::fmt::Write as _;

use super::metrics::Metrics;
use super::traffic::{CHANNEL_SLOTS, MinuteCounts, TopEntry, slot_name};
use crate::config::Config;
use crate::proxy::plugin::Engine;

/// Rows of each top list.
const TOP_ROWS: usize = 10;
/// Chart size, in SVG user units.
const CHART_WIDTH: u64 = 720;
const CHART_HEIGHT: u64 = 160;

/// The configuration as the status page shows it.
#[derive(Debug, Clone, Default)]
pub struct ConfigSummary {
    /// Listening sockets.
    pub listeners: Vec<ListenerSummary>,
    /// Sites in configuration order.
    pub sites: Vec<SiteSummary>,
    /// Optional features and whether they are on.
    pub features: Vec<(&'static str, bool)>,
    /// Unix time the configuration was taken in.
    pub loaded_at: u64,
}

/// One listening socket.
#[derive(Debug, Clone)]
pub struct ListenerSummary {
    /// `IP:port`.
    pub address: String,
    /// TLS is terminated here.
    pub tls: bool,
    /// HTTP/2 is offered through ALPN.
    pub http2: bool,
    /// Certificate files configured.
    pub certificates: usize,
}

/// One site.
#[derive(Debug, Clone)]
pub struct SiteSummary {
    /// Its name.
    pub name: String,
    /// Its host patterns.
    pub hosts: Vec<String>,
    /// It serves hosts no other site claims.
    pub default: bool,
    /// Its upstream URLs.
    pub upstreams: Vec<String>,
    /// Its upstreams are health-checked.
    pub health_checked: bool,
}

impl ConfigSummary {
    /// Summarises a configuration and the engine compiled from it.
    pub fn new(config: &Config, engine: &Engine, loaded_at: u64) -> ConfigSummary {
        let default = crate::config::default_site(config);
        ConfigSummary {
            listeners: config
                .listen
                .iter()
                .map(|l| ListenerSummary {
                    address: l.address.to_string(),
                    tls: l.tls.is_some(),
                    http2: l.tls.as_ref().is_some_and(|t| t.http2),
                    certificates: l.tls.as_ref().map_or(0, |t| t.certificates.len()),
                })
                .collect(),
            sites: config
                .sites
                .iter()
                .enumerate()
                .map(|(i, s)| SiteSummary {
                    name: s.name.clone(),
                    hosts: s.hosts.iter().map(ToString::to_string).collect(),
                    default: default == Some(i),
                    upstreams: s.upstreams.iter().map(|u| u.original.clone()).collect(),
                    health_checked: s.health_check.is_some(),
                })
                .collect(),
            features: vec![
                ("attribution headers", engine.attributor().enabled()),
                ("signed cookies", engine.attributor().cookies_enabled()),
                (
                    "share-preview correlation",
                    engine.preview_table().is_some(),
                ),
                ("telemetry (spans)", config.telemetry.enabled),
                ("access log", config.log.access_log),
                (
                    "trust forwarded headers",
                    config.server.trust_forwarded_headers,
                ),
                ("demo origin", config.demo.is_some()),
            ],
            loaded_at,
        }
    }
}

/// Fill colour of each channel slot (the last is "unclassified").
const COLOURS: [&str; CHANNEL_SLOTS] = [
    "#9aa5b1", // direct
    "#6d28d9", // dark_social
    "#16a34a", // organic_search
    "#65a30d", // paid_search
    "#0284c7", // organic_social
    "#0369a1", // paid_social
    "#d97706", // email
    "#db2777", // messaging
    "#e11d48", // sms
    "#0d9488", // referral
    "#cbd5e1", // internal
    "#ca8a04", // campaign
    "#a855f7", // preview_bot
    "#52525b", // bot
    "#e5e7eb", // unclassified
];

/// The whole page at Unix time `now`.
pub fn render(metrics: &Metrics, now: u64) -> String {
    let summary = metrics.config_summary();
    let minutes = metrics.traffic().minutes(now);
    let (paths, sources) = metrics.traffic().top(TOP_ROWS);
    let mut totals = [0u64; CHANNEL_SLOTS];
    for minute in &minutes {
        for (total, count) in totals.iter_mut().zip(minute.counts) {
            *total += count;
        }
    }
    let all: u64 = totals.iter().sum();

    let mut page = String::with_capacity(32 * 1024);
    page.push_str(concat!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
        "<meta http-equiv=\"refresh\" content=\"30\">",
        "<title>darklight status</title><style>",
        "body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#1f2937;max-width:960px}",
        "h1{font-size:1.5em}h2{font-size:1.1em;margin-top:2em}",
        "table{border-collapse:collapse;margin-bottom:1em}td,th{padding:.2em .8em .2em 0;text-align:left;vertical-align:top}",
        "th{font-weight:600}.num{text-align:right;font-variant-numeric:tabular-nums}",
        ".swatch{display:inline-block;width:.8em;height:.8em;margin-right:.4em;vertical-align:-.05em}",
        ".on{color:#15803d}.off{color:#9ca3af}code{font-size:.95em}",
        "</style></head><body>\n<h1>darklight</h1>\n"
    ));
    let _ = writeln!(
        page,
        "<p>version {} · up {} · configuration loaded {} ago · {} requests in the last hour</p>",
        env!("CARGO_PKG_VERSION"),
        ago(now.saturating_sub(metrics.started())),
        ago(now.saturating_sub(summary.loaded_at)),
        all
    );

    page.push_str("<h2>Traffic by channel, last hour</h2>\n");
    share_chart(&mut page, &totals, all);
    page.push_str("<h2>Requests per minute</h2>\n");
    minute_chart(&mut page, &minutes);

    page.push_str("<h2>Top dark social landing pages</h2>\n");
    top_table(&mut page, "path", &paths);
    page.push_str("<h2>Top dark social sources</h2>\n");
    top_table(&mut page, "source", &sources);

    page.push_str("<h2>Configuration</h2>\n<table id=\"listeners\"><tr><th>listener</th><th>protocol</th></tr>\n");
    for listener in &summary.listeners {
        let protocol = match (listener.tls, listener.http2) {
            (false, _) => "http".to_string(),
            (true, h2) => format!(
                "https ({} certificate{}{})",
                listener.certificates,
                if listener.certificates == 1 { "" } else { "s" },
                if h2 { ", HTTP/2" } else { "" }
            ),
        };
        let _ = writeln!(
            page,
            "<tr><td><code>{}</code></td><td>{}</td></tr>",
            html(&listener.address),
            protocol
        );
    }
    page.push_str(
        "</table>\n<table id=\"sites\"><tr><th>site</th><th>hosts</th><th>upstreams</th></tr>\n",
    );
    for site in &summary.sites {
        let mut hosts = site.hosts.join(", ");
        if site.default {
            if !hosts.is_empty() {
                hosts.push_str(", ");
            }
            hosts.push_str("any other host");
        }
        let _ = writeln!(
            page,
            "<tr><td>{}</td><td>{}</td><td><code>{}</code>{}</td></tr>",
            html(&site.name),
            html(&hosts),
            html(&site.upstreams.join(", ")),
            if site.health_checked {
                " (health-checked)"
            } else {
                ""
            }
        );
    }
    page.push_str("</table>\n<table id=\"features\">\n");
    for (feature, on) in &summary.features {
        let (class, word) = if *on { ("on", "on") } else { ("off", "off") };
        let _ = writeln!(
            page,
            "<tr><td>{feature}</td><td class=\"{class}\">{word}</td></tr>"
        );
    }
    page.push_str(concat!(
        "</table>\n<p>Machine-readable: <a href=\"/metrics\">/metrics</a> (Prometheus), ",
        "<a href=\"/previews\">/previews</a> (JSON), <a href=\"/healthz\">/healthz</a>.</p>\n",
        // Marks each chart with how many of its bars the browser laid out, so a headless
        // browser test can tell the SVG really rendered.
        "<script>for(const svg of document.querySelectorAll('svg[data-chart]')){",
        "svg.dataset.rendered=[...svg.querySelectorAll('rect[data-channel]')]",
        ".filter(r=>r.getBBox().width>0&&r.getBBox().height>0).length;}</script>\n",
        "</body></html>\n"
    ));
    page
}

/// One horizontal bar, 100% wide, split by channel share, with a legend table.
fn share_chart(page: &mut String, totals: &[u64; CHANNEL_SLOTS], all: u64) {
    let height = 36;
    let _ = write!(
        page,
        "<svg id=\"share\" data-chart=\"share\" role=\"img\" aria-label=\"share of requests per channel\" \
         xmlns=\"http://www.w3.org/2000/svg\" width=\"{CHART_WIDTH}\" height=\"{height}\" \
         viewBox=\"0 0 {CHART_WIDTH} {height}\">"
    );
    if all == 0 {
        let _ = write!(
            page,
            "<rect x=\"0\" y=\"0\" width=\"{CHART_WIDTH}\" height=\"{height}\" fill=\"#f3f4f6\"/>\
             <text x=\"10\" y=\"23\" fill=\"#6b7280\">no traffic in the last hour</text>"
        );
    }
    let mut x = 0.0f64;
    for (slot, &count) in totals.iter().enumerate() {
        if count == 0 {
            continue;
        }
        let width = count as f64 * CHART_WIDTH as f64 / all as f64;
        let name = slot_name(slot);
        let _ = write!(
            page,
            "<rect class=\"share\" data-channel=\"{name}\" x=\"{x:.2}\" y=\"0\" width=\"{width:.2}\" \
             height=\"{height}\" fill=\"{}\"><title>{name}: {count} ({:.1}%)</title></rect>",
            COLOURS.get(slot).unwrap_or(&"#000"),
            percent(count, all)
        );
        x += width;
    }
    page.push_str("</svg>\n<table id=\"channels\"><tr><th>channel</th><th class=\"num\">requests</th><th class=\"num\">share</th></tr>\n");
    let mut order: Vec<usize> = (0..CHANNEL_SLOTS).filter(|&s| totals[s] > 0).collect();
    order.sort_by_key(|&s| std::cmp::Reverse(totals[s]));
    for slot in order {
        let _ = writeln!(
            page,
            "<tr data-channel=\"{name}\"><td><span class=\"swatch\" style=\"background:{colour}\"></span>{name}</td>\
             <td class=\"num\">{count}</td><td class=\"num\">{share:.1}%</td></tr>",
            name = slot_name(slot),
            colour = COLOURS.get(slot).unwrap_or(&"#000"),
            count = totals[slot],
            share = percent(totals[slot], all)
        );
    }
    page.push_str("</table>\n");
}

/// Stacked bars, one per minute, oldest on the left.
fn minute_chart(page: &mut String, minutes: &[MinuteCounts]) {
    let peak = minutes
        .iter()
        .map(|m| m.counts.iter().sum::<u64>())
        .max()
        .unwrap_or(0)
        .max(1);
    let slots = u64::try_from(minutes.len()).unwrap_or(1).max(1);
    let bar = CHART_WIDTH / slots;
    let _ = write!(
        page,
        "<svg id=\"minutes\" data-chart=\"minutes\" role=\"img\" aria-label=\"requests per minute by channel\" \
         xmlns=\"http://www.w3.org/2000/svg\" width=\"{CHART_WIDTH}\" height=\"{}\" viewBox=\"0 0 {CHART_WIDTH} {}\">\
         <line x1=\"0\" y1=\"{CHART_HEIGHT}\" x2=\"{CHART_WIDTH}\" y2=\"{CHART_HEIGHT}\" stroke=\"#9ca3af\"/>",
        CHART_HEIGHT + 16,
        CHART_HEIGHT + 16
    );
    for (i, minute) in minutes.iter().enumerate() {
        let x = u64::try_from(i).unwrap_or(0) * bar;
        let mut top = CHART_HEIGHT as f64;
        for (slot, &count) in minute.counts.iter().enumerate() {
            if count == 0 {
                continue;
            }
            let height = count as f64 * CHART_HEIGHT as f64 / peak as f64;
            top -= height;
            let _ = write!(
                page,
                "<rect data-channel=\"{name}\" x=\"{x}\" y=\"{top:.2}\" width=\"{}\" height=\"{height:.2}\" fill=\"{}\">\
                 <title>{name}: {count}</title></rect>",
                bar.saturating_sub(1).max(1),
                COLOURS.get(slot).unwrap_or(&"#000"),
                name = slot_name(slot),
            );
        }
    }
    let _ = writeln!(
        page,
        "<text x=\"0\" y=\"{y}\" font-size=\"11\" fill=\"#6b7280\">60 min ago</text>\
         <text x=\"{CHART_WIDTH}\" y=\"{y}\" font-size=\"11\" fill=\"#6b7280\" text-anchor=\"end\">now · peak {peak}/min</text></svg>",
        y = CHART_HEIGHT + 13
    );
}

fn top_table(page: &mut String, what: &str, entries: &[TopEntry]) {
    if entries.is_empty() {
        page.push_str("<p class=\"off\">no dark social visits recently</p>\n");
        return;
    }
    let _ = writeln!(
        page,
        "<table class=\"top\" data-top=\"{what}\"><tr><th>{what}</th><th class=\"num\">visits</th></tr>"
    );
    for entry in entries {
        let _ = writeln!(
            page,
            "<tr><td><code>{}</code></td><td class=\"num\">{}</td></tr>",
            html(&entry.key),
            entry.count
        );
    }
    page.push_str("</table>\n");
}

fn percent(count: u64, all: u64) -> f64 {
    if all == 0 {
        0.0
    } else {
        count as f64 * 100.0 / all as f64
    }
}

fn ago(seconds: u64) -> String {
    match seconds {
        0..60 => format!("{seconds}s"),
        60..3600 => format!("{}m", seconds / 60),
        3600..86_400 => format!("{}h {}m", seconds / 3600, seconds % 3600 / 60),
        _ => format!("{}d {}h", seconds / 86_400, seconds % 86_400 / 3600),
    }
}

/// Escapes text for HTML element content and attribute values.
fn html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::metrics::RequestRecord;
    use crate::classify::Channel;

    #[test]
    fn page_shows_shares_and_escapes_paths() {
        let metrics = Metrics::new();
        let now = crate::proxy::plugin::unix_now();
        for (channel, path) in [
            (Channel::DarkSocial, "/articles/<script>alert(1)</script>"),
            (Channel::DarkSocial, "/articles/b"),
            (Channel::Email, "/"),
        ] {
            metrics.record_request_at(
                &RequestRecord {
                    site: Some("demo"),
                    channel: Some(channel),
                    source: None,
                    in_app: None,
                    path,
                    status: 200,
                    duration: std::time::Duration::from_millis(1),
                    classification: None,
                },
                now,
            );
        }
        let page = render(&metrics, now);
        assert!(page.contains("data-channel=\"dark_social\" x=\"0.00\" y=\"0\" width=\"480.00\""));
        assert!(page.contains("data-channel=\"email\""));
        assert!(!page.contains("<script>alert"));
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert_eq!(ago(3725), "1h 2m");
    }
}
