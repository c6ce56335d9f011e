//! Low-cardinality routes for span names: a site's `routes:` compiled into one regex set.
//!
//! The first route whose pattern matches the path wins, in configuration order. A path that
//! matches no route has no route: the span is then named by the method alone, as the HTTP
//! semantic conventions ask, so that raw paths never explode the number of span names.

use regex::RegexSet;

use super::config::RouteConfig;

/// Why a site's routes could not be compiled.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RouteError {
    /// The combined patterns are too large for the regex engine.
    #[error("routes: {0}")]
    Regex(#[from] regex::Error),
}

/// A site's routes, compiled once.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    set: Option<RegexSet>,
    names: Vec<String>,
}

impl RouteTable {
    /// Compiles routes in order.
    pub fn new(routes: &[RouteConfig]) -> Result<RouteTable, RouteError> {
        if routes.is_empty() {
            return Ok(RouteTable::default());
        }
        let set = RegexSet::new(routes.iter().map(|r| r.path.regex_source()))?;
        Ok(RouteTable {
            set: Some(set),
            names: routes.iter().map(|r| r.name.clone()).collect(),
        })
    }

    /// The route of `path` (without query), if one matches.
    pub fn route(&self, path: &str) -> Option<&str> {
        let set = self.set.as_ref()?;
        let first = set.matches(path).into_iter().next()?;
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

    #[test]
    fn first_matching_route_wins() {
        let routes = table(
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
        ];
        for (path, expected) in cases {
            assert_eq!(routes.route(path), expected, "{path}");
        }
    }

    #[test]
    fn no_routes_means_no_route() {
        let routes = table("[/articles/*]");
        assert_eq!(routes.route("/news"), None);
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
