//! Policy outcomes as the caller sees them.

use serde_json::json;

use crate::metric_assert::AssertMetric;
use crate::support::broker::field;
use crate::support::{
    DEFAULT_POLICY, Harness, assert_bad_request, assert_forbidden, assert_issued, msg,
};

/// The role ARNs of `tests/fixtures/policies/read_and_admin.toml`.
const READ_ARN: &str = "arn:aws:iam::123456789012:role/GitHubActions-ReadOnly";
const ADMIN_ARN: &str = "arn:aws:iam::123456789012:role/GitHubActions-Admin";

/// `deploy` (default), `read` (any ourorg repository) and `admin` (a repository
/// id the default token does not have).
fn three_roles() -> String {
    format!(
        "{DEFAULT_POLICY}\n{}",
        include_str!("../fixtures/policies/read_and_admin.toml")
    )
}

async fn denied(h: &Harness, token: &str, extra: serde_json::Value) {
    let calls_before = h.sts.calls();
    let resp = h.issue_token(token, extra).await;
    assert_forbidden(&resp);
    assert!(!resp.text().contains("GitHubActions-"), "{}", resp.text());
    assert_eq!(h.sts.calls(), calls_before, "a denial must not reach STS");
    let event = h.broker.wait_for_audit(&resp.request_id()).await;
    assert_eq!(
        field(&event, "event").as_deref(),
        Some("credential_denied"),
        "{event}"
    );
}

#[tokio::test]
async fn allow_rule_grants() {
    let h = Harness::start().await;
    let token = h
        .token()
        .claim("ref", "refs/heads/release/2.4")
        .claim("event_name", "workflow_dispatch")
        .build();
    let resp = h.issue_token(&token, json!({})).await;
    let body = assert_issued(&resp);
    assert_eq!(body.role.as_deref(), Some("deploy"));
    // The audit line is written after the answer: wait for it, never race it.
    let event = h.broker.wait_for_audit(&resp.request_id()).await;
    assert!(
        !field(&event, "matched_rule").unwrap_or_default().is_empty(),
        "{event}"
    );
}

#[tokio::test]
async fn no_allow_rule_matches() {
    let h = Harness::start().await;
    denied(
        &h,
        &h.token().claim("ref", "refs/heads/feature/x").build(),
        json!({}),
    )
    .await;
    let metrics = h.broker.metrics().await;
    metrics.assert_value("ci_opa_policy_denials_total", &[], 1.0);
}

#[tokio::test]
async fn star_does_not_cross_a_slash() {
    let h = Harness::start().await;
    denied(
        &h,
        &h.token()
            .claim("ref", "refs/heads/release/2.4/hotfix")
            .build(),
        json!({}),
    )
    .await;
}

#[tokio::test]
async fn patterns_match_the_whole_value() {
    let h = Harness::start().await;
    denied(
        &h,
        &h.token().claim("ref", "refs/heads/main-old").build(),
        json!({}),
    )
    .await;
    denied(
        &h,
        &h.token().claim("ref", "xrefs/heads/main").build(),
        json!({}),
    )
    .await;
}

#[tokio::test]
async fn owner_is_bound_by_id_not_by_name() {
    let h = Harness::start().await;
    let token = h.token().claim("repository_owner_id", "7654321").build();
    denied(&h, &token, json!({})).await;
}

#[tokio::test]
async fn deny_rule_wins_over_allow() {
    let h = Harness::start().await;
    denied(
        &h,
        &h.token().claim("runner_environment", "self-hosted").build(),
        json!({}),
    )
    .await;
}

#[tokio::test]
async fn absent_claim_never_matches_an_allow_rule() {
    let policy = DEFAULT_POLICY.replace(
        r#"event_name = ["push", "workflow_dispatch"]"#,
        "event_name = [\"push\", \"workflow_dispatch\"]\nenvironment = \"**\"",
    );
    let h = Harness::with_policy(&policy).await;
    denied(&h, &h.token().build(), json!({})).await;
    assert_issued(
        &h.issue_token(
            &h.token().claim("environment", "production").build(),
            json!({}),
        )
        .await,
    );
}

#[tokio::test]
async fn absent_claim_never_matches_a_deny_rule() {
    let policy = format!("{DEFAULT_POLICY}\n[[roles.deny]]\nenvironment = \"**\"\n");
    let h = Harness::with_policy(&policy).await;
    assert_issued(&h.issue_token(&h.token().build(), json!({})).await);
    denied(
        &h,
        &h.token().claim("environment", "production").build(),
        json!({}),
    )
    .await;
}

#[tokio::test]
async fn name_claims_compare_case_insensitively() {
    let policy = DEFAULT_POLICY.replace(
        r#"repository = "ourorg/*""#,
        r#"repository = "OurOrg/Widget-*""#,
    );
    let h = Harness::with_policy(&policy).await;
    assert_issued(&h.issue_token(&h.token().build(), json!({})).await);
}

#[tokio::test]
async fn ref_claims_compare_exactly() {
    let policy = DEFAULT_POLICY.replace(r#""refs/heads/main""#, r#""refs/heads/MAIN""#);
    let h = Harness::with_policy(&policy).await;
    denied(&h, &h.token().build(), json!({})).await;
}

#[tokio::test]
async fn booleans_in_the_policy_match_string_claims() {
    let policy = DEFAULT_POLICY.replace(
        r#"event_name = ["push", "workflow_dispatch"]"#,
        "event_name = [\"push\", \"workflow_dispatch\"]\nref_protected = true",
    );
    let h = Harness::with_policy(&policy).await;
    assert_issued(&h.issue_token(&h.token().build(), json!({})).await);
    denied(
        &h,
        &h.token().claim("ref_protected", "false").build(),
        json!({}),
    )
    .await;
}

#[tokio::test]
async fn ambiguous_role_is_a_400_and_does_not_burn_the_token() {
    let h = Harness::with_policy(&three_roles()).await;
    let token = h.token().build();
    let resp = h.issue_token(&token, json!({})).await;
    assert_bad_request(&resp, msg::AMBIGUOUS_ROLE);
    assert_eq!(h.sts.calls(), 0);
    // The same token, naming a role, now succeeds.
    let body = assert_issued(&h.issue_token(&token, json!({"role": "read"})).await);
    assert_eq!(body.role.as_deref(), Some("read"));
    assert_eq!(h.sts.requests()[0].role_arn, READ_ARN);
    assert_eq!(h.sts.requests()[0].duration_seconds, Some(3600));
}

#[tokio::test]
async fn naming_one_of_several_matching_roles() {
    let h = Harness::with_policy(&three_roles()).await;
    let body = assert_issued(
        &h.issue_token(&h.token().build(), json!({"role": "deploy"}))
            .await,
    );
    assert_eq!(body.role.as_deref(), Some("deploy"));
    assert_eq!(h.sts.requests()[0].role_arn, crate::support::ROLE_ARN);
}

#[tokio::test]
async fn a_single_matching_role_is_used_when_none_is_named() {
    // `admin` exists but does not match the token; `deploy` is the only candidate.
    let policy = format!(
        "{DEFAULT_POLICY}\n[[roles]]\nname = \"admin\"\nrole_arn = \"{ADMIN_ARN}\"\n\n[[roles.allow]]\nrepository_id = \"999\"\n"
    );
    let h = Harness::with_policy(&policy).await;
    let body = assert_issued(&h.issue_token(&h.token().build(), json!({})).await);
    assert_eq!(body.role.as_deref(), Some("deploy"));
    assert_eq!(h.sts.requests()[0].role_arn, crate::support::ROLE_ARN);
}

#[tokio::test]
async fn named_role_not_permitted_is_forbidden() {
    let h = Harness::with_policy(&three_roles()).await;
    denied(&h, &h.token().build(), json!({"role": "admin"})).await;
}

#[tokio::test]
async fn unknown_role_is_forbidden() {
    let h = Harness::start().await;
    denied(&h, &h.token().build(), json!({"role": "superuser"})).await;
}

#[tokio::test]
async fn unknown_role_and_unpermitted_role_look_the_same() {
    let h = Harness::with_policy(&three_roles()).await;
    let unknown = h
        .issue_token(&h.token().build(), json!({"role": "superuser"}))
        .await;
    let unpermitted = h
        .issue_token(&h.token().build(), json!({"role": "admin"}))
        .await;
    assert_eq!(unknown.status, unpermitted.status);
    let strip = |mut body: serde_json::Value| {
        body["request_id"] = json!(null);
        body
    };
    assert_eq!(strip(unknown.json()), strip(unpermitted.json()));
}

#[tokio::test]
async fn duration_below_the_sts_minimum_is_a_400() {
    let h = Harness::start().await;
    for duration in [899, 0, 1] {
        let resp = h
            .issue_token(&h.token().build(), json!({"duration_seconds": duration}))
            .await;
        assert_bad_request(&resp, msg::BAD_DURATION);
    }
    assert_eq!(h.sts.calls(), 0);
}

#[tokio::test]
async fn duration_above_the_role_maximum_is_a_400() {
    let policy = DEFAULT_POLICY.replace("duration_seconds = 900", "duration_seconds = 3600");
    let h = Harness::with_policy(&policy).await;
    for duration in [3601, 43_200, 86_400_000] {
        let resp = h
            .issue_token(&h.token().build(), json!({"duration_seconds": duration}))
            .await;
        assert_bad_request(&resp, msg::BAD_DURATION);
    }
    assert_eq!(h.sts.calls(), 0);
    let token = h.token().build();
    assert_issued(
        &h.issue_token(&token, json!({"duration_seconds": 3600}))
            .await,
    );
    assert_eq!(h.sts.requests()[0].duration_seconds, Some(3600));
}

#[tokio::test]
async fn duration_above_the_default_900_is_a_400() {
    let h = Harness::start().await;
    let resp = h
        .issue_token(&h.token().build(), json!({"duration_seconds": 901}))
        .await;
    assert_bad_request(&resp, msg::BAD_DURATION);
    assert_eq!(h.sts.calls(), 0);
}

#[tokio::test]
async fn permissions_for_an_aws_role_are_a_400_once_the_role_is_granted() {
    let h = Harness::start().await;
    let calls_before = h.sts.calls();
    let asked = json!({"permissions": {"contents": "read"}});
    let resp = h.issue_token(&h.token().build(), asked.clone()).await;
    assert_bad_request(&resp, msg::FIELD_NOT_FOR_ROLE);
    assert_eq!(h.sts.calls(), calls_before, "refused before STS");
    let event = h.broker.wait_for_audit(&resp.request_id()).await;
    assert_eq!(
        field(&event, "reason").as_deref(),
        Some("field_not_for_role_kind"),
        "{event}"
    );
    assert_eq!(field(&event, "role").as_deref(), Some("deploy"), "{event}");
    // A token the rules refuse learns nothing about the role's kind: a 403.
    denied(
        &h,
        &h.token().claim("ref", "refs/heads/feature/x").build(),
        asked,
    )
    .await;
}
