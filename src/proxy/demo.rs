//! The built-in demo origin: a tiny news site to put darklight in front of.
//!
//! It has a home page, section fronts, deep article pages (the URLs people share), `/headers`
//! which shows the request headers the origin received — so a newcomer sees what darklight
//! injects — and `/echo`, the same as JSON with the body, for scripts and tests.

use std::fmt::Write as _;

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

/// The largest request body `/echo` reads back; the rest is counted, not kept.
const ECHO_BODY_LIMIT: usize = 1 << 20;

struct Article {
    section: &'static str,
    slug: &'static str,
    title: &'static str,
    summary: &'static str,
}

const SECTIONS: [(&str, &str); 3] = [
    ("news", "News"),
    ("tech", "Technology"),
    ("culture", "Culture"),
];

const ARTICLES: [Article; 6] = [
    Article {
        section: "news",
        slug: "2026/11/city-council-votes-on-night-trains",
        title: "City council votes on night trains",
        summary: "The vote passed by a narrow margin after a long evening session.",
    },
    Article {
        section: "news",
        slug: "2026/11/harbour-bridge-reopens",
        title: "Harbour bridge reopens after repairs",
        summary: "Traffic is back to normal, two weeks ahead of schedule.",
    },
    Article {
        section: "tech",
        slug: "2026/10/why-your-analytics-say-direct",
        title: "Why your analytics say \"direct\"",
        summary: "Links shared in messaging apps arrive with no referrer at all.",
    },
    Article {
        section: "tech",
        slug: "2026/09/a-field-guide-to-link-previews",
        title: "A field guide to link previews",
        summary: "Every messenger fetches your page before anyone clicks.",
    },
    Article {
        section: "culture",
        slug: "2026/11/the-recipe-everyone-forwarded",
        title: "The recipe everyone forwarded",
        summary: "It spread through family group chats, invisible to every dashboard.",
    },
    Article {
        section: "culture",
        slug: "2026/08/ten-films-for-a-rainy-week",
        title: "Ten films for a rainy week",
        summary: "A list that travelled by email newsletter and SMS.",
    },
];

/// The demo origin application, served by a Pingora HTTP service.
#[derive(Debug, Default, Clone, Copy)]
pub struct DemoOrigin;

#[async_trait]
impl ServeHttp for DemoOrigin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_string();
        match path.as_str() {
            "/" | "/index.html" => html(StatusCode::OK, "darklight demo", &home_page()),
            "/healthz" => plain(StatusCode::OK, "ok\n"),
            "/headers" => html(StatusCode::OK, "Request headers", &headers_page(session)),
            "/echo" => echo(session).await,
            _ => route_content(&path),
        }
    }
}

fn route_content(path: &str) -> Response<Vec<u8>> {
    if let Some(rest) = path.strip_prefix("/articles/") {
        let slug = rest.trim_end_matches('/');
        if let Some(article) = ARTICLES.iter().find(|a| a.slug == slug) {
            return html(StatusCode::OK, article.title, &article_page(article));
        }
    }
    let section = path.trim_matches('/');
    if let Some((id, name)) = SECTIONS.iter().find(|(id, _)| *id == section) {
        return html(StatusCode::OK, name, &section_page(id, name));
    }
    html(
        StatusCode::NOT_FOUND,
        "Not found",
        "<p>No such page on the demo site. <a href=\"/\">Home</a></p>",
    )
}

fn home_page() -> String {
    let mut body = String::from(
        "<p>This is darklight's demo origin. Open an article as if you came from a chat app, \
         then look at <a href=\"/headers\">/headers</a> to see what darklight told the origin.</p>\
         <pre>curl -H 'Referer: https://web.whatsapp.com/' http://localhost:8080/headers</pre>\
         <h2>Sections</h2><ul>",
    );
    for (id, name) in SECTIONS {
        let _ = write!(body, "<li><a href=\"/{id}/\">{name}</a></li>");
    }
    body.push_str("</ul><h2>Latest</h2>");
    body.push_str(&article_list(ARTICLES.iter()));
    body
}

fn section_page(id: &str, name: &str) -> String {
    format!(
        "<p>Section front: {name}.</p>{}",
        article_list(ARTICLES.iter().filter(|a| a.section == id))
    )
}

fn article_page(article: &Article) -> String {
    format!(
        "<p><em>{}</em></p><p>{}</p><p>This page is a deep link: a visit here with no referrer \
         is almost never typed by hand.</p><p><a href=\"/{}/\">More in this section</a> · \
         <a href=\"/headers\">What did the origin receive?</a></p>",
        escape(article.section),
        escape(article.summary),
        article.section
    )
}

fn article_list<'a>(articles: impl Iterator<Item = &'a Article>) -> String {
    let mut list = String::from("<ul>");
    for article in articles {
        let _ = write!(
            list,
            "<li><a href=\"/articles/{}\">{}</a></li>",
            article.slug,
            escape(article.title)
        );
    }
    list.push_str("</ul>");
    list
}

fn headers_page(session: &ServerSession) -> String {
    let request = session.req_header();
    let mut body = format!(
        "<p><code>{} {}</code></p><table><tr><th>Header</th><th>Value</th></tr>",
        escape(request.method.as_str()),
        escape(&request.uri.to_string())
    );
    for (name, value) in &request.headers {
        let highlight = if name.as_str().starts_with("x-darklight") {
            " class=\"darklight\""
        } else {
            ""
        };
        let _ = write!(
            body,
            "<tr{highlight}><td>{}</td><td>{}</td></tr>",
            escape(name.as_str()),
            escape(&String::from_utf8_lossy(value.as_bytes()))
        );
    }
    body.push_str("</table>");
    body
}

async fn echo(session: &mut ServerSession) -> Response<Vec<u8>> {
    let mut body = Vec::new();
    let mut total = 0usize;
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                total += chunk.len();
                let room = ECHO_BODY_LIMIT.saturating_sub(body.len());
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(None) => break,
            Err(e) => {
                return plain(StatusCode::BAD_REQUEST, &format!("cannot read body: {e}\n"));
            }
        }
    }
    let request = session.req_header();
    let mut json = String::with_capacity(512 + body.len());
    json.push_str("{\"method\":");
    push_json_string(&mut json, request.method.as_str());
    json.push_str(",\"uri\":");
    push_json_string(&mut json, &request.uri.to_string());
    json.push_str(",\"headers\":[");
    for (i, (name, value)) in request.headers.iter().enumerate() {
        if i > 0 {
            json.push(',');
        }
        json.push('[');
        push_json_string(&mut json, name.as_str());
        json.push(',');
        push_json_string(&mut json, &String::from_utf8_lossy(value.as_bytes()));
        json.push(']');
    }
    let _ = write!(json, "],\"body_length\":{total},\"body\":");
    push_json_string(&mut json, &String::from_utf8_lossy(&body));
    json.push_str("}\n");
    respond(StatusCode::OK, "application/json", json.into_bytes())
}

fn push_json_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn html(status: StatusCode, title: &str, body: &str) -> Response<Vec<u8>> {
    let page = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem}}\
         td,th{{text-align:left;padding:.2rem .6rem;border-bottom:1px solid #ddd;font-family:monospace}}\
         tr.darklight td{{background:#fff4c2}}</style></head><body><header><a href=\"/\">darklight demo</a>\
         </header><h1>{title}</h1>{body}</body></html>\n",
        title = escape(title)
    );
    respond(status, "text/html; charset=utf-8", page.into_bytes())
}

fn plain(status: StatusCode, text: &str) -> Response<Vec<u8>> {
    respond(
        status,
        "text/plain; charset=utf-8",
        text.as_bytes().to_vec(),
    )
}

fn respond(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    if let Ok(value) = http::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(http::header::CONTENT_TYPE, value);
    }
    let length = response.body().len();
    response.headers_mut().insert(
        http::header::CONTENT_LENGTH,
        http::HeaderValue::from(length),
    );
    response.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    response
}

/// Escapes text for HTML element content and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Paths of every page of the demo site, for tests and the README.
pub fn article_paths() -> impl Iterator<Item = String> {
    ARTICLES.iter().map(|a| format!("/articles/{}", a.slug))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_route() {
        assert_eq!(route_content("/news/").status(), StatusCode::OK);
        assert_eq!(route_content("/tech").status(), StatusCode::OK);
        assert_eq!(route_content("/nope").status(), StatusCode::NOT_FOUND);
        for path in article_paths() {
            assert_eq!(route_content(&path).status(), StatusCode::OK, "{path}");
        }
    }

    #[test]
    fn escapes_markup_and_json() {
        assert_eq!(escape("<a href='x'>&"), "&lt;a href=&#39;x&#39;&gt;&amp;");
        let mut json = String::new();
        push_json_string(&mut json, "a\"b\\\n\u{1}");
        assert_eq!(json, "\"a\\\"b\\\\\\n\\u0001\"");
    }
}
