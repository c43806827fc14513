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
//! - A discovery document is used only when its `issuer` is exactly the
//!   configured issuer and its `jwks_uri` is on the issuer's own origin
//!   (scheme, host, port); a configured `jwks_url` skips discovery and may
//!   point anywhere. A key set listing one `kid` twice is refused whole. A
//!   refused document counts as a failed fetch: the last good keys stay.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lc_rs::signature::{
    self, EcdsaVerificationAlgorithm, ParsedPublicKey, RsaParameters, RsaPublicKeyComponents,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, PublicKeyUse};
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
///
/// The key is parsed into aws-lc's form once, when its JWKS is read, for
/// every algorithm it may verify (the JWK's `alg` when it names one, else
/// every algorithm of its family), so a verification only runs the
/// signature check: no key parsing, no Montgomery set-up per token.
#[derive(Clone)]
pub struct VerifyingKey {
    /// The key, ready to verify, per algorithm it may verify. An algorithm
    /// missing here (a key aws-lc refuses for it) never verifies.
    parsed: Vec<(Algorithm, ParsedPublicKey)>,
    /// The JWK's `alg`, when it names one the broker knows.
    pub algorithm: Option<Algorithm>,
    /// Whether this is an RSA key (`kty: RSA`).
    pub is_rsa: bool,
    /// Whether this is an EC key (`kty: EC`).
    pub is_ec: bool,
}

/// RSA algorithms with aws-lc's parameters (2048 to 8192-bit moduli).
const RSA_ALGORITHMS: [(Algorithm, &RsaParameters); 6] = [
    (Algorithm::RS256, &signature::RSA_PKCS1_2048_8192_SHA256),
    (Algorithm::RS384, &signature::RSA_PKCS1_2048_8192_SHA384),
    (Algorithm::RS512, &signature::RSA_PKCS1_2048_8192_SHA512),
    (Algorithm::PS256, &signature::RSA_PSS_2048_8192_SHA256),
    (Algorithm::PS384, &signature::RSA_PSS_2048_8192_SHA384),
    (Algorithm::PS512, &signature::RSA_PSS_2048_8192_SHA512),
];

/// ECDSA algorithms (fixed-length `r || s` signatures, as JWS uses).
const EC_ALGORITHMS: [(Algorithm, &EcdsaVerificationAlgorithm); 2] = [
    (Algorithm::ES256, &signature::ECDSA_P256_SHA256_FIXED),
    (Algorithm::ES384, &signature::ECDSA_P384_SHA384_FIXED),
];

impl VerifyingKey {
    /// Whether `signature` is a valid `algorithm` signature of `message` by
    /// this key. The caller checks that the key may verify `algorithm`.
    pub fn verifies(&self, algorithm: Algorithm, message: &[u8], signature: &[u8]) -> bool {
        self.parsed
            .iter()
            .find(|(parsed_for, _)| *parsed_for == algorithm)
            .is_some_and(|(_, key)| key.verify_sig(message, signature).is_ok())
    }

    /// Parses a JWK's key material for every algorithm it may verify:
    /// `named` only when the JWK names one. `None` when the material is not
    /// base64url; an algorithm aws-lc refuses the key for is left out.
    fn parse(jwk: &Jwk, named: Option<Algorithm>) -> Option<Vec<(Algorithm, ParsedPublicKey)>> {
        let wanted = |algorithm: &Algorithm| named.is_none_or(|named| named == *algorithm);
        match &jwk.algorithm {
            AlgorithmParameters::RSA(rsa) => {
                let components = RsaPublicKeyComponents {
                    n: URL_SAFE_NO_PAD.decode(&rsa.n).ok()?,
                    e: URL_SAFE_NO_PAD.decode(&rsa.e).ok()?,
                };
                Some(
                    RSA_ALGORITHMS
                        .into_iter()
                        .filter(|(algorithm, _)| wanted(algorithm))
                        .filter_map(|(algorithm, params)| {
                            let key = components.to_parsed_public_key(params).ok()?;
                            Some((algorithm, key))
                        })
                        .collect(),
                )
            }
            AlgorithmParameters::EllipticCurve(ec) => {
                // The uncompressed point, 0x04 || x || y.
                let mut point = vec![0x04];
                point.extend(URL_SAFE_NO_PAD.decode(&ec.x).ok()?);
                point.extend(URL_SAFE_NO_PAD.decode(&ec.y).ok()?);
                Some(
                    EC_ALGORITHMS
                        .into_iter()
                        .filter(|(algorithm, _)| wanted(algorithm))
                        .filter_map(|(algorithm, params)| {
                            let key = ParsedPublicKey::new(params, &point).ok()?;
                            Some((algorithm, key))
                        })
                        .collect(),
                )
            }
            _ => None,
        }
    }
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
                self.log_failure(issuer, "JWKS fetch for an unknown key id failed", &err);
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
                Err(err) => self.log_failure(index, "JWKS refresh failed", &err),
            }
        }
        ok
    }

    /// Logs a failed fetch with the error's whole cause chain and what the
    /// broker does meanwhile: keep serving the last good keys, or answer 503
    /// for this issuer's tokens because it has none (yet, or any more).
    fn log_failure(&self, index: usize, what: &str, err: &FetchError) {
        let issuer = self
            .0
            .issuers
            .get(index)
            .map_or("-", |keys| keys.issuer.as_str());
        let ever_loaded = self
            .0
            .issuers
            .get(index)
            .and_then(|keys| keys.state.lock().ok().map(|state| state.last_success))
            .flatten()
            .is_some();
        if self.usable(index) {
            tracing::warn!(oidc.issuer = %issuer, error = %err, "{what}; keeping the last good keys");
        } else if ever_loaded {
            tracing::warn!(oidc.issuer = %issuer, error = %err, "{what}; the last good keys are older than jwks.max_stale_seconds: this issuer's tokens are answered 503 until a fetch succeeds");
        } else {
            tracing::warn!(oidc.issuer = %issuer, error = %err, "{what}; no keys yet: this issuer's tokens are answered 503 until a fetch succeeds");
        }
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

    /// Fetches the issuer's discovery document and returns its `jwks_uri`,
    /// after checking that the document speaks for this issuer (OpenID
    /// Connect Discovery 1.0 §4.3: `issuer` identical to the configured one)
    /// and that the key set lives on the issuer's own origin.
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
            issuer: String,
            jwks_uri: String,
        }
        let discovery: Discovery =
            serde_json::from_slice(&body).map_err(|err| FetchError::Invalid {
                url: url_text.clone(),
                reason: err.to_string(),
            })?;
        if discovery.issuer != issuer {
            return Err(FetchError::Invalid {
                url: url_text,
                reason: format!(
                    "its issuer {} is not the configured issuer",
                    shown(&discovery.issuer)
                ),
            });
        }
        let jwks_url = Url::parse(&discovery.jwks_uri).map_err(|err| FetchError::Invalid {
            url: url_text.clone(),
            reason: format!("jwks_uri: {err}"),
        })?;
        check_scheme(&jwks_url).map_err(|reason| FetchError::Invalid {
            url: url_text.clone(),
            reason: format!("jwks_uri: {reason}"),
        })?;
        let issuer_url = Url::parse(issuer).map_err(|err| FetchError::Invalid {
            url: url_text.clone(),
            reason: format!("issuer: {err}"),
        })?;
        if jwks_url.origin() != issuer_url.origin() {
            return Err(FetchError::Invalid {
                url: url_text,
                reason: format!(
                    "jwks_uri {} is not on the issuer's origin (set jwks_url in the issuer's configuration to use it)",
                    shown(jwks_url.as_str())
                ),
            });
        }
        Ok(jwks_url)
    }

    async fn get_capped(&self, url: &Url) -> Result<Vec<u8>, FetchError> {
        let limit = self.0.config.max_body_bytes;
        let http_error = |err: reqwest::Error| FetchError::Http {
            url: url.to_string(),
            reason: with_causes(&err.without_url()),
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

/// An error and its whole `source()` chain, `outer: inner: root`, so a log
/// line tells a DNS failure from a refused connection from a TLS error.
fn with_causes(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // Some errors repeat their source in their own message.
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// A string from a fetched document, quoted and cut short, for an error message.
fn shown(text: &str) -> String {
    const MAX_SHOWN_CHARS: usize = 120;
    let cut: String = text.chars().take(MAX_SHOWN_CHARS).collect();
    if cut.len() < text.len() {
        format!("{cut:?}…")
    } else {
        format!("{cut:?}")
    }
}

/// Parses a JWKS document into (kid, key) pairs. Keys without a `kid`, with a
/// `use` other than `sig`, or of a type the broker cannot verify with are
/// skipped; a document with no usable key is an error, and so is one that
/// lists a `kid` twice (which of the two keys it means is not knowable).
pub fn parse_jwks(body: &[u8]) -> Result<Vec<(String, VerifyingKey)>, String> {
    #[derive(serde::Deserialize)]
    struct RawSet {
        keys: Vec<serde_json::Value>,
    }
    let raw: RawSet = serde_json::from_slice(body).map_err(|err| format!("not a JWKS: {err}"))?;
    if raw.keys.len() > MAX_KEYS_PER_JWKS {
        return Err(format!("more than {MAX_KEYS_PER_JWKS} keys"));
    }
    let mut seen = std::collections::HashSet::new();
    for kid in raw
        .keys
        .iter()
        .filter_map(|value| value.get("kid").and_then(serde_json::Value::as_str))
    {
        if !seen.insert(kid) {
            return Err(format!("kid {} is listed more than once", shown(kid)));
        }
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
        let algorithm = jwk
            .common
            .key_algorithm
            .and_then(|alg| alg.to_string().parse::<Algorithm>().ok());
        let Some(parsed) = VerifyingKey::parse(&jwk, algorithm) else {
            continue;
        };
        out.push((
            kid,
            VerifyingKey {
                parsed,
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

    /// A JWK's key verifies the algorithms of its family, only the one it
    /// names when it names one, and nothing it did not sign.
    #[test]
    fn keys_verify_exactly_the_algorithms_they_may() {
        use aws_lc_rs::rand::SystemRandom;
        use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, RsaKeyPair};
        let rng = SystemRandom::new();
        let message = b"header.payload";

        let pem: String = include_str!("../tests/fixtures/test_key_a.pem")
            .lines()
            .filter(|line| !line.starts_with("-----"))
            .collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(pem)
            .unwrap();
        let rsa = RsaKeyPair::from_der(&der)
            .or_else(|_| RsaKeyPair::from_pkcs8(&der))
            .unwrap();
        let jwk: serde_json::Value =
            serde_json::from_str(include_str!("../tests/fixtures/test_key_a.jwk.json")).unwrap();
        let rsa_sign = |encoding: &'static dyn signature::RsaEncoding| {
            let mut out = vec![0; rsa.public_modulus_len()];
            rsa.sign(encoding, &rng, message, &mut out).unwrap();
            out
        };
        let rs256 = rsa_sign(&signature::RSA_PKCS1_SHA256);
        let ps256 = rsa_sign(&signature::RSA_PSS_SHA256);

        let ec = EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        let point = ec.public_key().as_ref();
        let es256 = ec.sign(&rng, message).unwrap().as_ref().to_vec();

        let set = serde_json::json!({"keys": [
            {"kty": "RSA", "kid": "any", "n": jwk["n"], "e": jwk["e"]},
            {"kty": "RSA", "kid": "rs256", "alg": "RS256", "n": jwk["n"], "e": jwk["e"]},
            {"kty": "EC", "kid": "ec", "crv": "P-256",
             "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..])},
        ]});
        let keys = parse_jwks(set.to_string().as_bytes()).unwrap();
        let key = |kid: &str| &keys.iter().find(|(known, _)| known == kid).unwrap().1;

        assert!(key("any").verifies(Algorithm::RS256, message, &rs256));
        assert!(key("any").verifies(Algorithm::PS256, message, &ps256));
        assert!(!key("any").verifies(Algorithm::RS384, message, &rs256));
        assert!(!key("any").verifies(Algorithm::PS256, message, &rs256));
        assert!(!key("any").verifies(Algorithm::RS256, b"header.payloaD", &rs256));
        assert!(key("rs256").verifies(Algorithm::RS256, message, &rs256));
        assert!(!key("rs256").verifies(Algorithm::PS256, message, &ps256));
        assert!(!key("rs256").verifies(Algorithm::ES256, message, &es256));

        assert!(key("ec").verifies(Algorithm::ES256, message, &es256));
        assert!(!key("ec").verifies(Algorithm::ES384, message, &es256));
        assert!(!key("ec").verifies(Algorithm::ES256, b"header.payloaD", &es256));
        assert!(!key("ec").verifies(Algorithm::RS256, message, &rs256));
    }

    #[test]
    fn a_kid_listed_twice_refuses_the_set() {
        let body = br#"{"keys": [
            {"kty": "RSA", "kid": "k1", "alg": "RS256", "use": "sig", "n": "sXch", "e": "AQAB"},
            {"kty": "RSA", "kid": "k1", "alg": "RS256", "use": "sig", "n": "sXci", "e": "AQAB"}
        ]}"#;
        let err = parse_jwks(body).unwrap_err();
        assert!(err.contains("\"k1\" is listed more than once"), "{err}");
    }

    #[test]
    fn error_messages_carry_the_cause_chain() {
        #[derive(Debug, thiserror::Error)]
        #[error("connect failed")]
        struct Outer(#[source] std::io::Error);
        let err = Outer(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "connection refused",
        ));
        assert_eq!(with_causes(&err), "connect failed: connection refused");
    }

    #[test]
    fn malformed_documents_are_errors() {
        assert!(parse_jwks(b"not json").is_err());
        assert!(parse_jwks(b"{}").is_err());
        assert!(parse_jwks(br#"{"keys": {}}"#).is_err());
    }
}
