//! Raw JWT → `VerifiedClaims`: the only place a token becomes trusted.
//!
//! Before the signature checks out, everything in the token is
//! attacker-controlled. The header's `alg` is checked against the allow-list
//! (never `none` or HMAC), its `kid` only chooses a key; `jku`, `x5u`, `jwk` and
//! `x5c` are ignored. The unverified `iss` only chooses which issuer's key set
//! to look in; after the signature verifies, `iss` is compared exactly again.
//! All time checks take `now` as an argument, so `token inspect --at` and
//! tests use the same code as the server.

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};
use sha2::Digest;

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

/// What the header says, parsed without trusting it.
#[derive(Debug, serde::Deserialize)]
struct RawHeader {
    alg: String,
    kid: Option<String>,
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

/// Hex SHA-256 of a token, for logs.
pub fn token_sha256(token: &str) -> String {
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
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
        let algorithms = config
            .verify
            .algorithms
            .iter()
            .filter_map(|name| parse_algorithm(name).ok())
            .collect();
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

    /// Verifies `token` as of `now` (unix seconds).
    pub async fn verify(
        &self,
        token: &SecretString,
        now: u64,
    ) -> Result<VerifiedClaims, VerifyError> {
        let raw = token.expose_secret();
        let (header, payload) = split_unverified(raw)?;
        let algorithm = self.accepted_algorithm(&header.alg)?;
        let kid = header
            .kid
            .filter(|kid| !kid.is_empty())
            .ok_or(VerifyError::MissingKeyId)?;
        if kid.len() > MAX_KID_LEN {
            return Err(VerifyError::Malformed("kid too long"));
        }
        let issuer = payload
            .get("iss")
            .and_then(Value::as_str)
            .ok_or(VerifyError::MissingClaim("iss"))?;
        let rules = self
            .0
            .issuers
            .get(issuer)
            .ok_or(VerifyError::UntrustedIssuer)?;
        let key = self
            .0
            .jwks
            .key(rules.index, &kid)
            .await
            .map_err(|err| match err {
                JwksError::UnknownKeyId => VerifyError::UnknownKeyId,
                JwksError::KeysUnavailable => VerifyError::KeysUnavailable,
            })?;
        let verified = verify_signature(raw, &key, algorithm)?;
        check_claims(verified, issuer, &rules.audiences, self.0.leeway, now, raw)
    }

    fn accepted_algorithm(&self, name: &str) -> Result<Algorithm, VerifyError> {
        // Exact spelling only: `none`, `None`, `HS256` and friends never parse here.
        let algorithm = parse_algorithm(name).map_err(|_| VerifyError::AlgorithmNotAccepted)?;
        if self.0.algorithms.contains(&algorithm) {
            Ok(algorithm)
        } else {
            Err(VerifyError::AlgorithmNotAccepted)
        }
    }
}

/// Fuzzing entry point, not API: the checks of [`Verifier::verify`] in the
/// same order, with the key looked up in `keys` (one issuer) instead of the
/// JWKS cache, so `fuzz/` can drive the whole verification path offline.
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
    let (header, payload) = split_unverified(raw)?;
    let algorithm = parse_algorithm(&header.alg)
        .ok()
        .filter(|algorithm| algorithms.contains(algorithm))
        .ok_or(VerifyError::AlgorithmNotAccepted)?;
    let kid = header
        .kid
        .filter(|kid| !kid.is_empty())
        .ok_or(VerifyError::MissingKeyId)?;
    if kid.len() > MAX_KID_LEN {
        return Err(VerifyError::Malformed("kid too long"));
    }
    let claimed = payload
        .get("iss")
        .and_then(Value::as_str)
        .ok_or(VerifyError::MissingClaim("iss"))?;
    if claimed != issuer {
        return Err(VerifyError::UntrustedIssuer);
    }
    let key = keys
        .iter()
        .find(|(known, _)| *known == kid)
        .map(|(_, key)| key)
        .ok_or(VerifyError::UnknownKeyId)?;
    let verified = verify_signature(raw, key, algorithm)?;
    check_claims(verified, issuer, audiences, leeway, now, raw)
}

/// Splits a compact JWS and decodes header and payload without verifying.
fn split_unverified(raw: &str) -> Result<(RawHeader, Map<String, Value>), VerifyError> {
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
    let header_bytes = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| VerifyError::Malformed("header is not base64url"))?;
    let payload_bytes = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| VerifyError::Malformed("payload is not base64url"))?;
    URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| VerifyError::Malformed("signature is not base64url"))?;
    let header: RawHeader = serde_json::from_slice(&header_bytes)
        .map_err(|_| VerifyError::Malformed("header is not JSON"))?;
    let payload: Map<String, Value> = serde_json::from_slice(&payload_bytes)
        .map_err(|_| VerifyError::Malformed("payload is not a JSON object"))?;
    Ok((header, payload))
}

/// Checks the signature only; claims are checked by `check_claims`.
fn verify_signature(
    raw: &str,
    key: &VerifyingKey,
    algorithm: Algorithm,
) -> Result<Map<String, Value>, VerifyError> {
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
    let mut validation = Validation::new(algorithm);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.leeway = 0;
    match jsonwebtoken::decode::<Map<String, Value>>(raw, &key.key, &validation) {
        Ok(data) => Ok(data.claims),
        Err(err) => Err(match err.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidSignature
            | jsonwebtoken::errors::ErrorKind::InvalidAlgorithm
            | jsonwebtoken::errors::ErrorKind::InvalidRsaKey(_)
            | jsonwebtoken::errors::ErrorKind::InvalidEcdsaKey
            | jsonwebtoken::errors::ErrorKind::InvalidKeyFormat => VerifyError::InvalidSignature,
            _ => VerifyError::Malformed("undecodable"),
        }),
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

/// Names of the claim checks, in the order they run.
pub const CLAIM_CHECKS: [&str; 9] = [
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

/// Every claim check of signature-verified claims, each with its outcome, in
/// `CLAIM_CHECKS` order. The server stops at the first failure; `token
/// inspect` shows them all.
fn claim_checks(
    payload: &Map<String, Value>,
    issuer: &str,
    audiences: &[String],
    leeway: u64,
    now: u64,
) -> [Result<(), VerifyError>; CLAIM_CHECKS.len()] {
    let iss = match string_claim(payload, "iss") {
        Ok(found) if found == issuer => Ok(()),
        Ok(_) => Err(VerifyError::UntrustedIssuer),
        Err(err) => Err(err),
    };
    let aud = match payload.get("aud") {
        Some(Value::String(aud)) if audiences.iter().any(|want| want == aud) => Ok(()),
        Some(Value::Array(items))
            if items
                .iter()
                .filter_map(Value::as_str)
                .any(|aud| audiences.iter().any(|want| want == aud)) =>
        {
            Ok(())
        }
        None => Err(VerifyError::MissingClaim("aud")),
        Some(_) => Err(VerifyError::AudienceMismatch),
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
        iss, aud, exp_check, nbf_check, iat_check, lifetime, jti, sub, jti_length,
    ]
}

/// Checks iss, aud, exp, nbf, iat, jti and sub of signature-verified claims.
fn check_claims(
    payload: Map<String, Value>,
    issuer: &str,
    audiences: &[String],
    leeway: u64,
    now: u64,
    raw: &str,
) -> Result<VerifiedClaims, VerifyError> {
    for outcome in claim_checks(&payload, issuer, audiences, leeway, now) {
        outcome?;
    }
    let exp = numeric_claim(&payload, "exp")?.ok_or(VerifyError::MissingClaim("exp"))?;
    let jti = string_claim(&payload, "jti")?;
    Ok(VerifiedClaims {
        jti: jti.to_owned(),
        issuer: issuer.to_owned(),
        exp,
        token_sha256: token_sha256(raw),
        claims: ClaimSet::from_json_object(&payload),
    })
}

/// One step of an offline inspection.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Check {
    /// What was checked (`structure`, `algorithm`, `kid`, `key`, `signature`, then `CLAIM_CHECKS`).
    pub name: &'static str,
    /// Whether it passed; `None` when it could not run because an earlier step failed.
    pub passed: Option<bool>,
    /// Why it failed.
    pub detail: String,
}

/// What `token inspect` shows: the decoded parts and every check.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Inspection {
    /// Decoded header (unverified).
    pub header: Value,
    /// Decoded claims (unverified unless `verified`).
    pub claims: Value,
    /// Every check in order.
    pub checks: Vec<Check>,
    /// True when every check passed: the server would accept this token (policy aside).
    pub verified: bool,
}

/// What an offline inspection checks against.
#[derive(Debug, Clone)]
pub struct InspectRules<'a> {
    /// Keys of the issuer (from a JWKS file or a fetch).
    pub keys: &'a [(String, VerifyingKey)],
    /// The issuer to require; `None` accepts the token's own `iss` (reported).
    pub issuer: Option<&'a str>,
    /// Audiences to require; `None` skips the audience check (reported).
    pub audiences: Option<&'a [String]>,
    /// Accepted algorithms.
    pub algorithms: &'a [Algorithm],
    /// Clock-skew leeway.
    pub leeway: u64,
    /// The time to check at, unix seconds.
    pub now: u64,
}

/// Runs every check the server runs, offline, and reports each one. Used by
/// `token inspect`; makes no network call.
pub fn inspect(raw: &str, rules: &InspectRules<'_>) -> Inspection {
    let mut checks = Vec::new();
    let mut push = |name: &'static str, outcome: Option<Result<(), VerifyError>>| {
        let (passed, detail) = match outcome {
            Some(Ok(())) => (Some(true), String::new()),
            Some(Err(err)) => (Some(false), err.to_string()),
            None => (None, "not checked: an earlier step failed".to_owned()),
        };
        checks.push(Check {
            name,
            passed,
            detail,
        });
    };
    let decode_part = |index: usize| -> Value {
        raw.split('.')
            .nth(index)
            .and_then(|part| URL_SAFE_NO_PAD.decode(part).ok())
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or(Value::Null)
    };
    let header_json = decode_part(0);
    let claims_json = decode_part(1);
    let parsed = split_unverified(raw);
    let (header, payload) = match parsed {
        Ok(parts) => {
            push("structure", Some(Ok(())));
            parts
        }
        Err(err) => {
            push("structure", Some(Err(err)));
            return Inspection {
                header: header_json,
                claims: claims_json,
                checks,
                verified: false,
            };
        }
    };
    let algorithm = parse_algorithm(&header.alg)
        .ok()
        .filter(|alg| rules.algorithms.contains(alg))
        .ok_or(VerifyError::AlgorithmNotAccepted);
    push(
        "algorithm",
        Some(algorithm.as_ref().map(|_| ()).map_err(Clone::clone)),
    );
    let kid = header
        .kid
        .filter(|kid| !kid.is_empty())
        .ok_or(VerifyError::MissingKeyId);
    push("kid", Some(kid.as_ref().map(|_| ()).map_err(Clone::clone)));
    let key = kid.as_ref().ok().map(|kid| {
        rules
            .keys
            .iter()
            .find(|(known, _)| known == kid)
            .map(|(_, key)| key)
            .ok_or(VerifyError::UnknownKeyId)
    });
    push(
        "key",
        key.as_ref()
            .map(|found| found.as_ref().map(|_| ()).map_err(Clone::clone)),
    );
    let signature = match (&algorithm, &key) {
        (Ok(algorithm), Some(Ok(key))) => Some(verify_signature(raw, key, *algorithm).map(|_| ())),
        _ => None,
    };
    push("signature", signature.clone());
    let issuer = rules
        .issuer
        .or_else(|| payload.get("iss").and_then(Value::as_str))
        .unwrap_or_default();
    let audiences: Vec<String> = match rules.audiences {
        Some(audiences) => audiences.to_vec(),
        None => match payload.get("aud") {
            Some(Value::String(aud)) => vec![aud.clone()],
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            _ => Vec::new(),
        },
    };
    let outcomes = claim_checks(&payload, issuer, &audiences, rules.leeway, rules.now);
    for (name, outcome) in CLAIM_CHECKS.into_iter().zip(outcomes) {
        push(name, Some(outcome));
    }
    let verified = checks.iter().all(|check| check.passed == Some(true)) && signature.is_some();
    Inspection {
        header: header_json,
        claims: claims_json,
        checks,
        verified,
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
        check_claims(
            payload(json),
            "https://issuer",
            &["aud1".to_owned()],
            10,
            now,
            "raw",
        )
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
