//! TLS on the Kafka listener (SSL and SASL_SSL): the acceptor built from PEM files at
//! start-up, with rustls on aws-lc-rs (the crypto provider the S3 client already uses).
//! A certificate chain, a key that matches it, and optionally CA certificates that client
//! certificates must chain to (mutual TLS). Errors name the file and what is wrong, never the
//! key's contents.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::rustls::crypto::aws_lc_rs;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the TLS certificate file {path}: {reason}")]
    Certificates { path: PathBuf, reason: String },
    #[error("cannot read the TLS key file {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("cannot read the TLS client CA file {path}: {reason}")]
    ClientCa { path: PathBuf, reason: String },
    #[error("the TLS key in {key} does not match the certificate in {cert}")]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("cannot use the TLS certificate and key: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Builds the acceptor from the certificate chain, its key and, for mutual TLS, the CA
/// certificates client certificates must chain to.
pub fn acceptor(
    cert_file: &Path,
    key_file: &Path,
    client_ca_file: Option<&Path>,
) -> Result<TlsAcceptor, TlsError> {
    let chain = certificates(cert_file).map_err(|reason| TlsError::Certificates {
        path: cert_file.to_path_buf(),
        reason,
    })?;
    let key = private_key(key_file)?;
    let provider = Arc::new(aws_lc_rs::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match client_ca_file {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let roots = client_roots(path)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|error| TlsError::ClientCa {
                    path: path.to_path_buf(),
                    reason: error.to_string(),
                })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
        .with_single_cert(chain, key)
        .map_err(|error| match error {
            rustls::Error::InconsistentKeys(_) => TlsError::KeyMismatch {
                cert: cert_file.to_path_buf(),
                key: key_file.to_path_buf(),
            },
            other => TlsError::Rustls(other),
        })?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(|error| pem_reason(&error))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| pem_reason(&error))?;
    if chain.is_empty() {
        return Err("no CERTIFICATE in PEM form".into());
    }
    Ok(chain)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|error| TlsError::Key {
        path: path.to_path_buf(),
        reason: pem_reason(&error),
    })
}

fn client_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let fail = |reason: String| TlsError::ClientCa {
        path: path.to_path_buf(),
        reason,
    };
    let mut roots = RootCertStore::empty();
    for certificate in certificates(path).map_err(fail)? {
        roots
            .add(certificate)
            .map_err(|error| fail(error.to_string()))?;
    }
    Ok(roots)
}

/// Why a PEM file could not be used, without quoting any of it (it may be a key).
fn pem_reason(error: &rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error;
    match error {
        Error::Io(io) => io.to_string(),
        Error::NoItemsFound => "no PEM section of the expected kind".into(),
        _ => "not valid PEM".into(),
    }
}
