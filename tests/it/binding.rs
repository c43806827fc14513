//! Claim binding: `repo`, `sha` and `job_id` may only narrow the token.

use serde_json::{Value, json};

use crate::support::broker::field;
use crate::support::tokens::{CHECK_RUN_ID, REPOSITORY, SHA};
use crate::support::{Harness, assert_forbidden, assert_issued};

/// Requests whose binding does not hold, one broker for the table. Each: a
/// generic 403, no STS call, a `credential_denied` audit event, one more
/// binding mismatch counted, and the token is not burned (the same token,
/// correctly bound, then works). Every case has its own token.
#[tokio::test]
async fn mismatches_are_refused_and_leave_the_token_usable() {
    let cases = [
        ("repo_mismatch", json!({"repo": "ourorg/other-service"})),
        (
            "repo_prefix_is_not_a_match",
            json!({"repo": "ourorg/widget"}),
        ),
        (
            "sha_mismatch",
            json!({"sha": "0000000000000000000000000000000000000000"}),
        ),
        (
            "sha_must_match_exactly",
            json!({"sha": SHA.to_ascii_uppercase()}),
        ),
        ("short_sha_is_not_a_match", json!({"sha": &SHA[..7]})),
        (
            "job_id_mismatch_with_check_run_id",
            json!({"job_id": "72463523103"}),
        ),
    ];
    let h = Harness::in_process().await;
    for (mismatches, (name, extra)) in (1u32..).zip(cases) {
        println!("case {name}");
        mismatch(&h, extra, f64::from(mismatches)).await;
    }
}

async fn mismatch(h: &Harness, extra: Value, mismatches_so_far: f64) {
    let token = h.token().build();
    let calls_before = h.sts.calls();
    let resp = h.issue_token(&token, extra.clone()).await;
    assert_forbidden(&resp);
    assert_eq!(
        h.sts.calls(),
        calls_before,
        "STS called despite a binding mismatch ({extra})"
    );
    let event = h.broker.wait_for_audit(&resp.request_id()).await;
    assert_eq!(
        field(&event, "event").as_deref(),
        Some("credential_denied"),
        "{event}"
    );
    let metrics = h.broker.metrics().await;
    assert_eq!(
        metrics.value("ci_binding_mismatches_total", &[]),
        Some(mismatches_so_far),
        "{}",
        metrics.0
    );
    // Binding is checked before the replay store: the same token, correctly bound, still works.
    assert_issued(&h.issue_token(&token, json!({})).await);
}

#[tokio::test]
async fn job_id_given_but_token_has_no_check_run_id() {
    let h = Harness::in_process().await;
    let token = h.token().without_claim("check_run_id").build();
    let resp = h.issue_token(&token, json!({"job_id": CHECK_RUN_ID})).await;
    assert_forbidden(&resp);
    assert_eq!(h.sts.calls(), 0);
}

#[tokio::test]
async fn job_id_is_not_matched_against_other_claims() {
    // GitHub signs no job_id; run_id or the workflow's job name must not satisfy it.
    let h = Harness::in_process().await;
    for job_id in [crate::support::tokens::RUN_ID, "deploy", "Deploy widget"] {
        let token = h.token().without_claim("check_run_id").build();
        let resp = h.issue_token(&token, json!({"job_id": job_id})).await;
        assert_forbidden(&resp);
    }
    assert_eq!(h.sts.calls(), 0);
}

#[tokio::test]
async fn all_bindings_matching_succeeds() {
    let h = Harness::in_process().await;
    let token = h.token().build();
    let resp = h
        .issue_token(
            &token,
            json!({"repo": REPOSITORY, "sha": SHA, "job_id": CHECK_RUN_ID}),
        )
        .await;
    assert_issued(&resp);
}

#[tokio::test]
async fn empty_job_id_is_no_binding() {
    // "when present and non-empty": an empty job_id (e.g. an unset workflow variable) binds nothing.
    let h = Harness::in_process().await;
    let token = h.token().without_claim("check_run_id").build();
    assert_issued(&h.issue_token(&token, json!({"job_id": ""})).await);
}

#[tokio::test]
async fn one_mismatching_field_among_matching_ones_is_enough() {
    let h = Harness::in_process().await;
    let token = h.token().build();
    let resp = h
        .issue_token(
            &token,
            json!({"repo": REPOSITORY, "sha": SHA, "job_id": "1"}),
        )
        .await;
    assert_forbidden(&resp);
    assert_eq!(h.sts.calls(), 0);
}
