//! STS throttling, refusing, failing, hanging and stalling mid-answer.

use serde_json::json;

use crate::metric_assert::AssertMetric;
use crate::support::sts::Fault;
use crate::support::{
    ACCOUNT_ID, Harness, ROLE_ARN, Resp, assert_issued, assert_no_leak, assert_unavailable, msg,
};

/// A broker whose STS fails every call with `fault`, and its answer to one
/// request with a valid token.
async fn answer_with_sts_failing(fault: Fault) -> (Harness, Resp) {
    let h = Harness::start().await;
    h.sts.fail_next(fault, 100);
    let resp = h.issue_token(&h.token().build(), json!({})).await;
    (h, resp)
}

#[tokio::test]
async fn one_throttle_is_retried() {
    let h = Harness::start().await;
    h.sts.fail_next(Fault::Throttling, 1);
    assert_issued(&h.issue_token(&h.token().build(), json!({})).await);
    assert_eq!(h.sts.calls(), 2);
    // ci_sts_errors_total counts failed AssumeRole calls, not retried attempts.
    let metrics = h.broker.metrics().await;
    metrics.assert_value("ci_sts_errors_total", &[("kind", "throttled")], 0.0);
}

#[tokio::test]
async fn persistent_throttling_is_503_after_max_attempts() {
    let (h, resp) = answer_with_sts_failing(Fault::Throttling).await;
    assert_unavailable(&resp);
    assert!(!resp.text().contains("Rate exceeded"));
    assert_eq!(h.sts.calls(), 3, "sts.max_attempts = 3");
    let metrics = h.broker.metrics().await;
    metrics.assert_at_least("ci_sts_errors_total", &[("kind", "throttled")], 1.0);
    assert_eq!(metrics.value_or_zero("ci_creds_issued_total", &[]), 0.0);
}

#[tokio::test]
async fn persistent_internal_failure_is_503() {
    let (h, resp) = answer_with_sts_failing(Fault::InternalFailure).await;
    assert_unavailable(&resp);
    assert!(!resp.text().contains("InternalFailure"));
    assert!(h.sts.calls() >= 2, "5xx is retried");
}

/// An STS that never finishes its answer: 503, counted as an STS timeout,
/// nothing issued.
async fn assert_sts_timeout_is_503(fault: Fault) {
    let (h, resp) = answer_with_sts_failing(fault).await;
    assert_unavailable(&resp);
    assert!(!resp.text().contains("AccessKeyId"));
    let metrics = h.broker.metrics().await;
    metrics.assert_at_least("ci_sts_errors_total", &[("kind", "timeout")], 1.0);
    assert_eq!(metrics.value_or_zero("ci_creds_issued_total", &[]), 0.0);
}

#[tokio::test]
async fn hanging_sts_is_503() {
    assert_sts_timeout_is_503(Fault::Hang).await;
}

#[tokio::test]
async fn an_sts_answer_that_stalls_mid_body_is_503() {
    // Headers and half the document arrive, the rest never does.
    assert_sts_timeout_is_503(Fault::Stall).await;
}

#[tokio::test]
async fn access_denied_never_echoes_the_upstream_error() {
    let (h, resp) = answer_with_sts_failing(Fault::AccessDenied).await;
    assert_ne!(resp.status, 200);
    assert_no_leak(
        &resp,
        &[
            ROLE_ARN.to_owned(),
            ACCOUNT_ID.to_owned(),
            "not authorized".to_owned(),
            "AccessDenied".to_owned(),
        ],
    );
    // A broker-side failure: one of the contract's fixed answers.
    let body = resp.json();
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        (resp.status == 503 && message == msg::UNAVAILABLE)
            || (resp.status == 403 && message == msg::FORBIDDEN),
        "unexpected answer to an STS AccessDenied: {} {body}",
        resp.status
    );
    if resp.status == 503 {
        assert_unavailable(&resp);
    } else {
        crate::support::assert_forbidden(&resp);
    }
    let metrics = h.broker.metrics().await;
    metrics.assert_at_least("ci_sts_errors_total", &[("kind", "denied")], 1.0);
}
