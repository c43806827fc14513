//! Real (long expired) GitHub Actions ID tokens against real GitHub JWKS
//! snapshots: they parse and verify all the way up to `exp`.

use serde_json::{Value, json};

use crate::support::jwks::{JWKS_PATH, JwksServer};
use crate::support::tokens;
use crate::support::{Harness, assert_invalid_token, assert_no_leak, msg};

const GITHUB_ISSUER: &str = "https://token.actions.githubusercontent.com";

struct RealToken {
    token: &'static str,
    jwks: &'static str,
    audience: &'static str,
    kid: &'static str,
    repository: &'static str,
}

const TOKEN_2026_04: RealToken = RealToken {
    token: include_str!("../fixtures/real_github_token_2026-04.jwt"),
    jwks: include_str!("../fixtures/real_github_jwks_2026.json"),
    audience: "demo",
    kid: "38826b17-6a30-5f9b-b169-8beb8202f723",
    repository: "marchenko1985/github_oidc_token_demo",
};

const TOKEN_2022_08: RealToken = RealToken {
    token: include_str!("../fixtures/real_github_token_2022-08.jwt"),
    jwks: include_str!("../fixtures/real_github_jwks_2022-08.json"),
    audience: "https://github.com/varunsh-coder",
    kid: "78167F727DEC5D801DD1C8784C704A1C880EC0E1",
    repository: "varunsh-coder/actions-playground",
};

/// A broker trusting GitHub's issuer with the snapshot's keys served on loopback.
async fn github_harness(real: &RealToken) -> Harness {
    let jwks: Value = serde_json::from_str(real.jwks).unwrap();
    let keys = jwks["keys"].as_array().unwrap().clone();
    let server = JwksServer::start(keys).await.unwrap();
    let jwks_url = server.jwks_url();
    server.set_issuer(GITHUB_ISSUER);
    let audience = real.audience.to_owned();
    let h = Harness::start_with_issuer(server, move |spec| {
        spec.set_issuer_key(0, "issuer", GITHUB_ISSUER);
        spec.set_issuer_key(0, "audiences", vec![audience]);
        spec.set_issuer_key(0, "jwks_url", jwks_url);
    })
    .await;
    assert!(
        h.jwks.hits(JWKS_PATH) >= 1,
        "the broker is ready without having fetched the configured jwks_url"
    );
    h
}

async fn refused_as_expired(real: &RealToken) {
    let h = github_harness(real).await;
    let token = real.token.trim();
    let resp = h.issue_token(token, json!({})).await;
    assert_invalid_token(&resp, msg::EXPIRED);
    assert_no_leak(
        &resp,
        &[
            real.kid.to_owned(),
            real.repository.to_owned(),
            real.audience.to_owned(),
        ],
    );
    assert_eq!(h.sts.calls(), 0);

    // The same token with a broken signature is refused for its signature:
    // the expiry above was reached only after the signature verified.
    let resp = h
        .issue_token(&tokens::corrupt_signature(token), json!({}))
        .await;
    assert_invalid_token(&resp, msg::BAD_SIGNATURE);
    assert_eq!(h.sts.calls(), 0);
}

#[tokio::test]
async fn real_2026_github_token_verifies_and_is_refused_as_expired() {
    refused_as_expired(&TOKEN_2026_04).await;
}

#[tokio::test]
async fn real_2022_github_token_verifies_and_is_refused_as_expired() {
    refused_as_expired(&TOKEN_2022_08).await;
}

#[tokio::test]
async fn real_token_under_the_wrong_jwks_snapshot_has_an_invalid_signature() {
    // The 2026 token's kid is absent from the 2022 snapshot.
    let h = github_harness(&TOKEN_2022_08).await;
    let resp = h.issue_token(TOKEN_2026_04.token.trim(), json!({})).await;
    assert_eq!(resp.status, 401, "{}", resp.text());
    assert_invalid_token(&resp, msg::BAD_SIGNATURE);
}
