//! A scripted day of shares, previews and visits with known ground truth, run through the real
//! classifier and preview table, scoring the attributions that correlation makes.
//!
//! Noise: crawlers, prefetches, search and social visits, bookmarked deep links with no
//! referrer (true negatives that a recent preview may wrongly claim), people opening links
//! in in-app browsers (already attributed by the classifier), and several platforms sharing
//! the same URL. The precision and recall are printed and held to a floor.

use darklight::classify::{Classifier, RequestFacts, SiteProfile};
use darklight::correlation::{Correlation, CorrelationConfig, Outcome, PreviewTable};

const START: u64 = 1_790_000_000;
const MINUTE: u64 = 60;
const HOUR: u64 = 3600;

/// A small deterministic generator (xorshift64*), so the run is repeatable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    /// Exponentially distributed delay with the given mean, capped.
    fn delay(&mut self, mean: u64, cap: u64) -> u64 {
        let uniform = (self.below(1_000_000) as f64 + 1.0) / 1_000_001.0;
        ((-uniform.ln()) * mean as f64).min(cap as f64) as u64
    }
}

const PLATFORMS: [(&str, &str); 6] = [
    ("whatsapp", "WhatsApp/2.24.9.78 A"),
    (
        "slack",
        "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
    ),
    ("telegram", "TelegramBot (like TwitterBot)"),
    (
        "discord",
        "Mozilla/5.0 (compatible; Discordbot/2.0; +https://discordapp.com)",
    ),
    (
        "linkedin",
        "LinkedInBot/1.0 (compatible; Mozilla/5.0; Apache-HttpClient +http://www.linkedin.com)",
    ),
    (
        "imessage",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_11_1) AppleWebKit/601.2.4 (KHTML, like Gecko) Version/9.0.1 Safari/601.2.4 facebookexternalhit/1.1 Facebot Twitterbot/1.0",
    ),
];

const BROWSER: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1";
const ANDROID_WEBVIEW: &str = "Mozilla/5.0 (Linux; Android 14; Pixel 8 Build/UQ1A.240205.004; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/122.0.6261.119 Mobile Safari/537.36";
const GOOGLEBOT: &str = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";

/// One request of the script, with what it truly was.
struct Event {
    time: u64,
    path: String,
    user_agent: &'static str,
    referer: Option<&'static str>,
    prefetch: bool,
    /// `X-Requested-With`, sent by Android in-app browsers.
    requested_with: Option<&'static str>,
    /// The platform this visit truly came from through a private share (none for noise).
    truth: Option<&'static str>,
}

fn script(rng: &mut Rng) -> Vec<Event> {
    let articles: Vec<String> = (0..400)
        .map(|i| format!("/articles/2026/11/story-{i}"))
        .collect();
    let mut events = Vec::new();
    let day = 24 * HOUR;
    // 300 shares: a preview within seconds, then a few clicks over the next minutes/hours.
    for _ in 0..300 {
        let (platform, preview_ua) = PLATFORMS[rng.below(PLATFORMS.len() as u64) as usize];
        let path = articles[rng.below(articles.len() as u64) as usize].clone();
        let shared_at = START + rng.below(day);
        events.push(Event {
            time: shared_at + rng.below(5),
            path: path.clone(),
            user_agent: preview_ua,
            referer: None,
            prefetch: false,
            requested_with: None,
            truth: None,
        });
        for _ in 0..1 + rng.below(4) {
            let at = shared_at + 5 + rng.delay(25 * MINUTE, 12 * HOUR);
            // Some Telegram users open the link in the app's own browser: the classifier
            // attributes those directly from `X-Requested-With`.
            let in_app = platform == "telegram" && rng.chance(40);
            events.push(Event {
                time: at,
                path: path.clone(),
                user_agent: if in_app { ANDROID_WEBVIEW } else { BROWSER },
                referer: None,
                prefetch: false,
                requested_with: in_app.then_some("org.telegram.messenger"),
                truth: Some(platform),
            });
            if rng.chance(10) {
                // The browser prefetched it first.
                events.push(Event {
                    time: at.saturating_sub(2),
                    path: path.clone(),
                    user_agent: BROWSER,
                    referer: None,
                    prefetch: true,
                    requested_with: None,
                    truth: None,
                });
            }
        }
    }
    // Noise over the whole day.
    for _ in 0..1500 {
        let path = articles[rng.below(articles.len() as u64) as usize].clone();
        let time = START + rng.below(day + 12 * HOUR);
        let (user_agent, referer) = match rng.below(4) {
            0 => (GOOGLEBOT, None),
            1 => (BROWSER, Some("https://www.google.com/")),
            2 => (BROWSER, Some("https://t.co/abc")),
            _ => (BROWSER, None), // a bookmarked or typed deep link: truly nobody's share
        };
        events.push(Event {
            time,
            path,
            user_agent,
            referer,
            prefetch: false,
            requested_with: None,
            truth: None,
        });
    }
    events.sort_by_key(|e| e.time);
    events
}

#[test]
fn preview_correlation_precision_and_recall() {
    let classifier = Classifier::builtin().unwrap();
    let site = SiteProfile::new(&["www.example.com".to_string()], &Default::default()).unwrap();
    let config = CorrelationConfig::default();
    let correlation = Correlation::new(&config);
    let table = PreviewTable::new(config.max_entries, config.ttl.0.as_secs(), START);
    let mut rng = Rng(0x5eed_da7a_1165_7001);

    let (mut attributed, mut correct, mut wrong_platform, mut false_positive) =
        (0u32, 0u32, 0u32, 0u32);
    let (mut private_visits, mut missed) = (0u32, 0u32);
    let mut by_classifier = 0u32;
    for event in script(&mut rng) {
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::USER_AGENT, event.user_agent.parse().unwrap());
        if let Some(referer) = event.referer {
            headers.insert(http::header::REFERER, referer.parse().unwrap());
        }
        if let Some(package) = event.requested_with {
            headers.insert("x-requested-with", package.parse().unwrap());
        }
        if event.prefetch {
            headers.insert("sec-purpose", "prefetch".parse().unwrap());
        }
        headers.insert(http::header::HOST, "www.example.com".parse().unwrap());
        let uri: http::Uri = event.path.parse().unwrap();
        let facts = RequestFacts::from_http(&http::Method::GET, &uri, &headers, "");
        let mut classification = classifier.classify(&facts, &site);
        let outcome = correlation.correlate(&table, &facts, &mut classification, event.time);

        if let Some(truth) = event.truth {
            if classification.source.as_deref() == Some(truth)
                && !matches!(outcome, Outcome::Attributed(_))
            {
                by_classifier += 1;
                continue;
            }
            private_visits += 1;
        }
        match (&outcome, event.truth) {
            (Outcome::Attributed(platform), Some(truth)) => {
                attributed += 1;
                if platform.as_str() == truth {
                    correct += 1;
                } else {
                    wrong_platform += 1;
                }
            }
            (Outcome::Attributed(_), None) => {
                attributed += 1;
                false_positive += 1;
            }
            (_, Some(_)) => missed += 1,
            (_, None) => {}
        }
    }

    let precision = f64::from(correct) / f64::from(attributed.max(1));
    let recall = f64::from(correct) / f64::from(private_visits.max(1));
    println!(
        "preview correlation: {attributed} attributions, {correct} correct, {wrong_platform} to the wrong platform, \
         {false_positive} on visits nobody shared; {private_visits} private-share visits (plus {by_classifier} \
         already attributed by the in-app browser), {missed} missed"
    );
    println!("precision {precision:.3}, recall {recall:.3}");
    assert!(
        private_visits > 300,
        "the script should produce enough shared visits"
    );
    assert!(
        by_classifier > 0,
        "in-app visits are attributed by the classifier itself"
    );
    assert!(precision >= 0.80, "precision {precision:.3}");
    assert!(recall >= 0.85, "recall {recall:.3}");
    assert_eq!(table.stats().visits_attributed, u64::from(attributed));
}
