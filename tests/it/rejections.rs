//! Every way a token is refused: exact status and body, and STS never called.

use serde_json::json;

use crate::support::broker::field;
use crate::support::jwks::{JWKS_PATH, JwksServer};
use crate::support::tokens::{self, KEY_A, KEY_B, b64, now};
use crate::support::{Harness, Req, assert_invalid_token, assert_issued, msg};

/// Sends `token` in a JSON body; asserts a 401 with `message` and no STS call.
async fn refused(h: &Harness, token: &str, message: &str) {
    let resp = h.issue_token(token, json!({})).await;
    assert_invalid_token(&resp, message);
    assert_eq!(h.sts.calls(), 0, "STS was called for a refused token");
}

/// Refusals that need nothing but the token: one broker serves the whole
/// table and the larger cases after it. The cases cannot interfere: every token carries its own `jti`, none
/// is ever issued (so nothing is recorded for replay), and an unknown kid's
/// JWKS refetch changes no key.
#[tokio::test]
async fn refusals_need_only_the_token() {
    type Make = fn(&Harness) -> String;
    let cases: [(&str, Make, &str); 14] = [
        (
            "corrupted_signature",
            |h| tokens::corrupt_signature(&h.token().build()),
            msg::BAD_SIGNATURE,
        ),
        (
            "signature_by_another_key_under_a_known_kid",
            |h| h.token().signed_by(&KEY_B).build(),
            msg::BAD_SIGNATURE,
        ),
        (
            "unknown_kid",
            |h| h.token().header("kid", "kid-nobody-published").build(),
            msg::BAD_SIGNATURE,
        ),
        (
            "alg_none_without_kid",
            |h| h.token().without_header("kid").build_unsigned("none"),
            msg::BAD_ALGORITHM,
        ),
        // A valid RS256 signature, but the header claims RS512 (not configured).
        (
            "rs256_signature_under_a_different_alg_header",
            |h| h.token().header("alg", "RS512").build(),
            msg::BAD_ALGORITHM,
        ),
        (
            "expired_beyond_leeway",
            |h| h.token().issued_at(now() - 360).build(),
            msg::EXPIRED,
        ),
        (
            "nbf_in_the_future",
            |h| h.token().claim("nbf", now() + 120).build(),
            msg::NOT_YET_VALID,
        ),
        (
            "iat_in_the_future",
            |h| {
                h.token()
                    .claim("iat", now() + 120)
                    .claim("nbf", now() - 60)
                    .build()
            },
            msg::NOT_YET_VALID,
        ),
        (
            "wrong_issuer",
            |h| {
                h.token()
                    .claim("iss", "https://token.actions.githubusercontent.com")
                    .build()
            },
            msg::BAD_ISSUER,
        ),
        (
            "issuer_with_trailing_slash_is_another_issuer",
            |h| {
                h.token()
                    .claim("iss", format!("{}/", h.jwks.issuer()))
                    .build()
            },
            msg::BAD_ISSUER,
        ),
        (
            "wrong_audience",
            |h| {
                h.token()
                    .claim("aud", "https://github.com/otherorg")
                    .build()
            },
            msg::BAD_AUDIENCE,
        ),
        (
            "audience_list_without_an_accepted_audience",
            |h| {
                h.token()
                    .claim(
                        "aud",
                        json!(["sts.amazonaws.com", "https://github.com/OURORG"]),
                    )
                    .build()
            },
            msg::BAD_AUDIENCE,
        ),
        (
            "missing_exp",
            |h| h.token().without_claim("exp").build(),
            msg::MISSING_CLAIM,
        ),
        (
            "missing_jti",
            |h| h.token().without_claim("jti").build(),
            msg::MISSING_CLAIM,
        ),
    ];
    let h = Harness::in_process().await;
    for (name, make, message) in cases {
        println!("case {name}");
        let token = make(&h);
        refused(&h, &token, message).await;
    }
    // Larger cases on the same broker; each asserts the STS was never called.
    missing_kid(&h).await;
    alg_none_in_every_spelling(&h).await;
    alg_none_with_a_signature_part(&h).await;
    hs256_signed_with_the_rsa_public_key(&h).await;
    malformed_tokens(&h).await;
    oversized_token(&h).await;
    bearer_header_is_verified_like_the_body(&h).await;
}

#[tokio::test]
async fn unknown_kids_refetch_the_jwks_at_most_once_per_cooldown() {
    let h = Harness::in_process().await;
    let before = h.jwks.hits(JWKS_PATH);
    for kid in ["unknown-kid-1", "unknown-kid-2", "unknown-kid-3"] {
        let token = h.token().header("kid", kid).signed_by(&KEY_B).build();
        refused(&h, &token, msg::BAD_SIGNATURE).await;
    }
    let fetches = h.jwks.hits(JWKS_PATH) - before;
    assert!(
        fetches <= 1,
        "{fetches} JWKS fetches for unknown kids within one 30 s cooldown"
    );
}

async fn missing_kid(h: &Harness) {
    // The contract requires `kid` but does not pin this message; a token
    // without one is either malformed or has no verifiable signature.
    let resp = h
        .issue_token(&h.token().without_header("kid").build(), json!({}))
        .await;
    let message = resp.json()["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        message == msg::MALFORMED || message == msg::BAD_SIGNATURE,
        "message {message:?}"
    );
    assert_invalid_token(&resp, &message);
    assert_eq!(h.sts.calls(), 0);
}

async fn alg_none_in_every_spelling(h: &Harness) {
    for alg in ["none", "None", "NONE", "nOnE"] {
        let token = h.token().build_unsigned(alg);
        let resp = h.issue_token(&token, json!({})).await;
        assert_eq!(resp.status, 401, "alg {alg}: {}", resp.text());
        assert_invalid_token(&resp, msg::BAD_ALGORITHM);
    }
    assert_eq!(h.sts.calls(), 0);
}

async fn alg_none_with_a_signature_part(h: &Harness) {
    let fake = tokens::signature_of(&h.token().build());
    for alg in ["none", "None", "NONE", "nOnE"] {
        let token = format!("{}{fake}", h.token().build_unsigned(alg));
        let resp = h.issue_token(&token, json!({})).await;
        assert_eq!(resp.status, 401, "alg {alg}: {}", resp.text());
        assert_invalid_token(&resp, msg::BAD_ALGORITHM);
    }
    assert_eq!(h.sts.calls(), 0);
}

async fn hs256_signed_with_the_rsa_public_key(h: &Harness) {
    // Key confusion: a verifier that feeds the RSA public key to HMAC would accept this.
    for secret in [
        KEY_A.public_pem.as_bytes(),
        KEY_A.public_pem.trim_end().as_bytes(),
    ] {
        refused(h, &h.token().build_hs256(secret), msg::BAD_ALGORITHM).await;
    }
}

#[tokio::test]
async fn expired_within_leeway_is_accepted() {
    // exp is 2 s in the past; the configured leeway is 10 s.
    let h = Harness::in_process().await;
    let token = h.token().issued_at(now() - 302).build();
    assert_issued(&h.issue_token(&token, json!({})).await);
}

async fn malformed_tokens(h: &Harness) {
    let good = h.token().build();
    let (header, payload, signature) = tokens::split(&good);
    let cases = [
        ("two segments", format!("{header}.{payload}")),
        ("four segments", format!("{good}.{signature}")),
        (
            "bad base64 in the payload",
            format!("{header}.{}!!.{signature}", &payload[..payload.len() / 2]),
        ),
        (
            "bad base64 in the header",
            format!("%%%.{payload}.{signature}"),
        ),
        (
            "non-JSON header",
            format!("{}.{payload}.{signature}", b64(b"this is not json")),
        ),
        (
            "non-JSON payload",
            format!("{header}.{}.{signature}", b64(b"[1, 2")),
        ),
        (
            "JSON array payload",
            format!("{header}.{}.{signature}", b64(b"[1, 2]")),
        ),
        ("empty segments", "..".to_owned()),
        ("plain words", "not a token at all".to_owned()),
        ("empty string", String::new()),
    ];
    for (what, token) in cases {
        let resp = h.issue_token(&token, json!({})).await;
        if token.is_empty() {
            // An empty `oidc_token` is no token at all, or a malformed one.
            let message = resp.json()["message"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            assert!(
                message == msg::NO_TOKEN || message == msg::MALFORMED,
                "{what}: {}",
                resp.text()
            );
            continue;
        }
        assert_eq!(resp.status, 401, "{what}: {}", resp.text());
        if what.contains("payload") {
            // The header and signature are intact: a verifier may report the
            // signature (computed over the original payload) first.
            let message = resp.json()["message"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            assert!(
                message == msg::MALFORMED || message == msg::BAD_SIGNATURE,
                "{what}: {}",
                resp.text()
            );
            assert_invalid_token(&resp, &message);
            continue;
        }
        assert_invalid_token(&resp, msg::MALFORMED);
    }
    assert_eq!(h.sts.calls(), 0);
}

async fn oversized_token(h: &Harness) {
    // A validly signed token padded to ~40 KiB (the request body stays under 64 KiB).
    let token = h.token().claim("padding", "A".repeat(30 * 1024)).build();
    assert!(token.len() > 32 * 1024 && token.len() < 60 * 1024);
    refused(h, &token, msg::MALFORMED).await;
    let resp = h
        .broker
        .call(Req::raw(None, Vec::new()).bearer(&token))
        .await;
    assert_invalid_token(&resp, msg::MALFORMED);
    assert_eq!(h.sts.calls(), 0);
}

#[tokio::test]
async fn tampered_payload_keeping_the_signature() {
    let h = Harness::in_process().await;
    let good = h.token().build();
    for (claim, value) in [
        ("repository", "ourorg/crown-jewels"),
        ("ref", "refs/heads/release/1"),
        ("exp", ""),
    ] {
        let token = tokens::tamper_payload(&good, |claims| {
            let value = if claim == "exp" {
                json!(now() + 86_400)
            } else {
                json!(value)
            };
            claims.insert(claim.to_owned(), value);
        });
        refused(&h, &token, msg::BAD_SIGNATURE).await;
    }
    // The untouched token still works: the refusals did not burn it.
    assert_issued(&h.issue_token(&good, json!({})).await);
}

async fn bearer_header_is_verified_like_the_body(h: &Harness) {
    let token = h.token().signed_by(&KEY_B).build();
    let resp = h
        .broker
        .call(Req::raw(None, Vec::new()).bearer(&token))
        .await;
    assert_invalid_token(&resp, msg::BAD_SIGNATURE);
    assert_eq!(h.sts.calls(), 0);
}

#[tokio::test]
async fn key_location_headers_are_never_followed() {
    // An attacker publishes KEY_B and points jku / x5u at it, or embeds it as `jwk`.
    let h = Harness::in_process().await;
    let attacker = JwksServer::start(vec![KEY_B.jwk_with_kid("attacker-kid")])
        .await
        .unwrap();
    let jku = attacker.jwks_url();
    let cases = [
        h.token()
            .header("kid", "attacker-kid")
            .header("jku", jku.as_str())
            .signed_by(&KEY_B)
            .build(),
        h.token()
            .header("kid", "attacker-kid")
            .header("x5u", jku.as_str())
            .signed_by(&KEY_B)
            .build(),
        h.token()
            .header("jwk", KEY_B.jwk_with_kid(KEY_A.kid))
            .signed_by(&KEY_B)
            .build(),
        h.token()
            .header("kid", "attacker-kid")
            .header("jwk", KEY_B.jwk_with_kid("attacker-kid"))
            .signed_by(&KEY_B)
            .build(),
    ];
    for token in cases {
        refused(&h, &token, msg::BAD_SIGNATURE).await;
    }
    assert_eq!(
        attacker.total_hits(),
        0,
        "the broker fetched a key from a token-supplied URL"
    );
}

/// Header parameters the verifier does not implement, each behind a valid
/// signature of the trusted key: an extension the token says must be
/// understood (`crit`, whatever it lists), an unencoded payload (`b64`), a
/// compressed one (`zip`).
fn tokens_with_unsupported_header_parameters(h: &Harness) -> Vec<(&'static str, String)> {
    vec![
        (
            "crit [\"exp\"]",
            h.token().header("crit", json!(["exp"])).build(),
        ),
        ("crit []", h.token().header("crit", json!([])).build()),
        ("b64 false", h.token().header("b64", false).build()),
        ("zip DEF", h.token().header("zip", "DEF").build()),
    ]
}

#[tokio::test]
async fn unsupported_header_parameters_are_refused() {
    let h = Harness::in_process().await;
    let cases = tokens_with_unsupported_header_parameters(&h);
    for (what, token) in &cases {
        let resp = h.issue_token(token, json!({})).await;
        assert_eq!(resp.status, 401, "{what}: {}", resp.text());
        assert_invalid_token(&resp, msg::MALFORMED);
        let event = h.broker.wait_for_audit(&resp.request_id()).await;
        assert_eq!(
            field(&event, "reason").as_deref(),
            Some("token_malformed"),
            "{what}: {event}"
        );
        let parameter = what.split(' ').next().unwrap_or_default();
        assert!(
            field(&event, "detail").is_some_and(|detail| detail.contains(parameter)),
            "the audit detail does not name {parameter}: {event}"
        );
    }
    assert_eq!(h.sts.calls(), 0, "STS was called for a refused token");
    let metrics = h.broker.metrics().await;
    assert_eq!(
        metrics.value("ci_token_rejections_total", &[("reason", "malformed")]),
        Some(cases.len() as f64),
        "{}",
        metrics.0
    );
    // The same token without them is fine.
    assert_issued(&h.issue_token(&h.token().build(), json!({})).await);
}

#[tokio::test]
async fn a_refused_header_never_fetches_the_jwks() {
    let h = Harness::in_process().await;
    let fetched = h.jwks.hits(JWKS_PATH);
    let token = h
        .token()
        .header("kid", "kid-nobody-published")
        .header("crit", json!(["exp"]))
        .build();
    refused(&h, &token, msg::MALFORMED).await;
    assert_eq!(
        h.jwks.hits(JWKS_PATH),
        fetched,
        "an unknown kid behind a refused header fetched the JWKS"
    );
}

#[tokio::test]
async fn rejections_are_counted_and_audited() {
    let h = Harness::in_process().await;
    let resp = h
        .issue_token(&h.token().issued_at(now() - 3600).build(), json!({}))
        .await;
    assert_invalid_token(&resp, msg::EXPIRED);
    let metrics = h.broker.metrics().await;
    assert_eq!(
        metrics.value("ci_token_rejections_total", &[]),
        Some(1.0),
        "{}",
        metrics.0
    );
    let event = h.broker.wait_for_audit(&resp.request_id()).await;
    assert_eq!(
        field(&event, "event").as_deref(),
        Some("credential_denied"),
        "{event}"
    );
    assert!(
        !field(&event, "reason").unwrap_or_default().is_empty(),
        "denial without a reason: {event}"
    );
}
