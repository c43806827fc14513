//! The admin listener: health, readiness and the metric names dashboards use.

use serde_json::json;

use crate::support::tokens::{self, now};
use crate::support::{Harness, assert_forbidden, assert_invalid_token, assert_issued, msg};

#[tokio::test]
async fn health_and_readiness() {
    let h = Harness::start().await;
    assert_eq!(h.broker.admin_get("/healthz").await.status, 200);
    assert_eq!(h.broker.admin_get("/readyz").await.status, 200);
}

#[tokio::test]
async fn metric_families_are_exposed_under_their_contract_names() {
    let h = Harness::start().await;
    let token = h.token().build();
    assert_issued(&h.issue_token(&token, json!({})).await);
    assert_forbidden(&h.issue_token(&token, json!({})).await);
    assert_invalid_token(
        &h.issue_token(&h.token().issued_at(now() - 3600).build(), json!({}))
            .await,
        msg::EXPIRED,
    );
    assert_forbidden(
        &h.issue_token(&h.token().build(), json!({"repo": "ourorg/other"}))
            .await,
    );
    assert_forbidden(
        &h.issue_token(&h.token().claim("ref", "refs/heads/dev").build(), json!({}))
            .await,
    );

    let metrics = h.broker.metrics().await;
    for family in [
        "ci_creds_issued_total",
        "ci_creds_active",
        "ci_opa_policy_denials_total",
        "ci_sts_latency_seconds",
        "ci_token_rejections_total",
        "ci_binding_mismatches_total",
        "ci_replay_rejections_total",
        "ci_jwks_refresh_total",
        "ci_jwks_keys",
        "ci_http_requests_total",
        "ci_http_request_duration_seconds",
    ] {
        assert!(
            metrics.has_family(family),
            "metric {family} is missing:\n{}",
            metrics.0
        );
    }
    assert_eq!(
        metrics.value("ci_opa_policy_denials_total", &[]),
        Some(1.0),
        "{}",
        metrics.0
    );
    assert_eq!(
        metrics.value("ci_binding_mismatches_total", &[]),
        Some(1.0),
        "{}",
        metrics.0
    );
    assert_eq!(
        metrics.value("ci_replay_rejections_total", &[]),
        Some(1.0),
        "{}",
        metrics.0
    );
    assert_eq!(
        metrics.value("ci_token_rejections_total", &[]),
        Some(1.0),
        "{}",
        metrics.0
    );
    assert!(
        metrics.value_or_zero("ci_http_request_duration_seconds_count", &[]) >= 5.0,
        "{}",
        metrics.0
    );
    // Labels are bounded: no repository, actor, token or claim value.
    for value in [
        tokens::REPOSITORY,
        tokens::ACTOR,
        tokens::SHA,
        tokens::RUN_ID,
        &token,
        &h.token().jti(),
    ] {
        assert!(
            !metrics.0.contains(value),
            "metrics contain a claim or token value {value:?}"
        );
    }
}

#[tokio::test]
async fn metrics_are_not_served_on_the_main_listener() {
    let h = Harness::start().await;
    let resp = h.broker.get("/metrics").await;
    assert_ne!(resp.status, 200, "the main listener serves /metrics");
}
