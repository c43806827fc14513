//! Signing keys of the trusted issuers: fetched, cached and refreshed.
//!
//! Keys come only from each issuer's JWKS (found through OIDC discovery or the
//! configured `jwks_url`); nothing in a token header (`jku`, `x5u`, `jwk`,
//! `x5c`) is ever used to find one. Keys are cached in moka per (issuer, kid)
//! with a time-to-live of `max_stale_seconds`, renewed by every successful
//! fetch, so the last good keys keep serving through an outage of the issuer
//! and stop serving once they are too old.
//!
//! Invariants:
//! - A JWKS is fetched on the request path only for an unknown `kid`, at most
//!   once per `unknown_kid_cooldown_seconds` per issuer, and concurrent waiters
//!   share that one fetch: random `kid`s cannot turn the broker into a flood
//!   against the issuer.
//! - Every fetch is time-limited, size-capped, and never follows redirects.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use tokio::time::Instant;
use url::Url;

use crate::config::{IssuerConfig, JwksConfig, check_scheme};
use crate::metrics::Metrics;

/// Most keys accepted from one JWKS (GitHub publishes a handful).
const MAX_KEYS_PER_JWKS: usize = 64;
/// Longest accepted `kid`.
pub const MAX_KID_LEN: usize = 256;
/// Retry period after a failed background fetch, capped by `refresh_seconds`.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(15);

/// Why a key could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    /// The issuer's JWKS has no key with this id (after any allowed refresh).
    #[error("no key with this id in the issuer's JWKS")]
    UnknownKeyId,
    /// The issuer's keys were never fetched, or are older than `max_stale_seconds`.
    #[error("the issuer's signing keys are not available")]
    KeysUnavailable,
}

/// Why one fetch failed (logged and counted, never shown to a caller).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Network error or timeout.
    #[error("request to {url} failed: {reason}")]
    Http {
        /// Where.
        url: String,
        /// Why.
        reason: String,
    },
    /// Non-200 status (redirects included: they are not followed).
    #[error("{url} answered status {status}")]
    Status {
        /// Where.
        url: String,
        /// What.
        status: u16,
    },
    /// Body larger than `max_body_bytes`.
    #[error("{url} answered more than {limit} bytes")]
    TooLarge {
        /// Where.
        url: String,
        /// The cap.
        limit: usize,
    },
    /// Body is not the expected JSON.
    #[error("{url} answered an invalid document: {reason}")]
    Invalid {
        /// Where.
        url: String,
        /// Why.
        reason: String,
    },
}

/// A verification key with what its JWK says about its use.
#[derive(Clone)]
pub struct VerifyingKey {
    /// The key material.
    pub key: DecodingKey,
    /// The JWK's `alg`, when it names one the broker knows.
    pub algorithm: Option<Algorithm>,
    /// Whether this is an RSA key (`kty: RSA`).
    pub is_rsa: bool,
    /// Whether this is an EC key (`kty: EC`).
    pub is_ec: bool,
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// Keys of every configured issuer; cheap to clone.
#[derive(Clone)]
pub struct JwksCache(Arc<Inner>);

struct Inner {
    issuers: Vec<IssuerKeys>,
    keys: moka::sync::Cache<(usize, String), Arc<VerifyingKey>>,
    http: reqwest::Client,
    config: JwksConfig,
    metrics: Metrics,
}

struct IssuerKeys {
    issuer: String,
    configured_jwks_url: Option<Url>,
    state: Mutex<IssuerState>,
    /// Serialises fetches for this issuer; waiters for an unknown kid share the result.
    fetch_gate: tokio::sync::Mutex<Option<Instant>>,
}

#[derive(Default)]
struct IssuerState {
    kids: Vec<String>,
    jwks_url: Option<Url>,
    last_success: Option<Instant>,
    last_body_hash: Option<[u8; 32]>,
}

impl std::fmt::Debug for JwksCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwksCache")
    }
}

impl JwksCache {
    /// Creates an empty cache for `issuers`; nothing is fetched yet.
    pub fn new(
        issuers: &[IssuerConfig],
        config: &JwksConfig,
        metrics: Metrics,
    ) -> Result<Self, FetchError> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(config.fetch_timeout_seconds))
            .timeout(Duration::from_secs(config.fetch_timeout_seconds))
            .user_agent(concat!("attestation-broker/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|err| FetchError::Http {
                url: "-".into(),
                reason: err.to_string(),
            })?;
        let keys = moka::sync::Cache::builder()
            .max_capacity((issuers.len() * MAX_KEYS_PER_JWKS) as u64)
            .time_to_live(Duration::from_secs(config.max_stale_seconds))
            .build();
        let issuers = issuers
            .iter()
            .map(|issuer| IssuerKeys {
                issuer: issuer.issuer.clone(),
                configured_jwks_url: issuer.jwks_url.clone(),
                state: Mutex::new(IssuerState::default()),
                fetch_gate: tokio::sync::Mutex::new(None),
            })
            .collect();
        Ok(Self(Arc::new(Inner {
            issuers,
            keys,
            http,
            config: config.clone(),
            metrics,
        })))
    }

    /// The key `kid` of issuer number `issuer`. Fetches the JWKS only when the
    /// kid is unknown, at most once per cooldown, sharing the fetch with every
    /// concurrent caller.
    pub async fn key(&self, issuer: usize, kid: &str) -> Result<Arc<VerifyingKey>, JwksError> {
        let cache_key = (issuer, kid.to_owned());
        if let Some(key) = self.0.keys.get(&cache_key) {
            return Ok(key);
        }
        let Some(keys) = self.0.issuers.get(issuer) else {
            return Err(JwksError::UnknownKeyId);
        };
        let cooldown = Duration::from_secs(self.0.config.unknown_kid_cooldown_seconds);
        let mut last_fetch = keys.fetch_gate.lock().await;
        // Someone else may have fetched while we waited for the gate.
        if let Some(key) = self.0.keys.get(&cache_key) {
            return Ok(key);
        }
        let cooling = last_fetch.is_some_and(|at| at.elapsed() < cooldown);
        if !cooling {
            *last_fetch = Some(Instant::now());
            if let Err(err) = self.fetch_issuer(issuer).await {
                tracing::warn!(oidc.issuer = %keys.issuer, error = %err, "JWKS fetch for an unknown key id failed; keeping the last good keys");
            }
        }
        drop(last_fetch);
        if let Some(key) = self.0.keys.get(&cache_key) {
            return Ok(key);
        }
        if self.usable(issuer) {
            Err(JwksError::UnknownKeyId)
        } else {
            Err(JwksError::KeysUnavailable)
        }
    }

    /// Whether issuer number `issuer` has keys fetched within `max_stale_seconds`.
    fn usable(&self, issuer: usize) -> bool {
        let max_stale = Duration::from_secs(self.0.config.max_stale_seconds);
        self.0
            .issuers
            .get(issuer)
            .and_then(|keys| keys.state.lock().ok().and_then(|state| state.last_success))
            .is_some_and(|at| at.elapsed() <= max_stale)
    }

    /// True when every issuer has usable keys (readiness).
    pub fn ready(&self) -> bool {
        (0..self.0.issuers.len()).all(|index| self.usable(index))
    }

    /// Refreshes every issuer once; returns how many succeeded.
    pub async fn refresh_all(&self) -> usize {
        let mut ok = 0;
        for index in 0..self.0.issuers.len() {
            match self.fetch_issuer(index).await {
                Ok(()) => ok += 1,
                Err(err) => {
                    let issuer = self
                        .0
                        .issuers
                        .get(index)
                        .map_or("-", |keys| keys.issuer.as_str());
                    tracing::warn!(oidc.issuer = %issuer, error = %err, "JWKS refresh failed; keeping the last good keys");
                }
            }
        }
        ok
    }

    /// Runs the background refresh loop forever (spawn it after a first
    /// `refresh_all`): every `refresh_seconds`, sooner while a fetch fails.
    pub async fn run_refresh(self, mut all_ok: bool) {
        let period = Duration::from_secs(self.0.config.refresh_seconds);
        loop {
            let wait = if all_ok {
                period
            } else {
                period.min(RETRY_AFTER_FAILURE)
            };
            tokio::time::sleep(wait).await;
            all_ok = self.refresh_all().await == self.0.issuers.len();
        }
    }

    /// Number of configured issuers.
    pub fn issuer_count(&self) -> usize {
        self.0.issuers.len()
    }

    /// Updates the key-age gauges (called before rendering metrics).
    pub fn record_ages(&self) {
        for (index, keys) in self.0.issuers.iter().enumerate() {
            let age = keys
                .state
                .lock()
                .ok()
                .and_then(|state| state.last_success)
                .map(|at| at.elapsed().as_secs());
            self.0.metrics.set_jwks_age(index, age);
        }
        self.0.keys.run_pending_tasks();
        self.0
            .metrics
            .set_jwks_keys(usize::try_from(self.0.keys.entry_count()).unwrap_or(usize::MAX));
    }

    async fn fetch_issuer(&self, index: usize) -> Result<(), FetchError> {
        let result = self.fetch_issuer_inner(index).await;
        match &result {
            Ok(true) => self.0.metrics.jwks_refresh("ok"),
            Ok(false) => self.0.metrics.jwks_refresh("unchanged"),
            Err(_) => self.0.metrics.jwks_refresh("error"),
        }
        self.record_ages();
        result.map(|_| ())
    }

    /// Fetches one issuer's JWKS; `Ok(true)` when the key set changed.
    async fn fetch_issuer_inner(&self, index: usize) -> Result<bool, FetchError> {
        let Some(keys) = self.0.issuers.get(index) else {
            return Ok(false);
        };
        let (jwks_url, body, parsed) = self.fetch_document(keys).await?;
        let hash: [u8; 32] = {
            use sha2::Digest;
            sha2::Sha256::digest(&body).into()
        };
        let mut state = keys.state.lock().map_err(|_| FetchError::Invalid {
            url: jwks_url.to_string(),
            reason: "state poisoned".into(),
        })?;
        let changed = state.last_body_hash != Some(hash);
        for old in &state.kids {
            if !parsed.iter().any(|(kid, _)| kid == old) {
                self.0.keys.invalidate(&(index, old.clone()));
            }
        }
        state.kids = parsed.iter().map(|(kid, _)| kid.clone()).collect();
        for (kid, key) in parsed {
            self.0.keys.insert((index, kid), Arc::new(key));
        }
        state.jwks_url = Some(jwks_url);
        state.last_success = Some(Instant::now());
        state.last_body_hash = Some(hash);
        Ok(changed)
    }

    /// Fetches and parses one issuer's JWKS without touching the cache
    /// (`token inspect --issuer`).
    pub async fn fetch_key_set(
        &self,
        index: usize,
    ) -> Result<Vec<(String, VerifyingKey)>, FetchError> {
        let Some(keys) = self.0.issuers.get(index) else {
            return Err(FetchError::Invalid {
                url: "-".into(),
                reason: "no such issuer".into(),
            });
        };
        Ok(self.fetch_document(keys).await?.2)
    }

    /// Resolves the JWKS URL (configured, remembered, or discovered), fetches
    /// and parses it.
    async fn fetch_document(
        &self,
        keys: &IssuerKeys,
    ) -> Result<(Url, Vec<u8>, Vec<(String, VerifyingKey)>), FetchError> {
        let known_url = keys
            .configured_jwks_url
            .clone()
            .or_else(|| keys.state.lock().ok().and_then(|s| s.jwks_url.clone()));
        let jwks_url = match known_url {
            Some(url) => url,
            None => self.discover(&keys.issuer).await?,
        };
        let body = match self.get_capped(&jwks_url).await {
            Ok(body) => body,
            Err(err) => {
                // A moved JWKS is found again through discovery next time.
                if keys.configured_jwks_url.is_none()
                    && let Ok(mut state) = keys.state.lock()
                {
                    state.jwks_url = None;
                }
                return Err(err);
            }
        };
        let parsed = parse_jwks(&body).map_err(|reason| FetchError::Invalid {
            url: jwks_url.to_string(),
            reason,
        })?;
        Ok((jwks_url, body, parsed))
    }

    async fn discover(&self, issuer: &str) -> Result<Url, FetchError> {
        let url_text = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let url = Url::parse(&url_text).map_err(|err| FetchError::Invalid {
            url: url_text.clone(),
            reason: err.to_string(),
        })?;
        let body = self.get_capped(&url).await?;
        #[derive(serde::Deserialize)]
        struct Discovery {
            jwks_uri: String,
        }
        let discovery: Discovery =
            serde_json::from_slice(&body).map_err(|err| FetchError::Invalid {
                url: url_text.clone(),
                reason: err.to_string(),
            })?;
        let jwks_url = Url::parse(&discovery.jwks_uri).map_err(|err| FetchError::Invalid {
            url: url_text.clone(),
            reason: format!("jwks_uri: {err}"),
        })?;
        check_scheme(&jwks_url).map_err(|reason| FetchError::Invalid {
            url: url_text,
            reason: format!("jwks_uri: {reason}"),
        })?;
        Ok(jwks_url)
    }

    async fn get_capped(&self, url: &Url) -> Result<Vec<u8>, FetchError> {
        let limit = self.0.config.max_body_bytes;
        let http_error = |err: reqwest::Error| FetchError::Http {
            url: url.to_string(),
            reason: err.to_string(),
        };
        let mut response = self
            .0
            .http
            .get(url.clone())
            .send()
            .await
            .map_err(http_error)?;
        if response.status() != reqwest::StatusCode::OK {
            return Err(FetchError::Status {
                url: url.to_string(),
                status: response.status().as_u16(),
            });
        }
        if response
            .content_length()
            .is_some_and(|len| len > limit as u64)
        {
            return Err(FetchError::TooLarge {
                url: url.to_string(),
                limit,
            });
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(http_error)? {
            if body.len() + chunk.len() > limit {
                return Err(FetchError::TooLarge {
                    url: url.to_string(),
                    limit,
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

/// Parses a JWKS document into (kid, key) pairs. Keys without a `kid`, with a
/// `use` other than `sig`, or of a type the broker cannot verify with are
/// skipped; a document with no usable key is an error.
pub fn parse_jwks(body: &[u8]) -> Result<Vec<(String, VerifyingKey)>, String> {
    #[derive(serde::Deserialize)]
    struct RawSet {
        keys: Vec<serde_json::Value>,
    }
    let raw: RawSet = serde_json::from_slice(body).map_err(|err| format!("not a JWKS: {err}"))?;
    if raw.keys.len() > MAX_KEYS_PER_JWKS {
        return Err(format!("more than {MAX_KEYS_PER_JWKS} keys"));
    }
    let mut out: Vec<(String, VerifyingKey)> = Vec::new();
    for value in raw.keys {
        let Ok(jwk) = serde_json::from_value::<Jwk>(value) else {
            continue;
        };
        let Some(kid) = jwk
            .common
            .key_id
            .clone()
            .filter(|kid| !kid.is_empty() && kid.len() <= MAX_KID_LEN)
        else {
            continue;
        };
        if matches!(jwk.common.public_key_use, Some(ref usage) if *usage != PublicKeyUse::Signature)
        {
            continue;
        }
        let (is_rsa, is_ec) = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => (true, false),
            AlgorithmParameters::EllipticCurve(_) => (false, true),
            // Shared-secret and other key types can never verify a token here.
            _ => continue,
        };
        let Ok(key) = DecodingKey::from_jwk(&jwk) else {
            continue;
        };
        let algorithm = jwk
            .common
            .key_algorithm
            .and_then(|alg| alg.to_string().parse::<Algorithm>().ok());
        if out.iter().any(|(existing, _)| *existing == kid) {
            continue;
        }
        out.push((
            kid,
            VerifyingKey {
                key,
                algorithm,
                is_rsa,
                is_ec,
            },
        ));
    }
    if out.is_empty() {
        return Err("no usable signing key".into());
    }
    Ok(out)
}

/// Issuer lookup by exact `iss` string.
pub fn issuer_index(issuers: &[IssuerConfig]) -> HashMap<String, usize> {
    issuers
        .iter()
        .enumerate()
        .map(|(index, issuer)| (issuer.issuer.clone(), index))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_github_jwks_snapshots_parse() {
        for file in [
            "github_jwks_2022-08_stepsecurity.json",
            "github_jwks_2025-03_z4ce.json",
        ] {
            let path = format!("tests/fixtures/{file}");
            let Ok(body) = std::fs::read(&path) else {
                continue;
            };
            let keys = parse_jwks(&body).unwrap();
            assert!(keys.len() >= 2, "{file}");
        }
    }

    #[test]
    fn unusable_keys_are_skipped_and_an_empty_set_is_an_error() {
        let body = br#"{"keys": [
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {"kty": "RSA", "n": "sXch", "e": "AQAB"},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": "sXch", "e": "AQAB"},
            {"kty": "weird", "kid": "x"}
        ]}"#;
        assert!(parse_jwks(body).is_err());
        let body = br#"{"keys": [{"kty": "RSA", "kid": "k1", "alg": "RS256", "use": "sig", "n": "sXch", "e": "AQAB"}]}"#;
        let keys = parse_jwks(body).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].0, "k1");
        assert_eq!(keys[0].1.algorithm, Some(Algorithm::RS256));
    }

    #[test]
    fn malformed_documents_are_errors() {
        assert!(parse_jwks(b"not json").is_err());
        assert!(parse_jwks(b"{}").is_err());
        assert!(parse_jwks(br#"{"keys": {}}"#).is_err());
    }
}
