//! The admin listener: health, readiness and the metric names dashboards use.

use attestation_broker::metrics::{BINDING_FIELDS, STS_ERROR_KINDS, TOKEN_REJECTION_REASONS};
use serde_json::json;

use crate::jwks_failures::start_while_the_jwks_fails;
use crate::metric_assert::AssertMetric;
use crate::support::broker::eventually;
use crate::support::jwks::JWKS_PATH;
use crate::support::tokens::{self, now};
use crate::support::{
    Harness, assert_forbidden, assert_invalid_token, assert_issued, assert_unavailable, msg,
};

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
    metrics.assert_value("ci_opa_policy_denials_total", &[], 1.0);
    metrics.assert_value("ci_binding_mismatches_total", &[], 1.0);
    metrics.assert_value("ci_replay_rejections_total", &[], 1.0);
    metrics.assert_value("ci_token_rejections_total", &[], 1.0);
    metrics.assert_at_least("ci_http_request_duration_seconds_count", &[], 5.0);
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

/// Every counter whose labels take a closed set of values is there at 0 on
/// the first scrape, so an alert on `increase()` sees the step to 1.
#[tokio::test]
async fn closed_label_sets_are_exported_at_zero_right_after_start() {
    let h = Harness::start().await;
    let metrics = h.broker.metrics().await;
    let zero: [(&str, &str, &[&str]); 9] = [
        (
            "ci_token_rejections_total",
            "reason",
            TOKEN_REJECTION_REASONS,
        ),
        ("ci_sts_errors_total", "kind", STS_ERROR_KINDS),
        ("ci_binding_mismatches_total", "field", BINDING_FIELDS),
        ("ci_jwks_refresh_total", "result", &["error"]),
        ("ci_policy_reloads_total", "result", &["ok", "error"]),
        ("ci_tls_reloads_total", "result", &["ok", "error"]),
        ("ci_rate_limited_total", "scope", &["repository", "global"]),
        // The default policy's only role, and denials that match no role.
        ("ci_opa_policy_denials_total", "role", &["deploy", "none"]),
        ("ci_creds_issued_total", "role", &["deploy"]),
    ];
    for (name, label, values) in zero {
        for value in values {
            assert_eq!(
                metrics.value(name, &[(label, value)]),
                Some(0.0),
                "{name}{{{label}=\"{value}\"}} is not exported at 0:\n{}",
                metrics.0
            );
        }
    }
    for role_family in ["ci_creds_expired_total", "ci_creds_active"] {
        metrics.assert_value(role_family, &[("role", "deploy")], 0.0);
    }
    for status in ["200", "400", "401", "403", "429", "500", "503"] {
        assert_eq!(
            metrics.value(
                "ci_http_requests_total",
                &[("route", "/issue"), ("status", status)]
            ),
            Some(0.0),
            "POST /issue {status} is not exported at 0:\n{}",
            metrics.0
        );
    }
    // The keys were fetched before the broker turned ready.
    metrics.assert_at_least("ci_jwks_refresh_total", &[("result", "ok")], 1.0);
    assert_eq!(metrics.value("ci_ready", &[]), Some(1.0), "{}", metrics.0);
    let fetched = metrics
        .value(
            "ci_jwks_last_success_timestamp_seconds",
            &[("issuer_index", "0")],
        )
        .unwrap_or_else(|| panic!("no JWKS timestamp:\n{}", metrics.0));
    assert!(
        fetched > (now() - 600) as f64 && fetched <= (now() + 1) as f64,
        "{fetched}"
    );
    assert!(
        metrics
            .value("ci_jwks_last_success_age_seconds", &[("issuer_index", "0")])
            .is_some_and(|age| age < 600.0),
        "{}",
        metrics.0
    );
    assert_eq!(
        metrics.value("ci_build_info", &[("version", env!("CARGO_PKG_VERSION"))]),
        Some(1.0),
        "{}",
        metrics.0
    );
    for process in [
        "process_start_time_seconds",
        "process_resident_memory_bytes",
    ] {
        assert!(
            metrics.value_or_zero(process, &[]) > 0.0,
            "{process}:\n{}",
            metrics.0
        );
    }
}

/// A replica that never got keys: `up` would be 1, but it reports itself not
/// ready; its key age is left out rather than a huge number, and the time of
/// the last success says 0 (never).
#[tokio::test]
async fn a_replica_without_keys_reports_not_ready() {
    let h = start_while_the_jwks_fails(|_| {}).await;
    let jwks = &h.jwks;
    eventually("a failed JWKS fetch", || {
        (jwks.hits(JWKS_PATH) >= 1).then_some(())
    })
    .await;
    assert_unavailable(&h.issue_token(&h.token().build(), json!({})).await);

    let metrics = h.broker.metrics().await;
    assert_eq!(metrics.value("ci_ready", &[]), Some(0.0), "{}", metrics.0);
    metrics.assert_value(
        "ci_jwks_last_success_timestamp_seconds",
        &[("issuer_index", "0")],
        0.0,
    );
    assert!(
        !metrics.has_family("ci_jwks_last_success_age_seconds"),
        "an age without a success:\n{}",
        metrics.0
    );
    metrics.assert_value(
        "ci_http_requests_total",
        &[("route", "/issue"), ("status", "503")],
        1.0,
    );
}
