//! Successful issuance: what the caller gets, what STS is asked, what the
//! audit log and the metrics say.

use attestation_broker::api::{CredentialProcess, ErrorBody, ErrorCode};
use secrecy::ExposeSecret as _;
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::metric_assert::AssertMetric;
use crate::support::broker::field;
use crate::support::sts::{StsIssued, StsRequest};
use crate::support::tokens::{
    self, CHECK_RUN_ID, JOB_WORKFLOW_REF, REF, REPOSITORY, REPOSITORY_ID, REPOSITORY_OWNER_ID,
    RUN_ATTEMPT, RUN_ID, SHA,
};
use crate::support::{
    Harness, ROLE_ARN, Req, Resp, assert_issued, assert_issued_as, assert_no_leak,
};

const SESSION_NAME: &str = "gh-24766983965-2-72463523102";

fn parse_time(text: &str) -> OffsetDateTime {
    OffsetDateTime::parse(text, &Rfc3339)
        .unwrap_or_else(|err| unreachable!("{text:?} is not RFC 3339: {err}"))
}

/// The top-level keys of a JSON answer, sorted: the wire types ignore
/// unknown keys, so an extra one is caught here.
fn keys_of(resp: &Resp) -> Vec<String> {
    let mut keys: Vec<String> = resp.json().as_object().unwrap().keys().cloned().collect();
    keys.sort_unstable();
    keys
}

/// Asserts a 200 whose body is exactly the credentials STS handed out: the
/// documented keys and nothing else, each with the value STS issued.
fn assert_body_matches(resp: &Resp, issued: &StsIssued, role: &str, session_name: &str) {
    let body = assert_issued(resp);
    assert_eq!(
        keys_of(resp),
        [
            "access_key_id",
            "expiration",
            "role",
            "secret_access_key",
            "session_name",
            "session_token"
        ]
    );
    assert_eq!(body.access_key_id, issued.access_key_id);
    assert_eq!(
        body.secret_access_key.expose_secret(),
        issued.secret_access_key
    );
    assert_eq!(body.session_token.expose_secret(), issued.session_token);
    assert_eq!(body.role.as_deref(), Some(role));
    assert_eq!(body.session_name.as_deref(), Some(session_name));
    assert!(
        body.expiration.ends_with('Z'),
        "expiration {:?} is not UTC `Z`",
        body.expiration
    );
    assert_eq!(parse_time(&body.expiration), parse_time(&issued.expiration));
}

fn session_name_is_valid(name: &str) -> bool {
    (2..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c))
}

fn tag_value_is_valid(value: &str) -> bool {
    value.chars().count() <= 256
        && value
            .chars()
            .all(|c| c.is_alphanumeric() || c == ' ' || "_.:/=+-@".contains(c))
}

/// The session tags the default token must produce.
fn assert_default_tags(request: &StsRequest) {
    for (key, value) in [
        ("repository", REPOSITORY),
        ("repository_id", REPOSITORY_ID),
        ("repository_owner_id", REPOSITORY_OWNER_ID),
        ("ref", REF),
        ("sha", SHA),
        ("run_id", RUN_ID),
        ("run_attempt", RUN_ATTEMPT),
        ("event_name", "push"),
        ("job_workflow_ref", JOB_WORKFLOW_REF),
    ] {
        assert_eq!(
            request.tag(key),
            Some(value),
            "tag {key}; all tags: {:?}",
            request.tags
        );
    }
    assert_eq!(
        request.tag("environment"),
        None,
        "no environment claim, no environment tag"
    );
    assert!(request.tags.len() <= 50);
    for (key, value) in &request.tags {
        assert!(!key.is_empty() && key.len() <= 128, "tag key {key:?}");
        assert!(
            tag_value_is_valid(value),
            "tag {key} = {value:?} is outside STS's alphabet or limits"
        );
    }
}

/// The one AssumeRole call, checked against the contract.
fn the_sts_call(h: &Harness) -> (StsRequest, StsIssued) {
    let requests = h.sts.requests();
    assert_eq!(requests.len(), 1, "exactly one AssumeRole: {requests:?}");
    let request = requests[0].clone();
    assert_eq!(request.action, "AssumeRole");
    assert_eq!(request.version, "2011-06-15");
    let authorization = request.authorization.clone().unwrap_or_default();
    assert!(
        authorization.contains("Credential=AKIDTESTBROKER/"),
        "STS request not signed with the broker's static key: {authorization:?}"
    );
    assert!(
        authorization.contains("/us-east-1/sts/aws4_request"),
        "STS request not signed for us-east-1 STS: {authorization:?}"
    );
    (request, h.sts.issued()[0].clone())
}

async fn assert_issued_audit(
    h: &Harness,
    resp: &Resp,
    token: &str,
    issued: &StsIssued,
    session_name: &str,
) {
    let event = h.broker.wait_for_audit(&resp.request_id()).await;
    let text = event.to_string();
    let expect = |name: &str, value: &str| {
        assert_eq!(
            field(&event, name).as_deref(),
            Some(value),
            "audit field {name}: {text}"
        );
    };
    expect("event", "credential_issued");
    expect("role", "deploy");
    expect("repository", REPOSITORY);
    expect("repository_id", REPOSITORY_ID);
    expect("repository_owner_id", REPOSITORY_OWNER_ID);
    expect("ref", REF);
    expect("sha", SHA);
    expect("run_id", RUN_ID);
    expect("run_attempt", RUN_ATTEMPT);
    expect("check_run_id", CHECK_RUN_ID);
    expect("job_workflow_ref", JOB_WORKFLOW_REF);
    expect("actor", tokens::ACTOR);
    expect("event_name", "push");
    expect("session_name", session_name);
    expect("access_key_id", &issued.access_key_id);
    assert_eq!(
        field(&event, "token_sha256")
            .map(|hash| hash.to_ascii_lowercase())
            .as_deref(),
        Some(tokens::sha256_hex(token).as_str()),
        "audit token_sha256: {text}"
    );
    for name in [
        "jti",
        "matched_rule",
        "expiration",
        "policy_version",
        "reason",
    ] {
        assert!(
            event.get(name).is_some(),
            "audit event lacks `{name}`: {text}"
        );
    }
    assert!(
        !field(&event, "matched_rule").unwrap_or_default().is_empty(),
        "empty matched_rule: {text}"
    );
    assert!(
        !field(&event, "policy_version")
            .unwrap_or_default()
            .is_empty(),
        "empty policy_version: {text}"
    );
    for secret in [
        token,
        &tokens::signature_of(token),
        &issued.secret_access_key,
        &issued.session_token,
    ] {
        assert!(
            !text.contains(secret),
            "audit event contains a secret: {text}"
        );
    }
}

#[tokio::test]
async fn json_body_yields_credentials_from_assume_role() {
    let h = Harness::start().await;
    let builder = h.token();
    let token = builder.build();
    let resp = h
        .broker
        .issue(
            &json!({"oidc_token": token, "repo": REPOSITORY, "sha": SHA, "job_id": CHECK_RUN_ID}),
        )
        .await;
    let (request, issued) = the_sts_call(&h);
    assert_body_matches(&resp, &issued, "deploy", SESSION_NAME);
    assert_eq!(request.role_arn, ROLE_ARN);
    assert_eq!(request.session_name, SESSION_NAME);
    assert_eq!(request.duration_seconds, Some(900));
    assert_default_tags(&request);
    let event = h.broker.wait_for_audit(&resp.request_id()).await;
    assert_eq!(field(&event, "jti"), Some(builder.jti()));
    assert_issued_audit(&h, &resp, &token, &issued, SESSION_NAME).await;
}

/// The token in the Authorization header, with an empty body or with a JSON
/// body whose binding fields hold.
#[tokio::test]
async fn bearer_header_with_empty_or_json_body_yields_credentials() {
    let body = json!({"repo": REPOSITORY, "sha": SHA, "job_id": CHECK_RUN_ID});
    for request in [Req::raw(None, Vec::new()), Req::json(&body)] {
        let h = Harness::start().await;
        let token = h.token().build();
        let resp = h.broker.call(request.clone().bearer(&token)).await;
        let (sts_request, issued) = the_sts_call(&h);
        assert_body_matches(&resp, &issued, "deploy", SESSION_NAME);
        assert_eq!(sts_request.role_arn, ROLE_ARN);
        assert_eq!(sts_request.duration_seconds, Some(900));
        assert_issued_audit(&h, &resp, &token, &issued, SESSION_NAME).await;
    }
}

#[tokio::test]
async fn the_python_fetcher_request_shape_works_unchanged() {
    // fetch_ephemeral_creds.py posts exactly these three fields and reads four.
    let h = Harness::start().await;
    let token = h.token().build();
    let resp = h
        .broker
        .issue(&json!({"oidc_token": token, "job_id": CHECK_RUN_ID, "repo": REPOSITORY}))
        .await;
    // The wire type requires the four fields the script reads; none is empty.
    let body = assert_issued(&resp);
    for (key, value) in [
        ("access_key_id", body.access_key_id.as_str()),
        ("secret_access_key", body.secret_access_key.expose_secret()),
        ("session_token", body.session_token.expose_secret()),
        ("expiration", body.expiration.as_str()),
    ] {
        assert!(!value.is_empty(), "empty {key}: {}", resp.text());
    }
}

#[tokio::test]
async fn json_content_type_with_charset_is_accepted() {
    let h = Harness::start().await;
    let token = h.token().build();
    let body = serde_json::to_vec(&json!({"oidc_token": token})).unwrap();
    let resp = h
        .broker
        .call(Req::raw(Some("application/json; charset=utf-8"), body))
        .await;
    assert_issued(&resp);
}

#[tokio::test]
async fn requested_duration_is_passed_to_sts_and_absent_means_the_role_duration() {
    let policy =
        crate::support::DEFAULT_POLICY.replace("duration_seconds = 900", "duration_seconds = 3600");
    let h = Harness::with_policy(&policy).await;

    let resp = h
        .issue_token(&h.token().build(), json!({"duration_seconds": 1800}))
        .await;
    let body = assert_issued(&resp);
    let first = h.sts.requests()[0].clone();
    assert_eq!(first.duration_seconds, Some(1800));
    let expiration = parse_time(&body.expiration);
    let lifetime = expiration - OffsetDateTime::now_utc();
    assert!(
        lifetime > time::Duration::seconds(900) && lifetime <= time::Duration::seconds(1800),
        "{lifetime}"
    );

    let resp = h.issue_token(&h.token().build(), json!({})).await;
    assert_issued(&resp);
    assert_eq!(
        h.sts.requests()[1].duration_seconds,
        Some(3600),
        "absent duration = the role's duration_seconds"
    );

    let resp = h
        .issue_token(&h.token().build(), json!({"duration_seconds": 900}))
        .await;
    assert_issued(&resp);
    assert_eq!(h.sts.requests()[2].duration_seconds, Some(900));
}

#[tokio::test]
async fn a_role_without_duration_seconds_issues_900_seconds() {
    let policy = crate::support::DEFAULT_POLICY.replace("duration_seconds = 900\n", "");
    let h = Harness::with_policy(&policy).await;
    let resp = h.issue_token(&h.token().build(), json!({})).await;
    assert_issued(&resp);
    assert_eq!(h.sts.requests()[0].duration_seconds, Some(900));
}

#[tokio::test]
async fn credential_process_format() {
    let h = Harness::start().await;
    let token = h.token().build();
    let body = json!({"oidc_token": token});
    let resp = h
        .broker
        .call(Req::json(&body).path("/issue?format=credential_process"))
        .await;
    let body: CredentialProcess = assert_issued_as(&resp);
    let issued = h.sts.issued()[0].clone();
    assert_eq!(
        keys_of(&resp),
        [
            "AccessKeyId",
            "Expiration",
            "SecretAccessKey",
            "SessionToken",
            "Version"
        ]
    );
    assert_eq!(resp.json()["Version"], 1, "`Version` is the number 1");
    assert_eq!(body.access_key_id, issued.access_key_id);
    assert_eq!(
        body.secret_access_key.expose_secret(),
        issued.secret_access_key
    );
    assert_eq!(body.session_token.expose_secret(), issued.session_token);
    assert!(body.expiration.ends_with('Z'));
    assert_eq!(parse_time(&body.expiration), parse_time(&issued.expiration));
}

#[tokio::test]
async fn repo_binding_is_ascii_case_insensitive() {
    let h = Harness::start().await;
    let resp = h
        .issue_token(&h.token().build(), json!({"repo": "OurOrg/Widget-SERVICE"}))
        .await;
    assert_issued(&resp);
    // Identity comes from the claims, never from the request's spelling.
    assert_eq!(h.sts.requests()[0].tag("repository"), Some(REPOSITORY));
}

#[tokio::test]
async fn audience_list_containing_an_accepted_audience_is_accepted() {
    let h = Harness::start().await;
    let token = h
        .token()
        .claim("aud", json!(["sts.amazonaws.com", tokens::AUDIENCE]))
        .build();
    assert_issued(&h.issue_token(&token, json!({})).await);
}

#[tokio::test]
async fn metrics_count_the_issuance() {
    let h = Harness::start().await;
    let before = h.broker.metrics().await;
    assert_eq!(
        before.value_or_zero("ci_creds_issued_total", &[("role", "deploy")]),
        0.0
    );

    assert_issued(&h.issue_token(&h.token().build(), json!({})).await);
    assert_issued(&h.issue_token(&h.token().build(), json!({})).await);

    let after = h.broker.metrics().await;
    after.assert_value("ci_creds_issued_total", &[("role", "deploy")], 2.0);
    after.assert_value("ci_creds_active", &[("role", "deploy")], 2.0);
    after.assert_value("ci_sts_latency_seconds_count", &[], 2.0);
    after.assert_at_least("ci_http_requests_total", &[("status", "200")], 2.0);
}

#[tokio::test]
async fn every_answer_carries_a_distinct_request_id_that_the_audit_event_repeats() {
    let h = Harness::start().await;
    let ok = h.issue_token(&h.token().build(), json!({})).await;
    assert_issued(&ok);
    let denied = h
        .issue_token(&h.token().build(), json!({"repo": "ourorg/other"}))
        .await;
    assert_eq!(denied.status, 403);
    let ok_id = ok.request_id();
    let denied_id = denied.request_id();
    assert_ne!(ok_id, denied_id);
    let denied_body: ErrorBody = serde_json::from_slice(&denied.body).unwrap();
    assert_eq!(denied_body.error, ErrorCode::Forbidden);
    assert_eq!(denied_body.request_id, denied_id);
    let event = h.broker.wait_for_audit(&ok_id).await;
    assert_eq!(field(&event, "event").as_deref(), Some("credential_issued"));
    let event = h.broker.wait_for_audit(&denied_id).await;
    assert_eq!(field(&event, "event").as_deref(), Some("credential_denied"));
}

#[tokio::test]
async fn environment_is_tagged_when_present() {
    let h = Harness::start().await;
    let token = h.token().claim("environment", "production").build();
    assert_issued(&h.issue_token(&token, json!({})).await);
    assert_eq!(h.sts.requests()[0].tag("environment"), Some("production"));
}

#[tokio::test]
async fn session_name_falls_back_to_the_short_sha_without_check_run_id() {
    let h = Harness::start().await;
    let token = h.token().without_claim("check_run_id").build();
    let body = assert_issued(&h.issue_token(&token, json!({})).await);
    let name = h.sts.requests()[0].session_name.clone();
    assert_eq!(body.session_name.as_deref(), Some(name.as_str()));
    let prefix = format!("gh-{RUN_ID}-{RUN_ATTEMPT}-");
    let rest = name
        .strip_prefix(&prefix)
        .unwrap_or_else(|| unreachable!("{name:?} does not start with {prefix:?}"));
    assert!(
        rest.len() >= 7 && SHA.starts_with(rest),
        "{name:?}: expected a short sha after {prefix:?}"
    );
    assert!(session_name_is_valid(&name), "{name:?}");
}

#[tokio::test]
async fn session_name_and_tags_stay_within_sts_limits_for_extreme_claims() {
    let policy = crate::support::DEFAULT_POLICY.replace(
        r#"ref = ["refs/heads/main", "refs/heads/release/*"]"#,
        r#"ref = "refs/heads/**""#,
    );
    let h = Harness::with_policy(&policy).await;
    let long_ref = format!(
        "refs/heads/feature/{}#1~x^y?*[z]{{}}\\ä€",
        "deep/".repeat(60)
    );
    let token = h
        .token()
        .claim("run_id", "9".repeat(40))
        .claim("run_attempt", "12")
        .claim("check_run_id", "7".repeat(40))
        .claim("ref", long_ref.as_str())
        .claim(
            "job_workflow_ref",
            format!("ourorg/widget-service/.github/workflows/a b!$%&.yml@{long_ref}"),
        )
        .claim("environment", "prod (eu-west-1); \"quoted\" <tag>")
        .build();
    let body = assert_issued(&h.issue_token(&token, json!({})).await);
    let request = h.sts.requests()[0].clone();
    assert!(
        session_name_is_valid(&request.session_name),
        "session name {:?}",
        request.session_name
    );
    assert!(
        request.session_name.starts_with("gh-"),
        "{:?}",
        request.session_name
    );
    assert_eq!(
        body.session_name.as_deref(),
        Some(request.session_name.as_str())
    );
    for key in ["ref", "job_workflow_ref", "environment"] {
        assert!(
            request.tag(key).is_some(),
            "tag {key} missing: {:?}",
            request.tags
        );
    }
    for (key, value) in &request.tags {
        assert!(
            tag_value_is_valid(value),
            "tag {key} = {value:?} is outside STS's alphabet or limits"
        );
    }
}

#[tokio::test]
async fn session_tags_can_be_turned_off_per_role() {
    let policy = crate::support::DEFAULT_POLICY.replace(
        "duration_seconds = 900\n",
        "duration_seconds = 900\nsession_tags = false\n",
    );
    let h = Harness::with_policy(&policy).await;
    assert_issued(&h.issue_token(&h.token().build(), json!({})).await);
    let request = h.sts.requests()[0].clone();
    assert!(
        request.tags.is_empty(),
        "session_tags = false but tags were sent: {:?}",
        request.tags
    );
    assert_eq!(request.session_name, SESSION_NAME);
}

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let h = Harness::start().await;
    for resp in [
        h.broker.get("/no-such-route").await,
        h.broker.get("/issue").await,
        h.broker.call(Req::raw(None, Vec::new())).await,
    ] {
        assert_ne!(resp.status, 200);
        resp.request_id();
        assert_no_leak(&resp, &[ROLE_ARN.to_owned()]);
    }
}
