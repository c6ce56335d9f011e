//! The OTLP exporter: each batch is encoded once by [`otlp_wire`](super::otlp_wire) and sent as
//! bytes, over gRPC (`TraceService/Export`, through tonic with a pass-through codec) or
//! HTTP/protobuf (`POST` to the traces URL), optionally gzipped, over TLS for `https://`
//! ([`otlp_tls`](super::otlp_tls)).
//!
//! Transient failures (collector unreachable, overloaded or restarting, a connection broken
//! mid-export) are retried with a doubling pause, or the wait the collector asks for
//! (`Retry-After`, `RetryInfo`), while the export's time limit (enforced by the caller) allows;
//! the encoded batch is shared between attempts, never re-encoded. A collector that accepts only part of a
//! batch ("partial success") is logged.

use std::fmt;
use std::time::{Duration, SystemTime};

use bytes::{Buf, BufMut, Bytes};
use http::uri::PathAndQuery;
use opentelemetry::InstrumentationScope;
use opentelemetry_http::HttpClient;
use opentelemetry_http::hyper::HyperClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::{Channel, Endpoint};

use super::config::{OtlpCompression, OtlpProtocol};
use super::otlp_tls::CollectorTls;
use super::otlp_wire::{encode_export_request_paced, encode_records_paced};
use super::pipeline::{Pacing, RecordExporter, Records};
use super::settings::{CollectorHeaders, TlsFiles};

/// The gRPC method of OTLP traces.
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
/// How darklight presents itself to the collector.
const USER_AGENT: &str = concat!("darklight/", env!("CARGO_PKG_VERSION"));
/// Attempts per batch, the first included.
const MAX_ATTEMPTS: u32 = 4;
/// The pause before the first retry; it doubles after each.
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(100);

/// Spans encoded or freed between two yields of the export thread. Encoding and freeing a
/// 512-span batch takes milliseconds of CPU: when the proxy shares that CPU, a request
/// arriving meanwhile would wait for all of it. A yield lets it in (about a microsecond when
/// nothing else waits); 16 spans are some 50 µs of work, about one request's.
const SLICE: usize = 16;

/// Bytes of a batch compressed between two yields of the export thread: about the size of
/// [`SLICE`] encoded spans.
const GZIP_SLICE: usize = 16 * 1024;

/// Drops `items` from the end, `slice` at a time, calling `pause` between slices.
fn release_in_slices<T>(mut items: Vec<T>, slice: usize, mut pause: impl FnMut()) {
    let slice = slice.max(1);
    while items.len() > slice {
        items.truncate(items.len() - slice);
        pause();
    }
}

/// Why the exporter could not be built.
#[derive(Debug)]
pub(crate) struct BuildError(pub(crate) String);

/// Sends encoded span batches to one collector.
pub(crate) struct OtlpExporter {
    transport: Transport,
    resource: Resource,
    pacing: Option<Pacing>,
    /// The time one export may take, retries included (the guard enforces it).
    timeout: Duration,
    compression: OtlpCompression,
}

enum Transport {
    Grpc {
        channel: Channel,
        metadata: tonic::metadata::MetadataMap,
    },
    Http {
        client: Box<dyn HttpClient>,
        uri: http::Uri,
        headers: http::HeaderMap,
    },
}

impl fmt::Debug for OtlpExporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let protocol = match self.transport {
            Transport::Grpc { .. } => "grpc",
            Transport::Http { .. } => "http/protobuf",
        };
        f.debug_struct("OtlpExporter")
            .field("protocol", &protocol)
            .finish_non_exhaustive()
    }
}

impl OtlpExporter {
    /// An exporter to `endpoint`. Never connects: the first export does. Must run inside the
    /// tokio runtime that will carry the exports (the clients bind their tasks to it).
    pub(crate) fn new(
        protocol: OtlpProtocol,
        endpoint: &str,
        timeout: Duration,
        headers: &CollectorHeaders,
        compression: OtlpCompression,
        tls: &TlsFiles,
    ) -> Result<OtlpExporter, BuildError> {
        let mut header_map = http::HeaderMap::with_capacity(headers.0.len());
        for (name, value) in &headers.0 {
            let name = http::HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| BuildError(format!("header {name:?}: {e}")))?;
            let value = http::HeaderValue::from_str(value)
                .map_err(|e| BuildError(format!("header {name}: {e}")))?;
            header_map.append(name, value);
        }
        let uri: http::Uri = endpoint
            .parse()
            .map_err(|e: http::uri::InvalidUri| BuildError(e.to_string()))?;
        let tls =
            CollectorTls::for_endpoint(endpoint, tls).map_err(|e| BuildError(e.to_string()))?;
        let transport = match protocol {
            OtlpProtocol::Grpc => {
                let mut builder = Endpoint::from_shared(endpoint.to_string())
                    .map_err(|e| BuildError(e.to_string()))?
                    .timeout(timeout)
                    .connect_timeout(timeout)
                    .user_agent(USER_AGENT)
                    .map_err(|e| BuildError(e.to_string()))?;
                if let Some(tls) = &tls {
                    builder = builder
                        .tls_config(tls.grpc())
                        .map_err(|e| BuildError(e.to_string()))?;
                }
                Transport::Grpc {
                    channel: builder.connect_lazy(),
                    metadata: tonic::metadata::MetadataMap::from_headers(header_map),
                }
            }
            OtlpProtocol::Http => {
                let client: Box<dyn HttpClient> = match &tls {
                    Some(tls) => {
                        let connector = hyper_rustls::HttpsConnectorBuilder::new()
                            .with_tls_config(tls.http())
                            .https_only()
                            .enable_http1()
                            .build();
                        Box::new(HyperClient::new(connector, timeout, None))
                    }
                    None => Box::new(HyperClient::with_default_connector(timeout, None)),
                };
                Transport::Http {
                    client,
                    uri,
                    headers: header_map,
                }
            }
        };
        Ok(OtlpExporter {
            transport,
            resource: Resource::builder_empty().build(),
            pacing: None,
            timeout,
            compression,
        })
    }

    /// Yields the export thread between slices of a batch as `pacing` allows.
    pub(crate) fn with_pacing(mut self, pacing: Pacing) -> OtlpExporter {
        self.pacing = Some(pacing);
        self
    }

    /// Sends one encoded batch once; over HTTP, `gzipped` says the body is compressed.
    async fn send(&self, body: Bytes, gzipped: bool) -> Result<(), Failure> {
        let response = match &self.transport {
            Transport::Grpc { channel, metadata } => {
                let mut client = tonic::client::Grpc::new(channel.clone());
                if self.compression == OtlpCompression::Gzip {
                    client = client.send_compressed(tonic::codec::CompressionEncoding::Gzip);
                }
                client
                    .ready()
                    .await
                    .map_err(|e| Failure::transient(unreachable(&e)))?;
                let mut request = tonic::Request::new(body);
                *request.metadata_mut() = metadata.clone();
                client
                    .unary(request, PathAndQuery::from_static(EXPORT_PATH), RawCodec)
                    .await
                    .map_err(|status| Failure::from_grpc(&status))?
                    .into_inner()
            }
            Transport::Http {
                client,
                uri,
                headers,
            } => {
                let mut request = http::Request::new(body);
                *request.method_mut() = http::Method::POST;
                *request.uri_mut() = uri.clone();
                let request_headers = request.headers_mut();
                request_headers.clone_from(headers);
                request_headers.insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/x-protobuf"),
                );
                request_headers
                    .entry(http::header::USER_AGENT)
                    .or_insert(http::HeaderValue::from_static(USER_AGENT));
                if gzipped {
                    request_headers.insert(
                        http::header::CONTENT_ENCODING,
                        http::HeaderValue::from_static("gzip"),
                    );
                }
                let response = client
                    .send_bytes(request)
                    .await
                    .map_err(|e| Failure::transient(unreachable(e.as_ref())))?;
                let status = response.status();
                if !status.is_success() {
                    return Err(Failure::from_http(status, response.headers()));
                }
                response.into_body()
            }
        };
        log_partial_success(&response);
        Ok(())
    }
}

impl SpanExporter for OtlpExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        // The guard's timeout counts from here, encoding included.
        let started = tokio::time::Instant::now();
        let mut body = Vec::new();
        let mut pause = || self.pause();
        encode_export_request_paced(&batch, &self.resource, &mut body, SLICE, &mut pause);
        release_in_slices(batch, SLICE, &mut pause);
        self.deliver(body, started).await
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.resource = resource.clone();
    }
}

impl RecordExporter for OtlpExporter {
    async fn export_records(
        &self,
        records: Records,
        scope: &InstrumentationScope,
    ) -> OTelSdkResult {
        let started = tokio::time::Instant::now();
        let mut body = Vec::new();
        let mut pause = || self.pause();
        encode_records_paced(
            &records,
            &self.resource,
            scope,
            &mut body,
            SLICE,
            &mut pause,
        );
        release_in_slices(records, SLICE, &mut pause);
        self.deliver(body, started).await
    }
}

impl OtlpExporter {
    /// Yields the export thread when pacing allows.
    fn pause(&self) {
        if let Some(pacing) = &self.pacing {
            pacing.pause();
        }
    }

    /// Compresses (over HTTP, when asked) and sends one encoded batch, retrying transient
    /// failures within the export timeout counted from `started`.
    async fn deliver(&self, body: Vec<u8>, started: tokio::time::Instant) -> OTelSdkResult {
        let mut pause = || self.pause();
        // gRPC compresses in tonic; HTTP bodies here, yielding between slices as encoding does.
        let gzip_body = matches!(self.transport, Transport::Http { .. })
            && self.compression == OtlpCompression::Gzip;
        let (body, gzipped) = if gzip_body {
            match gzip_paced(&body, GZIP_SLICE, &mut pause) {
                Ok(compressed) => (compressed, true),
                Err(error) => {
                    tracing::warn!(target: "darklight::telemetry", %error, "cannot gzip a span batch; sending it uncompressed");
                    (body, false)
                }
            }
        } else {
            (body, false)
        };
        let body = Bytes::from(body);
        let mut delay = FIRST_RETRY_DELAY;
        let mut attempt = 1;
        loop {
            match self.send(body.clone(), gzipped).await {
                Ok(()) => return Ok(()),
                Err(failure) if failure.transient && attempt < MAX_ATTEMPTS => {
                    let Some(wait) =
                        retry_wait(failure.retry_after, delay, started.elapsed(), self.timeout)
                    else {
                        return Err(OTelSdkError::InternalFailure(format!(
                            "{}; it asked to retry after {:?}, past the export timeout ({} ms)",
                            failure.message,
                            failure.retry_after.unwrap_or_default(),
                            self.timeout.as_millis()
                        )));
                    };
                    tokio::time::sleep(wait).await;
                    delay *= 2;
                    attempt += 1;
                }
                Err(failure) => return Err(OTelSdkError::InternalFailure(failure.message)),
            }
        }
    }
}

/// `body` gzipped (at the fastest level: the export thread shares the proxy's CPU), `slice`
/// bytes at a time with `pause` between.
fn gzip_paced(body: &[u8], slice: usize, mut pause: impl FnMut()) -> std::io::Result<Vec<u8>> {
    use std::io::Write as _;
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4),
        flate2::Compression::fast(),
    );
    for chunk in body.chunks(slice.max(1)) {
        encoder.write_all(chunk)?;
        pause();
    }
    encoder.finish()
}

/// "collector unreachable" with the error's causes: the clients' own messages ("transport
/// error", "client error (Connect)") hide whether the address, the TLS handshake or the
/// certificate failed.
fn unreachable(error: &(dyn std::error::Error + 'static)) -> String {
    format!(
        "collector unreachable: {}",
        crate::error_text::with_causes(error)
    )
}

/// The pause before the next attempt: the collector's `Retry-After` when it sent one, else the
/// backoff's `delay`. `None` when the collector's wait would end past the export's `timeout`
/// (`elapsed` already spent): failing the batch now beats failing it at the timeout.
fn retry_wait(
    retry_after: Option<Duration>,
    delay: Duration,
    elapsed: Duration,
    timeout: Duration,
) -> Option<Duration> {
    match retry_after {
        Some(wait) if elapsed.saturating_add(wait) >= timeout => None,
        Some(wait) => Some(wait),
        None => Some(delay),
    }
}

/// A failed send, whether trying again may succeed, and when the collector asked for it.
#[derive(Debug)]
struct Failure {
    message: String,
    transient: bool,
    retry_after: Option<Duration>,
}

impl Failure {
    fn transient(message: String) -> Failure {
        Failure {
            message,
            transient: true,
            retry_after: None,
        }
    }

    /// The gRPC codes OTLP lists as retryable.
    fn from_grpc(status: &tonic::Status) -> Failure {
        use tonic::Code;
        // A status with a transport error as its source never came from the collector: the
        // connection broke or closed during the call (a restart, a reset, a refused TLS
        // handshake). tonic reports most of these as `Unknown`; no answer came, so it is the
        // passing kind of failure that gRPC itself calls `UNAVAILABLE`.
        let transport = std::error::Error::source(status)
            .and_then(|source| source.downcast_ref::<tonic::transport::Error>());
        let transient = matches!(
            status.code(),
            Code::Cancelled
                | Code::DeadlineExceeded
                | Code::ResourceExhausted
                | Code::Aborted
                | Code::OutOfRange
                | Code::Unavailable
                | Code::DataLoss
        ) || (transport.is_some() && status.code() == Code::Unknown);
        let message = match transport {
            Some(transport) => unreachable(transport),
            None => format!("collector refused the export: {status}"),
        };
        // OTLP: a collector that is throttling says how long to wait in a `RetryInfo`.
        let retry_after = match status.code() {
            Code::ResourceExhausted | Code::Unavailable => retry_info(status.details()),
            _ => None,
        };
        Failure {
            message,
            transient,
            retry_after,
        }
    }

    /// The HTTP statuses OTLP lists as retryable, with the response's `Retry-After`.
    fn from_http(status: http::StatusCode, headers: &http::HeaderMap) -> Failure {
        let transient = matches!(status.as_u16(), 429 | 502 | 503 | 504);
        Failure {
            message: format!("collector refused the export: HTTP {status}"),
            transient,
            retry_after: if transient {
                retry_after(headers, SystemTime::now())
            } else {
                None
            },
        }
    }
}

/// The wait a `Retry-After` asks for, counted from `now`: delay-seconds (`30`) or an HTTP-date
/// (`Wed, 21 Oct 2026 07:28:00 GMT`; one already past asks for none). Anything else is
/// ignored, and the exponential backoff applies.
fn retry_after(headers: &http::HeaderMap, now: SystemTime) -> Option<Duration> {
    let text = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if text.is_empty() {
        return None;
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        // Digits only, so parsing fails only on overflow: a wait that long is past any timeout.
        return Some(Duration::from_secs(text.parse().unwrap_or(u64::MAX)));
    }
    let date = httpdate::parse_http_date(text).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

/// `google.rpc.Status`, as carried in `grpc-status-details-bin`: only its details are read.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(message, repeated, tag = "3")]
    details: Vec<ProtoAny>,
}

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, prost::Message)]
struct ProtoAny {
    #[prost(string, tag = "1")]
    type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

/// `google.rpc.RetryInfo`.
#[derive(Clone, PartialEq, prost::Message)]
struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    retry_delay: Option<ProtoDuration>,
}

/// `google.protobuf.Duration`.
#[derive(Clone, PartialEq, prost::Message)]
struct ProtoDuration {
    #[prost(int64, tag = "1")]
    seconds: i64,
    #[prost(int32, tag = "2")]
    nanos: i32,
}

const RETRY_INFO_TYPE: &str = "type.googleapis.com/google.rpc.RetryInfo";

/// The `retry_delay` of a `RetryInfo` among a gRPC status's details (the bytes of
/// `grpc-status-details-bin`). Malformed details, or a negative delay, are ignored.
fn retry_info(details: &[u8]) -> Option<Duration> {
    if details.is_empty() {
        return None;
    }
    let status = RpcStatus::decode(details).ok()?;
    let info = status
        .details
        .iter()
        .find(|any| any.type_url == RETRY_INFO_TYPE)?;
    let delay = RetryInfo::decode(info.value.as_slice()).ok()?.retry_delay?;
    let seconds = u64::try_from(delay.seconds).ok()?;
    let nanos = u32::try_from(delay.nanos)
        .ok()
        .filter(|n| *n < 1_000_000_000)?;
    Some(Duration::new(seconds, nanos))
}

fn log_partial_success(response: &[u8]) {
    let Ok(response) = ExportTraceServiceResponse::decode(response) else {
        return;
    };
    if let Some(partial) = response.partial_success
        && (partial.rejected_spans > 0 || !partial.error_message.is_empty())
    {
        tracing::warn!(
            target: "darklight::telemetry",
            rejected_spans = partial.rejected_spans,
            message = partial.error_message.as_str(),
            "the collector accepted only part of an export"
        );
    }
}

/// A gRPC codec that sends already encoded messages and hands responses back undecoded.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Self::Error> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    /// Counts its drops.
    struct Counted<'a> {
        dropped: &'a Cell<usize>,
    }

    impl Drop for Counted<'_> {
        fn drop(&mut self) {
            self.dropped.set(self.dropped.get() + 1);
        }
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        // 30 s before the date below.
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_792_567_650);
        for (value, expected) in [
            (Some("30"), Some(30)),
            (Some(" 2 "), Some(2)),
            (Some("0"), Some(0)),
            (Some("99999999999999999999999"), Some(u64::MAX)),
            (Some("Wed, 21 Oct 2026 07:28:00 GMT"), Some(30)),
            // A date already past asks for no wait.
            (Some("Wed, 21 Oct 2026 07:27:00 GMT"), Some(0)),
            (Some("Wed, 21 Oct 2026 25:28:00 GMT"), None),
            (Some("tomorrow"), None),
            (Some("-5"), None),
            (Some("1.5"), None),
            (Some(""), None),
            (None, None),
        ] {
            let mut headers = http::HeaderMap::new();
            if let Some(value) = value {
                headers.insert(
                    http::header::RETRY_AFTER,
                    http::HeaderValue::from_static(value),
                );
            }
            assert_eq!(
                retry_after(&headers, now),
                expected.map(Duration::from_secs),
                "{value:?}"
            );
        }
    }

    /// The details of a gRPC status holding `details`.
    fn status_details(details: Vec<ProtoAny>) -> Vec<u8> {
        RpcStatus { details }.encode_to_vec()
    }

    fn retry_info_any(seconds: i64, nanos: i32) -> ProtoAny {
        ProtoAny {
            type_url: RETRY_INFO_TYPE.to_string(),
            value: RetryInfo {
                retry_delay: Some(ProtoDuration { seconds, nanos }),
            }
            .encode_to_vec(),
        }
    }

    #[test]
    fn retry_info_is_read_from_the_status_details() {
        let other = ProtoAny {
            type_url: "type.googleapis.com/google.rpc.DebugInfo".to_string(),
            value: vec![1, 2, 3],
        };
        // (details, delay)
        let cases = [
            (Vec::new(), None),
            (vec![0xff, 0xff, 0xff], None),
            (status_details(vec![other.clone()]), None),
            (
                status_details(vec![other, retry_info_any(2, 500_000_000)]),
                Some(Duration::from_millis(2500)),
            ),
            (
                status_details(vec![retry_info_any(0, 0)]),
                Some(Duration::ZERO),
            ),
            (status_details(vec![retry_info_any(-1, 0)]), None),
            (status_details(vec![retry_info_any(1, -5)]), None),
            (status_details(vec![retry_info_any(1, 1_000_000_000)]), None),
        ];
        for (details, delay) in cases {
            assert_eq!(retry_info(&details), delay, "{details:?}");
        }
        // Only the throttling codes carry it.
        let details = status_details(vec![retry_info_any(3, 0)]);
        for (code, read) in [
            (tonic::Code::Unavailable, true),
            (tonic::Code::ResourceExhausted, true),
            (tonic::Code::Aborted, false),
            (tonic::Code::Internal, false),
        ] {
            let status = tonic::Status::with_details(code, "busy", details.clone().into());
            let failure = Failure::from_grpc(&status);
            assert_eq!(
                failure.retry_after,
                read.then_some(Duration::from_secs(3)),
                "{code:?}"
            );
        }
    }

    #[test]
    fn retry_wait_prefers_the_collectors_and_gives_up_past_the_timeout() {
        let ms = Duration::from_millis;
        let secs = Duration::from_secs;
        // (Retry-After, backoff, elapsed, timeout, wait)
        for (retry_after, delay, elapsed, timeout, wait) in [
            (None, ms(100), ms(0), secs(10), Some(ms(100))),
            (None, ms(400), secs(9), secs(10), Some(ms(400))),
            (Some(secs(2)), ms(100), ms(0), secs(10), Some(secs(2))),
            (Some(secs(0)), ms(100), ms(0), secs(10), Some(secs(0))),
            (Some(secs(2)), ms(100), secs(8), secs(10), None),
            (Some(secs(10)), ms(100), ms(0), secs(10), None),
            (Some(secs(u64::MAX)), ms(100), ms(1), secs(10), None),
        ] {
            assert_eq!(
                retry_wait(retry_after, delay, elapsed, timeout),
                wait,
                "{retry_after:?} after {elapsed:?} of {timeout:?}"
            );
        }
    }

    #[test]
    fn only_retryable_statuses_keep_their_retry_after() {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("7"),
        );
        for (status, transient) in [
            (429, true),
            (503, true),
            (502, true),
            (400, false),
            (500, false),
        ] {
            let status = http::StatusCode::from_u16(status).unwrap_or_default();
            let failure = Failure::from_http(status, &headers);
            assert_eq!(failure.transient, transient, "{status}");
            let expected = transient.then_some(Duration::from_secs(7));
            assert_eq!(failure.retry_after, expected, "{status}");
        }
    }

    #[test]
    fn release_frees_everything_pausing_between_slices() {
        // (items, slice, pauses)
        for (items, slice, pauses) in [
            (0, 16, 0),
            (16, 16, 0),
            (17, 16, 1),
            (40, 16, 2),
            (5, 1, 4),
            (5, 0, 4),
        ] {
            let dropped = Cell::new(0);
            let batch: Vec<Counted<'_>> =
                (0..items).map(|_| Counted { dropped: &dropped }).collect();
            let mut seen = Vec::new();
            release_in_slices(batch, slice, || seen.push(dropped.get()));
            assert_eq!(dropped.get(), items, "{items} items by {slice}");
            assert_eq!(seen.len(), pauses, "{items} items by {slice}");
            // Each pause comes after one more slice was freed.
            let slice = slice.max(1);
            for (n, freed) in seen.iter().enumerate() {
                assert_eq!(*freed, (n + 1) * slice, "{items} items by {slice}");
            }
        }
    }

    #[test]
    fn gzip_round_trips_pausing_after_each_slice() {
        use std::io::Read as _;
        // A batch-like body: repetitive, as span attributes are.
        let body: Vec<u8> = (0..50_000u32)
            .flat_map(|i| format!("url.path=/articles/{}|", i % 97).into_bytes())
            .collect();
        // (input, slice, pauses)
        for (input, slice, pauses) in [
            (&body[..], GZIP_SLICE, body.len().div_ceil(GZIP_SLICE)),
            (&body[..10], 4, 3),
            (&body[..0], GZIP_SLICE, 0),
            (&body[..3], 0, 3),
        ] {
            let mut paused = 0;
            let compressed = gzip_paced(input, slice, || paused += 1).unwrap();
            assert_eq!(paused, pauses, "{} bytes by {slice}", input.len());
            let mut decoded = Vec::new();
            flate2::read::GzDecoder::new(&compressed[..])
                .read_to_end(&mut decoded)
                .unwrap();
            assert_eq!(decoded, input);
        }
        let compressed = gzip_paced(&body, GZIP_SLICE, || {}).unwrap();
        assert!(
            compressed.len() * 5 < body.len(),
            "{} bytes gzipped to {}",
            body.len(),
            compressed.len()
        );
    }
}
