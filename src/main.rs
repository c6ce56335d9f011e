//! The `darklight` command: run the proxy, check a configuration, classify logs offline, or
//! run the demo origin.

use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use darklight::classify::{Classifier, SiteProfile};
use darklight::config::{self, Config, LogFormat, LogLevel};

/// Requests allocate many small, short-lived buffers (headers, span attributes, cookies);
/// mimalloc serves them with far less CPU than the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Dark social attribution as a reverse proxy.
#[derive(Debug, Parser)]
#[command(name = "darklight", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the reverse proxy.
    Run {
        /// The YAML configuration file (re-read on SIGHUP).
        #[arg(short, long, default_value = "/etc/darklight/darklight.yaml")]
        config: PathBuf,
        /// Take the listening sockets over from the running darklight (send it SIGQUIT next).
        #[arg(long)]
        upgrade: bool,
    },
    /// Validate a configuration file (and, with telemetry on, the `OTEL_*` variables and the
    /// collector's TLS files) and print a summary; exits non-zero when it is invalid.
    Check {
        /// The YAML configuration file.
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Classify requests offline from JSON lines or combined access-log lines.
    Classify {
        /// Use the classification rules (and first site's shallow paths) of this configuration.
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// Print a table of visits per channel and source instead of one JSON line per request.
        #[arg(long)]
        summary: bool,
        /// The site's host, for lines that name none (access logs): referrers from it are
        /// internal. Defaults to the first host of the configuration's first site.
        #[arg(long)]
        host: Option<String>,
        /// Input file; `-` or nothing reads standard input.
        input: Option<PathBuf>,
    },
    /// Run only the built-in demo origin.
    Demo {
        /// Address for the demo origin.
        #[arg(short, long, default_value = "127.0.0.1:3000")]
        listen: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            report(format_args!(
                "darklight: {}",
                darklight::error_text::with_causes(error.as_ref())
            ));
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Run { config, upgrade } => serve(&config, upgrade),
        Command::Check { config } => check(&config),
        Command::Classify {
            config,
            summary,
            host,
            input,
        } => classify(config.as_deref(), summary, host, input.as_deref()),
        Command::Demo { listen } => {
            init_logging(LogLevel::Info, LogFormat::Text);
            let server = darklight::proxy::server::build_demo_server(&listen)?;
            tracing::info!(%listen, "demo origin listening");
            server.run(pingora::server::RunArgs::default());
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn serve(path: &Path, upgrade: bool) -> Result<ExitCode> {
    let config = config::load(path)?;
    init_logging(config.log.level, config.log.format);
    let telemetry = darklight::telemetry::Telemetry::start(&config.telemetry)?;
    let options = darklight::proxy::server::RunOptions {
        config_path: Some(path.to_path_buf()),
        upgrade,
    };
    let server = darklight::proxy::server::build(&config, &telemetry, &options)
        .with_context(|| format!("cannot start with {}", path.display()))?
        .server;
    for listener in &config.listen {
        let scheme = if listener.tls.is_some() {
            "https"
        } else {
            "http"
        };
        tracing::info!(address = %listener.address, scheme, "darklight listening");
    }
    if let Some(demo) = &config.demo {
        tracing::info!(address = %demo.listen, "demo origin listening");
    }
    // Pingora handles SIGTERM (graceful: finish in-flight requests within the grace period)
    // and SIGINT (fast shutdown), then returns here.
    server.run(pingora::server::RunArgs::default());
    // Export what is still queued, bounded so a dead collector cannot hold up the exit.
    telemetry.shutdown(std::time::Duration::from_secs(5));
    tracing::info!("darklight stopped");
    Ok(ExitCode::SUCCESS)
}

fn check(path: &Path) -> Result<ExitCode> {
    let config = match config::load(path) {
        Ok(config) => config,
        Err(error) => {
            report(format_args!("{error}"));
            return Ok(ExitCode::FAILURE);
        }
    };
    // Compile everything `run` would (rules, attribution, upstream resolution) short of binding.
    if let Err(error) = darklight::proxy::app::PreparedState::new(&config) {
        report(format_args!("{}: {error}", path.display()));
        return Ok(ExitCode::FAILURE);
    }
    // The `OTEL_*` variables `run` would read with this file: a bad one fails here, not at start.
    // The collector's TLS files too: a wrong path fails here, with the file named.
    let telemetry = if config.telemetry.enabled {
        match check_telemetry(&config.telemetry) {
            Ok(settings) => Some(settings),
            Err(error) => {
                report(format_args!("{}: telemetry: {error}", path.display()));
                return Ok(ExitCode::FAILURE);
            }
        }
    } else {
        None
    };
    let mut out = std::io::stdout().lock();
    write_summary(&mut out, path, &config)?;
    write_telemetry(&mut out, telemetry.as_ref())?;
    Ok(ExitCode::SUCCESS)
}

/// Resolves the telemetry settings as `run` would and reads the collector's TLS files.
fn check_telemetry(
    telemetry: &darklight::telemetry::TelemetryConfig,
) -> Result<darklight::telemetry::settings::TelemetrySettings> {
    use darklight::telemetry::settings::{ExporterSettings, resolve};
    let settings = resolve(telemetry, |name| std::env::var(name).ok(), None)?;
    if let ExporterSettings::Otlp { endpoint, tls, .. } = &settings.exporter {
        darklight::telemetry::CollectorTls::for_endpoint(endpoint, tls)?;
    }
    Ok(settings)
}

/// The telemetry line of the `check` summary: where spans go once the YAML and the `OTEL_*`
/// variables are combined, which is not obvious from either alone.
fn write_telemetry(
    out: &mut impl Write,
    settings: Option<&darklight::telemetry::settings::TelemetrySettings>,
) -> Result<()> {
    use darklight::telemetry::settings::ExporterSettings;
    use darklight::telemetry::{OtlpCompression, OtlpProtocol};
    let Some(settings) = settings else {
        writeln!(out, "  telemetry off")?;
        return Ok(());
    };
    let mut line = String::from("  telemetry: ");
    match &settings.exporter {
        ExporterSettings::Otlp {
            protocol,
            endpoint,
            compression,
            tls,
            ..
        } => {
            let protocol = match protocol {
                OtlpProtocol::Grpc => "gRPC",
                OtlpProtocol::Http => "HTTP",
            };
            line.push_str(&format!("spans over OTLP/{protocol} to {endpoint}"));
            if *compression == OtlpCompression::Gzip {
                line.push_str(", gzip");
            }
            if darklight::telemetry::CollectorTls::applies_to(endpoint) {
                match &tls.certificate {
                    Some(file) => line.push_str(&format!(", trusting {}", file.display())),
                    None => line.push_str(", trusting the system's roots"),
                }
                if let Some(identity) = &tls.client_identity {
                    line.push_str(&format!(
                        ", client certificate {}",
                        identity.certificate.display()
                    ));
                }
            }
        }
        ExporterSettings::Stdout => line.push_str("spans as JSON lines on standard output"),
        ExporterSettings::None => line.push_str("trace context only, no span exported"),
    }
    line.push_str(&format!("; sampler {}", settings.sampler.kind.as_str()));
    if settings.sampler.kind.uses_ratio() {
        line.push_str(&format!(" {}", settings.sampler.ratio));
    }
    writeln!(out, "{line}")?;
    Ok(())
}

/// The `check` summary: enough for a sysadmin to see what will be served where.
fn write_summary(out: &mut impl Write, path: &Path, config: &Config) -> Result<()> {
    writeln!(out, "{}: configuration is valid", path.display())?;
    for listener in &config.listen {
        let tls = if listener.tls.is_some() { " (tls)" } else { "" };
        writeln!(out, "  listen {}{tls}", listener.address)?;
    }
    let default = config::default_site(config);
    for (index, site) in config.sites.iter().enumerate() {
        let hosts: Vec<String> = site.hosts.iter().map(ToString::to_string).collect();
        let mut matched = hosts.join(", ");
        if default == Some(index) {
            if !matched.is_empty() {
                matched.push_str(", ");
            }
            matched.push_str("any other host");
        }
        let upstreams: Vec<&str> = site.upstreams.iter().map(|u| u.original.as_str()).collect();
        writeln!(
            out,
            "  site {}: {} -> {}",
            site.name,
            matched,
            upstreams.join(", ")
        )?;
    }
    if default.is_none() {
        writeln!(out, "  requests for other hosts get 404")?;
    }
    if let Some(demo) = &config.demo {
        writeln!(out, "  demo origin on {}", demo.listen)?;
    }
    Ok(())
}

fn classify(
    config_path: Option<&Path>,
    summary: bool,
    host: Option<String>,
    input: Option<&Path>,
) -> Result<ExitCode> {
    let mut config_host = None;
    let (classifier, site) = match config_path {
        Some(path) => {
            let config = config::load(path)?;
            let classifier = Classifier::new(&config.classification)
                .with_context(|| format!("{}: classification rules", path.display()))?;
            config_host = config.sites.first().and_then(|site| {
                site.hosts.iter().find_map(|h| match h {
                    config::HostPattern::Exact(name) => Some(name.clone()),
                    config::HostPattern::Wildcard(_) => None,
                })
            });
            let site = match config.sites.first() {
                Some(site) => {
                    let hosts: Vec<String> = site.hosts.iter().map(ToString::to_string).collect();
                    SiteProfile::new(&hosts, &site.classification)
                        .with_context(|| format!("site `{}`", site.name))?
                }
                None => SiteProfile::permissive_default(),
            };
            (classifier, site)
        }
        None => (
            Classifier::builtin().context("built-in classification rules")?,
            SiteProfile::permissive_default(),
        ),
    };
    let reader: Box<dyn BufRead> = match input {
        None => Box::new(std::io::stdin().lock()),
        Some(path) if path == Path::new("-") => Box::new(std::io::stdin().lock()),
        Some(path) => Box::new(BufReader::new(
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?,
        )),
    };
    let mut options = darklight::offline::OfflineOptions {
        summary,
        ..Default::default()
    };
    if let Some(host) = host.or(config_host) {
        options.default_host = host;
    }
    let stdout = std::io::stdout().lock();
    let mut stderr = std::io::stderr().lock();
    let report = darklight::offline::classify_stream(
        reader,
        stdout,
        &mut stderr,
        &classifier,
        &site,
        &options,
    )?;
    if summary {
        report.write_summary(&mut std::io::stdout().lock())?;
    }
    Ok(ExitCode::SUCCESS)
}

fn init_logging(level: LogLevel, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        // Pingora logs every proxy error at error level already; keep its info chatter out of
        // the default view while darklight's own info lines (the access log) stay.
        EnvFilter::new(format!(
            "{},pingora_core=warn,pingora_proxy=warn",
            level.as_str()
        ))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(|| TolerantStderr);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    if let Err(error) = result {
        report(format_args!(
            "darklight: logging already initialised: {error}"
        ));
    }
}

/// Standard error that never fails: a log line that cannot be written (a full disk, a closed
/// pipe) is dropped, instead of failing or panicking the process that serves traffic.
struct TolerantStderr;

impl Write for TolerantStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}

/// Prints a message for the operator on standard error, ignoring write failures.
fn report(message: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr(), "{message}");
}
