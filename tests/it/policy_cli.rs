//! `attestation-broker policy check|explain|diff`, through the real binary:
//! exit codes and the whole output operators and CI read, as reviewed
//! snapshots (`snapshots/it__policy_cli__*.snap`, see `cli_output`).

use std::path::{Path, PathBuf};
use std::process::Command;

use attestation_broker::testkit::keys::SigningKey;
use attestation_broker::testkit::token::TokenBuilder;
use base64::Engine as _;
use insta::assert_snapshot;
use serde_json::{Value, json};

use crate::cli_output::{pretty_json, redactions, render};

const TEST_KID: &str = "policy-cli-test-key";

/// Issue time of the test tokens (2023-11-14T22:13:20Z); they live 300 s.
const IAT: u64 = 1_700_000_000;

const POLICY: &str = include_str!("../fixtures/policies/tight.toml");

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|err| panic!("stdout is not JSON ({err}):\n{}", self.stdout))
    }

    /// Exit code, stdout and stderr, as snapshotted.
    fn snapshot(&self) -> String {
        render(self.code, &self.stdout, &self.stderr)
    }

    /// The same with stdout pretty-printed (it must be JSON).
    fn json_snapshot(&self) -> String {
        render(self.code, &pretty_json(&self.stdout), &self.stderr)
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

fn broker(args: &[&str]) -> Run {
    let output = Command::new(env!("CARGO_BIN_EXE_attestation-broker"))
        .args(args)
        .output()
        .expect("run the broker binary");
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn policy_cmd(args: &[&str]) -> Run {
    let mut all = vec!["policy"];
    all.extend_from_slice(args);
    broker(&all)
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path: PathBuf = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// The claims of a push to main of ourorg/app from a hosted runner.
fn main_push() -> Value {
    json!({
        "iss": "https://token.actions.githubusercontent.com",
        "aud": "https://github.com/ourorg",
        "sub": "repo:ourorg/app:ref:refs/heads/main",
        "jti": "5a3f9c1e-0000-4000-8000-000000000001",
        "iat": IAT, "nbf": IAT, "exp": IAT + 300,
        "repository": "ourorg/app", "repository_id": "42",
        "repository_owner": "ourorg", "repository_owner_id": "1234567",
        "ref": "refs/heads/main", "event_name": "push",
        "runner_environment": "github-hosted", "ref_protected": true
    })
}

/// Test key A (`tests/fixtures/test_key_a.pem`), published under [`TEST_KID`].
fn key() -> SigningKey {
    SigningKey::from_pkcs1_pem(TEST_KID, include_str!("../fixtures/test_key_a.pem")).unwrap()
}

fn sign(claims: &Value) -> String {
    let Value::Object(claims) = claims else {
        panic!("claims must be an object: {claims}")
    };
    TokenBuilder::new(key()).claims(claims.clone()).build()
}

fn jwks() -> String {
    json!({"keys": [key().jwk()]}).to_string()
}

// --- check -----------------------------------------------------------------

#[test]
fn check_clean_policy_exits_zero() {
    let _redact = redactions();
    let dir = tempfile::tempdir().unwrap();
    let policy = write(dir.path(), "policy.toml", POLICY);
    let out = policy_cmd(&["check", &policy]);
    assert_eq!(out.code, Some(0), "{out}");
    assert_snapshot!("check_clean", out.snapshot());
}

/// The example policy's shape: a read role, a write role without an event
/// constraint, overlapping on main.
const RISKY: &str = include_str!("../fixtures/policies/risky.toml");

#[test]
fn check_reports_findings_with_witnesses_and_exits_one() {
    let _redact = redactions();
    let dir = tempfile::tempdir().unwrap();
    let policy = write(dir.path(), "policy.toml", RISKY);
    // Five warnings, the reachability one with a witness token; self-hosted
    // is denied, so it is no witness.
    let out = policy_cmd(&["check", &policy]);
    assert_eq!(out.code, Some(1), "{out}");
    assert_snapshot!("check_risky", out.snapshot());

    let strict = policy_cmd(&["check", "--strict", &policy]);
    assert_eq!(strict.code, Some(2), "{strict}");
    assert_snapshot!("check_risky_strict", strict.snapshot());

    // Declaring the role read-only silences the reachability finding only.
    let declared = policy_cmd(&[
        "check",
        "--read-only-role",
        "ci-read",
        "--read-only-role",
        "release",
        &policy,
    ]);
    assert_eq!(declared.code, Some(1), "{declared}");
    assert_snapshot!("check_read_only_roles_declared", declared.snapshot());

    let unknown = policy_cmd(&["check", "--read-only-role", "relase", &policy]);
    assert_eq!(unknown.code, Some(2), "{unknown}");
    assert_snapshot!("check_unknown_read_only_role", unknown.snapshot());
}

#[test]
fn check_json_has_a_stable_schema() {
    let _redact = redactions();
    let dir = tempfile::tempdir().unwrap();
    let policy = write(dir.path(), "policy.toml", RISKY);
    let out = policy_cmd(&["check", "--format", "json", &policy]);
    assert_eq!(out.code, Some(1), "{out}");
    assert_eq!(out.json()["policy"], json!(policy));
    assert_snapshot!("check_risky_json", out.json_snapshot());
}

#[test]
fn check_load_errors_exit_two() {
    let _redact = redactions();
    let dir = tempfile::tempdir().unwrap();
    let broken = POLICY.replace("123456789012", "1234");
    let policy = write(dir.path(), "policy.toml", &broken);
    let out = policy_cmd(&["check", &policy]);
    assert_eq!(out.code, Some(2), "{out}");
    assert_snapshot!("check_load_error", out.snapshot());

    let json = policy_cmd(&["check", "--format", "json", &policy]);
    assert_eq!(json.code, Some(2), "{json}");
    assert_snapshot!("check_load_error_json", json.json_snapshot());

    let missing = policy_cmd(&["check", &dir.path().join("nope.toml").display().to_string()]);
    assert_eq!(missing.code, Some(2), "{missing}");
    assert_snapshot!("check_missing_file", missing.snapshot());
}

// --- explain ---------------------------------------------------------------

#[test]
fn explain_claims_exit_zero_when_granted_and_one_when_refused() {
    let _redact = redactions();
    let dir = tempfile::tempdir().unwrap();
    let policy = write(dir.path(), "policy.toml", POLICY);
    let granted = write(dir.path(), "granted.json", &main_push().to_string());
    let out = policy_cmd(&["explain", &policy, "--claims", &granted]);
    assert_eq!(out.code, Some(0), "{out}");
    assert_snapshot!("explain_granted", out.snapshot());

    let mut claims = main_push();
    claims["runner_environment"] = json!("self-hosted");
    let refused = write(dir.path(), "refused.json", &claims.to_string());
    let out = policy_cmd(&["explain", &policy, "--claims", &refused, "--role", "deploy"]);
    assert_eq!(out.code, Some(1), "{out}");
    assert_snapshot!("explain_denied_by_deny_rule", out.snapshot());

    let out = policy_cmd(&[
        "explain",
        &policy,
        "--claims",
        &granted,
        "--duration-seconds",
        "3600",
    ]);
    assert_eq!(out.code, Some(1), "{out}");
    assert_snapshot!("explain_duration_out_of_range", out.snapshot());
}

#[test]
fn explain_json_traces_every_condition() {
    let _redact = redactions();
    let dir = tempfile::tempdir().unwrap();
    let policy = write(dir.path(), "policy.toml", POLICY);
    let mut claims = main_push();
    claims["ref"] = json!("refs/heads/dev");
    let file = write(dir.path(), "claims.json", &claims.to_string());
    let out = policy_cmd(&["explain", &policy, "--claims", &file, "--format", "json"]);
    assert_eq!(out.code, Some(1), "{out}");
    assert_snapshot!("explain_not_permitted_json", out.json_snapshot());
}

#[test]
fn explain_unverified_token_says_so() {
    let _redact = redactions();
    let dir = tempfile::tempdir().unwrap();
    let policy = write(dir.path(), "policy.toml", POLICY);
    let token = write(
        dir.path(),
        "token.jwt",
        &format!("{}\n", sign(&main_push())),
    );
    let out = policy_cmd(&["explain", &policy, "--token", &token]);
    assert_eq!(out.code, Some(0), "{out}");
    assert!(out.stdout.starts_with("token: "), "{out}");
    assert_snapshot!("explain_unverified_token", out.snapshot());

    let json = policy_cmd(&["explain", &policy, "--token", &token, "--format", "json"]);
    assert_eq!(json.code, Some(0), "{json}");
    assert_snapshot!("explain_unverified_token_json", json.json_snapshot());
}

#[test]
fn explain_verifies_a_token_against_a_jwks_file_at_a_given_time() {
    let _redact = redactions();
    let dir = tempfile::tempdir().unwrap();
    let policy = write(dir.path(), "policy.toml", POLICY);
    let keys = write(dir.path(), "jwks.json", &jwks());
    let raw = sign(&main_push());
    let token = write(dir.path(), "token.jwt", &raw);

    let during = (IAT + 100).to_string();
    let out = policy_cmd(&[
        "explain", &policy, "--token", &token, "--jwks", &keys, "--at", &during,
    ]);
    assert_eq!(out.code, Some(0), "{out}");
    assert_snapshot!("explain_verified_token", out.snapshot());

    // The same instant in RFC 3339.
    let rfc3339 = policy_cmd(&[
        "explain",
        &policy,
        "--token",
        &token,
        "--jwks",
        &keys,
        "--at",
        "2023-11-14T22:15:00Z",
        "--format",
        "json",
    ]);
    assert_eq!(rfc3339.code, Some(0), "{rfc3339}");
    assert_eq!(rfc3339.json()["source"]["verified_at"], IAT + 100);
    assert_snapshot!("explain_verified_token_json", rfc3339.json_snapshot());

    let after = (IAT + 3600).to_string();
    let expired = policy_cmd(&[
        "explain", &policy, "--token", &token, "--jwks", &keys, "--at", &after,
    ]);
    assert_eq!(expired.code, Some(2), "{expired}");
    assert_snapshot!("explain_expired_token", expired.snapshot());

    // A payload edited after signing: the signature no longer verifies, and
    // no decision is printed.
    let mut parts: Vec<String> = raw.split('.').map(str::to_owned).collect();
    let mut claims = main_push();
    claims["ref"] = json!("refs/heads/evil");
    parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims.to_string());
    let forged = write(dir.path(), "forged.jwt", &parts.join("."));
    let out = policy_cmd(&[
        "explain", &policy, "--token", &forged, "--jwks", &keys, "--at", &during,
    ]);
    assert_eq!(out.code, Some(2), "{out}");
    assert!(
        out.stdout.is_empty(),
        "no decision for a forged token:\n{out}"
    );
    assert_snapshot!("explain_forged_token", out.snapshot());

    let bad_time = policy_cmd(&[
        "explain",
        &policy,
        "--token",
        &token,
        "--jwks",
        &keys,
        "--at",
        "yesterday",
    ]);
    assert_eq!(bad_time.code, Some(2), "{bad_time}");
}

#[test]
fn explain_input_errors_exit_two() {
    let _redact = redactions();
    let dir = tempfile::tempdir().unwrap();
    let policy = write(dir.path(), "policy.toml", POLICY);
    let not_object = write(dir.path(), "claims.json", "[1, 2]");
    let out = policy_cmd(&["explain", &policy, "--claims", &not_object]);
    assert_eq!(out.code, Some(2), "{out}");
    assert_snapshot!("explain_claims_not_an_object", out.snapshot());
    let garbage = write(dir.path(), "token.jwt", "not-a-jwt");
    let out = policy_cmd(&["explain", &policy, "--token", &garbage]);
    assert_eq!(out.code, Some(2), "{out}");
    // Neither --claims nor --token, or --jwks without --token: usage errors.
    assert_eq!(policy_cmd(&["explain", &policy]).code, Some(2));
    assert_eq!(
        policy_cmd(&[
            "explain",
            &policy,
            "--claims",
            &not_object,
            "--jwks",
            &not_object
        ])
        .code,
        Some(2)
    );
}

// --- diff ------------------------------------------------------------------

#[test]
fn diff_of_equal_policies_exits_zero() {
    let _redact = redactions();
    let dir = tempfile::tempdir().unwrap();
    let old = write(dir.path(), "old.toml", POLICY);
    // Reordered keys and a case-only edit of a case-insensitive claim.
    let reordered = POLICY
        .replace("repository = \"ourorg/app\"", "repository = \"OurOrg/App\"")
        .replace(
            "event_name = [\"push\", \"workflow_dispatch\"]",
            "event_name = [\"workflow_dispatch\", \"push\"]",
        );
    let new = write(dir.path(), "new.toml", &reordered);
    let out = policy_cmd(&["diff", &old, &new]);
    assert_eq!(out.code, Some(0), "{out}");
    assert_snapshot!("diff_equal", out.snapshot());
}

#[test]
fn diff_broadening_exits_one_with_a_witness_explain_agrees_with() {
    let _redact = redactions();
    let dir = tempfile::tempdir().unwrap();
    let old = write(dir.path(), "old.toml", POLICY);
    let widened = POLICY.replace(
        "ref = \"refs/heads/main\"",
        "ref = [\"refs/heads/main\", \"refs/heads/release/**\"]",
    );
    let new = write(dir.path(), "new.toml", &widened);
    let out = policy_cmd(&["diff", &old, &new]);
    assert_eq!(out.code, Some(1), "{out}");
    assert_snapshot!("diff_broadening", out.snapshot());

    let allowed = policy_cmd(&["diff", "--allow-broadening", &old, &new]);
    assert_eq!(allowed.code, Some(0), "{allowed}");

    let json = policy_cmd(&["diff", "--format", "json", &old, &new]);
    assert_eq!(json.code, Some(1), "{json}");
    let report = json.json();
    assert_eq!(report["old"]["policy"], json!(old));
    assert_snapshot!("diff_broadening_json", json.json_snapshot());

    // The witness is a claims file `explain` reads: NEW grants it, OLD refuses it.
    let witness = write(
        dir.path(),
        "witness.json",
        &report["roles"][0]["larger_witness"].to_string(),
    );
    let on_new = policy_cmd(&["explain", &new, "--claims", &witness, "--role", "deploy"]);
    assert_eq!(on_new.code, Some(0), "{on_new}");
    let on_old = policy_cmd(&["explain", &old, "--claims", &witness, "--role", "deploy"]);
    assert_eq!(on_old.code, Some(1), "{on_old}");
}

#[test]
fn diff_narrowing_passes_and_settings_changes_are_reported() {
    let _redact = redactions();
    let dir = tempfile::tempdir().unwrap();
    let old = write(dir.path(), "old.toml", POLICY);
    let narrowed = POLICY.replace(
        "event_name = [\"push\", \"workflow_dispatch\"]",
        "event_name = \"push\"",
    );
    let new = write(dir.path(), "new.toml", &narrowed);
    let out = policy_cmd(&["diff", &old, &new]);
    assert_eq!(out.code, Some(0), "{out}");
    assert_snapshot!("diff_narrowing", out.snapshot());

    // The same tokens, another IAM role: needs review.
    let moved = POLICY.replace("GitHubActions-Deploy", "GitHubActions-Admin");
    let new = write(dir.path(), "arn.toml", &moved);
    let out = policy_cmd(&["diff", &old, &new]);
    assert_eq!(out.code, Some(1), "an ARN change needs review:\n{out}");
    assert_snapshot!("diff_role_arn_changed", out.snapshot());
}

#[test]
fn diff_reports_added_and_removed_roles() {
    let _redact = redactions();
    let dir = tempfile::tempdir().unwrap();
    let old = write(dir.path(), "old.toml", POLICY);
    let renamed = POLICY.replace("name = \"deploy\"", "name = \"ship\"");
    let new = write(dir.path(), "new.toml", &renamed);
    let out = policy_cmd(&["diff", &old, &new]);
    assert_eq!(out.code, Some(1), "{out}");
    assert_snapshot!("diff_role_renamed", out.snapshot());
}

#[test]
fn diff_load_errors_exit_two() {
    let _redact = redactions();
    let dir = tempfile::tempdir().unwrap();
    let old = write(dir.path(), "old.toml", POLICY);
    let new = write(dir.path(), "new.toml", "[[roles]]\nname = \"x\"\n");
    let out = policy_cmd(&["diff", &old, &new]);
    assert_eq!(out.code, Some(2), "{out}");
    assert_snapshot!("diff_load_error", out.snapshot());
    let json = policy_cmd(&["diff", "--format", "json", &old, &new]);
    assert_eq!(json.code, Some(2), "{json}");
    assert_snapshot!("diff_load_error_json", json.json_snapshot());
}

#[test]
fn explain_verifies_a_real_github_token_offline() {
    let _redact = redactions();
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let token = format!("{fixtures}/real_github_token_2026-04.jwt");
    let dir = tempfile::tempdir().unwrap();
    let policy = write(
        dir.path(),
        "policy.toml",
        include_str!("../fixtures/policies/real_token_demo.toml"),
    );
    // Issued at 1776844493 and valid for five minutes.
    let keys = format!("{fixtures}/real_github_jwks_2026.json");
    let out = policy_cmd(&[
        "explain",
        &policy,
        "--token",
        &token,
        "--jwks",
        &keys,
        "--at",
        "1776844600",
    ]);
    assert_eq!(out.code, Some(0), "{out}");
    assert_snapshot!("explain_real_github_token", out.snapshot());
    // The 2022 key set does not hold the token's key.
    let old_keys = format!("{fixtures}/real_github_jwks_2022-08.json");
    let out = policy_cmd(&[
        "explain",
        &policy,
        "--token",
        &token,
        "--jwks",
        &old_keys,
        "--at",
        "1776844600",
    ]);
    assert_eq!(out.code, Some(2), "{out}");
    assert_snapshot!("explain_real_github_token_unknown_key", out.snapshot());
}

// --- context conditions and roles of kind github ---------------------------

const CONTEXT_POLICY: &str = include_str!("../fixtures/policies/context.toml");
const GITHUB_POLICY: &str = include_str!("../fixtures/policies/github.toml");

/// A push to main of ourorg/app (id 42) from a hosted runner.
fn context_push() -> Value {
    json!({
        "repository": "ourorg/app",
        "repository_owner_id": "1234567",
        "repository_id": "42",
        "ref": "refs/heads/main",
        "event_name": "push",
        "runner_environment": "github-hosted",
        "sha": "0123456789abcdef0123456789abcdef01234567"
    })
}

#[test]
fn explain_evaluates_context_conditions_from_canned_answers() {
    let _redact = redactions();
    let dir = tempfile::tempdir().unwrap();
    let policy = write(dir.path(), "policy.toml", CONTEXT_POLICY);
    let claims = write(dir.path(), "claims.json", &context_push().to_string());

    // The same question, with canned answers from `context`.
    let explain_with = |context: &str| {
        policy_cmd(&[
            "explain",
            &policy,
            "--claims",
            &claims,
            "--role",
            "deploy",
            "--context",
            context,
        ])
    };

    // Without --context: each context condition is shown, not evaluated.
    let out = policy_cmd(&["explain", &policy, "--claims", &claims, "--role", "deploy"]);
    assert_eq!(out.code, Some(1), "{out}");
    assert_snapshot!("explain_context_not_evaluated", out.snapshot());

    let passed = write(
        dir.path(),
        "passed.json",
        &json!({
            "checks": {
                "dependency-scan": {"status": "completed", "conclusion": "success", "app": "snyk"},
                "unit-tests": {"status": "completed", "conclusion": "success", "app": "github-actions"}
            },
            "pull_request": {"number": 17, "approvals": 1, "changes_requested": false}
        })
        .to_string(),
    );
    let out = explain_with(&passed);
    assert_eq!(out.code, Some(0), "{out}");
    assert_snapshot!("explain_context_granted", out.snapshot());

    // The GitHub role, granted on an approval: JSON, with the token it gets.
    let out = policy_cmd(&[
        "explain",
        &policy,
        "--claims",
        &claims,
        "--role",
        "release-notes",
        "--context",
        &passed,
        "--format",
        "json",
    ]);
    assert_eq!(out.code, Some(0), "{out}");
    assert_snapshot!("explain_context_github_json", out.json_snapshot());

    // A scan run by another App does not count; GitHub down is undecided.
    let other = write(
        dir.path(),
        "other.json",
        &json!({
            "checks": {
                "dependency-scan": {"status": "completed", "conclusion": "success", "app": "github-actions"},
                "unit-tests": "unavailable"
            },
            "pull_request": null
        })
        .to_string(),
    );
    let out = explain_with(&other);
    assert_eq!(out.code, Some(1), "{out}");
    assert_snapshot!("explain_context_other_app", out.snapshot());
    let down = write(
        dir.path(),
        "down.json",
        &json!({"checks": {"dependency-scan": "unavailable", "unit-tests": "unavailable"}})
            .to_string(),
    );
    let out = explain_with(&down);
    assert_eq!(out.code, Some(1), "{out}");
    assert_snapshot!("explain_context_unavailable", out.snapshot());

    // The file is closed: an unknown key is an input error.
    let bad = write(
        dir.path(),
        "bad.json",
        r#"{"checks": {}, "approved": true}"#,
    );
    let out = policy_cmd(&["explain", &policy, "--claims", &claims, "--context", &bad]);
    assert_eq!(out.code, Some(2), "{out}");
    assert_snapshot!("explain_context_bad_file", out.snapshot());
}

#[test]
fn diff_treats_context_conditions_as_conditions() {
    let _redact = redactions();
    let dir = tempfile::tempdir().unwrap();
    let old = write(dir.path(), "old.toml", CONTEXT_POLICY);
    let widened = CONTEXT_POLICY
        .replace(
            "checks_passed = [{ name = \"dependency-scan\", app = \"snyk\" }, \"unit-tests\"]",
            "checks_passed = [\"unit-tests\"]",
        )
        .replace("pull_request_approvals = 2", "pull_request_approvals = 1");
    assert_ne!(widened, CONTEXT_POLICY);
    let new = write(dir.path(), "new.toml", &widened);
    let out = policy_cmd(&["diff", &old, &new]);
    assert_eq!(out.code, Some(1), "{out}");
    assert_snapshot!("diff_context_broadening", out.snapshot());
    let json = policy_cmd(&["diff", "--format", "json", &old, &new]);
    assert_eq!(json.code, Some(1), "{json}");
    assert_snapshot!("diff_context_broadening_json", json.json_snapshot());

    // The other way round narrows: no exit 1.
    let out = policy_cmd(&["diff", &new, &old]);
    assert_eq!(out.code, Some(0), "{out}");
    assert_snapshot!("diff_context_narrowing", out.snapshot());
}

#[test]
fn check_warns_about_unbound_checks_and_github_roles_that_write_unconditionally() {
    let _redact = redactions();
    let dir = tempfile::tempdir().unwrap();
    let context = write(dir.path(), "context.toml", CONTEXT_POLICY);
    let out = policy_cmd(&["check", &context]);
    assert_eq!(out.code, Some(1), "{out}");
    assert_snapshot!("check_context", out.snapshot());
    let github = write(dir.path(), "github.toml", GITHUB_POLICY);
    let out = policy_cmd(&["check", &github]);
    assert_eq!(out.code, Some(1), "{out}");
    assert_snapshot!("check_github", out.snapshot());
}

#[test]
fn check_compares_github_roles_with_the_apps_grant() {
    let dir = tempfile::tempdir().unwrap();
    let github = write(dir.path(), "github.toml", GITHUB_POLICY);
    // A whole `GET /app` answer: only its `permissions` are read.
    let short = write(
        dir.path(),
        "app.json",
        r#"{"slug": "broker", "permissions": {"contents": "read", "metadata": "read"}}"#,
    );
    let out = policy_cmd(&[
        "check",
        "--format",
        "json",
        "--app-permissions",
        &short,
        &github,
    ]);
    assert_eq!(out.code, Some(2), "{out}");
    let report = out.json();
    let beyond: Vec<(String, String)> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|finding| finding["code"] == "permission-not-granted")
        .map(|finding| {
            (
                finding["role"].as_str().unwrap().to_owned(),
                finding["message"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        beyond,
        [
            (
                "release-notes",
                "asks contents: write (App granted: read): GitHub would refuse every token of this role"
            ),
            (
                "release-notes",
                "asks pull_requests: read (App granted: none): GitHub would refuse every token of this role"
            ),
            (
                "docs-sync",
                "asks contents: write (App granted: read): GitHub would refuse every token of this role"
            ),
        ]
        .map(|(role, message)| (role.to_owned(), message.to_owned()))
    );

    // A grant that covers every role: no such finding (the other warnings stay).
    let enough = write(
        dir.path(),
        "enough.json",
        r#"{"contents": "write", "pull_requests": "write"}"#,
    );
    let out = policy_cmd(&["check", "--app-permissions", &enough, &github]);
    assert_eq!(out.code, Some(1), "{out}");
    assert!(!out.stdout.contains("permission-not-granted"), "{out}");

    // Not a grant: an input error naming the file, exit 2.
    let bad = write(dir.path(), "bad.json", r#"{"contents": "everything"}"#);
    let out = policy_cmd(&["check", "--app-permissions", &bad, &github]);
    assert_eq!(out.code, Some(2), "{out}");
    assert!(out.stderr.contains("bad.json"), "{out}");
}
