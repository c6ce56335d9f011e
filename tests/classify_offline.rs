//! Golden test of offline classification (`darklight classify`) on a sample log.
//!
//! Regenerate the expected files with `UPDATE_GOLDEN=1 cargo test --test classify_offline`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::{Path, PathBuf};

use darklight::classify::{Channel, Classifier, SiteProfile};
use darklight::offline::{OfflineError, OfflineOptions, classify_stream};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/classify")
        .join(name)
}

fn golden(name: &str, actual: &str) {
    let path = data(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with UPDATE_GOLDEN=1 to create it)",
            path.display()
        )
    });
    if expected != actual {
        for (i, (e, a)) in expected.lines().zip(actual.lines()).enumerate() {
            if e != a {
                panic!(
                    "{name} differs at line {}:\nexpected: {e}\n  actual: {a}\n(UPDATE_GOLDEN=1 regenerates)",
                    i + 1
                );
            }
        }
        panic!(
            "{name}: line count differs (expected {}, got {})",
            expected.lines().count(),
            actual.lines().count()
        );
    }
}

fn options(summary: bool) -> OfflineOptions {
    OfflineOptions {
        summary,
        default_host: "www.example.com".to_owned(),
        ..Default::default()
    }
}

#[test]
fn sample_log_matches_golden_output() {
    let classifier = Classifier::builtin().unwrap();
    let site = SiteProfile::permissive_default();
    let input = std::fs::read(data("sample.log")).unwrap();
    let mut output = Vec::new();
    let mut errors = Vec::new();
    let report = classify_stream(
        &input[..],
        &mut output,
        &mut errors,
        &classifier,
        &site,
        &options(false),
    )
    .unwrap();

    golden("sample.expected.jsonl", &String::from_utf8(output).unwrap());
    golden("sample.errors.txt", &String::from_utf8(errors).unwrap());
    let mut summary = Vec::new();
    report.write_summary(&mut summary).unwrap();
    golden("sample.summary.txt", &String::from_utf8(summary).unwrap());

    assert_eq!(report.bad, 2);
    assert_eq!(report.bad_lines[0].line, 8);
    assert_eq!(
        report.bad_lines[0].message,
        "not a JSON object or combined log line"
    );
    assert_eq!(report.skipped, 2);
    assert_eq!(report.classified, 17);
    assert_eq!(report.visits(Channel::DarkSocial, None), 3);
}

#[test]
fn summary_mode_writes_no_lines() {
    let classifier = Classifier::builtin().unwrap();
    let input = std::fs::read(data("sample.log")).unwrap();
    let mut output = Vec::new();
    let report = classify_stream(
        &input[..],
        &mut output,
        std::io::sink(),
        &classifier,
        &SiteProfile::permissive_default(),
        &options(true),
    )
    .unwrap();
    assert!(output.is_empty());
    assert_eq!(report.classified, 17);
}

#[test]
fn non_utf8_and_empty_input() {
    let classifier = Classifier::builtin().unwrap();
    let site = SiteProfile::permissive_default();
    let input = b"{\"url\":\"/a/b\",\"user_agent\":\"Mozilla/5.0 \xff\xfe\"}\n\xff\xff\n";
    let mut errors = Vec::new();
    let report = classify_stream(
        &input[..],
        std::io::sink(),
        &mut errors,
        &classifier,
        &site,
        &options(false),
    )
    .unwrap();
    assert_eq!((report.classified, report.bad), (1, 1));
    assert_eq!(
        String::from_utf8(errors).unwrap(),
        "line 2: not a JSON object or combined log line\n"
    );
    let report = classify_stream(
        &b""[..],
        std::io::sink(),
        std::io::sink(),
        &classifier,
        &site,
        &options(false),
    )
    .unwrap();
    assert_eq!(report.classified, 0);
}

struct FailingWriter;

impl std::io::Write for FailingWriter {
    fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
        Err(std::io::Error::new(
            std::io::ErrorKind::BrokenPipe,
            "closed",
        ))
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn output_errors_abort_with_a_typed_error() {
    let classifier = Classifier::builtin().unwrap();
    let input = b"{\"url\":\"/a/b\"}\n";
    let error = classify_stream(
        &input[..],
        FailingWriter,
        std::io::sink(),
        &classifier,
        &SiteProfile::permissive_default(),
        &options(false),
    )
    .unwrap_err();
    assert!(matches!(error, OfflineError::Write(_)), "{error}");
}
