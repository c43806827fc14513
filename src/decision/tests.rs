//! The decision: rules and Rego must both agree, and the grant carries the
//! session identity of the claims it was decided on.

use super::*;
use crate::config::DEFAULT_REGO_QUERY as DEFAULT_QUERY;
use crate::context::ContextSource;
use crate::policy::Policy;
use crate::rego::RegoPolicy;

const RULES: &str = include_str!("../../tests/fixtures/policies/decision.toml");

/// Allows only ourorg/app, and only for the role the rules chose.
const REGO: &str = r#"
package broker

import rego.v1

default allow := false

allow if {
    input.claims.repository == "ourorg/app"
    input.role.name == "deploy"
    input.role.role_arn == "arn:aws:iam::123456789012:role/deploy"
    input.request.job_id == "31337"
}
"#;

fn policy(rego: Option<&str>) -> PolicySet {
    let rules = Policy::compile(RULES, "rules.toml").unwrap().policy;
    let rego = rego.map(|text| RegoPolicy::compile(text, "broker.rego", DEFAULT_QUERY).unwrap());
    PolicySet::new(rules, rego)
}

fn verified(repository: &str) -> VerifiedClaims {
    let mut claims = ClaimSet::default();
    for (name, value) in [
        ("repository", repository),
        ("repository_id", "123456789"),
        ("ref", "refs/heads/main"),
        ("sha", "0123456789abcdef0123456789abcdef01234567"),
        ("run_id", "1234567890"),
        ("run_attempt", "2"),
        ("check_run_id", "31337"),
        ("event_name", "push"),
    ] {
        claims.insert(name, value);
    }
    VerifiedClaims::for_tests(claims, "https://issuer.test", "jti-1", 4_102_444_800)
}

fn request(role: Option<&str>, duration_seconds: Option<u64>) -> AccessRequest {
    AccessRequest {
        repo: Some("ourorg/app".to_owned()),
        sha: None,
        job_id: Some("31337".to_owned()),
        role: role.map(str::to_owned),
        duration_seconds,
        permissions: None,
    }
}

/// Decides, retrying a few times when Rego answers with a time-limit error: a
/// machine busy enough to hold the evaluation thread off the CPU for the
/// whole limit refuses like a runaway module would (the test of that lives in
/// `rego`).
async fn decide_settled(
    policy: &PolicySet,
    claims: &VerifiedClaims,
    request: &AccessRequest,
) -> Result<Grant, Refusal> {
    let mut outcome = Err(Refusal::Rules(Denial::UnknownRole));
    for _ in 0..5 {
        let mut audit = AuditEvent::new("test", policy.version());
        outcome = decide(
            policy,
            claims,
            request,
            &GithubNotConfigured,
            "test",
            &mut audit,
        )
        .await;
        match &outcome {
            Err(Refusal::Rego {
                decision: RegoDecision::Error(why),
                ..
            }) if why.contains("50 ms") => {}
            _ => break,
        }
    }
    outcome
}

/// The grant of `role` to the claims of `repository` (a grant is expected).
async fn granted(policy: &PolicySet, repository: &str, role: &str) -> Grant {
    decide_settled(policy, &verified(repository), &request(Some(role), None))
        .await
        .unwrap()
}

fn aws(grant: &Grant) -> &AwsSession {
    match grant.credential() {
        CredentialRequest::Aws(session) => session,
        CredentialRequest::GitHub(_) => panic!("an AWS role granted a GitHub token"),
    }
}

#[tokio::test]
async fn the_grant_carries_the_role_and_the_session_of_the_judged_claims() {
    let policy = policy(None);
    let claims = verified("ourorg/app");
    let grant = decide_settled(&policy, &claims, &request(Some("deploy"), Some(1800)))
        .await
        .unwrap();
    assert_eq!(grant.role(), "deploy");
    assert_eq!(grant.rule(), "deploy.allow[0]");
    assert_eq!(grant.policy_version(), policy.version());
    let session = aws(&grant);
    assert_eq!(session.role_arn(), "arn:aws:iam::123456789012:role/deploy");
    assert_eq!(session.duration_seconds(), 1800);
    assert_eq!(session.session_name(), "gh-1234567890-2-31337");
    assert_eq!(session.session_name(), session_name(claims.claims()));
    assert_eq!(session.tags(), session_tags(claims.claims()).as_slice());
    assert!(
        session
            .tags()
            .contains(&("repository".to_owned(), "ourorg/app".to_owned())),
        "{:?}",
        session.tags()
    );
}

#[tokio::test]
async fn a_role_without_session_tags_gets_none_and_the_default_duration() {
    let policy = policy(None);
    let grant = granted(&policy, "ourorg/quiet", "quiet").await;
    assert_eq!(grant.role(), "quiet");
    let session = aws(&grant);
    assert_eq!(session.duration_seconds(), 900);
    assert!(session.tags().is_empty(), "{:?}", session.tags());
    assert_eq!(session.session_name(), "gh-1234567890-2-31337");
}

#[tokio::test]
async fn a_rules_denial_is_the_rules_answer() {
    let policy = policy(Some(REGO));
    let claims = verified("theirorg/app");
    let role_request = RoleRequest {
        role: Some("deploy"),
        duration_seconds: None,
        permissions: None,
    };
    let expected = policy.rules.evaluate(&claims, &role_request).unwrap_err();
    assert!(
        matches!(expected, Denial::NotPermitted { .. }),
        "{expected:?}"
    );
    assert_eq!(
        decide_settled(&policy, &claims, &request(Some("deploy"), None)).await,
        Err(Refusal::Rules(expected))
    );
    assert_eq!(
        decide_settled(
            &policy,
            &verified("ourorg/app"),
            &request(Some("deploy"), Some(7200))
        )
        .await,
        Err(Refusal::Rules(Denial::DurationOutOfRange {
            role: "deploy".to_owned(),
            requested: 7200,
            max: 3600
        }))
    );
}

#[tokio::test]
async fn rego_must_agree_too() {
    let policy = policy(Some(REGO));
    // The rules allow ourorg/other (ourorg/*); Rego does not.
    assert_eq!(
        decide_settled(
            &policy,
            &verified("ourorg/other"),
            &request(Some("deploy"), None)
        )
        .await,
        Err(Refusal::Rego {
            role: "deploy".to_owned(),
            rule: "deploy.allow[0]".to_owned(),
            decision: RegoDecision::Deny,
        })
    );
    // Rego sees the request: a different job_id is refused.
    let mut other_job = request(Some("deploy"), None);
    other_job.job_id = Some("1".to_owned());
    assert!(matches!(
        decide_settled(&policy, &verified("ourorg/app"), &other_job).await,
        Err(Refusal::Rego {
            decision: RegoDecision::Deny,
            ..
        })
    ));
    // Both agree: a grant.
    let grant = granted(&policy, "ourorg/app", "deploy").await;
    assert_eq!(grant.role(), "deploy");
    assert_eq!(grant.policy_version(), policy.version());
    assert_ne!(
        policy.version(),
        policy.rules.version(),
        "Rego is part of the version"
    );
}

#[test]
fn the_rego_input_is_claims_request_and_role() {
    let policy = policy(None);
    let claims = verified("ourorg/app");
    let role_request = RoleRequest {
        role: Some("deploy"),
        duration_seconds: None,
        permissions: None,
    };
    let allowed = policy.rules.evaluate(&claims, &role_request).unwrap();
    let input = rego_input(claims.claims(), &request(Some("deploy"), None), &allowed);
    assert_eq!(input["claims"]["repository"], "ourorg/app");
    assert_eq!(input["claims"]["run_attempt"], "2");
    assert_eq!(
        input["request"],
        serde_json::json!({"repo": "ourorg/app", "sha": null, "job_id": "31337", "role": "deploy", "duration_seconds": null})
    );
    assert_eq!(
        input["role"],
        serde_json::json!({"name": "deploy", "role_arn": "arn:aws:iam::123456789012:role/deploy", "duration_seconds": 3600})
    );
}

const GITHUB_RULES: &str = include_str!("../../tests/fixtures/policies/github.toml");

fn github_policy(rego: Option<&str>) -> PolicySet {
    let rules = Policy::compile(GITHUB_RULES, "github.toml").unwrap().policy;
    let rego = rego.map(|text| RegoPolicy::compile(text, "broker.rego", DEFAULT_QUERY).unwrap());
    PolicySet::new(rules, rego)
}

fn verified_main(repository: &str) -> VerifiedClaims {
    let mut claims = verified(repository).claims().clone();
    claims.insert("repository_owner_id", "1234567");
    VerifiedClaims::for_tests(claims, "https://issuer.test", "jti-1", 4_102_444_800)
}

#[tokio::test]
async fn a_github_role_grants_an_installation_token_for_the_judged_repository() {
    let policy = github_policy(None);
    let mut asked = request(Some("release-notes"), None);
    asked.repo = Some("OurOrg/App".to_owned());
    let grant = decide_settled(&policy, &verified_main("OurOrg/App"), &asked)
        .await
        .unwrap();
    assert_eq!(grant.rule(), "release-notes.allow[0]");
    let CredentialRequest::GitHub(token) = grant.credential() else {
        panic!("a GitHub role granted AWS credentials: {grant:?}");
    };
    assert_eq!(token.owner(), "OurOrg");
    assert_eq!(token.repositories(), ["App"]);
    let expected: crate::api::Permissions = [
        ("contents".to_owned(), crate::api::Access::Write),
        ("pull_requests".to_owned(), crate::api::Access::Read),
    ]
    .into_iter()
    .collect();
    assert_eq!(token.permissions(), &expected);

    // The request narrows it.
    asked.permissions = Some(
        [("contents".to_owned(), crate::api::Access::Read)]
            .into_iter()
            .collect(),
    );
    let grant = decide_settled(&policy, &verified_main("OurOrg/App"), &asked)
        .await
        .unwrap();
    let CredentialRequest::GitHub(token) = grant.credential() else {
        panic!("{grant:?}");
    };
    assert_eq!(token.permissions(), asked.permissions.as_ref().unwrap());
}

#[test]
fn rego_sees_the_kind_repositories_and_permissions_of_a_github_role() {
    let policy = github_policy(None);
    let claims = verified_main("ourorg/app");
    let role_request = RoleRequest {
        role: Some("docs-sync"),
        duration_seconds: None,
        permissions: None,
    };
    let mut claims_set = claims.claims().clone();
    claims_set.insert("ref", "refs/heads/release/7");
    let claims =
        VerifiedClaims::for_tests(claims_set, "https://issuer.test", "jti-1", 4_102_444_800);
    let allowed = policy.rules.evaluate(&claims, &role_request).unwrap();
    let input = rego_input(claims.claims(), &request(Some("docs-sync"), None), &allowed);
    assert_eq!(
        input["role"],
        serde_json::json!({
            "name": "docs-sync",
            "kind": "github",
            "owner": "ourorg",
            "repositories": ["ourorg/app", "ourorg/docs"],
            "permissions": {"contents": "write"},
        })
    );
    assert_eq!(input["request"].get("permissions"), None);
}

const CONTEXT_RULES: &str = include_str!("../../tests/fixtures/policies/context.toml");

fn context_claims(git_ref: &str, owner_id: &str) -> VerifiedClaims {
    let mut claims = verified("ourorg/app").claims().clone();
    claims.insert("repository_owner_id", owner_id);
    claims.insert("repository_id", "42");
    claims.insert("ref", git_ref);
    claims.insert("runner_environment", "github-hosted");
    VerifiedClaims::for_tests(claims, "https://issuer.test", "jti-1", 4_102_444_800)
}

async fn decide_with(
    policy: &PolicySet,
    claims: &VerifiedClaims,
    role: &str,
    context: &impl ContextSource,
) -> Result<Grant, Refusal> {
    let mut audit = AuditEvent::new("test", policy.version());
    decide(
        policy,
        claims,
        &request(Some(role), None),
        context,
        "test",
        &mut audit,
    )
    .await
}

#[tokio::test]
async fn context_answers_come_from_the_source_and_decide_with_the_claims() {
    let rules = Policy::compile(CONTEXT_RULES, "context.toml")
        .unwrap()
        .policy;
    let policy = PolicySet::new(rules, None);
    let main = context_claims("refs/heads/main", "1234567");
    let passed = crate::policy::CannedContext::parse(
        r#"{"checks": {"dependency-scan": {"status": "completed", "conclusion": "success", "app": "snyk"},
                       "unit-tests": {"status": "completed", "conclusion": "success", "app": "github-actions"}}}"#,
    )
    .unwrap();
    let grant = decide_with(&policy, &main, "deploy", &passed)
        .await
        .unwrap();
    assert_eq!(grant.rule(), "deploy.allow[0]");

    let failed = crate::policy::CannedContext::parse(
        r#"{"checks": {"dependency-scan": {"status": "completed", "conclusion": "success", "app": "github-actions"},
                       "unit-tests": {"status": "completed", "conclusion": "success", "app": "github-actions"}}}"#,
    )
    .unwrap();
    assert!(matches!(
        decide_with(&policy, &main, "deploy", &failed).await,
        Err(Refusal::Rules(Denial::NotPermitted { .. }))
    ));

    // Without GitHub every question is unavailable: a 503, never a grant.
    assert!(matches!(
        decide_with(&policy, &main, "deploy", &GithubNotConfigured).await,
        Err(Refusal::Rules(Denial::ContextUnavailable { .. }))
    ));
    // … but claims that fail are refused on the claims: nothing was asked.
    let outsider = context_claims("refs/heads/main", "999");
    assert!(matches!(
        decide_with(&policy, &outsider, "deploy", &GithubNotConfigured).await,
        Err(Refusal::Rules(Denial::NotPermitted { .. }))
    ));
    // A role without context conditions is decided without GitHub.
    assert!(
        decide_with(&policy, &main, "ci-read", &GithubNotConfigured)
            .await
            .is_ok()
    );
}
