//! Configuration: the YAML schema, loading, and validation with file/line/column errors.
//!
//! [`load`] reads a file, deserialises it strictly (unknown keys are errors), then runs the
//! checks that need the whole file (unique names, one default site, no host claimed twice, TLS
//! files present, no upstream pointing back at darklight). The result is a [`Config`] that the
//! edges compile into their runtime form.

mod error;
mod schema;
mod values;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

pub use error::{ConfigError, Location};
pub use schema::{
    AdminSettings, CertificateFiles, Config, DemoSettings, HealthCheckConfig, HealthCheckKind,
    Listener, ListenerTls, LogFormat, LogSettings, ServerSettings, SiteConfig, TelemetryConfig,
    TimeoutConfig, UpstreamTlsConfig,
};
pub use values::{
    HostPattern, HumanDuration, ListenAddress, LogLevel, UpstreamScheme, UpstreamUrl,
};

use crate::routing::SiteRouter;

/// Reads, parses and validates a configuration file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut config = parse(&text, path)?;
    resolve_relative_paths(&mut config, path);
    check_files(&config, &text, path)?;
    Ok(config)
}

/// Parses and validates configuration text; `path` labels errors and is not read.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let config: Config =
        serde_yaml::from_str(text).map_err(|e| ConfigError::from_yaml(path, &e))?;
    validate(&config, text, path)?;
    Ok(config)
}

/// Index of the site that serves unmatched hosts: the one marked `default`, else the one
/// without hosts.
pub fn default_site(config: &Config) -> Option<usize> {
    config
        .sites
        .iter()
        .position(|s| s.default)
        .or_else(|| config.sites.iter().position(|s| s.hosts.is_empty()))
}

/// Builds the host router for a validated configuration.
pub fn site_router(config: &Config) -> SiteRouter {
    let sites = config
        .sites
        .iter()
        .enumerate()
        .map(|(i, s)| (i, s.hosts.as_slice()));
    // Duplicates were refused by `validate`; fall back to an empty router rather than panic.
    SiteRouter::new(sites, default_site(config)).unwrap_or_default()
}

fn validate(config: &Config, text: &str, path: &Path) -> Result<(), ConfigError> {
    let invalid = |needle: &str, occurrence: usize, message: String| {
        ConfigError::invalid(path, error::locate(text, needle, occurrence), message)
    };

    if config.sites.is_empty() {
        return Err(invalid(
            "sites",
            1,
            "`sites` needs at least one site with `name` and `upstreams`".into(),
        ));
    }

    let mut listen_seen = HashSet::new();
    for listener in &config.listen {
        if !listen_seen.insert(listener.address.0) {
            let shown = listener.address.to_string();
            return Err(invalid(
                &shown,
                2,
                format!("listen address `{shown}` is given twice"),
            ));
        }
    }
    let extra = [
        ("demo.listen", config.demo.as_ref().map(|d| d.listen)),
        ("admin.listen", config.admin.as_ref().map(|a| a.listen)),
    ];
    for (key, address) in extra {
        let Some(address) = address else { continue };
        if !listen_seen.insert(address.0) {
            let shown = address.to_string();
            return Err(invalid(
                &shown,
                2,
                format!(
                    "{key} `{shown}` is already used by another listener; give it its own port"
                ),
            ));
        }
    }

    let mut names = HashSet::new();
    let mut defaults: Vec<&str> = Vec::new();
    for site in &config.sites {
        if site.name.trim().is_empty() {
            return Err(invalid("name", 1, "a site has an empty `name`".into()));
        }
        if !names.insert(site.name.as_str()) {
            return Err(invalid(
                &site.name,
                2,
                format!(
                    "site name `{}` is used twice; names must be unique",
                    site.name
                ),
            ));
        }
        if site.default || site.hosts.is_empty() {
            defaults.push(&site.name);
        }
        for upstream in &site.upstreams {
            let loops_back = upstream
                .host
                .parse::<std::net::IpAddr>()
                .ok()
                .is_some_and(|ip| {
                    config.listen.iter().any(|l| {
                        l.address.0.port() == upstream.port
                            && (l.address.0.ip() == ip || l.address.0.ip().is_unspecified())
                    })
                });
            if loops_back {
                return Err(invalid(
                    &upstream.original,
                    1,
                    format!(
                        "site `{}`: upstream `{upstream}` is darklight's own listen address; requests would loop",
                        site.name
                    ),
                ));
            }
        }
    }
    if defaults.len() > 1 {
        return Err(invalid(
            defaults[1],
            1,
            format!(
                "sites `{}` and `{}` are both default sites (a site is the default when it has `default: true` or no `hosts`); keep one",
                defaults[0], defaults[1]
            ),
        ));
    }

    let sites = config
        .sites
        .iter()
        .enumerate()
        .map(|(i, s)| (i, s.hosts.as_slice()));
    if let Err(duplicate) = SiteRouter::new(sites, None) {
        let first = &config.sites[duplicate.first].name;
        let second = &config.sites[duplicate.second].name;
        return Err(invalid(
            &duplicate.pattern,
            2,
            format!(
                "host `{}` is claimed by sites `{first}` and `{second}`; a host belongs to one site",
                duplicate.pattern
            ),
        ));
    }
    Ok(())
}

/// TLS files are named relative to the configuration file, so that a config and its
/// certificates can be moved together.
fn resolve_relative_paths(config: &mut Config, config_path: &Path) {
    let base = config_path.parent().unwrap_or(Path::new("."));
    let absolute = |p: &mut PathBuf| {
        if p.is_relative() {
            *p = base.join(&*p);
        }
    };
    for listener in &mut config.listen {
        if let Some(tls) = &mut listener.tls {
            for files in &mut tls.certificates {
                absolute(&mut files.cert);
                absolute(&mut files.key);
            }
        }
    }
    if let Some(ca) = &mut config.server.upstream_ca_file {
        absolute(ca);
    }
}

fn check_files(config: &Config, text: &str, path: &Path) -> Result<(), ConfigError> {
    let mut files: Vec<(String, &PathBuf)> = Vec::new();
    for listener in &config.listen {
        let Some(tls) = &listener.tls else { continue };
        for pair in &tls.certificates {
            let address = listener.address;
            files.push((format!("listener {address}: TLS certificate"), &pair.cert));
            files.push((format!("listener {address}: TLS key"), &pair.key));
        }
    }
    if let Some(ca) = &config.server.upstream_ca_file {
        files.push(("server.upstream_ca_file".to_string(), ca));
    }
    for (what, file) in files {
        if let Err(e) = std::fs::metadata(file) {
            // Point at the file name where it is written in the configuration.
            let name = file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            return Err(ConfigError::invalid(
                path,
                error::locate(text, &name, 1),
                format!("{what} `{}` cannot be read: {e}", file.display()),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<Config, ConfigError> {
        parse(text, Path::new("test.yaml"))
    }

    fn error_of(text: &str) -> String {
        match parse_str(text) {
            Ok(_) => panic!("expected an error for:\n{text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn minimal_file_gets_defaults() {
        let config = parse_str(
            "listen: [127.0.0.1:8080]\nsites:\n  - name: app\n    upstreams: [http://127.0.0.1:3000]\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.sites.len(), 1);
        assert_eq!(default_site(&config), Some(0));
        assert!(config.sites[0].preserve_host);
        assert!(!config.server.trust_forwarded_headers);
        assert_eq!(config.log.level, LogLevel::Info);
    }

    #[test]
    fn listen_accepts_strings_and_mappings() {
        let config = parse_str(
            "listen:\n  - 127.0.0.1:8080\n  - address: 127.0.0.1:8443\n    tls: {cert: c.pem, key: k.pem}\nsites:\n  - name: a\n    upstreams: [http://127.0.0.1:1]\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(config.listen[0].tls.is_none());
        assert!(config.listen[1].tls.is_some());
    }

    #[test]
    fn unknown_key_is_reported_with_position() {
        let message = error_of(
            "listen: [127.0.0.1:8080]\nsites:\n  - name: app\n    upstream: [http://127.0.0.1:3000]\n",
        );
        assert!(message.starts_with("test.yaml:4:5: "), "{message}");
        assert!(message.contains("unknown field `upstream`"), "{message}");
    }

    /// Bad values (found while parsing) and semantic errors (found after) both point at the
    /// offending text.
    #[test]
    fn errors_point_at_the_value() {
        let cases = [
            (
                "listen: [localhost:80]\nsites: []\n",
                "test.yaml:1:10: listen[0]: invalid address `localhost:80`",
            ),
            (
                "listen: [127.0.0.1:8080]\nsites:\n  - name: a\n    upstreams: [127.0.0.1:3000]\n",
                "test.yaml:4:16: sites[0].upstreams: invalid upstream `127.0.0.1:3000`",
            ),
            (
                "listen: [127.0.0.1:8080]\nsites:\n  - name: a\n    upstreams: [http://127.0.0.1:1]\n    timeouts: {connect: soon}\n",
                "test.yaml:5:15: sites[0].timeouts: invalid duration `soon`",
            ),
            (
                "listen: [127.0.0.1:8080]\nsites:\n  - name: a\n    hosts: ['a.com:80']\n    upstreams: [http://127.0.0.1:1]\n",
                "test.yaml:4:12: sites[0].hosts: invalid host `a.com:80`",
            ),
            (
                "listen: [127.0.0.1:8080]\nsites:\n  - name: a\n    upstreams: [http://127.0.0.1:1]\n  - name: a\n    hosts: [x.com]\n    upstreams: [http://127.0.0.1:2]\n",
                "test.yaml:5:11: site name `a` is used twice",
            ),
            (
                "listen: [127.0.0.1:8080]\nsites:\n  - name: a\n    hosts: [x.com]\n    upstreams: [http://127.0.0.1:1]\n  - name: b\n    hosts: [y.com, x.com]\n    upstreams: [http://127.0.0.1:2]\n",
                "test.yaml:7:20: host `x.com` is claimed by sites `a` and `b`",
            ),
            (
                "listen: [127.0.0.1:8080]\nsites:\n  - name: a\n    upstreams: [http://127.0.0.1:1]\n  - name: b\n    upstreams: [http://127.0.0.1:2]\n",
                "test.yaml:5:11: sites `a` and `b` are both default sites",
            ),
            (
                "listen: [0.0.0.0:8080]\nsites:\n  - name: a\n    upstreams: [http://127.0.0.1:8080]\n",
                "test.yaml:4:17: site `a`: upstream `http://127.0.0.1:8080` is darklight's own listen address",
            ),
            (
                "listen: [127.0.0.1:8080]\nsites:\n  - name: a\n    upstreams: []\n",
                "test.yaml:3:5: sites[0]: `upstreams` needs at least one upstream",
            ),
            (
                "listen: [127.0.0.1:8080, 127.0.0.1:8080]\nsites:\n  - name: a\n    upstreams: [http://127.0.0.1:1]\n",
                "test.yaml:1:26: listen address `127.0.0.1:8080` is given twice",
            ),
        ];
        for (text, expected) in cases {
            let message = error_of(text);
            assert!(
                message.starts_with(expected),
                "got: {message}\nwant: {expected}"
            );
        }
    }

    #[test]
    fn missing_sites_and_broken_yaml_are_errors() {
        assert!(error_of("listen: [127.0.0.1:8080]\n").contains("missing field `sites`"));
        let broken = error_of("listen: [127.0.0.1:8080\nsites:\n");
        assert!(broken.starts_with("test.yaml:"), "{broken}");
    }
}
