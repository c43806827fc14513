//! Replay protection: a token's `(iss, jti)` is accepted once until `exp + leeway`.
//!
//! The store is keyed by a SHA-256 of issuer and jti, so an entry has a fixed
//! size whatever the token carries. Marking is atomic: of any number of
//! concurrent requests with the same token, exactly one sees `Fresh` — in
//! process through [`local::LocalMarks`] (insert-if-absent under a lock),
//! across replicas through Redis `SET key 1 NX PX ttl`.
//!
//! The in-process marks are bounded (`replay.max_entries`) and never forget a
//! mark before it expires: when they hold that many unexpired marks a new
//! token is refused with [`ReplayError::Full`] (the caller answers 503, and
//! never fails open on it). Evicting an older mark to make room would let
//! that token be used again.
//!
//! With Redis, every replica also keeps its own in-process marks in front of
//! it (the same bounded store as the memory store). A token this replica has
//! already admitted is refused without asking Redis, so replay protection on
//! one replica survives what Redis alone would not: with `fail_open` during
//! an outage the local marks are the fallback (concurrent copies of a token
//! on one replica are still issued once), and a Redis that lost its data (a
//! restart without persistence, a failover to a lagging replica) does not
//! re-admit a token on the replica that used it. Across replicas Redis still
//! decides. When Redis cannot answer and the broker fails closed, the local
//! mark is dropped again: nothing was issued, and the caller's retry must not
//! be taken for a replay.
//!
//! `rediss://` URLs connect with rustls on the aws-lc-rs provider, verifying
//! the server certificate and host name against the system roots, or only
//! against `replay.redis_ca_file` when it is set (a private CA).
//!
//! Every Redis operation runs under one deadline (pool wait, connect, TLS
//! handshake and command together); an error or timeout is reported as
//! [`ReplayError::Unavailable`] and the caller fails closed unless configured
//! otherwise.

mod local;
#[cfg(test)]
mod tests;

use std::path::Path;
use std::time::{Duration, Instant};

use sha2::Digest;

use crate::config::{ConfigError, RedisUrl, ReplayConfig, ReplayStoreKind};
use crate::verify::VerifiedClaims;
use local::{LocalMark, LocalMarks};

/// How long a token's mark must last: until the token stops verifying, which
/// is `exp` plus the verification leeway, counted from `now` (unix seconds);
/// at least one second, so a mark is never written already expired.
pub(crate) fn token_ttl(exp: u64, leeway_seconds: u64, now: u64) -> Duration {
    Duration::from_secs(
        exp.saturating_add(leeway_seconds)
            .saturating_sub(now)
            .max(1),
    )
}

/// Outcome of marking a token as used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mark {
    /// First use: go on.
    Fresh,
    /// Seen before: refuse.
    Replayed,
}

/// Why the store gave no answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReplayError {
    /// Redis could not answer in time. The caller fails closed unless
    /// `replay.fail_open` says otherwise.
    #[error("replay store unavailable: {0}")]
    Unavailable(String),
    /// The in-process marks hold `replay.max_entries` unexpired marks. The
    /// caller refuses, whatever `fail_open` says.
    #[error("replay store full: {0} unexpired token marks (replay.max_entries)")]
    Full(u64),
    /// `[replay]` asks for something this build cannot do.
    #[error("{key}: {reason}")]
    Config {
        /// The configuration key at fault.
        key: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

impl ReplayError {
    fn config(key: &'static str, reason: impl Into<String>) -> Self {
        ReplayError::Config {
            key,
            reason: reason.into(),
        }
    }
}

/// Where used token ids live.
#[derive(Clone)]
pub(crate) enum ReplayStore {
    /// In process (one replica).
    Memory(std::sync::Arc<LocalMarks>),
    /// Shared Redis (several replicas), behind this replica's own marks.
    Redis(RedisStore),
}

/// A pooled Redis client with a deadline on every operation, and this
/// replica's own marks in front of it.
#[derive(Clone)]
pub(crate) struct RedisStore {
    pool: deadpool_redis::Pool,
    timeout: Duration,
    local: std::sync::Arc<LocalMarks>,
    /// The caller issues when Redis cannot answer: keep the local mark then.
    fail_open: bool,
}

/// Prefix of every key the broker writes, so a shared Redis stays readable.
const REDIS_KEY_PREFIX: &str = "attestation-broker:replay:";

/// Local marks of a Redis store built by [`ReplayStore::redis`].
#[cfg(test)]
const DEFAULT_LOCAL_ENTRIES: u64 = 1_000_000;

/// Shortest time a mark is kept, ms: a token at the edge of its validity
/// still gets a mark that outlives the request.
const MIN_TTL_MILLIS: u64 = 1000;
const MIN_TTL: Duration = Duration::from_millis(MIN_TTL_MILLIS);

/// Largest accepted `replay.redis_ca_file`: a CA bundle, not a data dump.
const MAX_CA_FILE_BYTES: u64 = 1024 * 1024;

impl std::fmt::Debug for ReplayStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReplayStore::Memory(_) => f.write_str("ReplayStore::Memory"),
            ReplayStore::Redis(_) => f.write_str("ReplayStore::Redis"),
        }
    }
}

impl RedisStore {
    async fn run<T: redis::FromRedisValue>(&self, command: redis::Cmd) -> Result<T, ReplayError> {
        let work = async {
            let mut connection = self
                .pool
                .get()
                .await
                .map_err(|err| ReplayError::Unavailable(format!("no connection: {err}")))?;
            command
                .query_async::<T>(&mut connection)
                .await
                .map_err(|err| ReplayError::Unavailable(format!("command failed: {err}")))
        };
        tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| {
                ReplayError::Unavailable(format!(
                    "no answer within {} ms",
                    self.timeout.as_millis()
                ))
            })?
    }

    /// `SET key 1 NX PX ttl`: whether this call set the key.
    async fn set_once(&self, key: &[u8; 32], ttl: Duration) -> Result<bool, ReplayError> {
        let millis = u64::try_from(ttl.as_millis())
            .unwrap_or(u64::MAX)
            .max(MIN_TTL_MILLIS);
        let mut command = redis::cmd("SET");
        command
            .arg(redis_key(key))
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(millis);
        // SET … NX answers OK when it set the key and nil when the key existed.
        let set: Option<String> = self.run(command).await?;
        Ok(set.is_some())
    }
}

fn redis_key(key: &[u8; 32]) -> String {
    format!("{REDIS_KEY_PREFIX}{}", hex::encode(key))
}

fn entry_key(issuer: &str, jti: &str) -> [u8; 32] {
    let mut hasher = sha2::Sha256::new();
    hasher.update(issuer.as_bytes());
    hasher.update([0u8]);
    hasher.update(jti.as_bytes());
    hasher.finalize().into()
}

/// Marks `key` in `local` for `ttl` (at least [`MIN_TTL`]).
fn mark_local(local: &LocalMarks, key: [u8; 32], ttl: Duration) -> Result<Mark, ReplayError> {
    match local.mark(key, ttl.max(MIN_TTL), Instant::now()) {
        LocalMark::Fresh => Ok(Mark::Fresh),
        LocalMark::Replayed => Ok(Mark::Replayed),
        LocalMark::Full => Err(ReplayError::Full(local.capacity())),
    }
}

/// The Redis connection `url` (and `ca_file`, for `rediss://`) describe, as
/// the pool will use it (see [`RedisUrl`] for what the URL must be). Reads
/// `ca_file` and requires at least one usable CA certificate in it; the CA
/// then replaces the system roots for this connection.
#[cfg(test)]
pub(crate) fn redis_connection(
    url: &str,
    ca_file: Option<&Path>,
) -> Result<redis::ConnectionInfo, ReplayError> {
    let url = RedisUrl::parse(url).map_err(|reason| ReplayError::config(URL_KEY, reason))?;
    connection_with_ca(&url, ca_file)
}

const URL_KEY: &str = "replay.redis_url";
const CA_KEY: &str = "replay.redis_ca_file";

fn connection_with_ca(
    url: &RedisUrl,
    ca_file: Option<&Path>,
) -> Result<redis::ConnectionInfo, ReplayError> {
    let info = url.connection_info().clone();
    let Some(path) = ca_file else {
        return Ok(info);
    };
    if !url.is_tls() {
        return Err(ReplayError::config(
            CA_KEY,
            "a CA file needs TLS: use a rediss:// URL",
        ));
    }
    let pem = read_ca_file(path).map_err(|reason| ReplayError::config(CA_KEY, reason))?;
    let client = redis::Client::build_with_tls(
        info,
        redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(pem),
        },
    )
    .map_err(|err| ReplayError::config(CA_KEY, format!("not usable as a CA: {err}")))?;
    Ok(client.get_connection_info().clone())
}

/// Checks that the Redis CA file `config` names (if any) is usable with its
/// URL, so that a bad one stops the start-up (and `check-config`) with
/// `FILE: key KEY: REASON`. `file` is the configuration file, for the message.
pub(crate) fn check_config(config: &ReplayConfig, file: &str) -> Result<(), ConfigError> {
    let (Some(url), Some(ca_file)) = (&config.redis_url, &config.redis_ca_file) else {
        return Ok(());
    };
    connection_with_ca(url, Some(ca_file))
        .map(drop)
        .map_err(|err| match err {
            ReplayError::Config { key, reason } => ConfigError::one(file, key, reason),
            other => ConfigError::one(file, CA_KEY, other),
        })
}

/// Reads a PEM CA file and checks that every certificate in it is a usable
/// trust anchor; at least one is required.
fn read_ca_file(path: &Path) -> Result<Vec<u8>, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let shown = path.display();
    let size = std::fs::metadata(path)
        .map_err(|err| format!("cannot read {shown}: {err}"))?
        .len();
    if size > MAX_CA_FILE_BYTES {
        return Err(format!("{shown} is larger than {MAX_CA_FILE_BYTES} bytes"));
    }
    let pem = std::fs::read(path).map_err(|err| format!("cannot read {shown}: {err}"))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|err| format!("{shown} is not valid PEM: {err}"))?;
        roots
            .add(cert)
            .map_err(|err| format!("{shown}: not a usable CA certificate: {err}"))?;
    }
    if roots.is_empty() {
        return Err(format!("{shown} holds no CERTIFICATE block"));
    }
    Ok(pem)
}

impl ReplayStore {
    /// The store `[replay]` asks for.
    pub(crate) fn from_config(config: &ReplayConfig) -> Result<Self, ReplayError> {
        match config.store {
            ReplayStoreKind::Memory => Ok(Self::memory(config.max_entries)),
            ReplayStoreKind::Redis => Self::redis_with(
                connection_with_ca(
                    config
                        .redis_url
                        .as_ref()
                        .ok_or_else(|| ReplayError::config(URL_KEY, "not set"))?,
                    config.redis_ca_file.as_deref(),
                )?,
                config.redis_pool_size,
                Duration::from_millis(config.redis_timeout_ms),
                config.max_entries,
                config.fail_open,
            ),
        }
    }

    /// An in-process store remembering at most `max_entries` unexpired tokens.
    pub(crate) fn memory(max_entries: u64) -> Self {
        ReplayStore::Memory(std::sync::Arc::new(LocalMarks::new(max_entries)))
    }

    /// A Redis store at `url` with at most `pool_size` connections, failing
    /// closed; every operation (pool wait, connect, command) must finish
    /// within `timeout`. Connections are made lazily: an unreachable Redis
    /// shows in readiness.
    #[cfg(test)]
    pub(crate) fn redis(
        url: &str,
        pool_size: usize,
        timeout: Duration,
    ) -> Result<Self, ReplayError> {
        Self::redis_with(
            redis_connection(url, None)?,
            pool_size,
            timeout,
            DEFAULT_LOCAL_ENTRIES,
            false,
        )
    }

    fn redis_with(
        connection: redis::ConnectionInfo,
        pool_size: usize,
        timeout: Duration,
        local_entries: u64,
        fail_open: bool,
    ) -> Result<Self, ReplayError> {
        if matches!(connection.addr(), redis::ConnectionAddr::TcpTls { .. }) {
            // The redis crate builds its rustls config on the process-wide
            // provider: make it aws-lc-rs, the one crypto stack of this
            // binary. An error only means a provider is installed already.
            let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        }
        let manager = deadpool_redis::Manager::new(connection)
            .map_err(|err| ReplayError::config("replay.redis_url", err.to_string()))?;
        let pool = deadpool_redis::Pool::builder(manager)
            .max_size(pool_size)
            .timeouts(deadpool_redis::Timeouts {
                wait: Some(timeout),
                create: Some(timeout),
                recycle: Some(timeout),
            })
            .runtime(deadpool_redis::Runtime::Tokio1)
            .build()
            .map_err(|err| ReplayError::config("replay.redis_url", err.to_string()))?;
        Ok(ReplayStore::Redis(RedisStore {
            pool,
            timeout,
            local: std::sync::Arc::new(LocalMarks::new(local_entries)),
            fail_open,
        }))
    }

    /// Marks a verified token used until it stops verifying ([`token_ttl`]:
    /// `exp` + `leeway_seconds`, from `now`); tells whether it was already used.
    pub(crate) async fn mark_token(
        &self,
        token: &VerifiedClaims,
        leeway_seconds: u64,
        now: u64,
    ) -> Result<Mark, ReplayError> {
        let ttl = token_ttl(token.exp(), leeway_seconds, now);
        self.mark(token.issuer(), token.jti(), ttl).await
    }

    /// Forgets a verified token's mark, so a caller whose issuance failed
    /// upstream may retry with the same token.
    pub(crate) async fn release_token(&self, token: &VerifiedClaims) -> Result<(), ReplayError> {
        self.release(token.issuer(), token.jti()).await
    }

    /// Marks `(issuer, jti)` used for `ttl`; tells whether it was already used.
    pub(crate) async fn mark(
        &self,
        issuer: &str,
        jti: &str,
        ttl: Duration,
    ) -> Result<Mark, ReplayError> {
        let key = entry_key(issuer, jti);
        match self {
            ReplayStore::Memory(local) => mark_local(local, key, ttl),
            ReplayStore::Redis(store) => {
                if mark_local(&store.local, key, ttl)? == Mark::Replayed {
                    return Ok(Mark::Replayed);
                }
                match store.set_once(&key, ttl).await {
                    Ok(true) => Ok(Mark::Fresh),
                    Ok(false) => {
                        // Admitted by another replica: Redis stays the authority for
                        // it, so that replica's release frees it here too.
                        store.local.release(&key);
                        Ok(Mark::Replayed)
                    }
                    Err(err) => {
                        if !store.fail_open {
                            // The caller answers 503 and issues nothing.
                            store.local.release(&key);
                        }
                        // Failing open, the local mark stays: it is the
                        // fallback that still admits this token once here.
                        Err(err)
                    }
                }
            }
        }
    }

    /// Forgets a mark, so a caller whose issuance failed upstream may retry
    /// with the same token.
    pub(crate) async fn release(&self, issuer: &str, jti: &str) -> Result<(), ReplayError> {
        let key = entry_key(issuer, jti);
        match self {
            ReplayStore::Memory(local) => {
                local.release(&key);
                Ok(())
            }
            ReplayStore::Redis(store) => {
                store.local.release(&key);
                let mut command = redis::cmd("DEL");
                command.arg(redis_key(&key));
                let _removed: i64 = store.run(command).await?;
                Ok(())
            }
        }
    }

    /// Whether the store can currently answer (readiness).
    pub(crate) async fn healthy(&self) -> bool {
        match self {
            ReplayStore::Memory(_) => true,
            ReplayStore::Redis(store) => store.run::<String>(redis::cmd("PING")).await.is_ok(),
        }
    }
}
