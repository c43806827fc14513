//! TLS on the main listener: rustls with the aws-lc-rs provider, passed
//! explicitly (no process-wide default, so no second crypto stack can be
//! picked up by accident), TLS 1.2 and 1.3 with rustls' safe defaults, ALPN
//! `http/1.1` only (the listener speaks HTTP/1 only, where every inbound limit
//! applies).
//!
//! Trusted: the certificate, key and client CA files the operator configured.
//! Nothing a peer sends changes which certificate is served or which CA
//! verifies clients.
//!
//! Invariants:
//! - a configuration is only ever built whole from one read of the files: the
//!   key must match the leaf certificate (rustls checks), and a client CA
//!   bundle must hold at least one certificate;
//! - when `client_ca` is set, every connection must present a client
//!   certificate that chains to it (anonymous clients are refused in the
//!   handshake);
//! - a reload that fails (half-written rotation, bad file) keeps the previous
//!   configuration serving; a successful one applies to new handshakes only,
//!   so open connections are never dropped by a reload.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum_server::tls_rustls::RustlsConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::Digest;

use crate::config::{ConfigError, ServerConfig};
use crate::metrics::Metrics;
use crate::reload::ReloadOutcome;

/// Largest certificate, key or CA file read; a bigger one is an error, not an allocation.
const MAX_PEM_BYTES: u64 = 1024 * 1024;

pub(crate) use crate::config::TlsFiles;

/// Why a TLS configuration could not be built. Each names the configuration
/// key and the file at fault; none carries key material.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {reason}")]
    Unreadable {
        /// Configuration key naming the file.
        key: &'static str,
        /// The file.
        path: String,
        /// The I/O error or size problem.
        reason: String,
    },
    /// A file is not PEM of the expected kind.
    #[error("{path}: {reason}")]
    BadPem {
        /// Configuration key naming the file.
        key: &'static str,
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// rustls refused the certificate, the key or their combination.
    #[error("{path}: {reason}")]
    Refused {
        /// Configuration key naming the file.
        key: &'static str,
        /// The file.
        path: String,
        /// rustls' reason (never key material).
        reason: String,
    },
}

impl TlsError {
    /// The configuration key this error is about (`server.tls_cert`, …).
    pub(crate) fn config_key(&self) -> &'static str {
        match self {
            TlsError::Unreadable { key, .. }
            | TlsError::BadPem { key, .. }
            | TlsError::Refused { key, .. } => key,
        }
    }
}

/// The files' bytes, read once, so that a configuration and the hash that
/// identifies it always come from the same read.
struct TlsBytes {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

impl TlsBytes {
    fn read(files: &TlsFiles) -> Result<Self, TlsError> {
        Ok(Self {
            cert: read_capped("server.tls_cert", &files.cert)?,
            key: read_capped("server.tls_key", &files.key)?,
            client_ca: files
                .client_ca
                .as_deref()
                .map(|path| read_capped("server.client_ca", path))
                .transpose()?,
        })
    }

    /// SHA-256 over every input, length-prefixed so files cannot run into each other.
    fn digest(&self) -> String {
        let mut hasher = sha2::Sha256::new();
        for part in [Some(&self.cert), Some(&self.key), self.client_ca.as_ref()] {
            let bytes = part.map_or(&[][..], Vec::as_slice);
            hasher.update((bytes.len() as u64).to_be_bytes());
            hasher.update(bytes);
        }
        hex::encode(hasher.finalize())
    }
}

fn read_capped(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    let unreadable = |reason: String| TlsError::Unreadable {
        key,
        path: path.display().to_string(),
        reason,
    };
    let metadata = std::fs::metadata(path).map_err(|err| unreadable(err.to_string()))?;
    if metadata.len() > MAX_PEM_BYTES {
        return Err(unreadable(format!("larger than {MAX_PEM_BYTES} bytes")));
    }
    std::fs::read(path).map_err(|err| unreadable(err.to_string()))
}

fn certificates(
    key: &'static str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bad = |reason: String| TlsError::BadPem {
        key,
        path: path.display().to_string(),
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| bad(format!("not valid PEM: {err}")))?;
    if certs.is_empty() {
        return Err(bad("no CERTIFICATE block found".to_owned()));
    }
    Ok(certs)
}

fn private_key(path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|err| TlsError::BadPem {
        key: "server.tls_key",
        path: path.display().to_string(),
        reason: match err {
            rustls::pki_types::pem::Error::NoItemsFound => {
                "no PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY block found".to_owned()
            }
            other => format!("not valid PEM: {other}"),
        },
    })
}

fn build(files: &TlsFiles, bytes: &TlsBytes) -> Result<rustls::ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let refused = |key: &'static str, path: &Path, err: rustls::Error| TlsError::Refused {
        key,
        path: path.display().to_string(),
        reason: err.to_string(),
    };
    let certs = certificates("server.tls_cert", &files.cert, &bytes.cert)?;
    let key = private_key(&files.key, &bytes.key)?;
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|err| refused("server.tls_cert", &files.cert, err))?;
    let builder = match (&files.client_ca, &bytes.client_ca) {
        (Some(path), Some(pem)) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in certificates("server.client_ca", path, pem)? {
                roots
                    .add(cert)
                    .map_err(|err| refused("server.client_ca", path, err))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                Arc::clone(&provider),
            )
            .build()
            .map_err(|err| TlsError::Refused {
                key: "server.client_ca",
                path: path.display().to_string(),
                reason: err.to_string(),
            })?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|err| match err {
            // Most often the key of another certificate, or a rotation
            // caught half-way: name the key file.
            rustls::Error::InconsistentKeys(_) => TlsError::Refused {
                key: "server.tls_key",
                path: files.key.display().to_string(),
                reason: format!(
                    "the private key does not match the certificate in {}",
                    files.cert.display()
                ),
            },
            rustls::Error::General(_) => refused("server.tls_key", &files.key, err),
            other => refused("server.tls_cert", &files.cert, other),
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Reads the files and builds a rustls server configuration from them.
pub(crate) fn load_server_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let bytes = TlsBytes::read(files)?;
    build(files, &bytes).map(Arc::new)
}

/// Checks that the TLS files `server` names (if any) build a configuration,
/// so that a certificate that does not load stops the start-up (and
/// `check-config`) with `FILE: key KEY: REASON`, not the first handshake.
/// `file` is the configuration file, for the message.
pub(crate) fn check_config(server: &ServerConfig, file: &str) -> Result<(), ConfigError> {
    match server.tls_files() {
        Some(files) => load_server_config(&files)
            .map(drop)
            .map_err(|err| ConfigError::one(file, err.config_key(), &err)),
        None => Ok(()),
    }
}

/// SHA-256 of the leaf certificate, as operators compare it with `openssl x509 -fingerprint -sha256`.
fn leaf_fingerprint(files: &TlsFiles, bytes: &TlsBytes) -> String {
    certificates("server.tls_cert", &files.cert, &bytes.cert)
        .ok()
        .and_then(|certs| certs.into_iter().next())
        .map(|leaf| hex::encode(sha2::Sha256::digest(leaf.as_ref())))
        .unwrap_or_default()
}

/// TLS of the main listener: the live configuration and what it was built from.
#[derive(Clone)]
pub(crate) struct TlsListener {
    files: TlsFiles,
    live: RustlsConfig,
    digest: String,
    handshake_timeout: Duration,
}

impl std::fmt::Debug for TlsListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsListener")
            .field("files", &self.files)
            .field("digest", &self.digest)
            .finish_non_exhaustive()
    }
}

impl TlsListener {
    /// Loads the files; fails with the key and file at fault.
    pub(crate) fn load(files: TlsFiles, handshake_timeout: Duration) -> Result<Self, TlsError> {
        let bytes = TlsBytes::read(&files)?;
        let config = build(&files, &bytes)?;
        tracing::info!(
            tls.cert = %files.cert.display(),
            tls.cert_sha256 = %leaf_fingerprint(&files, &bytes),
            tls.client_auth = files.client_ca.is_some(),
            "TLS certificate loaded"
        );
        Ok(Self {
            digest: bytes.digest(),
            live: RustlsConfig::from_config(Arc::new(config)),
            files,
            handshake_timeout,
        })
    }

    /// The acceptor for the main listener; it reads the live configuration at
    /// every handshake, so reloads reach new connections only.
    pub(crate) fn acceptor(&self) -> axum_server::tls_rustls::RustlsAcceptor {
        axum_server::tls_rustls::RustlsAcceptor::new(self.live.clone())
            .handshake_timeout(self.handshake_timeout)
    }

    /// A watcher that reloads this listener's files.
    pub(crate) fn watcher(&self, metrics: Metrics) -> TlsWatcher {
        TlsWatcher {
            files: self.files.clone(),
            live: self.live.clone(),
            loaded: self.digest.clone(),
            last_failed: None,
            metrics,
        }
    }
}

/// Reloads the certificate, key and client CA when their content changes.
pub(crate) struct TlsWatcher {
    files: TlsFiles,
    live: RustlsConfig,
    /// Digest of the files behind the live configuration.
    loaded: String,
    /// Digest of the last content that failed, reported once.
    last_failed: Option<String>,
    metrics: Metrics,
}

impl std::fmt::Debug for TlsWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsWatcher")
            .field("files", &self.files)
            .field("loaded", &self.loaded)
            .finish_non_exhaustive()
    }
}

impl TlsWatcher {
    /// Checks the files once; `force` retries even a content that failed before (SIGHUP).
    pub(crate) fn reload(&mut self, force: bool) -> ReloadOutcome {
        let bytes = match TlsBytes::read(&self.files) {
            Ok(bytes) => bytes,
            // Not remembered as failed: a missing file mid-rotation is retried at the next poll.
            Err(err) => return self.fail(&err, None),
        };
        let digest = bytes.digest();
        if digest == self.loaded || (!force && self.last_failed.as_deref() == Some(&digest)) {
            return ReloadOutcome::Unchanged;
        }
        match build(&self.files, &bytes) {
            Ok(config) => {
                self.live.reload_from_config(Arc::new(config));
                self.loaded = digest;
                self.last_failed = None;
                self.metrics.tls_reload("ok");
                let fingerprint = leaf_fingerprint(&self.files, &bytes);
                tracing::info!(tls.cert = %self.files.cert.display(), tls.cert_sha256 = %fingerprint,
                    "TLS certificate reloaded; new connections use it");
                ReloadOutcome::Replaced {
                    version: fingerprint,
                }
            }
            Err(err) => self.fail(&err, Some(digest)),
        }
    }

    fn fail(&mut self, err: &TlsError, digest: Option<String>) -> ReloadOutcome {
        self.metrics.tls_reload("error");
        self.last_failed = digest;
        tracing::error!(config.key = err.config_key(), error = %err,
            "TLS reload failed; the previous certificate stays in use");
        ReloadOutcome::Failed {
            reason: err.to_string(),
        }
    }

    /// Runs forever: reloads on SIGHUP and every `interval` (when not zero).
    /// The SIGHUP handler is installed before this returns, so a SIGHUP sent
    /// once the broker announced itself is never the default (fatal) one.
    pub(crate) fn spawn(mut self, interval: Duration) {
        let mut trigger = crate::reload::ReloadTrigger::new(interval);
        tokio::spawn(async move {
            loop {
                let force = trigger.next().await;
                if force {
                    tracing::info!(tls.cert = %self.files.cert.display(), "SIGHUP: reloading the TLS certificate");
                }
                // A few small file reads and one key parse: too brief to be
                // worth a blocking thread.
                let outcome = self.reload(force);
                tracing::debug!(?outcome, "TLS reload check");
            }
        });
    }
}

#[cfg(test)]
mod tests;
