//! The rule schema: user overrides, error locations, and the shipped database.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::borrow::Cow;
use std::collections::HashMap;

use darklight::classify::{
    BUILTIN_SOURCES_YAML, Channel, ClassificationConfig, Classifier, RequestFacts, RuleError,
    RuleSet, SiteClassificationConfig, SiteProfile,
};

fn config(yaml: &str) -> ClassificationConfig {
    serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("{e}"))
}

fn error_of<T: serde::de::DeserializeOwned + std::fmt::Debug>(yaml: &str) -> String {
    serde_yaml::from_str::<T>(yaml).unwrap_err().to_string()
}

fn facts(
    path: &'static str,
    referer: Option<&'static str>,
    user_agent: &'static str,
) -> RequestFacts<'static> {
    let (path, query) = match path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path, None),
    };
    RequestFacts {
        method: "GET",
        host: Cow::Borrowed("www.example.com"),
        path,
        query,
        referer,
        user_agent: Some(user_agent),
        ..Default::default()
    }
}

const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36";

#[test]
fn the_shipped_database_compiles() {
    let classifier = Classifier::builtin().unwrap();
    assert!(classifier.source_names().count() > 50);
    assert!(Classifier::new(&ClassificationConfig::default()).is_ok());
}

#[test]
fn the_shipped_database_has_no_duplicates() {
    let rules: RuleSet = serde_yaml::from_str(BUILTIN_SOURCES_YAML).unwrap();
    let mut names = HashMap::new();
    let mut hosts = HashMap::new();
    let mut apps = HashMap::new();
    let mut tokens = HashMap::new();
    for source in &rules.sources {
        let name = source.name.as_str();
        assert!(names.insert(name, ()).is_none(), "source {name} twice");
        for host in &source.hosts {
            if let Some(first) = hosts.insert(host.as_str().to_owned(), name) {
                panic!("host {host} in {first} and {name}");
            }
        }
        for app in &source.apps {
            if let Some(first) = apps.insert(app.as_str().to_owned(), name) {
                panic!("app {} in {first} and {name}", app.as_str());
            }
        }
        for token in &source.user_agents {
            if let Some(first) = tokens.insert(token.as_str().to_ascii_lowercase(), name) {
                panic!("in-app token {token} in {first} and {name}");
            }
        }
    }
    let mut seen = HashMap::new();
    for bot in &rules.preview_bots {
        assert!(
            seen.insert(("preview", bot.name.as_str()), ()).is_none(),
            "preview bot {} twice",
            bot.name
        );
    }
    for bot in &rules.bots {
        assert!(
            seen.insert(("bot", bot.name.as_str()), ()).is_none(),
            "bot {} twice",
            bot.name
        );
    }
    let mut params = HashMap::new();
    for click in &rules.click_ids {
        assert!(
            params.insert(click.param.as_str(), ()).is_none(),
            "click id {} twice",
            click.param.as_str()
        );
    }
    let mut values = HashMap::new();
    for medium in &rules.mediums {
        for value in &medium.values {
            assert!(
                values.insert(value.to_ascii_lowercase(), ()).is_none(),
                "medium {value} twice"
            );
        }
    }
}

#[test]
fn user_sources_add_and_override() {
    let classifier = Classifier::new(&config(
        r#"
sources:
  - name: intranet
    kind: referral
    channel: internal
    hosts: [portal.corp.example]
  - name: company_app
    kind: messaging
    user_agents: ["CorpChat/"]
    apps: [com.corp.chat]
  - name: google
    kind: referral
    hosts: ["google.*"]
  - name: myforum
    kind: social
    hosts: ["*.forum.example"]
"#,
    ))
    .unwrap();
    let site = SiteProfile::permissive_default();
    let run = |f: RequestFacts<'static>| classifier.classify(&f, &site);

    let c = run(facts("/a/b", Some("https://portal.corp.example/"), CHROME));
    assert_eq!(
        (c.channel, c.source.as_deref()),
        (Channel::Internal, Some("intranet"))
    );

    let c = run(facts("/a/b", None, "Mozilla/5.0 (iPhone) CorpChat/3.1"));
    assert_eq!(
        (c.channel, c.source.as_deref(), c.in_app.as_deref()),
        (
            Channel::DarkSocial,
            Some("company_app"),
            Some("company_app")
        )
    );

    // The override replaced the built-in google source entirely.
    let c = run(facts("/a/b", Some("https://www.google.com/"), CHROME));
    assert_eq!(c.channel, Channel::Referral);
    assert_eq!(c.source.as_deref(), Some("google.com"));
    let c = run(facts("/a/b", Some("https://google.de/"), CHROME));
    assert_eq!(
        (c.channel, c.source.as_deref()),
        (Channel::Referral, Some("google"))
    );

    let c = run(facts("/a/b", Some("https://www.forum.example/t/1"), CHROME));
    assert_eq!(
        (c.channel, c.source.as_deref()),
        (Channel::OrganicSocial, Some("myforum"))
    );

    // Built-ins not overridden still work.
    let c = run(facts("/a/b", Some("https://www.bing.com/"), CHROME));
    assert_eq!(c.channel, Channel::OrganicSearch);
}

#[test]
fn user_rules_take_hosts_from_built_in_sources() {
    let classifier = Classifier::new(&config(
        "sources:\n  - name: our_newsletter_archive\n    kind: email\n    hosts: [t.co]\n",
    ))
    .unwrap();
    let c = classifier.classify(
        &facts("/a/b", Some("https://t.co/"), CHROME),
        &SiteProfile::permissive_default(),
    );
    assert_eq!(
        (c.channel, c.source.as_deref()),
        (Channel::Email, Some("our_newsletter_archive"))
    );
}

#[test]
fn user_click_ids_mediums_and_bots() {
    let classifier = Classifier::new(&config(
        r#"
click_ids:
  - { param: fbclid, source: facebook, channel: paid_social }
  - { param: partner_click, source: partnerco, channel: campaign, medium: affiliate }
mediums:
  - values: [podcast, audio]
    channel: referral
preview_bots:
  - { name: corp_unfurler, user_agents: ["CorpUnfurl/"] }
bots:
  - { name: our_monitor, kind: tool, user_agents: ["^HealthCheck/"] }
"#,
    ))
    .unwrap();
    let site = SiteProfile::permissive_default();
    let run = |f: RequestFacts<'static>| classifier.classify(&f, &site);
    assert_eq!(
        run(facts("/a?fbclid=x", None, CHROME)).channel,
        Channel::PaidSocial
    );
    let c = run(facts("/a?partner_click=1", None, CHROME));
    assert_eq!(
        (c.channel, c.source.as_deref(), c.medium.as_deref()),
        (Channel::Campaign, Some("partnerco"), Some("affiliate"))
    );
    assert_eq!(
        run(facts("/a?utm_source=x&utm_medium=Podcast", None, CHROME)).channel,
        Channel::Referral
    );
    let c = run(facts("/a", None, "CorpUnfurl/1.0"));
    assert_eq!(
        (c.channel, c.preview_bot.as_deref()),
        (Channel::PreviewBot, Some("corp_unfurler"))
    );
    let c = run(facts("/a", None, "HealthCheck/2"));
    assert_eq!(
        (c.channel, c.source.as_deref(), c.confidence),
        (Channel::Bot, Some("our_monitor"), 0.7)
    );
    // Still anchored: not at the start, not a bot.
    assert_eq!(
        run(facts("/a/b", None, "Mozilla/5.0 HealthCheck/2")).channel,
        Channel::DarkSocial
    );
}

#[test]
fn builtin_can_be_turned_off() {
    let classifier = Classifier::new(&config("builtin: false\n")).unwrap();
    assert_eq!(classifier.source_names().count(), 0);
    let c = classifier.classify(
        &facts("/a/b", Some("https://www.google.com/"), CHROME),
        &SiteProfile::permissive_default(),
    );
    assert_eq!(c.channel, Channel::Referral);
}

#[test]
fn unknown_keys_are_errors_with_location() {
    let message = error_of::<ClassificationConfig>(
        "sources:\n  - name: x\n    kind: social\n    hostz: [a.com]\n",
    );
    assert!(message.contains("unknown field `hostz`"), "{message}");
    assert!(message.contains("line 4 column 5"), "{message}");

    let message = error_of::<ClassificationConfig>("builtin: true\nsauces: []\n");
    assert!(
        message.contains("unknown field `sauces`") && message.contains("line 2 column 1"),
        "{message}"
    );

    let message = error_of::<SiteClassificationConfig>("shallow_paths: []\nshallow: []\n");
    assert!(
        message.contains("unknown field `shallow`") && message.contains("line 2 column 1"),
        "{message}"
    );
}

#[test]
fn bad_patterns_are_errors_with_location() {
    let message =
        error_of::<SiteClassificationConfig>("shallow_paths:\n  - /ok\n  - \"re:^/(unclosed$\"\n");
    assert!(
        message.contains("invalid regex `^/(unclosed$`"),
        "{message}"
    );
    assert!(message.contains("line 3 column 5"), "{message}");

    let message = error_of::<SiteClassificationConfig>("deep_paths: [\"no-slash/*\"]\n");
    assert!(
        message.contains("must start with `/`") && message.contains("line 1 column 14"),
        "{message}"
    );

    let message = error_of::<ClassificationConfig>(
        "sources:\n  - name: x\n    kind: social\n    hosts: [\"go*gle.com\"]\n",
    );
    assert!(
        message.contains("invalid host pattern `go*gle.com`")
            && message.contains("line 4 column 13"),
        "{message}"
    );

    let message =
        error_of::<ClassificationConfig>("bots:\n  - name: b\n    user_agents: [\"^\"]\n");
    assert!(
        message.contains("invalid user-agent token") && message.contains("line 3"),
        "{message}"
    );

    let message =
        error_of::<ClassificationConfig>("sources:\n  - name: Bad-Name\n    kind: social\n");
    assert!(
        message.contains("invalid name `Bad-Name`") && message.contains("line 2"),
        "{message}"
    );

    let message = error_of::<ClassificationConfig>("sources:\n  - name: x\n    kind: chat\n");
    assert!(
        message.contains("unknown variant `chat`") && message.contains("line 3"),
        "{message}"
    );

    let message = error_of::<ClassificationConfig>(
        "click_ids:\n  - { param: utm_x, source: s, channel: email }\n",
    );
    assert!(
        message.contains("invalid click-id parameter") && message.contains("line 2"),
        "{message}"
    );
}

#[test]
fn conflicts_within_the_user_layer_are_errors() {
    let error = Classifier::new(&config(
        "sources:\n  - { name: a, kind: social, hosts: [x.example] }\n  - { name: b, kind: social, hosts: [x.example] }\n",
    ))
    .unwrap_err();
    assert!(matches!(error, RuleError::Conflict { .. }), "{error}");
    assert_eq!(
        error.to_string(),
        "host `x.example` is claimed by both `a` and `b`"
    );

    let error = Classifier::new(&config(
        "sources:\n  - { name: a, kind: social }\n  - { name: a, kind: email }\n",
    ))
    .unwrap_err();
    assert_eq!(error.to_string(), "sources entry `a` is defined twice");
}

#[test]
fn site_profile_errors() {
    let error = SiteProfile::new(
        &["bad host!".to_owned()],
        &SiteClassificationConfig::default(),
    )
    .unwrap_err();
    assert!(error.to_string().contains("bad host!"), "{error}");
}

/// The YAML examples in docs/classification.md parse.
#[test]
fn documented_examples_parse() {
    #[derive(serde::Deserialize)]
    struct TopLevel {
        classification: ClassificationConfig,
    }
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/classification.md"
    ))
    .unwrap();
    let mut checked = 0;
    for block in doc.split("```yaml\n").skip(1) {
        let yaml = block.split("```").next().unwrap();
        if yaml.starts_with("classification:") {
            let top: TopLevel =
                serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
            Classifier::new(&top.classification).unwrap();
            checked += 1;
        } else if yaml.starts_with("sites:") {
            let value: serde_yaml::Value = serde_yaml::from_str(yaml).unwrap();
            for site in value["sites"].as_sequence().unwrap() {
                let config: SiteClassificationConfig =
                    serde_yaml::from_value(site["classification"].clone()).unwrap();
                SiteProfile::new(&["blog.example.com".to_owned()], &config).unwrap();
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 2);
}
