//! The `darklight` command line: `check` messages and summaries, compared with golden files.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;

use common::{darklight, darklight_with_env, data};

/// Compares `actual` with the golden file `tests/data/cli/NAME`; `UPDATE_GOLDEN=1` rewrites it.
fn assert_golden(name: &str, actual: &str) {
    let path = data(&format!("cli/{name}"));
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
    assert_eq!(actual, expected, "output differs from {}", path.display());
}

mod check_errors {
    use super::*;

    fn check_fails(config: &str) -> String {
        let path = format!("tests/data/config/{config}");
        let (code, stdout, stderr) = darklight(&["check", "--config", &path]);
        assert_eq!(code, 1, "check should fail for {config}; stdout: {stdout}");
        assert!(stdout.is_empty(), "{stdout}");
        stderr
    }

    #[test]
    fn unknown_key() {
        let stderr = check_fails("unknown-key.yaml");
        assert!(
            stderr.starts_with("tests/data/config/unknown-key.yaml:5:5: "),
            "{stderr}"
        );
        assert_golden("check-unknown-key.txt", &stderr);
    }

    #[test]
    fn bad_address() {
        let stderr = check_fails("bad-address.yaml");
        assert!(
            stderr.starts_with("tests/data/config/bad-address.yaml:3:5: "),
            "{stderr}"
        );
        assert_golden("check-bad-address.txt", &stderr);
    }

    #[test]
    fn missing_upstream() {
        let stderr = check_fails("missing-upstream.yaml");
        assert!(
            stderr.starts_with("tests/data/config/missing-upstream.yaml:6:5: "),
            "{stderr}"
        );
        assert!(stderr.contains("missing field `upstreams`"), "{stderr}");
        assert_golden("check-missing-upstream.txt", &stderr);
    }

    #[test]
    fn duplicate_host() {
        let stderr = check_fails("duplicate-host.yaml");
        assert!(
            stderr.starts_with("tests/data/config/duplicate-host.yaml:7:31: "),
            "{stderr}"
        );
        assert_golden("check-duplicate-host.txt", &stderr);
    }

    #[test]
    fn broken_yaml() {
        let stderr = check_fails("broken-yaml.yaml");
        assert!(
            stderr.starts_with("tests/data/config/broken-yaml.yaml:"),
            "{stderr}"
        );
        assert_golden("check-broken-yaml.txt", &stderr);
    }

    #[test]
    fn weak_cookie_secret() {
        let stderr = check_fails("weak-secret.yaml");
        assert!(
            stderr.starts_with("tests/data/config/weak-secret.yaml:7:"),
            "{stderr}"
        );
        assert!(stderr.contains("a signing secret is 9 bytes"), "{stderr}");
        assert_golden("check-weak-secret.txt", &stderr);
    }

    #[test]
    fn bad_shallow_path_pattern() {
        let stderr = check_fails("bad-pattern.yaml");
        assert!(
            stderr.starts_with("tests/data/config/bad-pattern.yaml:6:"),
            "{stderr}"
        );
        assert!(stderr.contains("invalid regex"), "{stderr}");
        assert_golden("check-bad-pattern.txt", &stderr);
    }

    #[test]
    fn missing_file() {
        let (code, _, stderr) = darklight(&["check", "--config", "tests/data/config/nope.yaml"]);
        assert_eq!(code, 1);
        assert!(
            stderr.contains("nope.yaml: cannot read config file"),
            "{stderr}"
        );
    }
}

mod start_errors {
    use super::*;

    #[test]
    fn a_listen_address_in_use_is_named_with_its_reason_once() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = taken.local_addr().unwrap().to_string();
        let (code, _, stderr) = darklight(&["demo", "--listen", &address]);
        assert_eq!(code, 1, "{stderr}");
        assert_eq!(
            stderr.trim_end(),
            format!("darklight: cannot listen on {address}: Address already in use (os error 98)"),
        );
    }
}

mod check_summaries {
    use super::*;

    /// With telemetry on, `check` reads the `OTEL_*` variables as `run` would: a bad one is an
    /// error naming the variable, its value and the values allowed.
    #[test]
    fn a_bad_otel_variable_fails_the_check() {
        let path = "tests/data/config/telemetry.yaml";
        let (code, stdout, stderr) = darklight_with_env(
            &["check", "--config", path],
            &[("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "carrier-pigeon")],
        );
        assert_eq!(code, 1, "stdout: {stdout}");
        assert!(stdout.is_empty(), "{stdout}");
        assert!(stderr.starts_with(path), "{stderr}");
        assert_golden("check-bad-otel-variable.txt", &stderr);

        let (code, stdout, stderr) = darklight_with_env(
            &["check", "--config", path],
            &[("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf")],
        );
        assert_eq!(code, 0, "{stderr}");
        assert!(
            stdout.starts_with(&format!("{path}: configuration is valid")),
            "{stdout}"
        );
    }

    /// For an `https://` collector, `check` reads the TLS files `run` would: a missing one is
    /// an error naming it. For a plain `http://` collector they are not used, so not read.
    #[test]
    fn an_unreadable_collector_certificate_fails_the_check() {
        let path = "tests/data/config/telemetry.yaml";
        let certificate = (
            "OTEL_EXPORTER_OTLP_CERTIFICATE",
            "tests/data/no-such-ca.pem",
        );
        let (code, stdout, stderr) = darklight_with_env(
            &["check", "--config", path],
            &[
                (
                    "OTEL_EXPORTER_OTLP_ENDPOINT",
                    "https://collector.example:4317",
                ),
                certificate,
            ],
        );
        assert_eq!(code, 1, "stdout: {stdout}");
        assert!(stdout.is_empty(), "{stdout}");
        assert_golden("check-missing-otlp-certificate.txt", &stderr);

        let (code, _, stderr) = darklight_with_env(
            &["check", "--config", path],
            &[
                (
                    "OTEL_EXPORTER_OTLP_ENDPOINT",
                    "http://collector.example:4317",
                ),
                certificate,
            ],
        );
        assert_eq!(code, 0, "{stderr}");

        let (code, _, stderr) = darklight_with_env(
            &["check", "--config", path],
            &[("OTEL_EXPORTER_OTLP_CLIENT_KEY", "/etc/darklight/client.key")],
        );
        assert_eq!(code, 1);
        assert!(
            stderr.contains("mutual TLS needs a client certificate and its key"),
            "{stderr}"
        );
    }

    /// The summary says where spans go once the file and the `OTEL_*` variables are combined.
    #[test]
    fn the_summary_shows_where_spans_go() {
        let path = "tests/data/config/telemetry.yaml";
        let https: &[(&str, &str)] = &[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "https://collector.example:4318",
            ),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
            (
                "OTEL_EXPORTER_OTLP_CERTIFICATE",
                "tests/data/config/collector-ca.pem",
            ),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
        ];
        for (env, golden) in [
            (&[][..], "check-telemetry-default.txt"),
            (https, "check-telemetry-https.txt"),
        ] {
            let (code, stdout, stderr) = darklight_with_env(&["check", "--config", path], env);
            assert_eq!(code, 0, "{stderr}");
            assert_golden(golden, &stdout);
        }
    }

    #[test]
    fn two_sites() {
        let (code, stdout, stderr) =
            darklight(&["check", "--config", "tests/data/config/two-sites.yaml"]);
        assert_eq!(code, 0, "{stderr}");
        assert_golden("check-two-sites.txt", &stdout);
    }

    /// Every configuration shipped under `config/` must stay valid.
    #[test]
    fn shipped_configs_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            // sources.yaml is the built-in rule set, not a darklight configuration; compose
            // files are for Docker.
            if !name.starts_with("darklight") || !name.ends_with(".yaml") {
                continue;
            }
            let (code, stdout, stderr) = darklight(&["check", "--config", path.to_str().unwrap()]);
            assert_eq!(code, 0, "{name}: {stderr}");
            assert!(
                stdout.contains("configuration is valid"),
                "{name}: {stdout}"
            );
            checked += 1;
        }
        assert!(
            checked >= 1,
            "no shipped configuration found in {}",
            dir.display()
        );
    }

    #[test]
    fn help_lists_the_commands() {
        let (code, stdout, _) = darklight(&["--help"]);
        assert_eq!(code, 0);
        assert_golden("help.txt", &stdout);
    }
}

mod classify_command {
    use super::*;

    fn expected(name: &str) -> String {
        std::fs::read_to_string(data(&format!("classify/{name}"))).unwrap()
    }

    #[test]
    fn json_lines_for_a_mixed_log() {
        let (code, stdout, stderr) = darklight(&[
            "classify",
            "--host",
            "www.example.com",
            "tests/data/classify/sample.log",
        ]);
        assert_eq!(code, 0, "{stderr}");
        assert_eq!(stdout, expected("sample.expected.jsonl"));
        assert_eq!(stderr, expected("sample.errors.txt"));
    }

    #[test]
    fn summary_table() {
        let (code, stdout, _) = darklight(&[
            "classify",
            "--summary",
            "--host",
            "www.example.com",
            "tests/data/classify/sample.log",
        ]);
        assert_eq!(code, 0);
        assert_eq!(stdout, expected("sample.summary.txt"));
    }

    #[test]
    fn reads_standard_input_and_uses_a_config() {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let mut child = Command::new(env!("CARGO_BIN_EXE_darklight"))
            .args(["classify", "--config", "config/darklight.yaml", "-"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(
                b"{\"url\":\"/articles/x?gclid=abc\",\"user_agent\":\"Mozilla/5.0\"}\nnot a line\n",
            )
            .unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success());
        let stdout = String::from_utf8(output.stdout).unwrap();
        let line: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
        assert_eq!(line["line"], 1);
        assert_eq!(line["channel"], "paid_search");
        assert_eq!(line["source"], "google");
        assert!(String::from_utf8_lossy(&output.stderr).contains("line 2: "));
    }

    #[test]
    fn missing_input_file_is_an_error() {
        let (code, _, stderr) = darklight(&["classify", "tests/data/classify/nope.log"]);
        assert_eq!(code, 1);
        assert!(
            stderr.contains("cannot open tests/data/classify/nope.log"),
            "{stderr}"
        );
    }
}
