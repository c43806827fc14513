//! Roles of kind `github` and commit context conditions through the real
//! router (in process) and the real binary, against the loopback stand-in
//! for GitHub (`attestation_broker::testkit::github`).

use std::path::PathBuf;

use attestation_broker::api::GithubTokenResponse;
use attestation_broker::github::Operation;
use attestation_broker::testkit::github::{APP_ID, CheckRunSpec, GithubFault, GithubStandIn};
use serde_json::{Value, json};

use crate::metric_assert::AssertMetric;
use crate::support::broker::run_to_completion;
use crate::support::tokens::sha256_hex;
use crate::support::{
    Broker, BrokerSpec, JwksServer, KEY_A, Resp, StsServer, TokenBuilder, assert_error,
    assert_forbidden, assert_issued, assert_unavailable,
};

const REPO: &str = "ourorg/widget-service";
const SHA: &str = "d6f1e2c3b4a5968778695a4b3c2d1e0f9a8b7c6d";

/// An AWS role and a GitHub role for pushes to main of `ourorg`.
const POLICY: &str = r#"
[[roles]]
name = "deploy"
role_arn = "arn:aws:iam::123456789012:role/GitHubActions-Lambda-DeployRole"

[[roles.allow]]
repository_owner_id = "1234567"
ref = "refs/heads/main"

[[roles]]
name = "release-notes"
kind = "github"
permissions = { contents = "write", pull_requests = "read" }

[[roles.allow]]
repository_owner_id = "1234567"
ref = "refs/heads/main"
"#;

/// The AWS role needs a passing `unit-tests` check by GitHub Actions.
const CONTEXT_POLICY: &str = r#"
[[roles]]
name = "deploy"
role_arn = "arn:aws:iam::123456789012:role/GitHubActions-Lambda-DeployRole"

[[roles.allow]]
repository_owner_id = "1234567"
ref = "refs/heads/main"
checks_passed = [{ name = "unit-tests", app = "github-actions" }]
"#;

struct GithubHarness {
    jwks: JwksServer,
    _sts: StsServer,
    github: GithubStandIn,
    broker: Broker,
    _dir: tempfile::TempDir,
}

impl GithubHarness {
    async fn start(policy: &str) -> Self {
        Self::start_with(policy, |_| {}).await
    }

    /// Like [`GithubHarness::start`], with the stand-in prepared before the broker starts.
    async fn start_with(policy: &str, prepare: impl FnOnce(&GithubStandIn)) -> Self {
        let github = GithubStandIn::start().await.unwrap();
        github.install("ourorg", &["widget-service", "docs"]);
        prepare(&github);
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("app.pem");
        std::fs::write(&key, github.app_key_pem()).unwrap();
        let jwks = JwksServer::start(vec![KEY_A.jwk()]).await.unwrap();
        let sts = StsServer::start().await.unwrap();
        let mut spec = BrokerSpec::new(&jwks.issuer(), sts.url().as_str(), policy);
        github_section(&mut spec, &github, &key);
        let broker = Broker::start_in_process(&spec).await;
        Self {
            jwks,
            _sts: sts,
            github,
            broker,
            _dir: dir,
        }
    }

    fn token(&self) -> TokenBuilder {
        crate::support::tokens::token(&self.jwks.issuer())
    }

    async fn issue(&self, token: &str, extra: Value) -> Resp {
        let mut body = json!({ "oidc_token": token });
        if let (Some(body), Value::Object(extra)) = (body.as_object_mut(), extra) {
            body.extend(extra);
        }
        self.broker.issue(&body).await
    }
}

fn github_section(spec: &mut BrokerSpec, github: &GithubStandIn, key: &std::path::Path) {
    spec.set("github.api_url", github.url().as_str())
        .set("github.app_id", APP_ID.to_string())
        .set("github.private_key_file", key.display().to_string())
        .set("github.request_timeout_seconds", 1);
}

fn github_answer(resp: &Resp) -> GithubTokenResponse {
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.header("cache-control").as_deref(), Some("no-store"));
    serde_json::from_slice(&resp.body).unwrap()
}

#[tokio::test]
async fn a_github_role_issues_an_installation_token_default_and_narrowed() {
    let h = GithubHarness::start(POLICY).await;
    let resp = h
        .issue(&h.token().build(), json!({"role": "release-notes"}))
        .await;
    let answer = github_answer(&resp);
    use secrecy::ExposeSecret as _;
    let token = answer.token.expose_secret().to_owned();
    assert!(token.starts_with("ghs_devfake_"));
    assert_eq!(answer.role, "release-notes");
    assert_eq!(answer.repositories, vec![REPO.to_owned()]);
    assert_eq!(
        serde_json::to_value(&answer.permissions).unwrap(),
        json!({"contents": "write", "pull_requests": "read"})
    );
    assert!(answer.revoke_at < answer.expires_at, "{answer:?}");
    assert_eq!(h.github.issued_tokens(), vec![(token.clone(), false)]);
    let created = h.github.calls(Operation::AccessToken);
    let body: Value = serde_json::from_slice(&created[0].body).unwrap();
    assert_eq!(
        body,
        json!({"repositories": ["widget-service"], "permissions": {"contents": "write", "pull_requests": "read"}})
    );

    // Narrowed by the request: the token carries exactly what was asked.
    let resp = h
        .issue(
            &h.token().build(),
            json!({"role": "release-notes", "permissions": {"contents": "read"}}),
        )
        .await;
    let narrowed = github_answer(&resp);
    assert_eq!(
        serde_json::to_value(&narrowed.permissions).unwrap(),
        json!({"contents": "read"})
    );

    // Audit: the token's digest, installation, repositories, permissions
    // and GitHub's request ids; the token itself in no log line.
    let event = h.broker.wait_for_audit(&resp.request_id()).await;
    assert_eq!(event["event"], "credential_issued", "{event}");
    assert_eq!(
        event["github_token_sha256"],
        sha256_hex(narrowed.token.expose_secret())
    );
    assert!(!event["github_installation_id"].as_str().unwrap().is_empty());
    assert_eq!(event["github_repositories"], REPO);
    assert_eq!(event["github_permissions"], "contents:read");
    assert!(
        event["github_request_ids"]
            .as_str()
            .unwrap()
            .contains("FAKE:"),
        "{event}"
    );
    for line in h.broker.lines() {
        assert!(!line.contains(&token), "token logged: {line}");
        assert!(!line.contains(narrowed.token.expose_secret()));
        assert!(!line.contains("PRIVATE KEY"));
    }
    let metrics = h.broker.metrics().await;
    metrics.assert_value("ci_creds_issued_total", &[("role", "release-notes")], 2.0);
    metrics.assert_value("ci_creds_active", &[("role", "release-notes")], 2.0);
    metrics.assert_value(
        "ci_github_api_requests_total",
        &[("operation", "access_token"), ("status", "2xx")],
        2.0,
    );
}

#[tokio::test]
async fn credential_process_for_a_github_role_is_400_and_keeps_the_token_usable() {
    let h = GithubHarness::start(POLICY).await;
    let token = h.token().build();
    let resp = h
        .broker
        .call(
            crate::support::Req::json(&json!({"oidc_token": token, "role": "release-notes"}))
                .path("/issue?format=credential_process"),
        )
        .await;
    assert_error(
        &resp,
        400,
        "invalid_request",
        "`format=credential_process` is only for AWS roles",
    );
    assert!(h.github.calls(Operation::AccessToken).is_empty());
    // Refused before the replay mark: the same token still works.
    github_answer(&h.issue(&token, json!({"role": "release-notes"})).await);
    // And once used, it is a replay.
    assert_forbidden(&h.issue(&token, json!({"role": "release-notes"})).await);
}

#[tokio::test]
async fn an_app_not_installed_is_403_and_asking_beyond_the_role_too() {
    let h = GithubHarness::start(POLICY).await;
    h.github.uninstall("ourorg");
    let resp = h
        .issue(&h.token().build(), json!({"role": "release-notes"}))
        .await;
    assert_forbidden(&resp);
    let event = h.broker.wait_for_audit(&resp.request_id()).await;
    assert_eq!(event["reason"], "github_not_installed", "{event}");

    h.github.install("ourorg", &["widget-service"]);
    let resp = h
        .issue(
            &h.token().build(),
            json!({"role": "release-notes", "permissions": {"contents": "admin"}}),
        )
        .await;
    assert_forbidden(&resp);
    assert!(h.github.calls(Operation::AccessToken).is_empty());
}

#[tokio::test]
async fn github_down_is_503_with_retry_after_and_aws_roles_still_issue() {
    let h = GithubHarness::start(POLICY).await;
    for (fault, retry_after) in [
        (GithubFault::ServerError, "2"),
        (GithubFault::Hang, "2"),
        (GithubFault::SecondaryRateLimit { retry_after: 42 }, "42"),
    ] {
        h.github.set_fault(Operation::AccessToken, Some(fault));
        let token = h.token().build();
        let resp = h.issue(&token, json!({"role": "release-notes"})).await;
        assert_unavailable(&resp);
        assert_eq!(
            resp.header("retry-after").as_deref(),
            Some(retry_after),
            "{fault:?}"
        );
        // AWS issuance never depends on GitHub, nor does readiness.
        assert_issued(&h.issue(&h.token().build(), json!({"role": "deploy"})).await);
        assert_eq!(h.broker.admin_get("/readyz").await.status, 200);
        // The replay mark was released: the same token works once GitHub does.
        h.github.set_fault(Operation::AccessToken, None);
        github_answer(&h.issue(&token, json!({"role": "release-notes"})).await);
    }
    let metrics = h.broker.metrics().await;
    metrics.assert_value(
        "ci_github_api_requests_total",
        &[("operation", "access_token"), ("status", "timeout")],
        1.0,
    );
    metrics.assert_value(
        "ci_github_api_requests_total",
        &[("operation", "access_token"), ("status", "5xx")],
        1.0,
    );
}

#[tokio::test]
async fn context_conditions_are_asked_of_github_and_fail_closed() {
    let h = GithubHarness::start(CONTEXT_POLICY).await;
    h.github.set_check_runs(
        REPO,
        SHA,
        vec![CheckRunSpec::completed(
            "unit-tests",
            "success",
            "github-actions",
        )],
    );
    let resp = h.issue(&h.token().build(), json!({})).await;
    assert_issued(&resp);
    let event = h.broker.wait_for_audit(&resp.request_id()).await;
    assert!(
        event["context"].as_str().unwrap().contains("unit-tests"),
        "{event}"
    );
    // A run by another App does not count.
    h.github.set_check_runs(
        REPO,
        SHA,
        vec![CheckRunSpec::completed("unit-tests", "success", "forger")],
    );
    // (The pass above is cached for context_cache_seconds: ask about another commit.)
    let other = "0000000000000000000000000000000000000001";
    h.github.set_check_runs(
        REPO,
        other,
        vec![CheckRunSpec::completed("unit-tests", "success", "forger")],
    );
    let resp = h
        .issue(&h.token().claim("sha", other).build(), json!({}))
        .await;
    assert_forbidden(&resp);
    // GitHub down: 503, never an allow.
    h.github
        .set_fault(Operation::CheckRuns, Some(GithubFault::ServerError));
    let third = "0000000000000000000000000000000000000002";
    let resp = h
        .issue(&h.token().claim("sha", third).build(), json!({}))
        .await;
    assert_unavailable(&resp);
    let metrics = h.broker.metrics().await;
    metrics.assert_value(
        "ci_context_checks_total",
        &[("condition", "checks_passed"), ("result", "unavailable")],
        1.0,
    );
    metrics.assert_value(
        "ci_context_checks_total",
        &[("condition", "checks_passed"), ("result", "pass")],
        1.0,
    );
}

fn write_config(
    dir: &std::path::Path,
    policy: &str,
    github: Option<(&GithubStandIn, &str)>,
) -> PathBuf {
    let mut spec = BrokerSpec::new(
        "https://token.actions.githubusercontent.com",
        "http://127.0.0.1:9",
        policy,
    );
    if let Some((github, api_url)) = github {
        let key = dir.join("app.pem");
        std::fs::write(&key, github.app_key_pem()).unwrap();
        github_section(&mut spec, github, &key);
        spec.set("github.api_url", api_url);
    }
    spec.write_to(dir)
}

#[tokio::test]
async fn check_config_refuses_github_roles_without_an_app_and_compares_grants() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), POLICY, None);
    let config_arg = config.display().to_string();
    let out = run_to_completion(&["check-config", "--config", &config_arg], &[]).await;
    assert_eq!(out.code, Some(64), "{}", out.all());
    assert!(
        out.stderr
            .contains(&format!("{config_arg}: key `github`: required by the policy: role `release-notes` is of kind `github`")),
        "{}",
        out.all()
    );

    // With the App: its grant covers the role.
    let github = GithubStandIn::start().await.unwrap();
    let config = write_config(dir.path(), POLICY, Some((&github, github.url().as_str())));
    let config_arg = config.display().to_string();
    let out = run_to_completion(&["check-config", "--config", &config_arg], &[]).await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(
        out.stdout.contains("grants every permission"),
        "{}",
        out.all()
    );

    // A role asking more than the App was granted is an error.
    let policy = POLICY.replace("pull_requests = \"read\"", "administration = \"write\"");
    let config = write_config(dir.path(), &policy, Some((&github, github.url().as_str())));
    let out = run_to_completion(&["check-config", "--config", &config_arg], &[]).await;
    assert_eq!(out.code, Some(64), "{}", out.all());
    assert!(
        out.stderr
            .contains("role `release-notes` asks administration: write (App granted: none)"),
        "{}",
        out.all()
    );
    drop(config);

    // GitHub unreachable: a warning, not an error (check-config runs offline too).
    let config = write_config(dir.path(), POLICY, Some((&github, "http://127.0.0.1:9/")));
    let config_arg = config.display().to_string();
    let out = run_to_completion(&["check-config", "--config", &config_arg], &[]).await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(
        out.stdout.contains("warning: github: cannot compare"),
        "{}",
        out.all()
    );
}

#[tokio::test]
async fn a_bad_app_key_stops_check_config_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let github = GithubStandIn::start().await.unwrap();
    let config = write_config(dir.path(), POLICY, Some((&github, github.url().as_str())));
    std::fs::write(
        dir.path().join("app.pem"),
        "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n",
    )
    .unwrap();
    let config_arg = config.display().to_string();
    let out = run_to_completion(&["check-config", "--config", &config_arg], &[]).await;
    assert_eq!(out.code, Some(64), "{}", out.all());
    assert!(
        out.stderr
            .contains(&format!("{config_arg}: key `github.private_key_file`: ")),
        "{}",
        out.all()
    );
    assert!(
        out.stderr.contains("app.pem: not a usable RSA private key"),
        "{}",
        out.all()
    );
}

#[tokio::test]
async fn revoke_github_token_revokes_and_accepts_an_already_invalid_token() {
    let h = GithubHarness::start(POLICY).await;
    let answer = github_answer(
        &h.issue(&h.token().build(), json!({"role": "release-notes"}))
            .await,
    );
    use secrecy::ExposeSecret as _;
    let token = answer.token.expose_secret().to_owned();
    let env = vec![
        ("GH_TOKEN".to_owned(), token.clone()),
        ("GITHUB_API_URL".to_owned(), h.github.url().to_string()),
    ];
    let out = run_to_completion(&["revoke-github-token"], &env).await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert_eq!(h.github.is_revoked(&token), Some(true));
    assert!(!out.all().contains(&token));
    let revoked = h.github.calls(Operation::Revoke);
    assert_eq!(
        revoked[0].header("authorization"),
        Some(format!("Bearer {token}").as_str())
    );

    // Again: GitHub says 401, which is success for a last step.
    let out = run_to_completion(&["revoke-github-token"], &env).await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(out.stdout.contains("already invalid"), "{}", out.all());

    // Another variable, and GitHub failing: non-zero, and still no token shown.
    h.github
        .set_fault(Operation::Revoke, Some(GithubFault::ServerError));
    let env = vec![
        ("MY_TOKEN".to_owned(), token.clone()),
        ("GITHUB_API_URL".to_owned(), h.github.url().to_string()),
    ];
    let out = run_to_completion(&["revoke-github-token", "--token-env", "MY_TOKEN"], &env).await;
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(out.stderr.contains("was not revoked"), "{}", out.all());
    assert!(!out.all().contains(&token));
    // No token at all: a usage error.
    let out = run_to_completion(&["revoke-github-token"], &[]).await;
    assert_eq!(out.code, Some(64), "{}", out.all());
}

#[tokio::test]
async fn dev_prints_a_curl_that_obtains_a_stand_in_github_token() {
    let mut dev = crate::support::broker::Process::spawn(
        &[
            "dev",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ],
        &[],
    );
    dev.wait_for_line("the GitHub heading", |line| {
        line.starts_with("GitHub installation token")
    })
    .await;
    let curl = dev
        .wait_for_line("the GitHub curl", |line| {
            line.trim_start().starts_with("curl ") && line.contains("dev-release-notes")
        })
        .await;
    let stdout = crate::python_peers::run_printed_curl(curl).await;
    let answer: GithubTokenResponse =
        serde_json::from_str(&stdout).unwrap_or_else(|err| unreachable!("{err}: {stdout}"));
    use secrecy::ExposeSecret as _;
    assert!(
        answer.token.expose_secret().starts_with("ghs_devfake_"),
        "{stdout}"
    );
    assert_eq!(answer.role, "dev-release-notes");
    assert_eq!(answer.repositories, vec!["octo-org/demo".to_owned()]);
}

#[tokio::test]
async fn start_up_describes_the_app_in_the_background_and_never_waits_for_it() {
    let h = GithubHarness::start(POLICY).await;
    let line = h
        .broker
        .wait_for_line("the App's description", |line| {
            line.contains("GitHub App attestation-broker-dev reachable")
        })
        .await;
    assert!(line.contains("contents:write"), "{line}");
    assert_eq!(h.github.calls(Operation::App).len(), 1);

    // GitHub hanging at start-up: ready anyway, AWS roles issue, and a warning says why.
    let h = GithubHarness::start_with(POLICY, |github| {
        github.set_fault(Operation::App, Some(GithubFault::Hang));
    })
    .await;
    assert_eq!(h.broker.admin_get("/readyz").await.status, 200);
    assert_issued(&h.issue(&h.token().build(), json!({"role": "deploy"})).await);
    h.broker
        .wait_for_line("the warning", |line| {
            line.contains("cannot describe the GitHub App")
        })
        .await;
}
