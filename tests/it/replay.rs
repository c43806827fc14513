//! Replay: a token's `(iss, jti)` is good for one issuance.

use serde_json::json;

use crate::support::broker::field;
use crate::support::{Harness, Req, assert_forbidden, assert_issued};

#[tokio::test]
async fn the_same_token_twice_is_refused_before_sts() {
    let h = Harness::start().await;
    let token = h.token().build();
    assert_issued(&h.issue_token(&token, json!({})).await);
    let resp = h.issue_token(&token, json!({})).await;
    assert_forbidden(&resp);
    assert_eq!(h.sts.calls(), 1, "STS must be called once");
    let metrics = h.broker.metrics().await;
    assert_eq!(
        metrics.value("ci_replay_rejections_total", &[]),
        Some(1.0),
        "{}",
        metrics.0
    );
    assert_eq!(
        metrics.value("ci_creds_issued_total", &[("role", "deploy")]),
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
}

#[tokio::test]
async fn replay_through_the_other_transport_is_refused() {
    let h = Harness::start().await;
    let token = h.token().build();
    assert_issued(
        &h.broker
            .call(Req::raw(None, Vec::new()).bearer(&token))
            .await,
    );
    assert_forbidden(&h.issue_token(&token, json!({})).await);
    assert_forbidden(
        &h.broker
            .call(Req::raw(None, Vec::new()).bearer(&token))
            .await,
    );
    assert_eq!(h.sts.calls(), 1);
}

#[tokio::test]
async fn replay_with_a_different_request_is_refused() {
    let h = Harness::start().await;
    let token = h.token().build();
    assert_issued(&h.issue_token(&token, json!({})).await);
    let resp = h
        .issue_token(
            &token,
            json!({"repo": "ourorg/widget-service", "duration_seconds": 900}),
        )
        .await;
    assert_forbidden(&resp);
    assert_eq!(h.sts.calls(), 1);
}

#[tokio::test]
async fn a_re_signed_token_with_the_same_jti_is_a_replay() {
    let h = Harness::start().await;
    let first = h.token();
    assert_issued(&h.issue_token(&first.build(), json!({})).await);
    let second = h
        .token()
        .claim("jti", first.jti())
        .claim("run_attempt", "3")
        .build();
    assert_forbidden(&h.issue_token(&second, json!({})).await);
    assert_eq!(h.sts.calls(), 1);
}

#[tokio::test]
async fn distinct_jtis_are_independent() {
    let h = Harness::start().await;
    for _ in 0..3 {
        assert_issued(&h.issue_token(&h.token().build(), json!({})).await);
    }
    assert_eq!(h.sts.calls(), 3);
}

#[tokio::test]
async fn concurrent_uses_of_one_token_issue_once() {
    let h = Harness::start().await;
    let token = h.token().build();
    let body = json!({"oidc_token": token});
    let issue = || h.broker.issue(&body);
    let answers = tokio::join!(
        issue(),
        issue(),
        issue(),
        issue(),
        issue(),
        issue(),
        issue(),
        issue()
    );
    let statuses = [
        answers.0.status,
        answers.1.status,
        answers.2.status,
        answers.3.status,
        answers.4.status,
        answers.5.status,
        answers.6.status,
        answers.7.status,
    ];
    assert_eq!(
        statuses.iter().filter(|status| **status == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|status| **status == 403).count(),
        7,
        "{statuses:?}"
    );
    assert_eq!(h.sts.calls(), 1);
}
