//! Rego after the built-in rules, and policy hot reload, through the real binary.

use serde_json::json;

use crate::support::broker::{DEADLINE, field};
use crate::support::{DEFAULT_POLICY, Harness, Resp, assert_forbidden, assert_issued};

const MODULE: &str = r#"
package broker

import rego.v1

default allow := false

allow if {
    input.claims.actor != "mallory"
    input.role.name == "deploy"
    input.request.role == "deploy"
}

# No default: undefined unless the actor is "alice".
maybe if input.claims.actor == "alice"

# An evaluation error for a non-numeric actor.
broken if to_number(input.claims.actor) > 1
"#;

async fn with_rego(query: &str) -> (Harness, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broker.rego");
    std::fs::write(&path, MODULE).unwrap();
    let query = query.to_owned();
    let harness = Harness::start_with(move |spec| {
        spec.set("policy.rego", path.display().to_string());
        spec.set("policy.rego_query", query);
    })
    .await;
    (harness, dir)
}

async fn refused_with(h: &Harness, actor: &str, reason: &str) {
    let calls = h.sts.calls();
    let resp = deploy_with_claim(h, "actor", actor).await;
    assert_forbidden(&resp);
    assert_eq!(h.sts.calls(), calls, "a Rego refusal must not reach STS");
    let event = h.broker.wait_for_audit(&resp.request_id()).await;
    assert_eq!(field(&event, "reason").as_deref(), Some(reason), "{event}");
}

/// The answer to a request for `deploy` with a token whose claim `name` is `value`.
async fn deploy_with_claim(h: &Harness, name: &str, value: &str) -> Resp {
    h.issue_token(
        &h.token().claim(name, value).build(),
        json!({"role": "deploy"}),
    )
    .await
}

#[tokio::test]
async fn rego_allows_and_denies_after_the_rules() {
    let (h, _dir) = with_rego("data.broker.allow").await;
    assert_issued(
        &h.issue_token(&h.token().build(), json!({"role": "deploy"}))
            .await,
    );
    refused_with(&h, "mallory", "policy_rego_deny").await;
    // Rego never widens: a token the rules refuse stays refused.
    let resp = deploy_with_claim(&h, "ref", "refs/heads/other").await;
    assert_forbidden(&resp);
    // Rego sees the request: without `role` in the request, its rule does not hold.
    let resp = h.issue_token(&h.token().build(), json!({})).await;
    assert_forbidden(&resp);
}

#[tokio::test]
async fn undefined_denies() {
    let (h, _dir) = with_rego("data.broker.maybe").await;
    assert_issued(&deploy_with_claim(&h, "actor", "alice").await);
    refused_with(&h, "bob", "policy_rego_undefined").await;
}

#[tokio::test]
async fn an_evaluation_error_denies() {
    let (h, _dir) = with_rego("data.broker.broken").await;
    refused_with(&h, "not-a-number", "policy_rego_error").await;
}

/// Grants as [`MODULE`] does, except for the actor "slow": for that one,
/// `allow` makes one long built-in call that regorus's own clock cannot stop.
const RUNAWAY: &str = r#"
package broker

import rego.v1

default allow := false

allow if input.claims.actor != "slow"

allow if {
    input.claims.actor == "slow"
    count(numbers.range(1, 2000000)) < 0
}
"#;

const ABANDONED_ENDED: &str = "an abandoned Rego evaluation has ended";

#[tokio::test]
async fn a_runaway_rule_is_cut_off_at_its_limit_and_stalls_no_other_request() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("runaway.rego");
    std::fs::write(&path, RUNAWAY).unwrap();
    let h = Harness::start_with(move |spec| {
        spec.set("policy.rego", path.display().to_string());
        // One async worker: an evaluation running on it would stall every request.
        spec.env("TOKIO_WORKER_THREADS", "1");
    })
    .await;

    // The runaway request is refused as any Rego error is, at the limit:
    // its evaluation is still running when the answer comes.
    let runaway = deploy_with_claim(&h, "actor", "slow").await;
    assert_forbidden(&runaway);
    let runaway_id = runaway.request_id();
    let ended = |h: &Harness| {
        h.broker
            .lines()
            .iter()
            .any(|line| line.contains(ABANDONED_ENDED) && line.contains(&runaway_id))
    };
    let event = h.broker.wait_for_audit(&runaway_id).await;
    assert_eq!(
        field(&event, "reason").as_deref(),
        Some("policy_rego_error")
    );
    assert!(
        field(&event, "detail")
            .unwrap_or_default()
            .contains("ran past its 50 ms limit"),
        "{event}"
    );
    assert_eq!(h.sts.calls(), 0);
    assert!(
        !ended(&h),
        "the runaway request was answered only once its evaluation had ended"
    );

    // Meanwhile another request is served, Rego included. (A machine busy
    // enough to keep its evaluation off the CPU for the whole limit refuses
    // it as it would a runaway: a few attempts keep that from failing the test.)
    let mut probe = h.issue_token(&h.token().build(), json!({})).await;
    for _ in 0..4 {
        if probe.status == 200 {
            break;
        }
        let event = h.broker.wait_for_audit(&probe.request_id()).await;
        assert_eq!(
            field(&event, "reason").as_deref(),
            Some("policy_rego_error"),
            "{event}"
        );
        probe = h.issue_token(&h.token().build(), json!({})).await;
    }
    assert_issued(&probe);
    h.broker.wait_for_audit(&probe.request_id()).await;
    assert!(
        !ended(&h),
        "the other request must not wait for the runaway evaluation"
    );

    // The abandoned evaluation ends on its own thread, and says so.
    h.broker
        .wait_for_line("the abandoned evaluation to end", |line| {
            line.contains(ABANDONED_ENDED) && line.contains(&runaway_id)
        })
        .await;
}

#[tokio::test]
async fn a_bad_rego_module_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.rego");
    std::fs::write(&path, "package broker\nallow if {").unwrap();
    let jwks = crate::support::jwks::JwksServer::start(vec![crate::support::tokens::KEY_A.jwk()])
        .await
        .unwrap();
    let sts = crate::support::sts::StsServer::start().await.unwrap();
    let mut spec =
        crate::support::broker::BrokerSpec::new(&jwks.issuer(), sts.url().as_str(), DEFAULT_POLICY);
    spec.set("policy.rego", path.display().to_string());
    let config = spec.write_to(dir.path());
    let out = crate::support::broker::run_to_completion(
        &["check-config", "--config", config.to_str().unwrap()],
        &[],
    )
    .await;
    assert_eq!(out.code, Some(64), "{}", out.all());
    let all = out.all();
    assert!(all.contains("bad.rego: does not compile"), "{all}");
}

#[tokio::test]
async fn the_policy_reloads_on_change_and_keeps_the_old_one_on_error() {
    let dir = tempfile::tempdir().unwrap();
    let policy_path = dir.path().join("live-policy.toml");
    std::fs::write(&policy_path, DEFAULT_POLICY).unwrap();
    let watched = policy_path.clone();
    let h = Harness::start_with(move |spec| {
        spec.set("policy.file", watched.display().to_string());
        spec.set("policy.reload_seconds", 1);
    })
    .await;
    let first = h.issue_token(&h.token().build(), json!({})).await;
    assert_issued(&first);
    let first_event = h.broker.wait_for_audit(&first.request_id()).await;
    let first_version = field(&first_event, "policy_version").unwrap();

    // Narrow the policy: only release branches.
    std::fs::write(
        &policy_path,
        DEFAULT_POLICY.replace("\"refs/heads/main\", ", ""),
    )
    .unwrap();
    metric_eventually(&h, "ci_policy_reloads_total{result=\"ok\"} 1").await;
    let resp = h.issue_token(&h.token().build(), json!({})).await;
    assert_forbidden(&resp);
    let event = h.broker.wait_for_audit(&resp.request_id()).await;
    assert_ne!(field(&event, "policy_version").unwrap(), first_version);

    // A broken file is counted and ignored; the narrowed policy stays, and the broker stays ready.
    std::fs::write(&policy_path, "[[roles]]\nname = \"broken\"\n").unwrap();
    metric_eventually(&h, "ci_policy_reloads_total{result=\"error\"} 1").await;
    assert_eq!(h.broker.admin_get("/readyz").await.status, 200);
    let resp = h.issue_token(&h.token().build(), json!({})).await;
    assert_forbidden(&resp);
    let release = h.token().claim("ref", "refs/heads/release/1.0").build();
    assert_issued(&h.issue_token(&release, json!({})).await);
}

/// Polls `/metrics` until it holds `line`, for at most the harness deadline.
async fn metric_eventually(h: &Harness, line: &str) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if h.broker.metrics().await.0.contains(line) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for `{line}` in /metrics"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
