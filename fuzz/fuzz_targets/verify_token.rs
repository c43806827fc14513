//! Token parsing and verification on attacker-controlled input.
//!
//! The first byte picks a mode (its value modulo 3; seeds use the ASCII digits):
//! - `0`: the rest is the raw token text (lossy UTF-8), fed to the server's
//!   verification path (`fuzz_verify_offline`: the one pipeline that
//!   `Verifier::verify` runs, stopping at the first failure, keys from an
//!   in-memory JWKS holding a test EC key, test RSA key A and GitHub's real
//!   keys, so real tokens pass their signature check) and to `token inspect`
//!   (the same pipeline, reporting every check).
//! - `1`: the rest is a JWT payload, signed here with a valid ES256 key under
//!   a fixed header, so the claim checks behind the signature get exercised.
//! - `2`: `header NUL payload`, both signed here: header confusion (alg, kid,
//!   typ, crit…) behind a valid signature.
//!
//! Invariants checked: nothing panics; a token accepted by the server path is
//! also accepted by `inspect`, and the other way round; no token whose header
//! carries `crit`, `b64` or `zip` is ever accepted.

#![no_main]

use std::sync::OnceLock;

use attestation_broker::jwks::{VerifyingKey, parse_jwks};
use attestation_broker::verify::{InspectRules, fuzz_verify_offline, inspect};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use libfuzzer_sys::fuzz_target;

const ISSUER: &str = "https://token.actions.githubusercontent.com";
const AUDIENCE: &str = "https://github.com/ourorg";
const EC_KID: &str = "fuzz-ec";
/// A fixed "now": the claims carry the variation.
const NOW: u64 = 1_750_000_000;
const LEEWAY: u64 = 10;

struct Fixture {
    ec: EcdsaKeyPair,
    rng: SystemRandom,
    keys: Vec<(String, VerifyingKey)>,
    audiences: Vec<String>,
    algorithms: Vec<Algorithm>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let ec = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
        // Uncompressed point: 0x04 || x || y.
        let point = ec.public_key().as_ref().to_vec();
        let rsa: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/fixtures/test_key_a.jwk.json")).unwrap();
        let jwks = serde_json::json!({"keys": [
            {"kty": "EC", "crv": "P-256", "kid": EC_KID, "alg": "ES256", "use": "sig",
             "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..65])},
            {"kty": "RSA", "kid": "test-key-a-0f3c9e", "alg": "RS256", "use": "sig", "n": rsa["n"], "e": rsa["e"]},
            {"kty": "RSA", "kid": "rsa-no-alg", "n": rsa["n"], "e": rsa["e"]},
        ]});
        let mut keys = parse_jwks(jwks.to_string().as_bytes()).unwrap();
        assert_eq!(keys.len(), 3);
        // GitHub's real keys, so the real tokens in the seeds verify their signature.
        for real in [
            &include_bytes!("../../tests/fixtures/real_github_jwks_2026.json")[..],
            &include_bytes!("../../tests/fixtures/real_github_jwks_2022-08.json")[..],
        ] {
            keys.extend(parse_jwks(real).unwrap());
        }
        Fixture {
            ec,
            rng,
            keys,
            audiences: vec![AUDIENCE.to_owned(), "sts.amazonaws.com".to_owned()],
            algorithms: vec![Algorithm::RS256, Algorithm::ES256],
        }
    })
}

fn sign(fixture: &Fixture, header: &[u8], payload: &[u8]) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let signature = fixture.ec.sign(&fixture.rng, input.as_bytes()).unwrap();
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let fixture = fixture();
    let token = match mode % 3 {
        0 => String::from_utf8_lossy(rest).into_owned(),
        1 => {
            let header = format!(r#"{{"alg":"ES256","kid":"{EC_KID}","typ":"JWT"}}"#);
            sign(fixture, header.as_bytes(), rest)
        }
        _ => {
            let Some(split) = rest.iter().position(|byte| *byte == 0) else {
                return;
            };
            sign(fixture, &rest[..split], &rest[split + 1..])
        }
    };
    let server = fuzz_verify_offline(
        &token,
        &fixture.keys,
        ISSUER,
        &fixture.audiences,
        &fixture.algorithms,
        LEEWAY,
        NOW,
    );
    if let Ok(verified) = &server {
        let header: Option<serde_json::Value> = token
            .split('.')
            .next()
            .and_then(|part| URL_SAFE_NO_PAD.decode(part).ok())
            .and_then(|bytes| serde_json::from_slice(&bytes).ok());
        if let Some(serde_json::Value::Object(header)) = header {
            for refused in ["crit", "b64", "zip"] {
                assert!(
                    !header.contains_key(refused),
                    "accepted a token with {refused}"
                );
            }
        }
        // What the handler reads next.
        assert_eq!(verified.issuer(), ISSUER);
        assert!(!verified.jti().is_empty());
        let _ = verified.claims().iter().count();
    }
    let rules = InspectRules {
        keys: &fixture.keys,
        issuer: Some(ISSUER),
        audiences: Some(&fixture.audiences),
        algorithms: &fixture.algorithms,
        leeway: LEEWAY,
        now: NOW,
    };
    let report = inspect(&token, &rules);
    assert_eq!(
        report.verified,
        server.is_ok(),
        "inspect and the server disagree: {server:?}"
    );
    // `token inspect` without an expected issuer or audience must not panic either.
    let lax = InspectRules {
        issuer: None,
        audiences: None,
        ..rules
    };
    let _ = serde_json::to_string(&inspect(&token, &lax));
});
