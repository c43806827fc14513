//! The App client against the loopback stand-in for GitHub: real HTTP, the
//! stand-in's answers and the client's requests both checked against
//! GitHub's OpenAPI description.

mod openapi;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use secrecy::ExposeSecret as _;
use serde_json::json;

use super::*;
use crate::context::{Commit, ContextAnswer, ContextCondition, ContextSource as _};
use crate::testkit::github::{
    APP_ID, CheckRunSpec, Exchange, GithubFault, GithubStandIn, PullSpec, ReviewSpec,
};
use openapi::Description;

const SHA: &str = "d6f1e2c3b4a5968778695a4b3c2d1e0f9a8b7c6d";

struct Fixture {
    github: GithubStandIn,
    client: GithubClient,
    metrics: Metrics,
}

async fn fixture_with(request_timeout: u64, cache_seconds: u64, revoke_after: u64) -> Fixture {
    let github = GithubStandIn::start().await.unwrap();
    github.install("ourorg", &["api", "web"]);
    let key = AppKey::from_pem(github.app_key_pem()).unwrap();
    let config = GithubConfig {
        api_url: Some(github.url().clone()),
        app_id: AppId::parse(&APP_ID.to_string()).unwrap(),
        private_key_file: PathBuf::new(),
        request_timeout_seconds: request_timeout,
        context_cache_seconds: cache_seconds,
        // Shorter than the configuration allows, so the test sees it happen.
        revoke_after_seconds: revoke_after,
    };
    let metrics = Metrics::new().unwrap();
    let client = GithubClient::with_key(&config, key, metrics.clone()).unwrap();
    Fixture {
        github,
        client,
        metrics,
    }
}

async fn fixture() -> Fixture {
    fixture_with(2, 30, 900).await
}

fn permissions(pairs: &[(&str, Access)]) -> Permissions {
    pairs
        .iter()
        .map(|(name, access)| ((*name).to_owned(), *access))
        .collect()
}

/// One token for `ourorg/api` with `contents: read`.
async fn read_api_token(client: &GithubClient) -> Result<IssuedToken, GithubError> {
    client
        .issue(
            "ourorg",
            &names(&["api"]),
            &permissions(&[("contents", Access::Read)]),
            &mut Vec::new(),
        )
        .await
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|name| (*name).to_owned()).collect()
}

fn metric_line(metrics: &Metrics, prefix: &str) -> String {
    metrics
        .render()
        .lines()
        .find(|line| line.starts_with(prefix))
        .unwrap_or_default()
        .to_owned()
}

/// The App JWT a request carried, decoded without checking (the stand-in checked it).
fn jwt_claims(exchange: &Exchange) -> serde_json::Value {
    let jwt = exchange
        .header("authorization")
        .unwrap()
        .strip_prefix("Bearer ")
        .unwrap();
    let payload = jwt.split('.').nth(1).unwrap();
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn issues_tokens_scoped_as_asked_and_caches_the_installation() {
    let f = fixture().await;
    let asked = permissions(&[("contents", Access::Write), ("pull_requests", Access::Read)]);
    let mut ids = Vec::new();
    let issued = f
        .client
        .issue("ourorg", &names(&["api"]), &asked, &mut ids)
        .await
        .unwrap();
    assert!(issued.token.expose_secret().starts_with("ghs_devfake_"));
    assert_eq!(issued.repositories, vec!["ourorg/api"]);
    assert_eq!(issued.permissions, asked);
    assert_eq!(
        ids.len(),
        2,
        "installation lookup and token creation: {ids:?}"
    );
    assert!(issued.revoke_at < issued.expires_at);

    // Narrowed: exactly what was asked, and the installation from the cache.
    let narrowed = permissions(&[("contents", Access::Read)]);
    let issued = f
        .client
        .issue("OurOrg", &names(&["api"]), &narrowed, &mut Vec::new())
        .await
        .unwrap();
    assert_eq!(issued.permissions, narrowed);
    assert_eq!(f.github.calls(Operation::Installation).len(), 1);

    let created = f.github.calls(Operation::AccessToken);
    assert_eq!(created.len(), 2);
    let body: serde_json::Value = serde_json::from_slice(&created[0].body).unwrap();
    assert_eq!(
        body,
        json!({"repositories": ["api"], "permissions": {"contents": "write", "pull_requests": "read"}})
    );
    let claims = jwt_claims(&created[0]);
    assert_eq!(claims["iss"], APP_ID.to_string());
    let (iat, exp) = (
        claims["iat"].as_u64().unwrap(),
        claims["exp"].as_u64().unwrap(),
    );
    assert!(exp - iat <= 600, "{claims}");
    assert!(
        iat <= unix_now() - 59,
        "iat is backdated a minute: {claims}"
    );
    // One JWT serves both calls.
    assert_eq!(
        created[0].header("authorization"),
        created[1].header("authorization")
    );
    assert!(
        created[0]
            .header("user-agent")
            .unwrap()
            .starts_with("attestation-broker/")
    );
    Description::load().assert_conforms(&f.github.exchanges());
    assert_eq!(
        metric_line(
            &f.metrics,
            "ci_github_api_requests_total{operation=\"access_token\",status=\"2xx\"}"
        ),
        "ci_github_api_requests_total{operation=\"access_token\",status=\"2xx\"} 2"
    );
    assert!(metric_line(&f.metrics, "ci_github_rate_limit_remaining").ends_with(" 4997"));
}

#[tokio::test]
async fn an_app_not_installed_and_refused_permissions_are_refusals() {
    let f = fixture().await;
    let read = permissions(&[("contents", Access::Read)]);
    let err = f
        .client
        .issue("elsewhere", &names(&["api"]), &read, &mut Vec::new())
        .await
        .unwrap_err();
    assert_eq!(err, GithubError::NotInstalled("elsewhere/api".into()));
    assert!(err.is_refusal());
    // Not cached: installed later, it works.
    f.github.install("elsewhere", &["api"]);
    f.client
        .issue("elsewhere", &names(&["api"]), &read, &mut Vec::new())
        .await
        .unwrap();

    let admin = permissions(&[("administration", Access::Write)]);
    let err = f
        .client
        .issue("ourorg", &names(&["api"]), &admin, &mut Vec::new())
        .await
        .unwrap_err();
    assert!(
        matches!(err, GithubError::Refused { status: 422, .. }),
        "{err:?}"
    );
    let err = f
        .client
        .issue("ourorg", &names(&["api", "secret"]), &read, &mut Vec::new())
        .await
        .unwrap_err();
    assert!(err.is_refusal(), "{err:?}");
    assert_eq!(err.reason_code(), "github_refused");
    Description::load().assert_conforms(&f.github.exchanges());
}

#[tokio::test]
async fn github_down_slow_or_rate_limited_is_unavailable_with_retry_after() {
    let f = fixture_with(1, 30, 900).await;
    let read = permissions(&[("contents", Access::Read)]);
    let cases = [
        (GithubFault::ServerError, "github_server_error", 2),
        (GithubFault::Hang, "github_timeout", 2),
        (
            GithubFault::SecondaryRateLimit { retry_after: 42 },
            "github_rate_limited",
            42,
        ),
        (GithubFault::PrimaryRateLimit, "github_rate_limited", 60),
    ];
    for (fault, reason, retry_after) in cases {
        f.github.fail_next(Operation::AccessToken, fault, 1);
        let err = f
            .client
            .issue("ourorg", &names(&["api"]), &read, &mut Vec::new())
            .await
            .unwrap_err();
        assert_eq!(err.reason_code(), reason, "{fault:?}: {err:?}");
        assert!(!err.is_refusal());
        assert!(err.retry_after_seconds() >= 1);
        if retry_after != 60 {
            assert_eq!(err.retry_after_seconds(), retry_after, "{fault:?}");
        } else {
            assert!(err.retry_after_seconds() <= 60);
        }
    }
    for (status, count) in [("5xx", 1), ("timeout", 1), ("4xx", 2)] {
        let line = format!(
            "ci_github_api_requests_total{{operation=\"access_token\",status=\"{status}\"}} {count}"
        );
        assert_eq!(metric_line(&f.metrics, &line[..line.len() - 2]), line);
    }
    Description::load().assert_conforms(&f.github.exchanges());
}

#[tokio::test]
async fn issued_tokens_are_revoked_on_schedule() {
    let f = fixture_with(2, 30, 1).await;
    let revoker = f.client.spawn_revoker();
    let issued = read_api_token(&f.client).await.unwrap();
    let token = issued.token.expose_secret().to_owned();
    assert_eq!(f.github.is_revoked(&token), Some(false));
    let deadline = Instant::now() + Duration::from_secs(20);
    while f.github.is_revoked(&token) != Some(true) {
        assert!(Instant::now() < deadline, "not revoked in time");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let revoked = f.github.calls(Operation::Revoke);
    assert_eq!(revoked.len(), 1);
    assert_eq!(
        revoked[0].header("authorization"),
        Some(format!("Bearer {token}").as_str())
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while !metric_line(
        &f.metrics,
        "ci_github_tokens_revoked_total{reason=\"scheduled\"}",
    )
    .ends_with(" 1")
    {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(f.client.pending_revocations(), 0);
    Description::load().assert_conforms(&f.github.exchanges());
    revoker.abort();
}

#[tokio::test]
async fn revoking_twice_finds_the_token_already_invalid() {
    let f = fixture().await;
    let issued = read_api_token(&f.client).await.unwrap();
    let transport = Transport::new(Duration::from_secs(2), None).unwrap();
    assert_eq!(
        revoke_token(&transport, f.github.url(), &issued.token)
            .await
            .unwrap(),
        RevokeOutcome::Revoked
    );
    assert_eq!(
        revoke_token(&transport, f.github.url(), &issued.token)
            .await
            .unwrap(),
        RevokeOutcome::AlreadyInvalid
    );
}

#[tokio::test]
async fn describes_the_app_and_compares_permissions() {
    let f = fixture().await;
    let info = f.client.describe_app().await.unwrap();
    assert_eq!(info.slug, crate::testkit::github::APP_SLUG);
    let asked = permissions(&[
        ("contents", Access::Admin),
        ("checks", Access::Read),
        ("actions", Access::Read),
    ]);
    assert_eq!(
        missing_permissions(&asked, &info.permissions),
        vec![
            "actions: read (App granted: none)".to_owned(),
            "contents: admin (App granted: write)".to_owned()
        ]
    );
    Description::load().assert_conforms(&f.github.exchanges());
}

#[tokio::test]
async fn the_client_never_shows_its_key() {
    let f = fixture().await;
    let shown = format!("{:?}", f.client);
    let pem_line = f.github.app_key_pem().lines().nth(1).unwrap();
    assert!(!shown.contains(&pem_line[..20]), "{shown}");
    assert!(shown.contains("GithubClient"));
}

fn commit(event_name: &str, git_ref: &str) -> Commit {
    Commit {
        owner: "ourorg".into(),
        repo: "api".into(),
        sha: SHA.into(),
        event_name: event_name.into(),
        git_ref: git_ref.into(),
    }
}

fn check(name: &str, app: Option<&str>) -> ContextCondition {
    ContextCondition::CheckPassed {
        name: name.into(),
        app: app.map(str::to_owned),
    }
}

async fn ask(f: &Fixture, commit: &Commit, condition: &ContextCondition) -> ContextAnswer {
    let answers = f
        .client
        .answer(commit, std::slice::from_ref(condition))
        .await;
    answers.get(condition).unwrap().clone()
}

#[tokio::test]
async fn checks_pass_only_when_the_latest_run_succeeded() {
    let f = fixture().await;
    f.github.set_check_runs(
        "ourorg/api",
        SHA,
        vec![
            CheckRunSpec::completed("unit-tests", "failure", "github-actions"),
            CheckRunSpec::completed("unit-tests", "success", "github-actions"),
            CheckRunSpec::completed("lint", "failure", "github-actions"),
            CheckRunSpec::in_progress("e2e", "github-actions"),
            CheckRunSpec::completed("dependency-scan", "success", "github-actions"),
            CheckRunSpec::completed("dependency-scan", "failure", "snyk"),
        ],
    );
    let push = commit("push", "refs/heads/main");
    let cases = [
        (check("unit-tests", None), "pass"),
        (check("lint", None), "fail"),
        (check("e2e", None), "fail"),
        (check("missing", None), "fail"),
        // Only the named App's runs count: a job could forge the other one.
        (check("dependency-scan", Some("snyk")), "fail"),
        (check("dependency-scan", Some("github-actions")), "pass"),
        (check("unit-tests", Some("snyk")), "fail"),
    ];
    for (condition, expected) in &cases {
        let answer = ask(&f, &push, condition).await;
        assert_eq!(answer.label(), *expected, "{condition}: {answer:?}");
    }
    let asked = f.github.calls(Operation::CheckRuns);
    assert_eq!(
        asked[0].query_param("check_name").as_deref(),
        Some("unit-tests")
    );
    assert_eq!(asked[0].query_param("filter").as_deref(), Some("latest"));
    // The internal token is read-only and for this repository only.
    let minted: Vec<serde_json::Value> = f
        .github
        .calls(Operation::AccessToken)
        .iter()
        .map(|exchange| serde_json::from_slice(&exchange.body).unwrap())
        .collect();
    assert_eq!(
        minted,
        vec![
            json!({"repositories": ["api"], "permissions": {"checks": "read", "pull_requests": "read"}})
        ]
    );
    assert!(f.github.issued_tokens().is_empty());
    Description::load().assert_conforms(&f.github.exchanges());
    let line = "ci_context_checks_total{condition=\"checks_passed\",result=\"pass\"}";
    assert_eq!(metric_line(&f.metrics, line), format!("{line} 2"));
}

#[tokio::test]
async fn passed_answers_are_cached_failed_ones_asked_again_and_304s_reused() {
    let f = fixture().await;
    f.github.set_check_runs(
        "ourorg/api",
        SHA,
        vec![CheckRunSpec::in_progress("unit-tests", "github-actions")],
    );
    let push = commit("push", "refs/heads/main");
    let condition = check("unit-tests", None);
    assert_eq!(ask(&f, &push, &condition).await.label(), "fail");
    assert_eq!(ask(&f, &push, &condition).await.label(), "fail");
    let runs = f.github.calls(Operation::CheckRuns);
    assert_eq!(runs.len(), 2, "a failed answer is asked again");
    // The second ask was conditional and answered 304 at no rate-limit cost.
    assert_eq!(runs[1].status, 304);
    assert!(runs[1].header("if-none-match").is_some());

    f.github.set_check_runs(
        "ourorg/api",
        SHA,
        vec![CheckRunSpec::completed(
            "unit-tests",
            "success",
            "github-actions",
        )],
    );
    assert_eq!(ask(&f, &push, &condition).await.label(), "pass");
    assert_eq!(ask(&f, &push, &condition).await.label(), "pass");
    assert_eq!(
        f.github.calls(Operation::CheckRuns).len(),
        3,
        "a passed answer is reused without a call"
    );
    Description::load().assert_conforms(&f.github.exchanges());
}

#[tokio::test]
async fn concurrent_identical_questions_share_one_call() {
    let f = fixture().await;
    f.github.set_check_runs(
        "ourorg/api",
        SHA,
        vec![CheckRunSpec::completed(
            "unit-tests",
            "success",
            "github-actions",
        )],
    );
    let push = commit("push", "refs/heads/main");
    let condition = check("unit-tests", None);
    let answers = futures_join(&f, &push, &condition, 8).await;
    assert!(
        answers.iter().all(|answer| answer.label() == "pass"),
        "{answers:?}"
    );
    assert_eq!(f.github.calls(Operation::CheckRuns).len(), 1);
    assert_eq!(f.github.calls(Operation::AccessToken).len(), 1);
}

async fn futures_join(
    f: &Fixture,
    commit: &Commit,
    condition: &ContextCondition,
    count: usize,
) -> Vec<ContextAnswer> {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..count {
        let client = f.client.clone();
        let commit = commit.clone();
        let condition = condition.clone();
        set.spawn(async move {
            client
                .answer(&commit, std::slice::from_ref(&condition))
                .await
                .get(&condition)
                .cloned()
                .unwrap()
        });
    }
    set.join_all().await
}

#[tokio::test]
async fn github_failing_makes_answers_unavailable_never_pass() {
    let f = fixture_with(1, 30, 900).await;
    f.github.set_check_runs(
        "ourorg/api",
        SHA,
        vec![CheckRunSpec::completed(
            "unit-tests",
            "success",
            "github-actions",
        )],
    );
    let push = commit("push", "refs/heads/main");
    let condition = check("unit-tests", None);
    for fault in [
        GithubFault::ServerError,
        GithubFault::Hang,
        GithubFault::SecondaryRateLimit { retry_after: 5 },
    ] {
        f.github.fail_next(Operation::CheckRuns, fault, 1);
        let answer = ask(&f, &push, &condition).await;
        assert_eq!(answer.label(), "unavailable", "{fault:?}: {answer:?}");
    }
    // Nothing unavailable was cached: GitHub back, the answer is had.
    assert_eq!(ask(&f, &push, &condition).await.label(), "pass");
    let line = "ci_context_checks_total{condition=\"checks_passed\",result=\"unavailable\"}";
    assert_eq!(metric_line(&f.metrics, line), format!("{line} 3"));
}

const HEAD: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const OLDER: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const AUTHOR: u64 = 9;

fn merged_pull(number: u64) -> PullSpec {
    PullSpec {
        number,
        author: (AUTHOR, "author".into()),
        head_sha: HEAD.into(),
        merge_commit_sha: Some(SHA.into()),
        merged: true,
    }
}

#[tokio::test]
async fn approvals_count_each_reviewers_latest_review_of_the_head() {
    // No answer cache: each case asks afresh.
    let f = fixture_with(2, 0, 900).await;
    f.github.add_pull("ourorg/api", merged_pull(17), Some(SHA));
    let push = commit("push", "refs/heads/main");
    let cases: Vec<(Vec<ReviewSpec>, u32, &str)> = vec![
        (vec![ReviewSpec::new(1, "APPROVED", HEAD)], 1, "pass"),
        (vec![ReviewSpec::new(AUTHOR, "APPROVED", HEAD)], 1, "fail"),
        (vec![ReviewSpec::new(1, "APPROVED", OLDER)], 1, "fail"),
        (
            vec![
                ReviewSpec::new(1, "APPROVED", HEAD),
                ReviewSpec::new(2, "APPROVED", HEAD),
                ReviewSpec::new(2, "CHANGES_REQUESTED", HEAD),
            ],
            1,
            "fail",
        ),
        (
            vec![
                ReviewSpec::new(1, "CHANGES_REQUESTED", OLDER),
                ReviewSpec::new(1, "APPROVED", HEAD),
                ReviewSpec::new(1, "COMMENTED", HEAD),
                ReviewSpec::new(2, "APPROVED", HEAD),
            ],
            2,
            "pass",
        ),
    ];
    for (index, (reviews, needed, expected)) in cases.into_iter().enumerate() {
        f.github.set_reviews("ourorg/api", 17, reviews);
        let condition = ContextCondition::PullRequestApprovals(needed);
        let answer = ask(&f, &push, &condition).await;
        assert_eq!(answer.label(), expected, "case {index}: {answer:?}");
    }
    let reviews = f.github.calls(Operation::Reviews);
    assert_eq!(reviews[0].query_param("per_page").as_deref(), Some("100"));
    assert_eq!(reviews[0].query_param("page").as_deref(), Some("1"));
    Description::load().assert_conforms(&f.github.exchanges());
}

#[tokio::test]
async fn the_pull_request_is_found_by_ref_or_by_merge_commit() {
    let f = fixture().await;
    // Pull request 17 merged as SHA; pull request 21 open, its test merge at SHA.
    f.github.add_pull("ourorg/api", merged_pull(17), Some(SHA));
    f.github
        .set_reviews("ourorg/api", 17, vec![ReviewSpec::new(1, "APPROVED", HEAD)]);
    f.github.add_pull(
        "ourorg/api",
        PullSpec {
            number: 21,
            author: (AUTHOR, "author".into()),
            head_sha: OLDER.into(),
            merge_commit_sha: None,
            merged: false,
        },
        None,
    );
    let condition = ContextCondition::PullRequestApprovals(1);
    let push = commit("push", "refs/heads/main");
    assert_eq!(ask(&f, &push, &condition).await.label(), "pass");
    assert_eq!(f.github.calls(Operation::CommitPulls).len(), 1);
    let pr = Commit {
        sha: "cccccccccccccccccccccccccccccccccccccccc".into(),
        ..commit("pull_request", "refs/pull/21/merge")
    };
    let answer = ask(&f, &pr, &condition).await;
    assert_eq!(answer.label(), "fail");
    assert!(answer.detail().contains("pull request 21"), "{answer:?}");
    assert_eq!(
        f.github.calls(Operation::CommitPulls).len(),
        1,
        "a pull_request event names its pull request in the ref"
    );
    // A push whose commit is no pull request's merge commit.
    let orphan = Commit {
        sha: "dddddddddddddddddddddddddddddddddddddddd".into(),
        ..commit("push", "refs/heads/main")
    };
    let answer = ask(&f, &orphan, &condition).await;
    assert_eq!(answer.label(), "fail", "{answer:?}");
    Description::load().assert_conforms(&f.github.exchanges());
}

#[test]
fn the_validation_rejects_what_github_would_not_send() {
    let description = Description::load();
    let exchange = |status: u16, response: serde_json::Value| Exchange {
        operation: Some(Operation::AccessToken),
        method: "POST".into(),
        path: "/app/installations/5/access_tokens".into(),
        query: None,
        headers: vec![
            ("accept".into(), "application/vnd.github+json".into()),
            ("x-github-api-version".into(), "2022-11-28".into()),
            ("user-agent".into(), "attestation-broker/test".into()),
        ],
        body: br#"{"repositories":["api"],"permissions":{"contents":"read"}}"#.to_vec(),
        status,
        response: Some(response),
    };
    let good = exchange(
        201,
        json!({"token": "ghs_x", "expires_at": "2026-11-22T10:00:00Z"}),
    );
    assert_eq!(description.problems(&good), Vec::<String>::new());
    // A required field missing.
    let problems = description.problems(&exchange(201, json!({"token": "ghs_x"})));
    assert!(
        problems.iter().any(|p| p.contains("expires_at")),
        "{problems:?}"
    );
    // A wrong permission level in the request.
    let mut bad_request = good.clone();
    bad_request.body = br#"{"permissions":{"contents":"everything"}}"#.to_vec();
    assert!(!description.problems(&bad_request).is_empty());
    // A path that is not an operation, an undeclared parameter, a missing header.
    let mut bad_path = good.clone();
    bad_path.path = "/app/installations/5/tokens".into();
    assert!(!description.problems(&bad_path).is_empty());
    let mut bad_query = good.clone();
    bad_query.query = Some("debug=1".into());
    assert!(!description.problems(&bad_query).is_empty());
    let mut no_version = good.clone();
    no_version.headers.remove(1);
    assert!(!description.problems(&no_version).is_empty());
    // `nullable` is honoured: a null where the description allows one.
    let check_runs = Exchange {
        operation: Some(Operation::CheckRuns),
        method: "GET".into(),
        path: format!("/repos/o/r/commits/{SHA}/check-runs"),
        query: Some("check_name=x&filter=newest".into()),
        response: Some(json!({"total_count": 0, "check_runs": []})),
        status: 200,
        body: Vec::new(),
        ..good.clone()
    };
    let problems = description.problems(&check_runs);
    assert!(
        problems.iter().any(|p| p.contains("filter")),
        "{problems:?}"
    );
    assert_eq!(
        openapi::translate(&json!({"type": "string", "nullable": true, "enum": ["a"]})),
        json!({"type": ["string", "null"], "enum": ["a", null]})
    );
}

#[tokio::test]
async fn a_wrong_app_key_is_refused_by_github_and_never_a_refusal_of_the_caller() {
    let f = fixture().await;
    // The stand-in verifies the JWT against the App's public key.
    let other = AppKey::from_pem(include_str!("../../tests/fixtures/test_key_a.pem")).unwrap();
    let config = GithubConfig {
        api_url: Some(f.github.url().clone()),
        app_id: AppId::parse(&APP_ID.to_string()).unwrap(),
        private_key_file: PathBuf::new(),
        request_timeout_seconds: 2,
        context_cache_seconds: 30,
        revoke_after_seconds: 900,
    };
    let client = GithubClient::with_key(&config, other, Metrics::new().unwrap()).unwrap();
    let err = read_api_token(&client).await.unwrap_err();
    assert_eq!(
        err,
        GithubError::Unexpected {
            operation: "installation",
            status: 401
        }
    );
    assert!(!err.is_refusal(), "the operator's fault: 503, not 403");
    assert_eq!(f.github.calls(Operation::Installation)[0].status, 401);
    Description::load().assert_conforms(&f.github.exchanges());
}

#[tokio::test]
async fn new_metrics_are_exported_at_zero_from_the_start() {
    let metrics = Metrics::new().unwrap();
    let text = metrics.render();
    for line in [
        "ci_github_api_requests_total{operation=\"reviews\",status=\"timeout\"} 0",
        "ci_github_api_requests_total{operation=\"app\",status=\"2xx\"} 0",
        "ci_github_tokens_revoked_total{reason=\"error\"} 0",
        "ci_github_tokens_revoked_total{reason=\"scheduled\"} 0",
        "ci_context_checks_total{condition=\"pull_request_approvals\",result=\"unavailable\"} 0",
        "ci_github_rate_limit_remaining 0",
        "ci_github_api_latency_seconds_count{operation=\"revoke\"} 0",
    ] {
        assert!(text.lines().any(|l| l == line), "missing `{line}`");
    }
}

#[tokio::test]
async fn a_token_already_revoked_by_the_job_counts_as_revoked_on_schedule() {
    let f = fixture_with(2, 30, 1).await;
    let issued = read_api_token(&f.client).await.unwrap();
    // The job's last step revoked it first (`revoke-github-token`).
    let transport = Transport::new(Duration::from_secs(2), None).unwrap();
    revoke_token(&transport, f.github.url(), &issued.token)
        .await
        .unwrap();
    let revoker = f.client.spawn_revoker();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !metric_line(
        &f.metrics,
        "ci_github_tokens_revoked_total{reason=\"scheduled\"}",
    )
    .ends_with(" 1")
    {
        assert!(Instant::now() < deadline, "not counted in time");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let revocations = f.github.calls(Operation::Revoke);
    assert_eq!(
        revocations.iter().map(|e| e.status).collect::<Vec<_>>(),
        vec![204, 401]
    );
    assert!(
        metric_line(
            &f.metrics,
            "ci_github_tokens_revoked_total{reason=\"error\"}"
        )
        .ends_with(" 0")
    );
    revoker.abort();
}

#[tokio::test]
async fn reviews_are_read_page_by_page() {
    let f = fixture().await;
    f.github.add_pull("ourorg/api", merged_pull(17), Some(SHA));
    // 150 comments, then one approval: on the second page.
    let mut reviews: Vec<ReviewSpec> = (0..150)
        .map(|i| ReviewSpec::new(100 + i, "COMMENTED", HEAD))
        .collect();
    reviews.push(ReviewSpec::new(1, "APPROVED", HEAD));
    f.github.set_reviews("ourorg/api", 17, reviews);
    let answer = ask(
        &f,
        &commit("push", "refs/heads/main"),
        &ContextCondition::PullRequestApprovals(1),
    )
    .await;
    assert_eq!(answer.label(), "pass", "{answer:?}");
    let pages: Vec<Option<String>> = f
        .github
        .calls(Operation::Reviews)
        .iter()
        .map(|exchange| exchange.query_param("page"))
        .collect();
    assert_eq!(pages, vec![Some("1".to_owned()), Some("2".to_owned())]);
    Description::load().assert_conforms(&f.github.exchanges());
}
