//! Unit tests for the pure parts of `fetch`: URL handling, environment checks,
//! answer parsing, delivery formats and the retry schedule. The end-to-end
//! runs against a real broker are in `tests/it/fetch.rs`.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};
use secrecy::ExposeSecret as _;
use tokio::time::Instant;

use serde_json::{Value, json};

use super::answer::{parse_credentials, parse_id_token, refused};
use super::deliver::escape_command_data;
use super::transport::{Answer, RetryPolicy, is_transient_status, retry_after};
use super::*;

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn actions_env() -> BTreeMap<String, String> {
    env(&[
        ("GITHUB_ACTIONS", "true"),
        ("GITHUB_REPOSITORY", "ourorg/widget"),
        ("GITHUB_SHA", "abc"),
        ("GITHUB_ENV", "/tmp/env"),
        ("GITHUB_OUTPUT", "/tmp/out"),
        (
            "ACTIONS_ID_TOKEN_REQUEST_URL",
            "https://runtime.example/token?api-version=2.0",
        ),
        ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "runtime-bearer"),
    ])
}

const ANSWER: &str = r#"{"access_key_id":"ASIAEXAMPLE","secret_access_key":"s3cr3t/Key+x","session_token":"FwoGZXIvYXdzEXAMPLE==","expiration":"2026-11-22T09:15:00Z","role":"deploy","session_name":"gh-1-1-2"}"#;

#[test]
fn issue_url_appends_issue_once() {
    for (raw, want) in [
        ("https://broker.example", "https://broker.example/issue"),
        ("https://broker.example/", "https://broker.example/issue"),
        (
            "https://broker.example/issue",
            "https://broker.example/issue",
        ),
        (
            "https://broker.example/issue/",
            "https://broker.example/issue",
        ),
        (
            "https://b.example/ci/broker/",
            "https://b.example/ci/broker/issue",
        ),
        ("http://127.0.0.1:8443", "http://127.0.0.1:8443/issue"),
        ("http://localhost:1/x/issue", "http://localhost:1/x/issue"),
        ("http://[::1]:9/", "http://[::1]:9/issue"),
    ] {
        assert_eq!(issue_url(raw).unwrap().as_str(), want, "{raw}");
    }
}

#[test]
fn issue_url_refuses_plain_http_off_loopback_and_odd_urls() {
    for raw in [
        "http://broker.example",
        "http://10.0.0.1:8443",
        "ftp://broker.example",
        "broker.example",
        "https://user:pw@broker.example",
        "https://broker.example/?format=credential_process",
        "https://broker.example/#x",
    ] {
        let err = issue_url(raw).unwrap_err();
        assert_eq!(err.exit_code(), EXIT_USAGE, "{raw}");
    }
}

#[test]
fn runner_env_distinguishes_not_in_actions_from_missing_permission() {
    let err = RunnerEnv::read(&BTreeMap::new(), Delivery::GithubEnv).unwrap_err();
    assert_eq!(err.exit_code(), EXIT_NOT_IN_ACTIONS);

    let mut no_env_file = actions_env();
    no_env_file.remove("GITHUB_ENV");
    let err = RunnerEnv::read(&no_env_file, Delivery::GithubEnv).unwrap_err();
    assert_eq!(err.exit_code(), EXIT_NOT_IN_ACTIONS);
    assert!(err.to_string().contains("GITHUB_ENV"), "{err}");
    // The other modes do not need it.
    RunnerEnv::read(&no_env_file, Delivery::GithubOutput).unwrap();
    RunnerEnv::read(&no_env_file, Delivery::CredentialProcess).unwrap();

    for name in [
        "ACTIONS_ID_TOKEN_REQUEST_URL",
        "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
    ] {
        let mut no_permission = actions_env();
        no_permission.remove(name);
        let err = RunnerEnv::read(&no_permission, Delivery::GithubEnv).unwrap_err();
        assert_eq!(err.exit_code(), EXIT_NO_ID_TOKEN, "{name}");
        assert!(err.to_string().contains("id-token: write"), "{err}");
    }
}

#[test]
fn credentials_parse_and_reject_injection() {
    let credentials = parse_credentials(ANSWER.as_bytes()).unwrap();
    assert_eq!(credentials.access_key_id, "ASIAEXAMPLE");
    assert_eq!(
        credentials.session_token.expose_secret(),
        "FwoGZXIvYXdzEXAMPLE=="
    );
    assert_eq!(credentials.role.as_deref(), Some("deploy"));

    let injected = ANSWER.replace(
        "FwoGZXIvYXdzEXAMPLE==",
        "x\\nNODE_OPTIONS=--require=/tmp/evil",
    );
    let err = parse_credentials(injected.as_bytes()).unwrap_err();
    assert_eq!(err.exit_code(), EXIT_MALFORMED);
    assert!(err.to_string().contains("session_token"), "{err}");
    assert!(!err.to_string().contains("NODE_OPTIONS"), "{err}");

    for bad in [
        "not json",
        r#"{"access_key_id":"A"}"#,
        &ANSWER.replace("2026-11-22T09:15:00Z", "tomorrow"),
        &ANSWER.replace(r#""ASIAEXAMPLE""#, "5"),
    ] {
        let err = parse_credentials(bad.as_bytes()).unwrap_err();
        assert_eq!(err.exit_code(), EXIT_MALFORMED, "{bad}");
        assert!(!err.to_string().contains("s3cr3t"), "{err}");
    }
}

#[test]
fn id_token_answer_must_hold_a_compact_jws() {
    assert_eq!(
        parse_id_token(br#"{"value":"aaa.bbb.c-_c"}"#)
            .unwrap()
            .expose_secret(),
        "aaa.bbb.c-_c"
    );
    for bad in [
        &br#"{"value":"a.b"}"#[..],
        br#"{"value":"a.b.c\n"}"#,
        br#"{}"#,
        b"x",
    ] {
        assert_eq!(
            parse_id_token(bad).unwrap_err().exit_code(),
            EXIT_ID_TOKEN_FAILED
        );
    }
}

fn runner(file: Option<&std::path::Path>) -> RunnerEnv {
    let mut env = actions_env();
    if let Some(file) = file {
        let file = file.display().to_string();
        env.insert("GITHUB_ENV".into(), file.clone());
        env.insert("GITHUB_OUTPUT".into(), file);
    }
    RunnerEnv::read(&env, Delivery::GithubEnv).unwrap()
}

#[test]
fn github_env_delivery_masks_first_then_appends() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("env");
    std::fs::write(&path, "EXISTING=1\n").unwrap();
    let credentials = parse_credentials(ANSWER.as_bytes()).unwrap();
    let mut out = Vec::new();
    deliver(
        Delivery::GithubEnv,
        &credentials,
        &runner(Some(&path)),
        &mut out,
    )
    .unwrap();
    let out = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "::add-mask::s3cr3t/Key+x");
    assert_eq!(lines[1], "::add-mask::FwoGZXIvYXdzEXAMPLE==");
    assert_eq!(out.matches("s3cr3t").count(), 1, "{out}");
    assert_eq!(out.matches("FwoGZXIvYXdz").count(), 1, "{out}");
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "EXISTING=1\nAWS_ACCESS_KEY_ID=ASIAEXAMPLE\nAWS_SECRET_ACCESS_KEY=s3cr3t/Key+x\n\
         AWS_SESSION_TOKEN=FwoGZXIvYXdzEXAMPLE==\nAWS_CREDENTIAL_EXPIRATION=2026-11-22T09:15:00Z\n"
    );
}

#[test]
fn github_output_and_credential_process_formats() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out");
    let credentials = parse_credentials(ANSWER.as_bytes()).unwrap();
    let mut out = Vec::new();
    deliver(
        Delivery::GithubOutput,
        &credentials,
        &runner(Some(&path)),
        &mut out,
    )
    .unwrap();
    assert!(
        String::from_utf8(out)
            .unwrap()
            .starts_with("::add-mask::s3cr3t/Key+x\n::add-mask::FwoG")
    );
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "aws-access-key-id=ASIAEXAMPLE\naws-secret-access-key=s3cr3t/Key+x\n\
         aws-session-token=FwoGZXIvYXdzEXAMPLE==\nexpiration=2026-11-22T09:15:00Z\n"
    );

    let mut out = Vec::new();
    deliver(
        Delivery::CredentialProcess,
        &credentials,
        &runner(None),
        &mut out,
    )
    .unwrap();
    let document: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        document,
        json!({"Version": 1, "AccessKeyId": "ASIAEXAMPLE", "SecretAccessKey": "s3cr3t/Key+x",
               "SessionToken": "FwoGZXIvYXdzEXAMPLE==", "Expiration": "2026-11-22T09:15:00Z"})
    );
}

#[test]
fn refusals_carry_status_code_and_request_id() {
    let mut headers = HeaderMap::new();
    headers.insert("x-request-id", HeaderValue::from_static("req-from-header"));
    let answer = Answer {
        status: 403,
        headers: headers.clone(),
        body: br#"{"error":"forbidden","message":"not permitted","request_id":"req-1"}"#.to_vec(),
    };
    let err = refused(&answer);
    assert_eq!(err.exit_code(), EXIT_REFUSED);
    assert_eq!(
        err.to_string(),
        "the broker refused the request: HTTP 403 forbidden: not permitted (request_id req-1)"
    );
    let answer = Answer {
        status: 404,
        headers,
        body: b"<html>nope</html>".to_vec(),
    };
    assert_eq!(
        refused(&answer).to_string(),
        "the broker refused the request: HTTP 404 (request_id req-from-header)"
    );
}

#[test]
fn transient_statuses_and_retry_after() {
    for status in [429, 502, 503, 504] {
        assert!(is_transient_status(status));
    }
    for status in [400, 401, 403, 404, 413, 500] {
        assert!(!is_transient_status(status));
    }
    let mut headers = HeaderMap::new();
    assert_eq!(retry_after(&headers), None);
    headers.insert(RETRY_AFTER, HeaderValue::from_static("3"));
    assert_eq!(retry_after(&headers), Some(Duration::from_secs(3)));
    headers.insert(
        RETRY_AFTER,
        HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
    );
    assert_eq!(retry_after(&headers), None);
}

#[tokio::test]
async fn retry_schedule_is_bounded() {
    let policy = RetryPolicy::default();
    for next in 2..=4 {
        let step = policy.base_delay * (1 << (next - 2));
        for _ in 0..50 {
            let pause = policy.backoff(next);
            assert!(pause >= step / 2 && pause <= step, "{next}: {pause:?}");
        }
    }
    assert!(policy.backoff(40) <= policy.max_delay);
    let far = Instant::now() + Duration::from_secs(60);
    assert!(policy.pause_before(2, None, far).is_some());
    assert!(
        policy.pause_before(5, None, far).is_none(),
        "4 attempts at most"
    );
    assert_eq!(
        policy.pause_before(2, Some(Duration::from_secs(7)), far),
        Some(Duration::from_secs(7))
    );
    assert!(
        policy
            .pause_before(2, Some(Duration::from_secs(11)), far)
            .is_none()
    );
    let near = Instant::now() + Duration::from_millis(100);
    assert!(
        policy
            .pause_before(2, Some(Duration::from_secs(1)), near)
            .is_none()
    );
    // The worst case (three maximal pauses) stays well inside the budget.
    let worst: Duration = (2..=4).map(|n| policy.base_delay * (1 << (n - 2))).sum();
    assert!(worst < policy.total / 4);
}

#[test]
fn workflow_command_data_is_escaped() {
    assert_eq!(escape_command_data("a%b\r\nc"), "a%25b%0D%0Ac");
}
