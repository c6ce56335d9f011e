//! TLS to an `https://` collector: the certificate authorities trusted (a PEM file, else the
//! system's roots) and the client identity presented for mutual TLS. The files are read and
//! checked once, when the exporter is built and by `darklight check`, so a wrong path, a file
//! without a certificate or a key that does not match its certificate stops startup with the
//! file named, instead of failing every export later.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::settings::TlsFiles;

/// Why the TLS files cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file holds no PEM item of the kind expected, or a malformed one.
    #[error("{path}: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The files are readable but TLS cannot be set up with them (a key that does not match
    /// its certificate, no usable root certificate).
    #[error("{0}")]
    Setup(String),
}

/// The TLS material for one collector, read and checked.
#[derive(Debug, Clone)]
pub struct CollectorTls {
    /// The trusted authorities as PEM (for tonic) when a file was given.
    roots_pem: Option<Vec<u8>>,
    /// The client certificate chain and key as PEM (for tonic).
    identity_pem: Option<(Vec<u8>, Vec<u8>)>,
    /// The same material as a rustls configuration (for OTLP over HTTP).
    client_config: Arc<rustls::ClientConfig>,
}

impl CollectorTls {
    /// The TLS material for `endpoint`: read for an `https://` collector, `None` for a plain
    /// one, where the files are meaningless (and a variable set for other services must not
    /// stop darklight).
    pub fn for_endpoint(
        endpoint: &str,
        files: &TlsFiles,
    ) -> Result<Option<CollectorTls>, TlsError> {
        if CollectorTls::applies_to(endpoint) {
            CollectorTls::load(files).map(Some)
        } else {
            Ok(None)
        }
    }

    /// True for an `https://` endpoint, the only kind TLS is used for.
    pub fn applies_to(endpoint: &str) -> bool {
        endpoint
            .get(..8)
            .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"))
    }

    /// Reads and checks the files; without a certificate file, the system's root
    /// certificates are trusted.
    pub fn load(files: &TlsFiles) -> Result<CollectorTls, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Setup(e.to_string()))?;
        let mut roots = rustls::RootCertStore::empty();
        let roots_pem = match &files.certificate {
            Some(path) => {
                let pem = read(path)?;
                for certificate in certificates(path, &pem)? {
                    roots.add(certificate).map_err(|e| TlsError::Pem {
                        path: path.clone(),
                        reason: format!("not a usable certificate authority: {e}"),
                    })?;
                }
                Some(pem)
            }
            None => {
                // Unreadable entries of the system store are skipped, as every TLS client does.
                let native = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(native.certs);
                if roots.is_empty() {
                    return Err(TlsError::Setup(
                        "no root certificate found on this system: set otlp.certificate \
                         (or OTEL_EXPORTER_OTLP_CERTIFICATE) to the collector's authority"
                            .to_string(),
                    ));
                }
                None
            }
        };
        let builder = builder.with_root_certificates(roots);
        let (client_config, identity_pem) = match &files.client_identity {
            Some(identity) => {
                let chain_pem = read(&identity.certificate)?;
                let chain = certificates(&identity.certificate, &chain_pem)?;
                let key_pem = read(&identity.key)?;
                let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::Pem {
                    path: identity.key.clone(),
                    reason: format!("no private key: {e}"),
                })?;
                let config = builder.with_client_auth_cert(chain, key).map_err(|e| {
                    TlsError::Setup(format!(
                        "client certificate {} with key {}: {e}",
                        identity.certificate.display(),
                        identity.key.display()
                    ))
                })?;
                (config, Some((chain_pem, key_pem)))
            }
            None => (builder.with_no_client_auth(), None),
        };
        Ok(CollectorTls {
            roots_pem,
            identity_pem,
            client_config: Arc::new(client_config),
        })
    }

    /// The configuration for tonic's gRPC channel.
    pub(crate) fn grpc(&self) -> tonic::transport::ClientTlsConfig {
        let mut config = tonic::transport::ClientTlsConfig::new();
        config = match &self.roots_pem {
            Some(pem) => config.ca_certificate(tonic::transport::Certificate::from_pem(pem)),
            None => config.with_native_roots(),
        };
        if let Some((chain, key)) = &self.identity_pem {
            config = config.identity(tonic::transport::Identity::from_pem(chain, key));
        }
        config
    }

    /// The rustls configuration for OTLP over HTTP.
    pub(crate) fn http(&self) -> rustls::ClientConfig {
        rustls::ClientConfig::clone(&self.client_config)
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Every certificate of a PEM file; at least one.
fn certificates(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certificates = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_path_buf(),
            reason: format!("malformed PEM: {e}"),
        })?;
    if certificates.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_path_buf(),
            reason: "no certificate in this file (a PEM \"BEGIN CERTIFICATE\" block)".to_string(),
        });
    }
    Ok(certificates)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::settings::ClientIdentity;

    struct Issued {
        ca: String,
        certificate: String,
        key: String,
        other_key: String,
    }

    fn issue() -> Issued {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca = params.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let certificate = rcgen::CertificateParams::new(vec!["darklight".to_string()])
            .unwrap()
            .signed_by(&key, &ca, &ca_key)
            .unwrap();
        Issued {
            ca: ca.pem(),
            certificate: certificate.pem(),
            key: key.serialize_pem(),
            other_key: rcgen::KeyPair::generate().unwrap().serialize_pem(),
        }
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn loads_an_authority_and_a_client_identity() {
        let dir = tempfile::tempdir().unwrap();
        let issued = issue();
        let files = TlsFiles {
            certificate: Some(write(dir.path(), "ca.pem", &issued.ca)),
            client_identity: Some(ClientIdentity {
                certificate: write(dir.path(), "client.pem", &issued.certificate),
                key: write(dir.path(), "client.key", &issued.key),
            }),
        };
        let tls = CollectorTls::load(&files).unwrap();
        assert!(tls.http().client_auth_cert_resolver.has_certs());
        assert_eq!(tls.roots_pem.as_deref(), Some(issued.ca.as_bytes()));
    }

    #[test]
    fn bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let issued = issue();
        let ca = write(dir.path(), "ca.pem", &issued.ca);
        let not_pem = write(dir.path(), "notes.txt", "hello\n");
        let key_only = write(dir.path(), "key-only.pem", &issued.key);
        let identity = |certificate: &Path, key: &Path| TlsFiles {
            certificate: Some(ca.clone()),
            client_identity: Some(ClientIdentity {
                certificate: certificate.to_path_buf(),
                key: key.to_path_buf(),
            }),
        };
        let missing = dir.path().join("missing.pem");
        let client = write(dir.path(), "client.pem", &issued.certificate);
        let other_key = write(dir.path(), "other.key", &issued.other_key);
        // (files, text the error must contain)
        let cases = [
            (
                TlsFiles {
                    certificate: Some(missing.clone()),
                    client_identity: None,
                },
                format!("cannot read {}", missing.display()),
            ),
            (
                TlsFiles {
                    certificate: Some(not_pem.clone()),
                    client_identity: None,
                },
                format!("{}: no certificate in this file", not_pem.display()),
            ),
            (
                TlsFiles {
                    certificate: Some(key_only.clone()),
                    client_identity: None,
                },
                format!("{}: no certificate in this file", key_only.display()),
            ),
            (
                identity(&client, &not_pem),
                format!("{}: no private key", not_pem.display()),
            ),
            (
                identity(&client, &other_key),
                format!(
                    "client certificate {} with key {}",
                    client.display(),
                    other_key.display()
                ),
            ),
        ];
        for (files, expected) in cases {
            let error = CollectorTls::load(&files).unwrap_err().to_string();
            assert!(error.contains(&expected), "{error:?} lacks {expected:?}");
        }
    }
}
