//! `check-config` and start-up refusals, through the real binary.

use crate::support::DEFAULT_POLICY;
use crate::support::broker::{BrokerSpec, RunOutput, run_to_completion};

/// A config pointing at loopback addresses nobody needs to answer.
fn spec() -> BrokerSpec {
    BrokerSpec::new("http://127.0.0.1:9", "http://127.0.0.1:9", DEFAULT_POLICY)
}

async fn run(spec: &BrokerSpec, command: &str, env: &[(&str, &str)]) -> RunOutput {
    let dir = tempfile::tempdir().unwrap();
    let config = spec.write_to(dir.path());
    let config = config.display().to_string();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    run_to_completion(&[command, "--config", &config], &env).await
}

#[tokio::test]
async fn check_config_accepts_a_valid_config_and_lists_the_roles() {
    let out = run(&spec(), "check-config", &[]).await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(
        out.all().contains("deploy"),
        "the roles are not listed:\n{}",
        out.all()
    );
}

#[tokio::test]
async fn check_config_rejects_an_unknown_key() {
    let mut spec = spec();
    spec.set("server.listen_adress", "127.0.0.1:0");
    let out = run(&spec, "check-config", &[]).await;
    assert_ne!(out.code, Some(0), "{}", out.all());
    assert!(
        out.all().contains("listen_adress"),
        "the error does not name the key:\n{}",
        out.all()
    );
}

#[tokio::test]
async fn check_config_rejects_plain_http_issuers_off_loopback() {
    let mut spec = spec();
    spec.set_issuer_key(0, "issuer", "http://token.example.com");
    let out = run(&spec, "check-config", &[]).await;
    assert_ne!(out.code, Some(0), "{}", out.all());
    assert!(out.all().contains("issuer"), "{}", out.all());
}

#[tokio::test]
async fn check_config_rejects_hmac_and_none_algorithms() {
    for algorithm in ["HS256", "none"] {
        let mut spec = spec();
        spec.set("verify.algorithms", vec!["RS256", algorithm]);
        let out = run(&spec, "check-config", &[]).await;
        assert_ne!(out.code, Some(0), "{algorithm} accepted:\n{}", out.all());
        assert!(out.all().contains("verify.algorithms"), "{}", out.all());
    }
}

#[tokio::test]
async fn check_config_applies_environment_overrides() {
    let out = run(
        &spec(),
        "check-config",
        &[("BROKER_SERVER__LISTEN", "not-an-address")],
    )
    .await;
    assert_ne!(out.code, Some(0), "{}", out.all());
    assert!(out.all().contains("server.listen"), "{}", out.all());
}

#[tokio::test]
async fn check_config_rejects_a_rule_without_conditions() {
    let mut spec = spec();
    spec.policy = "[[roles]]\nname = \"deploy\"\nrole_arn = \"arn:aws:iam::123456789012:role/X\"\n\n[[roles.allow]]\n".to_owned();
    let out = run(&spec, "check-config", &[]).await;
    assert_ne!(out.code, Some(0), "{}", out.all());
}

#[tokio::test]
async fn check_config_rejects_a_role_without_allow_rules() {
    let mut spec = spec();
    spec.policy = "[[roles]]\nname = \"deploy\"\nrole_arn = \"arn:aws:iam::123456789012:role/X\"\n"
        .to_owned();
    let out = run(&spec, "check-config", &[]).await;
    assert_ne!(out.code, Some(0), "{}", out.all());
}

#[tokio::test]
async fn check_config_rejects_an_unknown_policy_key() {
    let mut spec = spec();
    spec.policy = format!("version = 2\n{DEFAULT_POLICY}");
    let out = run(&spec, "check-config", &[]).await;
    assert_ne!(out.code, Some(0), "{}", out.all());
}

#[tokio::test]
async fn serve_refuses_to_start_with_a_bad_config() {
    let mut spec = spec();
    spec.set("sts.max_attempts", 0);
    let out = run(&spec, "serve", &[]).await;
    assert!(
        out.code.is_some_and(|code| code != 0),
        "serve did not exit non-zero:\n{}",
        out.all()
    );
    assert!(out.all().contains("sts.max_attempts"), "{}", out.all());
    assert!(!out.all().contains("broker listening"), "{}", out.all());
}

#[tokio::test]
async fn serve_refuses_to_start_without_its_policy() {
    let mut spec = spec();
    spec.set("policy.file", "/nonexistent/policy.toml");
    let out = run(&spec, "serve", &[]).await;
    assert!(
        out.code.is_some_and(|code| code != 0),
        "serve did not exit non-zero:\n{}",
        out.all()
    );
    assert!(
        out.all().contains("/nonexistent/policy.toml"),
        "{}",
        out.all()
    );
}
