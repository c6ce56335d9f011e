//! Pingora glue: the ready reverse-proxy app, the server that runs it, and the demo origin.

mod access_log;
pub mod app;
pub mod demo;
mod forwarded;
pub mod header_edits;
mod observe;
pub mod plugin;
pub mod reload;
pub mod server;
mod spans;
pub mod tls;
pub mod upstream;

pub use app::{DarklightProxy, ProxyState};
pub use server::{RunError, build_server};
