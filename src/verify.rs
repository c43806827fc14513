//! Raw JWT → `VerifiedClaims`: the only place a token becomes trusted.
//!
//! Before the signature checks out, everything in the token is
//! attacker-controlled. The header's `alg` is checked against the allow-list
//! (never `none` or HMAC), its `kid` only chooses a key; `jku`, `x5u`, `jwk` and
//! `x5c` are ignored; `crit`, `b64` and `zip` are refused. The unverified `iss`
//! only chooses which issuer's key set to look in; after the signature
//! verifies, `iss` is compared exactly again.
//!
//! There is one pipeline of checks ([`CHECKS`]), run by the server, by the
//! fuzzer and by `token inspect`; all time checks take `now` as an argument,
//! so `token inspect --at` and tests run the server's code.

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};

use crate::claims::ClaimSet;
use crate::config::{Config, MAX_TOKEN_BYTES, parse_algorithm};
use crate::jwks::{JwksCache, JwksError, MAX_KID_LEN, VerifyingKey};

/// Longest accepted `jti` (GitHub's are UUIDs).
const MAX_JTI_LEN: usize = 256;
/// Longest accepted token lifetime (`exp - iat`). GitHub ID tokens live
/// minutes; a day-long token is not one, and would pin a replay-store entry
/// for as long.
const MAX_LIFETIME_SECONDS: u64 = 6 * 3600;

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// Not three base64url JSON segments, or too large.
    #[error("token is malformed: {0}")]
    Malformed(&'static str),
    /// `alg` not in the allow-list (or `none`/HMAC/unknown).
    #[error("token algorithm is not accepted")]
    AlgorithmNotAccepted,
    /// No `kid` in the header.
    #[error("token header has no kid")]
    MissingKeyId,
    /// `iss` is not a configured issuer.
    #[error("token issuer is not trusted")]
    UntrustedIssuer,
    /// The issuer has no key with this `kid`.
    #[error("no key with the token's kid")]
    UnknownKeyId,
    /// The signature does not verify with the issuer's key.
    #[error("token signature is invalid")]
    InvalidSignature,
    /// `aud` holds none of the issuer's audiences.
    #[error("token audience is not accepted")]
    AudienceMismatch,
    /// `exp` has passed, beyond the leeway.
    #[error("token has expired")]
    Expired,
    /// `nbf` is in the future, beyond the leeway.
    #[error("token is not yet valid")]
    NotYetValid,
    /// `iat` is in the future, beyond the leeway.
    #[error("token was issued in the future")]
    IssuedInFuture,
    /// A required claim is absent or of the wrong type.
    #[error("token is missing required claim {0}")]
    MissingClaim(&'static str),
    /// `exp - iat` is longer than any GitHub ID token lives.
    #[error("token lifetime is too long")]
    LifetimeTooLong,
    /// The issuer's keys are not available (never fetched, or too stale).
    #[error("the issuer's signing keys are not available")]
    KeysUnavailable,
}

impl VerifyError {
    /// Closed label for `ci_token_rejections_total{reason}` and the audit log.
    pub fn reason_code(&self) -> &'static str {
        match self {
            VerifyError::Malformed(_) => "malformed",
            VerifyError::AlgorithmNotAccepted => "algorithm",
            VerifyError::MissingKeyId => "missing_kid",
            VerifyError::UntrustedIssuer => "issuer",
            VerifyError::UnknownKeyId => "unknown_kid",
            VerifyError::InvalidSignature => "signature",
            VerifyError::AudienceMismatch => "audience",
            VerifyError::Expired => "expired",
            VerifyError::NotYetValid => "not_yet_valid",
            VerifyError::IssuedInFuture => "issued_in_future",
            VerifyError::MissingClaim(_) => "missing_claim",
            VerifyError::LifetimeTooLong => "lifetime",
            VerifyError::KeysUnavailable => "keys_unavailable",
        }
    }
}

/// One value of every variant, for other modules' unit tests (the exhaustive
/// match in `metrics::tests` keeps it complete).
#[cfg(test)]
impl VerifyError {
    pub(crate) const ALL: [Self; 13] = [
        Self::Malformed("x"),
        Self::AlgorithmNotAccepted,
        Self::MissingKeyId,
        Self::UntrustedIssuer,
        Self::UnknownKeyId,
        Self::InvalidSignature,
        Self::AudienceMismatch,
        Self::Expired,
        Self::NotYetValid,
        Self::IssuedInFuture,
        Self::MissingClaim("x"),
        Self::LifetimeTooLong,
        Self::KeysUnavailable,
    ];
}

/// Claims of a token whose signature, issuer, audience and times checked out.
/// Only this module constructs it.
#[derive(Clone, Debug)]
pub struct VerifiedClaims {
    claims: ClaimSet,
    issuer: String,
    jti: String,
    exp: u64,
    token_sha256: String,
}

impl VerifiedClaims {
    /// All scalar claims, for policy and audit.
    pub fn claims(&self) -> &ClaimSet {
        &self.claims
    }
    /// The exact issuer.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }
    /// The token id.
    pub fn jti(&self) -> &str {
        &self.jti
    }
    /// Expiry, unix seconds.
    pub fn exp(&self) -> u64 {
        self.exp
    }
    /// Hex SHA-256 of the raw token, for correlation without the token.
    pub fn token_sha256(&self) -> &str {
        &self.token_sha256
    }
}

/// Verified claims without a token, for other modules' unit tests: outside
/// tests only [`pipeline`] makes them, after a signature checked out.
#[cfg(test)]
impl VerifiedClaims {
    pub(crate) fn for_tests(claims: ClaimSet, issuer: &str, jti: &str, exp: u64) -> Self {
        Self {
            claims,
            issuer: issuer.to_owned(),
            jti: jti.to_owned(),
            exp,
            token_sha256: token_sha256(jti),
        }
    }
}

/// What the header says, parsed without trusting it. A member named twice is
/// refused (serde), so no later reader can see another `alg` or `kid`.
#[derive(Debug, serde::Deserialize)]
struct RawHeader {
    alg: String,
    kid: Option<String>,
    /// `crit` is present (any value, `null` and `[]` included).
    #[serde(default, deserialize_with = "present")]
    crit: bool,
    /// `b64` (RFC 7797 unencoded payload) is present, whatever its value.
    #[serde(default, deserialize_with = "present")]
    b64: bool,
    /// `zip` (compressed payload) is present, whatever its value.
    #[serde(default, deserialize_with = "present")]
    zip: bool,
    // The registered members never used to find a key or decide anything
    // must still have their registered types (RFC 7515 §4.1): a header that
    // misstates them is malformed, not ignored.
    #[serde(default, rename = "typ", deserialize_with = "text")]
    _typ: (),
    #[serde(default, rename = "cty", deserialize_with = "text")]
    _cty: (),
    #[serde(default, rename = "jku", deserialize_with = "text")]
    _jku: (),
    #[serde(default, rename = "x5u", deserialize_with = "text")]
    _x5u: (),
    #[serde(default, rename = "x5t", deserialize_with = "text")]
    _x5t: (),
    #[serde(default, rename = "x5t#S256", deserialize_with = "text")]
    _x5t_s256: (),
    #[serde(default, rename = "x5c", deserialize_with = "texts")]
    _x5c: (),
    #[serde(default, rename = "jwk", deserialize_with = "object")]
    _jwk: (),
}

/// A header member that must be a string.
fn text<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<(), D::Error> {
    <String as serde::Deserialize>::deserialize(deserializer).map(|_| ())
}

/// A header member that must be an array of strings.
fn texts<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<(), D::Error> {
    <Vec<String> as serde::Deserialize>::deserialize(deserializer).map(|_| ())
}

/// A header member that must be a JSON object.
fn object<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<(), D::Error> {
    <Map<String, Value> as serde::Deserialize>::deserialize(deserializer).map(|_| ())
}

/// Marks a header member as present without looking at its value.
fn present<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    <serde::de::IgnoredAny as serde::Deserialize>::deserialize(deserializer).map(|_| true)
}

struct IssuerRules {
    index: usize,
    audiences: Vec<String>,
}

/// Verifies tokens against the configured issuers; cheap to clone.
#[derive(Clone)]
pub struct Verifier(Arc<VerifierInner>);

struct VerifierInner {
    jwks: JwksCache,
    issuers: HashMap<String, IssuerRules>,
    algorithms: Vec<Algorithm>,
    leeway: u64,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Verifier")
    }
}

/// Hex SHA-256 of a token, for logs. aws-lc's SHA-256 (the one the
/// signature check uses), which picks the CPU's SHA extensions at run time.
pub fn token_sha256(token: &str) -> String {
    hex::encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        token.as_bytes(),
    ))
}

impl Verifier {
    /// Builds a verifier from the validated configuration.
    pub fn new(config: &Config, jwks: JwksCache) -> Self {
        let issuers = config
            .issuers
            .iter()
            .enumerate()
            .map(|(index, issuer)| {
                (
                    issuer.issuer.clone(),
                    IssuerRules {
                        index,
                        audiences: issuer.audiences.clone(),
                    },
                )
            })
            .collect();
        let algorithms = config.verify.algorithms.clone();
        Self(Arc::new(VerifierInner {
            jwks,
            issuers,
            algorithms,
            leeway: config.verify.leeway_seconds,
        }))
    }

    /// The key cache.
    pub fn jwks(&self) -> &JwksCache {
        &self.0.jwks
    }

    /// Verifies `token` as of `now` (unix seconds): [`pipeline`], stopping
    /// at the first failed check.
    pub async fn verify(
        &self,
        token: &SecretString,
        now: u64,
    ) -> Result<VerifiedClaims, VerifyError> {
        let rules = Rules {
            algorithms: &self.0.algorithms,
            leeway: self.0.leeway,
            now,
        };
        pipeline(
            token.expose_secret(),
            self.0.as_ref(),
            &rules,
            &mut Run::fail_fast(),
        )
        .await
    }
}

/// The configured issuers and the JWKS cache, as the server trusts them.
impl Trust for VerifierInner {
    fn issuer(&self, claimed: &str) -> Result<TrustedIssuer<'_>, VerifyError> {
        let (issuer, rules) = self
            .issuers
            .get_key_value(claimed)
            .ok_or(VerifyError::UntrustedIssuer)?;
        Ok(TrustedIssuer {
            index: rules.index,
            issuer: Some(issuer),
            audiences: Some(&rules.audiences),
        })
    }

    async fn key(
        &self,
        issuer: &TrustedIssuer<'_>,
        kid: &str,
    ) -> Result<Arc<VerifyingKey>, VerifyError> {
        self.jwks
            .key(issuer.index, kid)
            .await
            .map_err(|err| match err {
                JwksError::UnknownKeyId => VerifyError::UnknownKeyId,
                JwksError::KeysUnavailable => VerifyError::KeysUnavailable,
            })
    }
}

/// An issuer a token names, as the trust source knows it.
struct TrustedIssuer<'a> {
    /// Position in the key cache.
    index: usize,
    /// The exact `iss` to require; `None` only offline, when none was given.
    issuer: Option<&'a str>,
    /// Audiences of which `aud` must hold one; `None` only offline.
    audiences: Option<&'a [String]>,
}

/// Where [`pipeline`] finds issuers and their keys: the server's
/// configuration and JWKS cache, or keys given offline.
trait Trust {
    /// The rules for the token's unverified `iss` (which only selects them).
    fn issuer(&self, claimed: &str) -> Result<TrustedIssuer<'_>, VerifyError>;
    /// The key `kid` of `issuer`.
    async fn key(
        &self,
        issuer: &TrustedIssuer<'_>,
        kid: &str,
    ) -> Result<Arc<VerifyingKey>, VerifyError>;
}

/// Keys given offline (a JWKS file, a fetch, the fuzzer's fixture), for
/// `token inspect` and `policy explain`. Never waits.
struct OfflineTrust<'a> {
    keys: &'a [(String, VerifyingKey)],
    issuer: Option<&'a str>,
    audiences: Option<&'a [String]>,
}

impl Trust for OfflineTrust<'_> {
    fn issuer(&self, claimed: &str) -> Result<TrustedIssuer<'_>, VerifyError> {
        if self.issuer.is_some_and(|want| want != claimed) {
            return Err(VerifyError::UntrustedIssuer);
        }
        Ok(TrustedIssuer {
            index: 0,
            issuer: self.issuer,
            audiences: self.audiences,
        })
    }

    async fn key(
        &self,
        _issuer: &TrustedIssuer<'_>,
        kid: &str,
    ) -> Result<Arc<VerifyingKey>, VerifyError> {
        self.keys
            .iter()
            .find(|(known, _)| known == kid)
            .map(|(_, key)| Arc::new(key.clone()))
            .ok_or(VerifyError::UnknownKeyId)
    }
}

/// The time and algorithm rules of one verification.
struct Rules<'a> {
    algorithms: &'a [Algorithm],
    leeway: u64,
    now: u64,
}

/// Every check of [`pipeline`], in the order it runs them. The server stops
/// at the first failure; `token inspect` reports every one.
pub const CHECKS: [&str; 19] = [
    "structure",
    "algorithm",
    "kid",
    "kid_length",
    "crit",
    "b64",
    "zip",
    "issuer_trusted",
    "key",
    "signature",
    "iss",
    "aud",
    "exp",
    "nbf",
    "iat",
    "lifetime",
    "jti",
    "sub",
    "jti_length",
];

/// The checks of signature-verified claims, the last nine of [`CHECKS`].
#[allow(
    clippy::panic,
    reason = "evaluated at compile time: a shorter CHECKS fails the build"
)]
const CLAIM_CHECKS: [&str; 9] = match CHECKS.last_chunk() {
    Some(checks) => *checks,
    None => panic!("CHECKS has fewer than nine checks"),
};

/// How one check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// It ran and passed.
    Passed,
    /// It ran and failed.
    Failed,
    /// It could not run because a step it needs failed.
    Skipped,
    /// Nothing was given to check against (`token inspect` without
    /// `--issuer` or `--audience`); the server always checks it.
    NotChecked,
}

/// What one check yields inside the pipeline.
enum Step {
    Passed,
    Failed(VerifyError),
    Skipped,
    /// Not checked offline; `strict` is what a fail-fast run answers instead,
    /// since the server never accepts a token with a check left out.
    NotChecked {
        why: &'static str,
        strict: VerifyError,
    },
}

impl<T> From<&Result<T, VerifyError>> for Step {
    fn from(result: &Result<T, VerifyError>) -> Self {
        match result {
            Ok(_) => Step::Passed,
            Err(err) => Step::Failed(err.clone()),
        }
    }
}

/// Records the pipeline's checks. A fail-fast run (the server's) ends at the
/// first check that does not pass; a reporting run (`token inspect`) records
/// each one and goes on wherever a later check can still run.
struct Run {
    report: Option<Vec<Check>>,
}

impl Run {
    fn fail_fast() -> Self {
        Self { report: None }
    }

    fn reporting() -> Self {
        Self {
            report: Some(Vec::new()),
        }
    }

    fn record(&mut self, name: &'static str, step: Step) -> Result<(), VerifyError> {
        let Some(report) = &mut self.report else {
            return match step {
                Step::Passed => Ok(()),
                Step::Failed(err) | Step::NotChecked { strict: err, .. } => Err(err),
                // Unreachable in a fail-fast run (the step it depends on
                // already ended it); refused all the same.
                Step::Skipped => Err(VerifyError::Malformed("check skipped")),
            };
        };
        let (outcome, detail) = match step {
            Step::Passed => (Outcome::Passed, String::new()),
            Step::Failed(err) => (Outcome::Failed, err.to_string()),
            Step::Skipped => (
                Outcome::Skipped,
                "not checked: an earlier step failed".to_owned(),
            ),
            Step::NotChecked { why, .. } => (Outcome::NotChecked, format!("not checked: {why}")),
        };
        report.push(Check {
            name,
            passed: match outcome {
                Outcome::Passed => Some(true),
                Outcome::Failed => Some(false),
                Outcome::Skipped | Outcome::NotChecked => None,
            },
            outcome,
            detail,
        });
        Ok(())
    }

    /// Marks every check not yet recorded as skipped (after `structure` failed).
    fn skip_rest(&mut self) {
        let done = self.report.as_ref().map_or(CHECKS.len(), Vec::len);
        for name in CHECKS.into_iter().skip(done) {
            let _ = self.record(name, Step::Skipped);
        }
    }
}

fn unsupported(present: bool, what: &'static str) -> Step {
    if present {
        Step::Failed(VerifyError::Malformed(what))
    } else {
        Step::Passed
    }
}

/// The one verification pipeline: the server ([`Verifier::verify`]), the
/// fuzzer ([`fuzz_verify_offline`]) and `token inspect` ([`inspect`]) all
/// run it, so the offline tools cannot disagree with the server.
///
/// Order: structure; header (`alg` on the allow-list, `kid` present and
/// bounded, no `crit`, `b64` or `zip`: the verifier implements no extension,
/// no unencoded payload and no compression, so a token asking for one is
/// refused rather than read differently from how it was signed); the issuer
/// the unverified `iss` names; its key; the signature; then the claims of
/// the verified payload. No key is looked up (no JWKS fetch) for a token
/// whose header is refused.
async fn pipeline<T: Trust>(
    raw: &str,
    trust: &T,
    rules: &Rules<'_>,
    run: &mut Run,
) -> Result<VerifiedClaims, VerifyError> {
    let token = match split_unverified(raw) {
        Ok(token) => {
            run.record("structure", Step::Passed)?;
            token
        }
        Err(err) => {
            run.record("structure", Step::Failed(err.clone()))?;
            run.skip_rest();
            return Err(err);
        }
    };
    // Exact spelling only: `none`, `None`, `HS256` and friends never pass.
    let header = &token.header;
    let algorithm = parse_algorithm(&header.alg)
        .ok()
        .filter(|algorithm| rules.algorithms.contains(algorithm))
        .ok_or(VerifyError::AlgorithmNotAccepted);
    run.record("algorithm", Step::from(&algorithm))?;
    let kid = header
        .kid
        .as_deref()
        .filter(|kid| !kid.is_empty())
        .ok_or(VerifyError::MissingKeyId);
    run.record("kid", Step::from(&kid))?;
    let kid = match kid {
        Ok(kid) if kid.len() > MAX_KID_LEN => {
            run.record(
                "kid_length",
                Step::Failed(VerifyError::Malformed("kid too long")),
            )?;
            None
        }
        Ok(kid) => {
            run.record("kid_length", Step::Passed)?;
            Some(kid)
        }
        Err(_) => {
            run.record("kid_length", Step::Skipped)?;
            None
        }
    };
    run.record(
        "crit",
        unsupported(header.crit, "crit header parameter is not supported"),
    )?;
    run.record(
        "b64",
        unsupported(header.b64, "b64 header parameter is not supported"),
    )?;
    run.record(
        "zip",
        unsupported(header.zip, "zip header parameter is not supported"),
    )?;
    let issuer = match token.payload.get("iss").and_then(Value::as_str) {
        Some(claimed) => trust.issuer(claimed),
        None => Err(VerifyError::MissingClaim("iss")),
    };
    let issuer_step = match &issuer {
        Ok(TrustedIssuer { issuer: None, .. }) => Step::NotChecked {
            why: "no issuer given",
            strict: VerifyError::UntrustedIssuer,
        },
        other => Step::from(other),
    };
    run.record("issuer_trusted", issuer_step)?;
    let key = match (&issuer, kid) {
        (Ok(issuer), Some(kid)) => Some(trust.key(issuer, kid).await),
        _ => None,
    };
    run.record("key", key.as_ref().map_or(Step::Skipped, Step::from))?;
    let signature = match (&algorithm, &key) {
        (Ok(algorithm), Some(Ok(key))) => Some(verify_signature(raw, &token, key, *algorithm)),
        _ => None,
    };
    run.record(
        "signature",
        signature.as_ref().map_or(Step::Skipped, Step::from),
    )?;
    // A fail-fast run only gets here once the signature over the payload's
    // bytes verified; a reporting run goes on with an unverified one to show
    // the rest.
    let outcomes = claim_checks(
        &token.payload,
        issuer.as_ref().ok(),
        rules.leeway,
        rules.now,
    );
    for (name, step) in CLAIM_CHECKS.into_iter().zip(outcomes) {
        run.record(name, step)?;
    }
    accept(token.payload, raw)
}

/// Drives a pipeline over [`OfflineTrust`] (which never waits) to its end
/// without an executor; `None` if it ever waited, which it cannot.
fn run_offline<F: std::future::Future>(future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    let mut context = std::task::Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut context) {
        std::task::Poll::Ready(output) => Some(output),
        std::task::Poll::Pending => None,
    }
}

/// Fuzzing entry point, not API: [`pipeline`] as the server runs it
/// (stopping at the first failure), with one issuer whose keys are `keys`
/// instead of the JWKS cache, so `fuzz/` can drive it offline.
#[doc(hidden)]
pub fn fuzz_verify_offline(
    raw: &str,
    keys: &[(String, VerifyingKey)],
    issuer: &str,
    audiences: &[String],
    algorithms: &[Algorithm],
    leeway: u64,
    now: u64,
) -> Result<VerifiedClaims, VerifyError> {
    let trust = OfflineTrust {
        keys,
        issuer: Some(issuer),
        audiences: Some(audiences),
    };
    let rules = Rules {
        algorithms,
        leeway,
        now,
    };
    run_offline(pipeline(raw, &trust, &rules, &mut Run::fail_fast()))
        .unwrap_or(Err(VerifyError::KeysUnavailable))
}

/// Splits a compact JWS and decodes header and payload without verifying.
fn split_unverified(raw: &str) -> Result<Unverified, VerifyError> {
    if raw.len() > MAX_TOKEN_BYTES {
        return Err(VerifyError::Malformed("too large"));
    }
    let mut parts = raw.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(VerifyError::Malformed("not three segments"));
    };
    // An empty signature is left to the algorithm and signature checks, so
    // an unsigned (`alg: none`) token is reported as an algorithm refusal.
    if header.is_empty() || payload.is_empty() {
        return Err(VerifyError::Malformed("empty segment"));
    }
    let signing_input_len = header.len() + 1 + payload.len();
    let header_bytes = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| VerifyError::Malformed("header is not base64url"))?;
    let payload_bytes = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| VerifyError::Malformed("payload is not base64url"))?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| VerifyError::Malformed("signature is not base64url"))?;
    let header: RawHeader = serde_json::from_slice(&header_bytes)
        .map_err(|_| VerifyError::Malformed("header is not JSON"))?;
    let payload: Map<String, Value> = serde_json::from_slice(&payload_bytes)
        .map_err(|_| VerifyError::Malformed("payload is not a JSON object"))?;
    Ok(Unverified {
        header,
        payload,
        signing_input: signing_input_len,
        signature,
    })
}

/// A compact JWS taken apart, nothing verified yet.
struct Unverified {
    header: RawHeader,
    /// The payload, decoded from the very bytes the signature covers.
    payload: Map<String, Value>,
    /// Length of the signing input (`header.payload`, as sent) at the start
    /// of the token.
    signing_input: usize,
    /// The decoded signature.
    signature: Vec<u8>,
}

/// Shows nothing of the token: with the parts above, it could be rebuilt.
impl std::fmt::Debug for Unverified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unverified").finish_non_exhaustive()
    }
}

/// Checks the signature over the signing input (`header.payload`, exactly
/// as sent) only; the claims are checked by `claim_checks`, on the payload
/// decoded from those same bytes.
fn verify_signature(
    raw: &str,
    token: &Unverified,
    key: &VerifyingKey,
    algorithm: Algorithm,
) -> Result<(), VerifyError> {
    let family_ok = match algorithm {
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => key.is_rsa,
        Algorithm::ES256 | Algorithm::ES384 => key.is_ec,
        _ => false,
    };
    // A JWK that names its algorithm may only verify that algorithm.
    if raw.ends_with('.') || !family_ok || key.algorithm.is_some_and(|named| named != algorithm) {
        return Err(VerifyError::InvalidSignature);
    }
    let message = raw
        .as_bytes()
        .get(..token.signing_input)
        .ok_or(VerifyError::Malformed("not three segments"))?;
    if key.verifies(algorithm, message, &token.signature) {
        Ok(())
    } else {
        Err(VerifyError::InvalidSignature)
    }
}

fn numeric_claim(
    payload: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<u64>, VerifyError> {
    match payload.get(name) {
        None => Ok(None),
        Some(value) => value
            .as_u64()
            .map(Some)
            .ok_or(VerifyError::MissingClaim(name)),
    }
}

fn string_claim<'a>(
    payload: &'a Map<String, Value>,
    name: &'static str,
) -> Result<&'a str, VerifyError> {
    payload
        .get(name)
        .and_then(Value::as_str)
        .filter(|text| !text.is_empty())
        .ok_or(VerifyError::MissingClaim(name))
}

/// Every claim check of signature-verified claims, each with its outcome, in
/// `CLAIM_CHECKS` order. `expected` is the issuer the token named (`None`
/// when it is not trusted: `iss` and `aud` are then skipped).
fn claim_checks(
    payload: &Map<String, Value>,
    expected: Option<&TrustedIssuer<'_>>,
    leeway: u64,
    now: u64,
) -> [Step; CLAIM_CHECKS.len()] {
    let iss = match (expected, string_claim(payload, "iss")) {
        (_, Err(err)) => Step::Failed(err),
        (None, Ok(_)) => Step::Skipped,
        (Some(TrustedIssuer { issuer: None, .. }), Ok(_)) => Step::NotChecked {
            why: "no issuer given",
            strict: VerifyError::UntrustedIssuer,
        },
        (
            Some(TrustedIssuer {
                issuer: Some(want), ..
            }),
            Ok(found),
        ) if found == *want => Step::Passed,
        (Some(_), Ok(_)) => Step::Failed(VerifyError::UntrustedIssuer),
    };
    let aud = match (payload.get("aud"), expected.map(|issuer| issuer.audiences)) {
        (None, _) => Step::Failed(VerifyError::MissingClaim("aud")),
        (Some(_), None) => Step::Skipped,
        (Some(_), Some(None)) => Step::NotChecked {
            why: "no audience given",
            strict: VerifyError::AudienceMismatch,
        },
        (Some(aud), Some(Some(audiences))) => {
            let accepted = |aud: &str| audiences.iter().any(|want| want == aud);
            let ok = match aud {
                Value::String(aud) => accepted(aud),
                Value::Array(items) => items.iter().filter_map(Value::as_str).any(accepted),
                _ => false,
            };
            if ok {
                Step::Passed
            } else {
                Step::Failed(VerifyError::AudienceMismatch)
            }
        }
    };
    let exp =
        numeric_claim(payload, "exp").and_then(|exp| exp.ok_or(VerifyError::MissingClaim("exp")));
    let iat =
        numeric_claim(payload, "iat").and_then(|iat| iat.ok_or(VerifyError::MissingClaim("iat")));
    let exp_check = match &exp {
        Ok(exp) if exp.saturating_add(leeway) < now => Err(VerifyError::Expired),
        Ok(_) => Ok(()),
        Err(err) => Err(err.clone()),
    };
    let nbf_check = match numeric_claim(payload, "nbf") {
        Ok(Some(nbf)) if nbf > now.saturating_add(leeway) => Err(VerifyError::NotYetValid),
        Ok(_) => Ok(()),
        Err(err) => Err(err),
    };
    let iat_check = match &iat {
        Ok(iat) if *iat > now.saturating_add(leeway) => Err(VerifyError::IssuedInFuture),
        Ok(_) => Ok(()),
        Err(err) => Err(err.clone()),
    };
    let lifetime = match (&exp, &iat) {
        (Ok(exp), Ok(iat)) if exp.saturating_sub(*iat) > MAX_LIFETIME_SECONDS => {
            Err(VerifyError::LifetimeTooLong)
        }
        (Ok(_), Ok(_)) => Ok(()),
        (Err(err), _) | (_, Err(err)) => Err(err.clone()),
    };
    let jti = string_claim(payload, "jti").map(|_| ());
    // An ID token always names its subject; Actions runtime tokens do not.
    let sub = string_claim(payload, "sub").map(|_| ());
    let jti_length = match string_claim(payload, "jti") {
        Ok(jti) if jti.len() > MAX_JTI_LEN => Err(VerifyError::Malformed("jti too long")),
        _ => Ok(()),
    };
    [
        iss,
        aud,
        Step::from(&exp_check),
        Step::from(&nbf_check),
        Step::from(&iat_check),
        Step::from(&lifetime),
        Step::from(&jti),
        Step::from(&sub),
        Step::from(&jti_length),
    ]
}

/// The trusted form of claims that passed every check.
fn accept(payload: Map<String, Value>, raw: &str) -> Result<VerifiedClaims, VerifyError> {
    let issuer = string_claim(&payload, "iss")?.to_owned();
    let exp = numeric_claim(&payload, "exp")?.ok_or(VerifyError::MissingClaim("exp"))?;
    let jti = string_claim(&payload, "jti")?.to_owned();
    Ok(VerifiedClaims {
        jti,
        issuer,
        exp,
        token_sha256: token_sha256(raw),
        claims: ClaimSet::from_json_map(payload),
    })
}

/// One check of an offline inspection.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Check {
    /// What was checked: one of [`CHECKS`].
    pub name: &'static str,
    /// How it came out.
    pub outcome: Outcome,
    /// `Some(true)` passed, `Some(false)` failed, `None` skipped or not checked.
    pub passed: Option<bool>,
    /// Why it failed or was not checked.
    pub detail: String,
}

/// The verdict of an offline inspection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Every check ran and passed: the server would accept this token
    /// (policy aside).
    Verified,
    /// No check failed, but some were not checked (no issuer or audience
    /// given): the server's verdict is not known.
    Incomplete,
    /// A check failed: the server would refuse this token.
    Refused,
}

/// What `token inspect` shows: the decoded parts and every check.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Inspection {
    /// Decoded header (unverified).
    pub header: Value,
    /// Decoded claims (unverified unless `verified`).
    pub claims: Value,
    /// Every check of [`CHECKS`], in order.
    pub checks: Vec<Check>,
    /// The verdict.
    pub result: Verdict,
    /// `result == Verified`.
    pub verified: bool,
}

impl Inspection {
    /// Names of the checks that were not checked for want of an issuer or audience.
    pub fn not_checked(&self) -> Vec<&'static str> {
        self.checks
            .iter()
            .filter(|check| check.outcome == Outcome::NotChecked)
            .map(|check| check.name)
            .collect()
    }
}

/// What an offline inspection checks against.
#[derive(Debug, Clone)]
pub struct InspectRules<'a> {
    /// Keys of the issuer (from a JWKS file or a fetch).
    pub keys: &'a [(String, VerifyingKey)],
    /// The issuer to require; `None` leaves `iss` not checked (reported).
    pub issuer: Option<&'a str>,
    /// Audiences to require; `None` leaves `aud` not checked (reported).
    pub audiences: Option<&'a [String]>,
    /// Accepted algorithms.
    pub algorithms: &'a [Algorithm],
    /// Clock-skew leeway.
    pub leeway: u64,
    /// The time to check at, unix seconds.
    pub now: u64,
}

/// Runs [`pipeline`], the server's checks, offline and reports each one.
/// Used by `token inspect` and `policy explain`; makes no network call.
pub fn inspect(raw: &str, rules: &InspectRules<'_>) -> Inspection {
    let decode_part = |index: usize| -> Value {
        raw.split('.')
            .nth(index)
            .and_then(|part| URL_SAFE_NO_PAD.decode(part).ok())
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or(Value::Null)
    };
    let trust = OfflineTrust {
        keys: rules.keys,
        issuer: rules.issuer,
        audiences: rules.audiences,
    };
    let pipeline_rules = Rules {
        algorithms: rules.algorithms,
        leeway: rules.leeway,
        now: rules.now,
    };
    let mut run = Run::reporting();
    let finished = run_offline(pipeline(raw, &trust, &pipeline_rules, &mut run));
    let checks = run.report.unwrap_or_default();
    let result = if finished.is_none()
        || checks.len() != CHECKS.len()
        || checks
            .iter()
            .any(|check| matches!(check.outcome, Outcome::Failed | Outcome::Skipped))
    {
        Verdict::Refused
    } else if checks
        .iter()
        .any(|check| check.outcome == Outcome::NotChecked)
    {
        Verdict::Incomplete
    } else {
        Verdict::Verified
    };
    Inspection {
        header: decode_part(0),
        claims: decode_part(1),
        checks,
        verified: result == Verdict::Verified,
        result,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(json: serde_json::Value) -> Map<String, Value> {
        json.as_object().unwrap().clone()
    }

    fn good() -> serde_json::Value {
        serde_json::json!({"iss": "https://issuer", "aud": "aud1", "exp": 1300, "iat": 1000, "nbf": 1000, "jti": "j", "sub": "repo:o/r:ref:refs/heads/main"})
    }

    fn check(json: serde_json::Value, now: u64) -> Result<VerifiedClaims, VerifyError> {
        let audiences = ["aud1".to_owned()];
        let expected = TrustedIssuer {
            index: 0,
            issuer: Some("https://issuer"),
            audiences: Some(&audiences),
        };
        let claims = payload(json);
        let mut run = Run::fail_fast();
        for (name, step) in
            CLAIM_CHECKS
                .into_iter()
                .zip(claim_checks(&claims, Some(&expected), 10, now))
        {
            run.record(name, step)?;
        }
        accept(claims, "raw")
    }

    #[test]
    fn time_checks_apply_the_leeway() {
        assert!(check(good(), 1100).is_ok());
        assert!(
            check(good(), 1310).is_ok(),
            "expired within leeway is accepted"
        );
        assert_eq!(check(good(), 1311).unwrap_err(), VerifyError::Expired);
        assert!(check(good(), 990).is_ok(), "nbf/iat within leeway");
        assert_eq!(check(good(), 989).unwrap_err(), VerifyError::NotYetValid);
        let mut no_nbf = good();
        no_nbf.as_object_mut().unwrap().remove("nbf");
        assert_eq!(check(no_nbf, 989).unwrap_err(), VerifyError::IssuedInFuture);
    }

    #[test]
    fn required_claims() {
        for claim in ["exp", "iat", "jti", "sub", "aud", "iss"] {
            let mut json = good();
            json.as_object_mut().unwrap().remove(claim);
            let err = check(json, 1100).unwrap_err();
            assert!(
                matches!(err, VerifyError::MissingClaim(_)),
                "{claim}: {err:?}"
            );
        }
        let mut json = good();
        json["exp"] = serde_json::json!("1300");
        assert_eq!(
            check(json, 1100).unwrap_err(),
            VerifyError::MissingClaim("exp")
        );
    }

    #[test]
    fn audience_may_be_a_list_but_must_contain_ours() {
        let mut json = good();
        json["aud"] = serde_json::json!(["other", "aud1"]);
        assert!(check(json.clone(), 1100).is_ok());
        json["aud"] = serde_json::json!(["other"]);
        assert_eq!(
            check(json, 1100).unwrap_err(),
            VerifyError::AudienceMismatch
        );
    }

    #[test]
    fn issuer_must_match_exactly() {
        let mut json = good();
        json["iss"] = serde_json::json!("https://issuer/");
        assert_eq!(check(json, 1100).unwrap_err(), VerifyError::UntrustedIssuer);
    }

    #[test]
    fn long_lived_tokens_are_refused() {
        let mut json = good();
        json["exp"] = serde_json::json!(1000 + MAX_LIFETIME_SECONDS + 1);
        assert_eq!(check(json, 1100).unwrap_err(), VerifyError::LifetimeTooLong);
    }

    const ISSUER: &str = "https://issuer";

    fn keys() -> Vec<(String, VerifyingKey)> {
        let jwk: Value =
            serde_json::from_str(include_str!("../tests/fixtures/test_key_a.jwk.json")).unwrap();
        let set = serde_json::json!({"keys": [
            {"kty": "RSA", "kid": "a", "alg": "RS256", "use": "sig", "n": jwk["n"], "e": jwk["e"]}
        ]});
        crate::jwks::parse_jwks(set.to_string().as_bytes()).unwrap()
    }

    /// `header` and `claims`, signed by test key A.
    fn signed(header: Value, claims: Value) -> String {
        let body: String = include_str!("../tests/fixtures/test_key_a.pem")
            .lines()
            .filter(|line| !line.starts_with("-----"))
            .collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(body)
            .unwrap();
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = jsonwebtoken::crypto::sign(
            input.as_bytes(),
            &jsonwebtoken::EncodingKey::from_rsa_der(&der),
            Algorithm::RS256,
        )
        .unwrap();
        format!("{input}.{signature}")
    }

    fn header_with(name: &str, value: Value) -> Value {
        let mut header = serde_json::json!({"alg": "RS256", "kid": "a", "typ": "JWT"});
        header[name] = value;
        header
    }

    fn claims() -> Value {
        let mut claims = good();
        claims["iss"] = serde_json::json!(ISSUER);
        claims
    }

    fn server(raw: &str) -> Result<VerifiedClaims, VerifyError> {
        fuzz_verify_offline(
            raw,
            &keys(),
            ISSUER,
            &["aud1".to_owned()],
            &[Algorithm::RS256],
            10,
            1100,
        )
    }

    fn inspected(raw: &str, issuer: Option<&str>, audiences: Option<&[String]>) -> Inspection {
        let keys = keys();
        inspect(
            raw,
            &InspectRules {
                keys: &keys,
                issuer,
                audiences,
                algorithms: &[Algorithm::RS256],
                leeway: 10,
                now: 1100,
            },
        )
    }

    #[test]
    fn registered_header_members_of_the_wrong_type_are_malformed() {
        // Well-typed, they are ignored.
        for name in ["typ", "cty"] {
            let raw = signed(header_with(name, "JWT".into()), claims());
            assert!(server(&raw).is_ok(), "{name}");
        }
        for (name, value) in [
            ("typ", serde_json::json!(5)),
            ("cty", serde_json::json!(["JWT"])),
            ("jku", serde_json::json!(1)),
            ("x5u", serde_json::json!({})),
            ("x5t", serde_json::json!(true)),
            ("x5c", serde_json::json!("MIIB")),
            ("jwk", serde_json::json!("key")),
        ] {
            let raw = signed(header_with(name, value.clone()), claims());
            let err = server(&raw).unwrap_err();
            assert_eq!(err.reason_code(), "malformed", "{name}: {value}");
        }
    }

    #[test]
    fn crit_b64_and_zip_are_refused_behind_a_valid_signature() {
        assert!(server(&signed(header_with("typ", "JWT".into()), claims())).is_ok());
        for (name, value) in [
            ("crit", serde_json::json!(["exp"])),
            ("crit", serde_json::json!([])),
            ("crit", Value::Null),
            ("b64", serde_json::json!(false)),
            ("b64", serde_json::json!(true)),
            ("zip", serde_json::json!("DEF")),
        ] {
            let raw = signed(header_with(name, value.clone()), claims());
            let err = server(&raw).unwrap_err();
            assert_eq!(err.reason_code(), "malformed", "{name}: {value}");
            assert!(err.to_string().contains(name), "{err}");
        }
    }

    #[test]
    fn inspect_reports_the_servers_checks_and_first_failure() {
        let audiences = ["aud1".to_owned()];
        let long_kid = "k".repeat(MAX_KID_LEN + 1);
        let mut wrong_issuer = claims();
        wrong_issuer["iss"] = serde_json::json!("https://elsewhere");
        let tokens = [
            signed(header_with("typ", "JWT".into()), claims()),
            signed(header_with("crit", serde_json::json!(["exp"])), claims()),
            signed(header_with("b64", false.into()), claims()),
            signed(header_with("zip", "DEF".into()), claims()),
            signed(header_with("kid", long_kid.into()), claims()),
            signed(header_with("alg", "none".into()), claims()),
            signed(header_with("kid", "unknown".into()), claims()),
            signed(header_with("typ", "JWT".into()), wrong_issuer),
            "not.a.token!".to_owned(),
        ];
        for raw in &tokens {
            let report = inspected(raw, Some(ISSUER), Some(&audiences));
            let names: Vec<&str> = report.checks.iter().map(|check| check.name).collect();
            assert_eq!(names, CHECKS, "{raw}");
            let first_failure = report
                .checks
                .iter()
                .find(|check| check.outcome == Outcome::Failed)
                .map(|check| check.detail.clone());
            match server(raw) {
                Ok(_) => {
                    assert_eq!(report.result, Verdict::Verified, "{raw}");
                    assert!(report.verified);
                }
                Err(err) => {
                    assert_eq!(report.result, Verdict::Refused, "{raw}");
                    assert_eq!(first_failure, Some(err.to_string()), "{raw}");
                }
            }
        }
    }

    #[test]
    fn unchecked_issuer_and_audience_are_never_called_verified() {
        let raw = signed(header_with("typ", "JWT".into()), claims());
        let report = inspected(&raw, None, None);
        assert_eq!(report.result, Verdict::Incomplete);
        assert!(!report.verified);
        assert_eq!(report.not_checked(), ["issuer_trusted", "iss", "aud"]);
        let audiences = ["aud1".to_owned()];
        let report = inspected(&raw, Some(ISSUER), None);
        assert_eq!(report.not_checked(), ["aud"]);
        let report = inspected(&raw, Some(ISSUER), Some(&audiences));
        assert_eq!(report.result, Verdict::Verified);
        // A failure still wins over a missing check.
        let raw = signed(header_with("zip", "DEF".into()), claims());
        assert_eq!(inspected(&raw, None, None).result, Verdict::Refused);
    }

    #[test]
    fn malformed_shapes() {
        for raw in ["", "a.b", "a.b.c.d", "..", "!!.e30.sig", "e30.e30.sig"] {
            assert!(
                split_unverified(raw).is_err() || raw == "e30.e30.sig",
                "{raw}"
            );
        }
        assert!(
            matches!(
                split_unverified("e30.e30.c2ln"),
                Err(VerifyError::Malformed(_))
            ),
            "header without alg"
        );
        let big = "a".repeat(MAX_TOKEN_BYTES + 1);
        assert_eq!(
            split_unverified(&big).unwrap_err(),
            VerifyError::Malformed("too large")
        );
    }
}
