//! Several trusted issuers: each token is judged by its own issuer's keys and
//! audiences only. And the environment overrides the file.

use serde_json::json;

use crate::support::jwks::JwksServer;
use crate::support::tokens::AUDIENCE;
use crate::support::{Harness, KEY_B, assert_invalid_token, assert_issued, msg};

const OTHER_AUDIENCE: &str = "https://github.com/partner";

/// Issuer 1 publishes KEY_A (audience AUDIENCE); issuer 2 publishes KEY_B
/// (audience OTHER_AUDIENCE).
async fn two_issuers() -> (Harness, JwksServer) {
    let second = JwksServer::start(vec![KEY_B.jwk()]).await.unwrap();
    let second_issuer = second.issuer();
    let h = Harness::start_with(|spec| {
        spec.add_issuer(&second_issuer, &[OTHER_AUDIENCE]);
    })
    .await;
    (h, second)
}

#[tokio::test]
async fn each_issuer_verifies_its_own_tokens() {
    let (h, second) = two_issuers().await;
    assert_issued(&h.issue_token(&h.token().build(), json!({})).await);
    let token = crate::support::tokens::token(&second.issuer())
        .header("kid", KEY_B.kid)
        .signed_by(&KEY_B)
        .claim("aud", OTHER_AUDIENCE)
        .build();
    assert_issued(&h.issue_token(&token, json!({})).await);
    assert_eq!(h.sts.calls(), 2);
}

#[tokio::test]
async fn audiences_belong_to_their_issuer() {
    let (h, second) = two_issuers().await;
    // Issuer 1's audience on a token from issuer 2, and the reverse.
    let token = crate::support::tokens::token(&second.issuer())
        .header("kid", KEY_B.kid)
        .signed_by(&KEY_B)
        .claim("aud", AUDIENCE)
        .build();
    assert_invalid_token(&h.issue_token(&token, json!({})).await, msg::BAD_AUDIENCE);
    let token = h.token().claim("aud", OTHER_AUDIENCE).build();
    assert_invalid_token(&h.issue_token(&token, json!({})).await, msg::BAD_AUDIENCE);
    assert_eq!(h.sts.calls(), 0);
}

#[tokio::test]
async fn keys_belong_to_their_issuer() {
    // A token claiming issuer 1, signed with a key only issuer 2 publishes.
    let (h, second) = two_issuers().await;
    let token = h.token().header("kid", KEY_B.kid).signed_by(&KEY_B).build();
    assert_invalid_token(&h.issue_token(&token, json!({})).await, msg::BAD_SIGNATURE);
    // And the reverse.
    let token = crate::support::tokens::token(&second.issuer())
        .claim("aud", OTHER_AUDIENCE)
        .build();
    assert_invalid_token(&h.issue_token(&token, json!({})).await, msg::BAD_SIGNATURE);
    assert_eq!(h.sts.calls(), 0);
}

#[tokio::test]
async fn environment_overrides_the_config_file() {
    let h = Harness::start_with(|spec| {
        spec.env(
            "BROKER_ISSUERS__0__AUDIENCES",
            &format!("[\"{OTHER_AUDIENCE}\"]"),
        );
        spec.env("BROKER_VERIFY__LEEWAY_SECONDS", "0");
    })
    .await;
    assert_invalid_token(
        &h.issue_token(&h.token().build(), json!({})).await,
        msg::BAD_AUDIENCE,
    );
    let token = h.token().claim("aud", OTHER_AUDIENCE).build();
    assert_issued(&h.issue_token(&token, json!({})).await);
}
