//! Low-cardinality routes for span names: a site's `routes:`, compiled once.
//!
//! The first route whose pattern matches the path wins, in configuration order. A path that
//! matches no route has no route: the span is then named by the method alone, as the HTTP
//! semantic conventions ask, so that raw paths never explode the number of span names.
//!
//! A few routes are tried one by one, stopping at the first match; more are matched at once by
//! a regex set. A set finds every matching pattern in one pass, which costs about 840
//! instructions whatever the count, against about 170 a route tried alone (callgrind, short
//! paths): up to [`ROUTES_TRIED_ALONE`] routes, trying them in turn costs no more even when
//! none matches, and less when an early one does.

use regex::{Regex, RegexSet};

use super::config::RouteConfig;

/// Why a site's routes could not be compiled.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RouteError {
    /// The combined patterns are too large for the regex engine.
    #[error("routes: {0}")]
    Regex(#[from] regex::Error),
}

/// Up to this many routes, each is tried alone, in order.
pub const ROUTES_TRIED_ALONE: usize = 5;

/// A site's routes, compiled once.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    patterns: Patterns,
    names: Vec<String>,
}

/// The routes' patterns, in configuration order.
#[derive(Debug, Clone, Default)]
enum Patterns {
    #[default]
    None,
    Each(Vec<Regex>),
    Set(RegexSet),
}

impl RouteTable {
    /// Compiles routes in order.
    pub fn new(routes: &[RouteConfig]) -> Result<RouteTable, RouteError> {
        Self::compiled(routes, ROUTES_TRIED_ALONE)
    }

    /// Compiles routes, each alone when there are at most `tried_alone`.
    fn compiled(routes: &[RouteConfig], tried_alone: usize) -> Result<RouteTable, RouteError> {
        let sources = routes.iter().map(|r| r.path.regex_source());
        let patterns = if routes.is_empty() {
            Patterns::None
        } else if routes.len() <= tried_alone {
            Patterns::Each(sources.map(Regex::new).collect::<Result<_, _>>()?)
        } else {
            Patterns::Set(RegexSet::new(sources)?)
        };
        Ok(RouteTable {
            patterns,
            names: routes.iter().map(|r| r.name.clone()).collect(),
        })
    }

    /// The route of `path` (without query), if one matches.
    pub fn route(&self, path: &str) -> Option<&str> {
        let first = match &self.patterns {
            Patterns::None => return None,
            Patterns::Each(each) => each.iter().position(|regex| regex.is_match(path))?,
            Patterns::Set(set) => set.matches(path).into_iter().next()?,
        };
        self.names.get(first).map(String::as_str)
    }

    /// True when no route is configured.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(yaml: &str) -> RouteTable {
        let routes: Vec<RouteConfig> = serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("{e}"));
        RouteTable::new(&routes).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The same routes compiled both ways: each tried alone, and as one set.
    fn both_forms(yaml: &str) -> [(&'static str, RouteTable); 2] {
        let routes: Vec<RouteConfig> = serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("{e}"));
        let compile =
            |alone| RouteTable::compiled(&routes, alone).unwrap_or_else(|e| panic!("{e}"));
        [
            ("each alone", compile(usize::MAX)),
            ("as a set", compile(0)),
        ]
    }

    #[test]
    fn first_matching_route_wins() {
        let forms = both_forms(
            r#"
- /
- {path: "/articles/**", name: "/articles/{slug}"}
- /tag/*
- {path: "re:^/\\d{4}/", name: "/{year}/…"}
- /**
"#,
        );
        let cases = [
            ("/", Some("/")),
            ("/articles/2026/11/story", Some("/articles/{slug}")),
            ("/tag/rust", Some("/tag/*")),
            ("/tag/rust/page/2", Some("/**")),
            ("/2026/11/", Some("/{year}/…")),
            ("/about", Some("/**")),
            // The regex is not anchored at the end, and the catch-all comes after it.
            ("/2026/11/story", Some("/{year}/…")),
        ];
        for (form, routes) in &forms {
            assert!(matches!(
                (*form, &routes.patterns),
                ("each alone", Patterns::Each(_)) | ("as a set", Patterns::Set(_))
            ));
            for (path, expected) in cases {
                assert_eq!(routes.route(path), expected, "{path} ({form})");
            }
        }
    }

    #[test]
    fn a_few_routes_are_tried_alone_and_more_as_a_set() {
        let globs = |count: usize| {
            let list: Vec<String> = (0..count).map(|i| format!("/s{i}/*")).collect();
            table(&serde_json::to_string(&list).unwrap_or_else(|e| panic!("{e}")))
        };
        let (few, more) = (globs(ROUTES_TRIED_ALONE), globs(ROUTES_TRIED_ALONE + 1));
        assert!(matches!(few.patterns, Patterns::Each(_)));
        assert!(matches!(more.patterns, Patterns::Set(_)));
        let last = format!("/s{ROUTES_TRIED_ALONE}/x");
        let last_route = format!("/s{ROUTES_TRIED_ALONE}/*");
        assert_eq!(more.route(&last), Some(last_route.as_str()));
        assert_eq!(few.route(&last), None);
        assert_eq!(few.route("/s0/x"), Some("/s0/*"));
    }

    #[test]
    fn no_routes_means_no_route() {
        for (form, routes) in both_forms("[/articles/*]") {
            assert_eq!(routes.route("/news"), None, "{form}");
        }
        assert!(RouteTable::default().route("/").is_none());
        assert!(RouteTable::default().is_empty());
    }

    #[test]
    fn bad_routes_are_refused_while_parsing() {
        for bad in [
            "[articles]",
            "[{path: /a, name: ''}]",
            "[{path: /a, route: x}]",
            "['re:(']",
        ] {
            assert!(
                serde_yaml::from_str::<Vec<RouteConfig>>(bad).is_err(),
                "{bad} should be refused"
            );
        }
    }
}
