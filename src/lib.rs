//! darklight: dark social attribution as a reverse-proxy middleware.
//!
//! The crate is split into a pure core and the edges around it:
//!
//! * [`classify`] — request facts in, a [`classify::Classification`] out. No I/O, no async.
//! * [`attribution`] — the headers and signed cookies the application receives. Pure.
//! * [`correlation`] — link-preview fetches matched to later visits (bounded shared table).
//! * [`limits`] — request size limits. Pure.
//! * [`error_text`] — an error and its causes as one line. Pure.
//! * [`routing`] — which configured site answers a host. Pure.
//! * [`config`] — the YAML schema, validation with file/line/column errors.
//! * `admin` (feature `proxy`) — operator endpoints on their own listener.
//! * [`telemetry`] — one OpenTelemetry span per request, exported off the request path (span
//!   building and export with feature `telemetry`; its configuration is always there).
//! * `proxy` (feature `proxy`) — the Pingora glue: the ready reverse-proxy app, the server that
//!   runs it, and the demo origin.

#[cfg(feature = "telemetry")]
pub(crate) mod address_text;
#[cfg(feature = "proxy")]
pub mod admin;
pub mod attribution;
pub mod classify;
pub mod config;
pub mod correlation;
pub mod error_text;
pub mod limits;
pub(crate) mod lookup_map;
pub mod offline;
#[cfg(feature = "proxy")]
pub mod proxy;
pub mod routing;
pub mod telemetry;
