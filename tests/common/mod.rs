//! Shared helpers for integration tests: a real darklight process, a real upstream server, and
//! a small HTTP/1.1 client, all on 127.0.0.1 with ports picked at run time and bounded waits.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How long anything in a test may take to become ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Socket timeout for client requests.
pub const IO_TIMEOUT: Duration = Duration::from_secs(15);

/// A port on 127.0.0.1 for a process to bind later: free now, and out of reach of port 0.
///
/// A port found by binding port 0 and releasing it can be handed by the kernel to the next
/// socket bound to port 0 (another test's upstream or collector) before the process under test
/// binds it; a readiness probe then reaches the wrong server, which closes under the test. Ports
/// handed out here come from just below the kernel's ephemeral range, which port-0 binds and
/// outgoing connections never use, each one once per test binary.
pub fn free_port() -> u16 {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let (low, high) = reserved_ports();
    let span = usize::from(high - low);
    // Test binaries run one after another, but another run may share the machine: start each
    // binary at its own offset.
    let offset = std::process::id() as usize % span;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = low + ((offset + n) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {low}..{high}");
}

/// The range [`free_port`] draws from: the 10,000 ports below the ephemeral range.
fn reserved_ports() -> (u16, u16) {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let high = ephemeral_low.max(11024);
    (high - 10_000, high)
}

/// Waits until something accepts connections on `port`, within [`READY_TIMEOUT`].
pub fn wait_for_port(port: u16) {
    let deadline = Instant::now() + READY_TIMEOUT;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing listens on 127.0.0.1:{port} after {READY_TIMEOUT:?}");
}

/// A child process, killed and reaped when dropped: a test that fails half-way leaves no
/// process behind.
pub struct KillOnDrop(pub Child);

impl std::ops::Deref for KillOnDrop {
    type Target = Child;

    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running `darklight` process, stopped when dropped.
pub struct Darklight {
    pub child: KillOnDrop,
    pub port: u16,
    pub dir: tempfile::TempDir,
    stderr: Arc<Mutex<String>>,
}

impl Darklight {
    /// Starts `darklight run` with `config` (YAML text; `{PORT}` is replaced by the port picked
    /// for the proxy) and waits until it listens.
    pub fn start(config: &str) -> Darklight {
        Darklight::start_with_env(config, &[])
    }

    /// [`Darklight::start`] with extra environment variables.
    pub fn start_with_env(config: &str, env: &[(&str, &str)]) -> Darklight {
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("darklight.yaml");
        std::fs::write(&path, config.replace("{PORT}", &port.to_string())).unwrap();
        let mut child = KillOnDrop(
            Command::new(env!("CARGO_BIN_EXE_darklight"))
                .args(["run", "--config"])
                .arg(&path)
                .env("RUST_LOG", "info")
                .env_remove("DARKLIGHT_COOKIE_SECRET")
                .env_remove("DARKLIGHT_COOKIE_SECRET_PREVIOUS")
                .envs(env.iter().copied())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&stderr);
        let pipe = child.stderr.take().unwrap();
        thread::spawn(move || {
            let reader = BufReader::new(pipe);
            for line in reader.lines().map_while(Result::ok) {
                let mut all = sink.lock().unwrap();
                all.push_str(&line);
                all.push('\n');
            }
        });
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "darklight exited early with {status}:\n{}",
                    stderr.lock().unwrap()
                );
            }
            assert!(
                Instant::now() < deadline,
                "darklight did not listen on {port}:\n{}",
                stderr.lock().unwrap()
            );
            thread::sleep(Duration::from_millis(50));
        }
        Darklight {
            child,
            port,
            dir,
            stderr,
        }
    }

    /// Everything the process wrote to stderr so far.
    pub fn logs(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits until the logs contain `needle`, within [`READY_TIMEOUT`].
    pub fn wait_for_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let logs = self.logs();
            if logs.contains(needle) {
                return logs;
            }
            assert!(Instant::now() < deadline, "no `{needle}` in logs:\n{logs}");
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends a signal by name (`TERM`, `INT`, `HUP`) to the process.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit, within `limit`; returns whether it exited successfully.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// First value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        first_header(&self.headers, name)
    }

    /// All values of a header.
    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// Sends raw request bytes to `port` and reads the whole response (the request should carry
/// `Connection: close`).
pub fn send_raw(port: u16, request: &[u8]) -> Response {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.write_all(request).unwrap();
    read_response(&mut BufReader::new(stream))
}

/// A GET with extra headers; `Host` defaults to `localhost`.
pub fn get(port: u16, path: &str, headers: &[(&str, &str)]) -> Response {
    request(port, "GET", path, headers, b"")
}

/// Any request with a body; adds `Host` (unless given), `Content-Length` and `Connection: close`.
pub fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let mut raw = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        raw.push_str("Host: localhost\r\n");
    }
    for (name, value) in headers {
        raw.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || method == "POST" || method == "PUT" {
        raw.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    raw.push_str("Connection: close\r\n\r\n");
    let mut bytes = raw.into_bytes();
    bytes.extend_from_slice(body);
    send_raw(port, &bytes)
}

/// Reads one HTTP/1.1 response: status line, headers, then a body framed by
/// `Content-Length`, chunked encoding, or the end of the connection.
pub fn read_response(reader: &mut impl BufRead) -> Response {
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("bad status line {line:?}"))
        .parse()
        .unwrap();
    let headers = read_headers(reader);
    let find = |name: &str| first_header(&headers, name);
    let body = if let Some(length) = find("content-length") {
        let mut body = vec![0; length.trim().parse().unwrap()];
        reader.read_exact(&mut body).unwrap();
        body
    } else if find("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        read_chunked(reader)
    } else {
        let mut body = Vec::new();
        let _ = reader.read_to_end(&mut body);
        body
    };
    Response {
        status,
        headers,
        body,
    }
}

/// First value of a header in a parsed header list, by case-insensitive name.
fn first_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn read_headers(reader: &mut impl BufRead) -> Vec<(String, String)> {
    let mut headers = Vec::new();
    loop {
        let mut raw = Vec::new();
        if reader.read_until(b'\n', &mut raw).unwrap_or(0) == 0 {
            break;
        }
        // Header values may carry any bytes; keep them readable.
        let line = String::from_utf8_lossy(&raw);
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_string(), value.trim().to_string()));
        }
    }
    headers
}

fn read_chunked(reader: &mut impl BufRead) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        reader.read_line(&mut size).unwrap();
        let size = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16).unwrap();
        if size == 0 {
            let _ = read_headers(reader);
            return body;
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..]).unwrap();
        let mut crlf = [0u8; 2];
        reader.read_exact(&mut crlf).unwrap();
    }
}

/// A request as the test upstream received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Received {
    /// All values of a header.
    pub fn header_values(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// First value of a header.
    pub fn header(&self, name: &str) -> Option<String> {
        first_header(&self.headers, name).map(str::to_string)
    }
}

/// How the test upstream answers.
#[derive(Debug, Clone, Copy)]
pub enum Behaviour {
    /// Answers 200 with a JSON summary of the request.
    Echo,
    /// Waits this long before answering.
    Delay(Duration),
}

/// A real HTTP/1.1 upstream on 127.0.0.1 that records what it received.
pub struct Upstream {
    pub port: u16,
    pub name: String,
    pub received: Arc<Mutex<Vec<Received>>>,
    pub connections: Arc<AtomicUsize>,
}

impl Upstream {
    /// Starts an upstream that echoes, named `name` (returned in `X-Upstream`).
    pub fn start(name: &str) -> Upstream {
        Upstream::start_with(name, Behaviour::Echo)
    }

    /// Starts an upstream with the given behaviour.
    pub fn start_with(name: &str, behaviour: Behaviour) -> Upstream {
        Upstream::start_on(0, name, behaviour)
    }

    /// Starts an upstream on `port` (0: any free port).
    pub fn start_on(port: u16, name: &str, behaviour: Behaviour) -> Upstream {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let (log, count, label) = (
            Arc::clone(&received),
            Arc::clone(&connections),
            name.to_string(),
        );
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                count.fetch_add(1, Ordering::SeqCst);
                let (log, label) = (Arc::clone(&log), label.clone());
                thread::spawn(move || serve_connection(stream, &log, &label, behaviour));
            }
        });
        Upstream {
            port,
            name: name.to_string(),
            received,
            connections,
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The last request received.
    pub fn last(&self) -> Received {
        self.received
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("the upstream received no request")
    }

    /// How many requests were received.
    pub fn count(&self) -> usize {
        self.received.lock().unwrap().len()
    }
}

fn serve_connection(
    stream: TcpStream,
    log: &Mutex<Vec<Received>>,
    name: &str,
    behaviour: Behaviour,
) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    while let Some(received) = read_request(&mut reader) {
        let close = received
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let summary = serde_json::json!({
            "upstream": name,
            "method": received.method,
            "target": received.target,
            "body_length": received.body.len(),
        })
        .to_string();
        let target = received.target.clone();
        log.lock().unwrap().push(received);
        if let Behaviour::Delay(delay) = behaviour {
            thread::sleep(delay);
        }
        // Paths that ask for response headers the proxy must handle with care.
        let mut extra = String::new();
        if target.starts_with("/cached") {
            extra.push_str("Cache-Control: public, max-age=600\r\n");
        }
        if target.starts_with("/app-cookie") {
            extra.push_str("Set-Cookie: app_session=abc123; Path=/; HttpOnly\r\n");
        }
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Upstream: {name}\r\n{extra}Content-Length: {}\r\n\r\n{summary}",
            summary.len()
        );
        if writer.write_all(response.as_bytes()).is_err() || close {
            let _ = writer.shutdown(Shutdown::Both);
            return;
        }
    }
}

/// Reads one HTTP/1.1 request: request line, headers, then a body framed by `Content-Length`
/// or chunked encoding. `None` when the connection ends or breaks first.
pub fn read_request(reader: &mut impl BufRead) -> Option<Received> {
    let mut raw = Vec::new();
    match reader.read_until(b'\n', &mut raw) {
        Ok(0) | Err(_) => return None,
        Ok(_) => {}
    }
    let line = String::from_utf8_lossy(&raw).into_owned();
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    let headers = read_headers(reader);
    let find = |name: &str| first_header(&headers, name);
    let body = if let Some(length) = find("content-length") {
        let mut body = vec![0; length.trim().parse().unwrap_or(0)];
        reader.read_exact(&mut body).ok()?;
        body
    } else if find("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        read_chunked(reader)
    } else {
        Vec::new()
    };
    Some(Received {
        method,
        target,
        headers,
        body,
    })
}

/// The path of a file under `tests/data`.
pub fn data(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(path)
}

/// Runs the darklight binary with arguments, returning (exit code, stdout, stderr).
pub fn darklight(args: &[&str]) -> (i32, String, String) {
    darklight_with_env(args, &[])
}

/// Like [`darklight`], with these environment variables set.
pub fn darklight_with_env(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_darklight"))
        .args(args)
        .envs(env.iter().copied())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Parses `name: value` pairs into a map (lower-case names), for convenience.
pub fn header_map(headers: &[(String, String)]) -> HashMap<String, String> {
    headers
        .iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
        .collect()
}

/// A test certificate authority and certificates it issues.
pub struct TestCa {
    pub cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl TestCa {
    pub fn new() -> TestCa {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "darklight test CA");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        TestCa { cert, key }
    }

    /// Writes a certificate for `host` (also its common name) and its key into `dir`.
    pub fn issue(&self, dir: &Path, host: &str, stem: &str) -> (PathBuf, PathBuf) {
        let mut params = rcgen::CertificateParams::new(vec![host.to_string()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, host);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        let (cert_path, key_path) = (
            dir.join(format!("{stem}.crt")),
            dir.join(format!("{stem}.key")),
        );
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path)
    }

    pub fn client(&self, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert.der().clone()).unwrap();
        let mut config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}
