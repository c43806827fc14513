//! Replay: a token's `(iss, jti)` is good for one issuance.

use std::sync::Arc;

use serde_json::json;

use crate::metric_assert::AssertMetric;
use crate::support::broker::field;
use crate::support::{Harness, Req, Resp, assert_forbidden, assert_issued, assert_unavailable};

#[tokio::test]
async fn the_same_token_twice_is_refused_before_sts() {
    let h = Harness::start().await;
    let token = h.token().build();
    assert_issued(&h.issue_token(&token, json!({})).await);
    let resp = h.issue_token(&token, json!({})).await;
    assert_forbidden(&resp);
    assert_eq!(h.sts.calls(), 1, "STS must be called once");
    let metrics = h.broker.metrics().await;
    metrics.assert_value("ci_replay_rejections_total", &[], 1.0);
    metrics.assert_value("ci_creds_issued_total", &[("role", "deploy")], 1.0);
    let event = h.broker.wait_for_audit(&resp.request_id()).await;
    let kind = field(&event, "event");
    assert_eq!(kind.as_deref(), Some("credential_denied"), "{event}");
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

/// Copies of one token sent at once in [`one_token_sent_at_once_is_issued_once_in_every_trial`].
const COPIES: usize = 100;

/// Trials of that test: `IT_REPLAY_TRIALS`, default 20.
fn replay_trials() -> usize {
    std::env::var("IT_REPLAY_TRIALS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(20)
}

/// The double-issuance race: [`COPIES`] copies of one token released together
/// (keep-alive connections already open), trial after trial with a fresh
/// token each time. Every trial must end with exactly one 200, the rest 403,
/// and one STS call. Doubles are counted over all trials before asserting, so
/// a failure reports how often it happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_token_sent_at_once_is_issued_once_in_every_trial() {
    let h = Arc::new(
        Harness::start_with(|spec| {
            // Every copy must reach the replay check: no per-repository limit.
            spec.set("server.rate_limit_per_repository_per_minute", 0);
        })
        .await,
    );
    let trials = replay_trials();
    let mut doubles = Vec::new();
    for trial in 0..trials {
        let token = h.token().build();
        let calls_before = h.sts.calls();
        let start = Arc::new(tokio::sync::Barrier::new(COPIES));
        let tasks: Vec<_> = (0..COPIES)
            .map(|_| {
                let (h, start, body) = (
                    Arc::clone(&h),
                    Arc::clone(&start),
                    json!({"oidc_token": token}),
                );
                tokio::spawn(async move {
                    start.wait().await;
                    h.broker.issue(&body).await
                })
            })
            .collect();
        let issued = count_issued(tasks).await;
        let sts_calls = h.sts.calls() - calls_before;
        assert_eq!(sts_calls, issued, "trial {trial}: one STS call per 200");
        assert!(issued >= 1, "trial {trial}: the first use must be issued");
        if issued > 1 {
            doubles.push((trial, issued));
        }
    }
    eprintln!(
        "replay race: {} of {trials} trials of {COPIES} concurrent copies issued more than once {doubles:?}",
        doubles.len()
    );
    assert!(
        doubles.is_empty(),
        "one token issued more than once in {} of {trials} trials (trial, 200s): {doubles:?}",
        doubles.len()
    );
}

/// `replay.max_entries` unexpired marks held: a new token is refused with 503
/// (never failed open, never issued by evicting an older mark), and every
/// token already used is still a replay.
#[tokio::test]
async fn a_full_replay_store_refuses_new_tokens_and_forgets_no_used_one() {
    let h = Harness::start_with(|spec| {
        spec.set("replay.max_entries", 2)
            .set("replay.fail_open", true);
    })
    .await;
    let used = [h.token().build(), h.token().build()];
    for token in &used {
        assert_issued(&h.issue_token(token, json!({})).await);
    }
    for _ in 0..3 {
        let resp = h.issue_token(&h.token().build(), json!({})).await;
        assert_unavailable(&resp);
        let event = h.broker.wait_for_audit(&resp.request_id()).await;
        assert_eq!(
            field(&event, "reason").as_deref(),
            Some("replay_store_full"),
            "{event}"
        );
    }
    for token in &used {
        assert_forbidden(&h.issue_token(token, json!({})).await);
    }
    assert_eq!(h.sts.calls(), 2);
    let metrics = h.broker.metrics().await;
    metrics.assert_value("ci_replay_store_full_total", &[], 3.0);
}

/// How many of the concurrent answers are 200; every other one is a generic 403.
pub(crate) async fn count_issued(tasks: Vec<tokio::task::JoinHandle<Resp>>) -> usize {
    let mut issued = 0;
    for task in tasks {
        let resp = task.await.unwrap();
        if resp.status == 200 {
            issued += 1;
        } else {
            assert_forbidden(&resp);
        }
    }
    issued
}
