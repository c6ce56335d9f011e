//! TLS termination: the certificates of one listener, chosen per connection by SNI, and
//! reloadable without a restart.
//!
//! A [`CertStore`] reads each configured certificate chain and key (PEM), learns the DNS names
//! each certificate is valid for from its subject alternative names (or its common name when it
//! has none), and answers rustls' certificate question during the handshake: an exact name
//! first, then a wildcard certificate (`*.example.com`), else the first certificate configured.
//!
//! [`CertStore::reload`] re-reads the same files and swaps the whole set at once; when any file
//! is missing or invalid it returns the error and keeps serving the certificates it had, so a
//! renewal that went wrong never takes a site down. Call it on `SIGHUP` (after the
//! configuration reload), or after a certificate renewal hook.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use pingora::listeners::tls::TlsSettings;
use pingora::tls::sign::CertifiedKey;
use pingora::tls::{
    CertificateDer, ClientHello, CryptoProvider, PrivateKeyDer, ResolvesServerCert,
};

use crate::config::CertificateFiles;
use crate::lookup_map::LookupMap;

/// Why certificates could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A certificate or key file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// A file holds no usable PEM certificate or key.
    #[error("{}: {reason}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The key does not belong to the certificate, or rustls refused it.
    #[error("{} with {}: {reason}", cert.display(), key.display())]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls' message.
        reason: String,
    },
    /// The listener has no certificate at all.
    #[error("no certificate configured")]
    Empty,
    /// Pingora refused the TLS settings.
    #[error("TLS settings: {0}")]
    Settings(String),
}

/// One loaded certificate and what the status page and metrics say about it.
#[derive(Debug)]
pub struct LoadedCertificate {
    key: Arc<CertifiedKey>,
    names: Vec<String>,
    subject: String,
    not_after: i64,
    files: CertificateFiles,
}

impl LoadedCertificate {
    /// The DNS names it is served for (lower case; wildcards as `*.example.com`).
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// A name for labels: its first DNS name, else its subject.
    pub fn name(&self) -> &str {
        self.names
            .first()
            .map_or(self.subject.as_str(), String::as_str)
    }

    /// Its subject distinguished name, such as `CN=www.example.com`.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// Unix time it expires.
    pub fn not_after(&self) -> i64 {
        self.not_after
    }

    /// The files it was read from.
    pub fn files(&self) -> &CertificateFiles {
        &self.files
    }
}

/// One complete set of certificates, swapped as a whole.
#[derive(Debug, Default)]
pub struct CertificateSet {
    certificates: Vec<LoadedCertificate>,
    exact: LookupMap<String, usize>,
    wildcard: LookupMap<String, usize>,
}

impl CertificateSet {
    /// Reads and checks every certificate and key.
    pub fn load(files: &[CertificateFiles]) -> Result<CertificateSet, TlsError> {
        if files.is_empty() {
            return Err(TlsError::Empty);
        }
        pingora::tls::install_default_crypto_provider();
        let provider = CryptoProvider::get_default()
            .ok_or_else(|| TlsError::Settings("no rustls crypto provider".to_string()))?;
        let mut set = CertificateSet::default();
        for pair in files {
            let certificate = load_pair(pair, provider)?;
            let index = set.certificates.len();
            for name in &certificate.names {
                match name.strip_prefix("*.") {
                    Some(parent) => set.wildcard.entry(parent.to_string()).or_insert(index),
                    None => set.exact.entry(name.clone()).or_insert(index),
                };
            }
            set.certificates.push(certificate);
        }
        Ok(set)
    }

    /// The certificate for a client's SNI name: exact match, then wildcard, else the first.
    pub fn select(&self, server_name: Option<&str>) -> Option<&LoadedCertificate> {
        let index = server_name
            .map(|name| name.trim_end_matches('.').to_ascii_lowercase())
            .and_then(|name| {
                self.exact.get(&name).copied().or_else(|| {
                    name.split_once('.')
                        .and_then(|(_, parent)| self.wildcard.get(parent).copied())
                })
            })
            .unwrap_or(0);
        self.certificates.get(index)
    }

    /// The certificates in configuration order.
    pub fn iter(&self) -> impl Iterator<Item = &LoadedCertificate> {
        self.certificates.iter()
    }
}

/// The certificates of one TLS listener: an SNI resolver for rustls, reloadable.
#[derive(Debug)]
pub struct CertStore {
    listener: String,
    files: Mutex<Vec<CertificateFiles>>,
    current: ArcSwap<CertificateSet>,
    reloads_succeeded: AtomicU64,
    reloads_failed: AtomicU64,
}

impl CertStore {
    /// Loads the certificates for `listener` (its address, for logs and metrics).
    pub fn load(listener: &str, files: Vec<CertificateFiles>) -> Result<CertStore, TlsError> {
        let set = CertificateSet::load(&files)?;
        Ok(CertStore {
            listener: listener.to_string(),
            files: Mutex::new(files),
            current: ArcSwap::from_pointee(set),
            reloads_succeeded: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
        })
    }

    /// Re-reads the certificate and key files and swaps them in at once; new handshakes use
    /// them, established connections are not affected. On error the certificates in use stay.
    /// Returns how many certificates are now served.
    pub fn reload(&self) -> Result<usize, TlsError> {
        let files = self.files.lock().unwrap_or_else(|p| p.into_inner()).clone();
        self.swap(files)
    }

    /// Like [`CertStore::reload`] with a new list of files (after a configuration reload
    /// changed them); on error both the old files and the old certificates stay.
    pub fn replace(&self, files: Vec<CertificateFiles>) -> Result<usize, TlsError> {
        self.swap(files)
    }

    fn swap(&self, files: Vec<CertificateFiles>) -> Result<usize, TlsError> {
        match CertificateSet::load(&files) {
            Ok(set) => {
                let count = set.certificates.len();
                self.current.store(Arc::new(set));
                *self.files.lock().unwrap_or_else(|p| p.into_inner()) = files;
                self.reloads_succeeded.fetch_add(1, Ordering::Relaxed);
                tracing::info!(listener = %self.listener, certificates = count, "TLS certificates reloaded");
                Ok(count)
            }
            Err(error) => {
                self.reloads_failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(listener = %self.listener, %error, "TLS certificates not reloaded; keeping the current ones");
                Err(error)
            }
        }
    }

    /// The listener address.
    pub fn listener(&self) -> &str {
        &self.listener
    }

    /// The certificates in use now.
    pub fn certificates(&self) -> Arc<CertificateSet> {
        self.current.load_full()
    }

    /// Reloads that succeeded and that failed.
    pub fn reload_counts(&self) -> (u64, u64) {
        (
            self.reloads_succeeded.load(Ordering::Relaxed),
            self.reloads_failed.load(Ordering::Relaxed),
        )
    }

    /// Pingora listener settings that take their certificates from `store`, with HTTP/2
    /// offered through ALPN when `http2` is set.
    pub fn listener_settings(store: &Arc<CertStore>, http2: bool) -> Result<TlsSettings, TlsError> {
        let mut settings =
            TlsSettings::intermediate("", "").map_err(|e| TlsError::Settings(e.to_string()))?;
        settings.set_cert_resolver(Arc::clone(store) as Arc<dyn ResolvesServerCert>);
        if http2 {
            settings.enable_h2();
        }
        Ok(settings)
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let set = self.current.load();
        set.select(client_hello.server_name())
            .map(|c| Arc::clone(&c.key))
    }
}

fn load_pair(
    files: &CertificateFiles,
    provider: &CryptoProvider,
) -> Result<LoadedCertificate, TlsError> {
    let chain: Vec<CertificateDer<'static>> = pem_blocks(&files.cert)?
        .into_iter()
        .filter(|(label, _)| label == "CERTIFICATE")
        .map(|(_, der)| CertificateDer::from(der))
        .collect();
    let Some(leaf) = chain.first() else {
        return Err(TlsError::Invalid {
            path: files.cert.clone(),
            reason: "no PEM certificate in it".to_string(),
        });
    };
    let (names, subject, not_after) = describe(leaf).map_err(|reason| TlsError::Invalid {
        path: files.cert.clone(),
        reason,
    })?;
    let key = pem_blocks(&files.key)?
        .into_iter()
        .find(|(label, _)| label.ends_with("PRIVATE KEY"))
        .and_then(|(_, der)| PrivateKeyDer::try_from(der).ok())
        .ok_or_else(|| TlsError::Invalid {
            path: files.key.clone(),
            reason: "no PEM private key (PKCS#8, PKCS#1 or SEC1) in it".to_string(),
        })?;
    let key = CertifiedKey::from_der(chain, key, provider).map_err(|e| TlsError::Mismatch {
        cert: files.cert.clone(),
        key: files.key.clone(),
        reason: e.to_string(),
    })?;
    Ok(LoadedCertificate {
        key: Arc::new(key),
        names,
        subject,
        not_after,
        files: files.clone(),
    })
}

fn pem_blocks(path: &Path) -> Result<Vec<(String, Vec<u8>)>, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut blocks = Vec::new();
    for block in x509_parser::pem::Pem::iter_from_buffer(&bytes) {
        let block = block.map_err(|e| TlsError::Invalid {
            path: path.to_path_buf(),
            reason: format!("not valid PEM: {e}"),
        })?;
        blocks.push((block.label, block.contents));
    }
    Ok(blocks)
}

/// The DNS names, subject and expiry of a certificate.
fn describe(der: &CertificateDer<'_>) -> Result<(Vec<String>, String, i64), String> {
    use x509_parser::extensions::GeneralName;
    let (_, certificate) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| format!("not a valid X.509 certificate: {e}"))?;
    let mut names: Vec<String> = match certificate.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                GeneralName::DNSName(dns) => Some(dns.to_ascii_lowercase()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    if names.is_empty() {
        names.extend(
            certificate
                .subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok())
                .map(str::to_ascii_lowercase),
        );
    }
    Ok((
        names,
        certificate.subject().to_string(),
        certificate.validity().not_after.timestamp(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path, stem: &str, names: &[&str]) -> CertificateFiles {
        let names: Vec<String> = names.iter().map(ToString::to_string).collect();
        let certified = rcgen::generate_simple_self_signed(names).unwrap();
        let cert = dir.join(format!("{stem}.crt"));
        let key = dir.join(format!("{stem}.key"));
        std::fs::write(&cert, certified.cert.pem()).unwrap();
        std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
        CertificateFiles { cert, key }
    }

    #[test]
    fn selects_by_exact_name_then_wildcard_then_first() {
        let dir = tempfile::tempdir().unwrap();
        let a = write_pair(dir.path(), "a", &["a.example"]);
        let b = write_pair(dir.path(), "b", &["*.b.example", "b.example"]);
        let set = CertificateSet::load(&[a, b]).unwrap();
        let name = |sni: Option<&str>| set.select(sni).unwrap().name().to_string();
        assert_eq!(name(Some("a.example")), "a.example");
        assert_eq!(name(Some("A.Example.")), "a.example");
        assert_eq!(name(Some("www.b.example")), "*.b.example");
        assert_eq!(name(Some("b.example")), "*.b.example");
        assert_eq!(
            name(Some("x.www.b.example")),
            "a.example",
            "wildcards cover one label"
        );
        assert_eq!(name(None), "a.example");
        assert!(set.select(None).unwrap().not_after() > 0);
    }

    #[test]
    fn reload_swaps_and_keeps_the_old_set_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let files = write_pair(dir.path(), "site", &["old.example"]);
        let store = CertStore::load("127.0.0.1:8443", vec![files.clone()]).unwrap();
        assert_eq!(
            store.certificates().iter().next().unwrap().name(),
            "old.example"
        );
        write_pair(dir.path(), "site", &["new.example"]);
        assert_eq!(store.reload().unwrap(), 1);
        assert_eq!(
            store.certificates().iter().next().unwrap().name(),
            "new.example"
        );
        std::fs::write(&files.key, "not a key").unwrap();
        let error = store.reload().unwrap_err();
        assert!(error.to_string().contains("no PEM private key"), "{error}");
        assert_eq!(
            store.certificates().iter().next().unwrap().name(),
            "new.example"
        );
        assert_eq!(store.reload_counts(), (1, 1));
        // A key that belongs to another certificate is refused too.
        let other = write_pair(dir.path(), "other", &["other.example"]);
        std::fs::copy(&other.key, &files.key).unwrap();
        assert!(matches!(store.reload(), Err(TlsError::Mismatch { .. })));
        assert!(matches!(
            CertStore::load("x", Vec::new()),
            Err(TlsError::Empty)
        ));
    }
}
