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
use super::cache::CredentialCache;
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

/// What `deliver` prints of [`ANSWER`] in `delivery` mode, writing any file to `file`.
fn delivered(delivery: Delivery, file: Option<&std::path::Path>, extras: &Extras) -> Vec<u8> {
    let credentials = parse_credentials(ANSWER.as_bytes()).unwrap();
    let mut out = Vec::new();
    deliver(delivery, &credentials, &runner(file), extras, &mut out).unwrap();
    out
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
    let out = delivered(Delivery::GithubEnv, Some(&path), &Extras::default());
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
    let out = delivered(Delivery::GithubOutput, Some(&path), &Extras::default());
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

    let out = delivered(Delivery::CredentialProcess, None, &Extras::default());
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
    for status in [429, 500, 502, 503, 504] {
        assert!(is_transient_status(status));
    }
    for status in [400, 401, 403, 404, 408, 413, 422, 501] {
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
async fn retry_schedule_is_full_jitter_within_the_budget() {
    let policy = RetryPolicy::with_budget(Duration::from_secs(60));
    // Ceilings double from 1 s and stop at 10 s.
    let ceilings: Vec<u64> = (1..=7).map(|n| policy.ceiling(n).as_secs()).collect();
    assert_eq!(ceilings, [1, 2, 4, 8, 10, 10, 10]);
    assert_eq!(policy.ceiling(u32::MAX), Duration::from_secs(10));
    // Full jitter: anywhere from zero to the ceiling, and not always the same.
    let draws: Vec<Duration> = (0..200).map(|_| policy.backoff(4)).collect();
    assert!(draws.iter().all(|pause| *pause <= Duration::from_secs(8)));
    assert!(draws.iter().any(|pause| *pause < Duration::from_secs(2)));
    assert!(draws.iter().any(|pause| *pause > Duration::from_secs(6)));

    let far = Instant::now() + Duration::from_secs(60);
    assert!(
        policy.pause_before(30, None, far).is_some(),
        "no attempt cap"
    );
    // Retry-After is a minimum pause...
    let pause = policy
        .pause_before(1, Some(Duration::from_secs(7)), far)
        .unwrap();
    assert!(pause >= Duration::from_secs(7), "{pause:?}");
    // ...but one past the budget ends the retries, as does any pause past it.
    assert!(
        policy
            .pause_before(1, Some(Duration::from_secs(61)), far)
            .is_none()
    );
    assert!(
        policy
            .pause_before(1, Some(Duration::from_secs(u64::MAX)), far)
            .is_none(),
        "a hostile Retry-After neither panics nor waits"
    );
    let spent = Instant::now();
    assert!(policy.pause_before(1, None, spent).is_none());
    // A budget of zero: one attempt, no retry.
    let once = RetryPolicy::with_budget(Duration::ZERO);
    assert!(
        once.pause_before(1, None, Instant::now() + once.total)
            .is_none()
    );
}

#[test]
fn regions_are_checked() {
    for good in ["eu-west-1", "us-gov-west-1", "cn-north-1"] {
        assert_eq!(parse_region(good).unwrap(), good);
    }
    for bad in [
        "",
        "EU-WEST-1",
        "eu west 1",
        "eu-west-1\nX=1",
        &"a".repeat(33),
    ] {
        assert!(parse_region(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn region_and_access_key_mask_are_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("env");
    let extras = Extras {
        region: Some("eu-west-1".into()),
        mask_access_key_id: true,
    };
    let out = delivered(Delivery::GithubEnv, Some(&path), &extras);
    let out = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[2], "::add-mask::ASIAEXAMPLE");
    assert_eq!(out.matches("ASIAEXAMPLE").count(), 1, "{out}");
    assert!(
        std::fs::read_to_string(&path)
            .unwrap()
            .ends_with("AWS_REGION=eu-west-1\nAWS_DEFAULT_REGION=eu-west-1\n")
    );

    let path = dir.path().join("out");
    delivered(Delivery::GithubOutput, Some(&path), &extras);
    assert!(
        std::fs::read_to_string(&path)
            .unwrap()
            .ends_with("expiration=2026-11-22T09:15:00Z\naws-region=eu-west-1\n")
    );
}

#[test]
fn workflow_command_data_is_escaped() {
    assert_eq!(escape_command_data("a%b\r\nc"), "a%25b%0D%0Ac");
}

/// `FetchArgs` as the argument parser makes them.
fn parse_args(args: &[&str]) -> FetchArgs {
    #[derive(clap::Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: FetchArgs,
    }
    let argv = std::iter::once("fetch").chain(args.iter().copied());
    <Wrapper as clap::Parser>::try_parse_from(argv)
        .unwrap()
        .args
}

fn cache_for(
    dir: &std::path::Path,
    args: &[&str],
    env: &BTreeMap<String, String>,
) -> CredentialCache {
    let args = parse_args(args);
    let url = issue_url("https://broker.example").unwrap();
    let runner = RunnerEnv::read(env, Delivery::CredentialProcess).unwrap();
    CredentialCache::open(dir, &args, env, &url, &runner).unwrap()
}

/// A broker answer whose credential expires `seconds` from now.
fn answer_expiring_in(seconds: i64) -> Credentials {
    let expiration = (time::OffsetDateTime::now_utc() + time::Duration::seconds(seconds))
        .replace_nanosecond(0)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    parse_credentials(
        ANSWER
            .replace("2026-11-22T09:15:00Z", &expiration)
            .as_bytes(),
    )
    .unwrap()
}

#[test]
fn cache_round_trip_respects_the_margin() {
    use std::os::unix::fs::PermissionsExt as _;
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("a/cache");
    let cache = cache_for(&dir, &["--credential-process"], &actions_env());
    let mode =
        |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700, "created private");
    assert!(cache.load().is_none(), "empty");

    cache.store(&answer_expiring_in(900)).unwrap();
    assert_eq!(mode(cache.path()), 0o600);
    let loaded = cache.load().unwrap();
    assert_eq!(loaded.access_key_id, "ASIAEXAMPLE");
    assert_eq!(
        loaded.session_token.expose_secret(),
        "FwoGZXIvYXdzEXAMPLE=="
    );
    assert_eq!(loaded.role.as_deref(), Some("deploy"));

    // 30 s left is inside the default 60 s margin: not handed out.
    cache.store(&answer_expiring_in(30)).unwrap();
    assert!(cache.load().is_none());
    let lenient = cache_for(
        &dir,
        &["--credential-process", "--cache-margin-seconds", "10"],
        &actions_env(),
    );
    assert!(lenient.load().is_some());

    // No temporary file is left behind.
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(names[0].starts_with("credential-"), "{names:?}");
}

#[test]
fn different_requests_never_share_a_cache_file() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("cache");
    let base = cache_for(&dir, &["--credential-process"], &actions_env());
    let mut other_sha = actions_env();
    other_sha.insert("GITHUB_SHA".into(), "def".into());
    let mut other_repo = actions_env();
    other_repo.insert("GITHUB_REPOSITORY".into(), "ourorg/other".into());
    let mut other_run = actions_env();
    other_run.insert("GITHUB_RUN_ID".into(), "7".into());
    let others = [
        cache_for(&dir, &["--credential-process"], &other_sha),
        cache_for(&dir, &["--credential-process"], &other_repo),
        cache_for(&dir, &["--credential-process"], &other_run),
        cache_for(
            &dir,
            &["--credential-process", "--role", "ci"],
            &actions_env(),
        ),
        cache_for(
            &dir,
            &["--credential-process", "--job-id", "9"],
            &actions_env(),
        ),
        cache_for(
            &dir,
            &["--credential-process", "--audience", "x"],
            &actions_env(),
        ),
        cache_for(
            &dir,
            &["--credential-process", "--duration-seconds", "1800"],
            &actions_env(),
        ),
    ];
    let mut paths: Vec<&std::path::Path> = others.iter().map(CredentialCache::path).collect();
    paths.push(base.path());
    let count = paths.len();
    paths.sort();
    paths.dedup();
    assert_eq!(paths.len(), count, "{paths:?}");
}

#[test]
fn unsafe_cache_directories_and_files_are_refused() {
    use std::os::unix::fs::PermissionsExt as _;
    let temp = tempfile::tempdir().unwrap();
    let shared = temp.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o750)).unwrap();
    let args = parse_args(&["--credential-process"]);
    let url = issue_url("https://broker.example").unwrap();
    let env = actions_env();
    let runner = RunnerEnv::read(&env, Delivery::CredentialProcess).unwrap();
    let err = CredentialCache::open(&shared, &args, &env, &url, &runner).unwrap_err();
    assert_eq!(err.exit_code(), EXIT_USAGE);
    assert!(err.to_string().contains("mode 0750"), "{err}");

    // A symbolic link to a private directory is not followed.
    let private = temp.path().join("private");
    std::fs::create_dir(&private).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    let link = temp.path().join("link");
    std::os::unix::fs::symlink(&private, &link).unwrap();
    let err = CredentialCache::open(&link, &args, &env, &url, &runner).unwrap_err();
    assert!(err.to_string().contains("symbolic links"), "{err}");

    // A cache file others can read is ignored.
    let cache = CredentialCache::open(&private, &args, &env, &url, &runner).unwrap();
    cache.store(&answer_expiring_in(900)).unwrap();
    assert!(cache.load().is_some());
    std::fs::set_permissions(cache.path(), std::fs::Permissions::from_mode(0o640)).unwrap();
    assert!(cache.load().is_none());
    // And a link in place of the file is not followed.
    std::fs::remove_file(cache.path()).unwrap();
    let elsewhere = temp.path().join("elsewhere.json");
    cache.store(&answer_expiring_in(900)).unwrap();
    std::fs::rename(cache.path(), &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, cache.path()).unwrap();
    assert!(cache.load().is_none());
}

/// The exact bytes `fetch` sends and writes: key order and spelling are what
/// the broker, the AWS SDKs and the cache of an earlier run read.
#[test]
fn request_output_and_cache_bytes_are_exact() {
    let token = secrecy::SecretString::from("aaa.bbb.ccc");
    let runner = RunnerEnv::read(&actions_env(), Delivery::CredentialProcess).unwrap();
    let minimal = parse_args(&["--credential-process"]);
    assert_eq!(
        String::from_utf8(super::client::request_body(&minimal, &runner, &token)).unwrap(),
        r#"{"oidc_token":"aaa.bbb.ccc","repo":"ourorg/widget","sha":"abc"}"#
    );
    let full = parse_args(&[
        "--credential-process",
        "--job-id",
        "72463523102",
        "--role",
        "deploy",
        "--duration-seconds",
        "1800",
    ]);
    assert_eq!(
        String::from_utf8(super::client::request_body(&full, &runner, &token)).unwrap(),
        r#"{"duration_seconds":1800,"job_id":"72463523102","oidc_token":"aaa.bbb.ccc","repo":"ourorg/widget","role":"deploy","sha":"abc"}"#
    );

    let credentials = parse_credentials(ANSWER.as_bytes()).unwrap();
    let mut out = Vec::new();
    deliver(
        Delivery::CredentialProcess,
        &credentials,
        &runner,
        &Extras::default(),
        &mut out,
    )
    .unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "{\"AccessKeyId\":\"ASIAEXAMPLE\",\"Expiration\":\"2026-11-22T09:15:00Z\",\
         \"SecretAccessKey\":\"s3cr3t/Key+x\",\"SessionToken\":\"FwoGZXIvYXdzEXAMPLE==\",\"Version\":1}\n"
    );

    let temp = tempfile::tempdir().unwrap();
    let cache = cache_for(
        &temp.path().join("cache"),
        &["--credential-process"],
        &actions_env(),
    );
    cache.store(&credentials).unwrap();
    assert_eq!(
        std::fs::read_to_string(cache.path()).unwrap(),
        r#"{"access_key_id":"ASIAEXAMPLE","expiration":"2026-11-22T09:15:00Z","role":"deploy","secret_access_key":"s3cr3t/Key+x","session_name":"gh-1-1-2","session_token":"FwoGZXIvYXdzEXAMPLE=="}"#
    );
    let mut bare = credentials;
    bare.role = None;
    bare.session_name = None;
    cache.store(&bare).unwrap();
    assert_eq!(
        std::fs::read_to_string(cache.path()).unwrap(),
        r#"{"access_key_id":"ASIAEXAMPLE","expiration":"2026-11-22T09:15:00Z","secret_access_key":"s3cr3t/Key+x","session_token":"FwoGZXIvYXdzEXAMPLE=="}"#
    );
}

#[test]
fn malformed_answers_name_the_field_never_the_value() {
    for (body, expected) in [
        (
            r#"{"access_key_id":"A"}"#.to_owned(),
            "`expiration` is missing or not a string",
        ),
        (
            ANSWER.replace(r#""ASIAEXAMPLE""#, "5"),
            "`access_key_id` is missing or not a string",
        ),
        (
            ANSWER.replace(r#""s3cr3t/Key+x""#, r#"["s3cr3t/Key+x"]"#),
            "`secret_access_key` is missing or not a string",
        ),
        (
            r#""s3cr3t/Key+x""#.to_owned(),
            "not a JSON object with the documented fields",
        ),
        (format!("{ANSWER} s3cr3t"), "not JSON"),
        ("s3cr3t".to_owned(), "not JSON"),
    ] {
        let err = parse_credentials(body.as_bytes()).unwrap_err();
        assert_eq!(err.exit_code(), EXIT_MALFORMED, "{body}");
        assert_eq!(
            err.to_string(),
            format!("the broker's answer is malformed: {expected}"),
            "{body}"
        );
    }
}

#[test]
fn an_error_code_this_client_does_not_know_still_reaches_the_user() {
    let answer = Answer {
        status: 400,
        headers: HeaderMap::new(),
        body:
            br#"{"error":"unsupported_credential","message":"no such kind","request_id":"req-9"}"#
                .to_vec(),
    };
    assert_eq!(
        refused(&answer).to_string(),
        "the broker refused the request: HTTP 400 unsupported_credential: no such kind (request_id req-9)"
    );
}

// --- GitHub installation tokens (roles of kind `github`) -------------------------

const GH_TOKEN: &str = "ghs_16C7e42F292c6912E7710c838347Ae178B4a";
const GITHUB_ANSWER: &str = r#"{"expires_at":"2026-11-22T10:00:00Z","permissions":{"contents":"write","pull_requests":"read"},"repositories":["ourorg/api"],"revoke_at":"2026-11-22T09:15:00Z","role":"release-notes","token":"ghs_16C7e42F292c6912E7710c838347Ae178B4a"}"#;

fn github_token() -> GithubToken {
    match super::answer::parse_answer(GITHUB_ANSWER.as_bytes()).unwrap() {
        Issued::Github(token) => token,
        Issued::Aws(_) => panic!("read as AWS credentials"),
    }
}

/// What `deliver_github` prints in `delivery` mode, writing any file to `file`.
fn delivered_github(delivery: Delivery, file: &std::path::Path) -> String {
    let mut out = Vec::new();
    deliver_github(delivery, &github_token(), &runner(Some(file)), &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

#[test]
fn answers_are_told_apart_by_their_keys() {
    let token = github_token();
    assert_eq!(token.token.expose_secret(), GH_TOKEN);
    assert_eq!(token.role, "release-notes");
    assert_eq!(token.repositories, ["ourorg/api"]);
    assert_eq!(
        token.permissions.get("contents"),
        Some(&crate::api::Access::Write)
    );
    assert!(matches!(
        super::answer::parse_answer(ANSWER.as_bytes()).unwrap(),
        Issued::Aws(_)
    ));
    // A `token` next to `access_key_id` is an AWS answer with an extra field.
    let both = ANSWER.replace("{", r#"{"token":"x","#);
    assert!(matches!(
        super::answer::parse_answer(both.as_bytes()).unwrap(),
        Issued::Aws(_)
    ));
    // Neither shape: the AWS messages, unchanged.
    let err = super::answer::parse_answer(br#"{"role":"x"}"#).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the broker's answer is malformed: `access_key_id` is missing or not a string"
    );
}

#[test]
fn github_answers_are_checked_and_messages_never_show_the_token() {
    for (body, expected) in [
        (
            GITHUB_ANSWER.replace(GH_TOKEN, "ghs_x\\nNODE_OPTIONS=--require=/tmp/evil"),
            "`token` is empty, too long, or not printable ASCII",
        ),
        (
            GITHUB_ANSWER.replace(GH_TOKEN, "ghs x"),
            "`token` is empty, too long, or not printable ASCII",
        ),
        (
            GITHUB_ANSWER.replace(GH_TOKEN, ""),
            "`token` is empty, too long, or not printable ASCII",
        ),
        (
            GITHUB_ANSWER.replace("2026-11-22T10:00:00Z", "in an hour"),
            "`expires_at` is not an RFC 3339 time",
        ),
        (
            GITHUB_ANSWER.replace("2026-11-22T09:15:00Z", "soon"),
            "`revoke_at` is not an RFC 3339 time",
        ),
        (
            GITHUB_ANSWER.replace(r#""release-notes""#, r#""x\n::stop-commands::y""#),
            "`role` is empty, too long, or not printable ASCII",
        ),
        (
            GITHUB_ANSWER.replace(r#"["ourorg/api"]"#, "[]"),
            "`repositories` is empty or holds an entry that is not `owner/name`",
        ),
        (
            GITHUB_ANSWER.replace(r#""ourorg/api""#, r#""api""#),
            "`repositories` is empty or holds an entry that is not `owner/name`",
        ),
        (
            GITHUB_ANSWER.replace(r#""contents""#, r#""Contents\n""#),
            "`permissions` holds a name that is not a GitHub permission name",
        ),
        (
            GITHUB_ANSWER.replace(r#""write""#, r#""owner""#),
            "`permissions` is missing or not of the documented type",
        ),
        (
            GITHUB_ANSWER.replace(
                &format!(r#""token":"{GH_TOKEN}""#),
                &format!(r#""token":["{GH_TOKEN}"]"#),
            ),
            "`token` is missing or not of the documented type",
        ),
        (
            GITHUB_ANSWER.replace(r#""role":"release-notes","#, ""),
            "`role` is missing or not of the documented type",
        ),
        (format!("{GITHUB_ANSWER} {GH_TOKEN}"), "not JSON"),
    ] {
        let err = super::answer::parse_answer(body.as_bytes()).unwrap_err();
        assert_eq!(err.exit_code(), EXIT_MALFORMED, "{body}");
        assert_eq!(
            err.to_string(),
            format!("the broker's answer is malformed: {expected}"),
            "{body}"
        );
        assert!(!err.to_string().contains("ghs_"), "{err}");
    }
}

#[test]
fn github_env_delivery_masks_the_token_first_then_appends_gh_token() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("env");
    std::fs::write(&path, "EXISTING=1\n").unwrap();
    let out = delivered_github(Delivery::GithubEnv, &path);
    assert_eq!(
        out,
        format!(
            "::add-mask::{GH_TOKEN}\n\
             attestation-broker fetch: GitHub installation token for role release-notes \
             (repositories ourorg/api; permissions contents=write, pull_requests=read) \
             expires at 2026-11-22T10:00:00Z, revoked by the broker at 2026-11-22T09:15:00Z; \
             written to GITHUB_ENV: GH_TOKEN\n"
        )
    );
    assert_eq!(out.matches(GH_TOKEN).count(), 1, "only in the mask line");
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        format!("EXISTING=1\nGH_TOKEN={GH_TOKEN}\n")
    );
}

#[test]
fn github_output_delivery_writes_token_and_its_times() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out");
    let out = delivered_github(Delivery::GithubOutput, &path);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], format!("::add-mask::{GH_TOKEN}"));
    assert!(
        lines[1].ends_with("written to GITHUB_OUTPUT: outputs token, expires-at, revoke-at"),
        "{out}"
    );
    assert_eq!(lines.len(), 2, "{out}");
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        format!(
            "token={GH_TOKEN}\nexpires-at=2026-11-22T10:00:00Z\nrevoke-at=2026-11-22T09:15:00Z\n"
        )
    );
}

#[test]
fn credential_process_refuses_a_github_token_without_printing_it() {
    let mut out = Vec::new();
    let err = deliver_github(
        Delivery::CredentialProcess,
        &github_token(),
        &runner(None),
        &mut out,
    )
    .unwrap_err();
    assert_eq!(err.exit_code(), EXIT_USAGE);
    assert!(out.is_empty(), "nothing on stdout");
    assert_eq!(
        err.to_string(),
        "role release-notes issued a GitHub installation token, which --credential-process \
         cannot deliver (it prints AWS credentials only); the token was not printed, and the \
         broker revokes it at 2026-11-22T09:15:00Z"
    );
    let hint = err.hint().unwrap();
    assert!(hint.contains("--github-env"), "{hint}");
    assert!(!format!("{err} {hint} {err:?}").contains("ghs_"));
}

#[test]
fn github_tokens_stay_out_of_debug_and_the_cache() {
    let token = github_token();
    let shown = format!("{token:?} {:?}", Issued::Github(token.clone()));
    assert!(!shown.contains(GH_TOKEN), "{shown}");
    assert!(shown.contains("release-notes"), "{shown}");

    // The cache reads AWS credentials only: a GitHub answer in a cache file
    // (written by anyone) is never handed out.
    assert_eq!(
        parse_credentials(GITHUB_ANSWER.as_bytes())
            .unwrap_err()
            .exit_code(),
        EXIT_MALFORMED
    );
    let temp = tempfile::tempdir().unwrap();
    let cache = cache_for(
        &temp.path().join("cache"),
        &["--credential-process"],
        &actions_env(),
    );
    std::fs::write(cache.path(), GITHUB_ANSWER).unwrap();
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(cache.path(), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    assert!(cache.load().is_none());
}

#[test]
fn permission_flags_are_checked_and_sent() {
    let token = secrecy::SecretString::from("aaa.bbb.ccc");
    let runner = RunnerEnv::read(&actions_env(), Delivery::GithubEnv).unwrap();
    let args = parse_args(&[
        "--github-env",
        "--role",
        "release-notes",
        "--permission",
        "pull_requests=read",
        "--permission",
        "contents=write",
    ]);
    assert_eq!(
        String::from_utf8(super::client::request_body(&args, &runner, &token)).unwrap(),
        r#"{"oidc_token":"aaa.bbb.ccc","permissions":{"contents":"write","pull_requests":"read"},"repo":"ourorg/widget","role":"release-notes","sha":"abc"}"#
    );
    for good in [
        "checks=read",
        "organization_custom_roles=admin",
        "a1_b=write",
    ] {
        parse_permission(good).unwrap();
    }
    for bad in [
        "contents",
        "contents=",
        "=read",
        "Contents=read",
        "contents=Read",
        "contents=owner",
        "pull-requests=read",
        "contents=read\nX=1",
        "a b=read",
        "_x=read",
        &format!("{}=read", "a".repeat(65)),
    ] {
        assert!(parse_permission(bad).is_err(), "{bad:?}");
    }
    // Levels are not silently merged: a name given twice is refused.
    let twice = parse_args(&[
        "--github-env",
        "--permission",
        "contents=read",
        "--permission",
        "contents=write",
    ]);
    let err = requested_permissions(&twice.permissions).unwrap_err();
    assert_eq!(err.exit_code(), EXIT_USAGE);
    assert!(err.to_string().contains("--permission contents"), "{err}");
    // A GitHub token has GitHub's lifetime and no credential_process form.
    #[derive(Debug, clap::Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: FetchArgs,
    }
    for conflicting in [
        &[
            "--github-env",
            "--permission",
            "contents=read",
            "--duration-seconds",
            "900",
        ][..],
        &["--credential-process", "--permission", "contents=read"],
    ] {
        let argv = std::iter::once("fetch").chain(conflicting.iter().copied());
        assert!(
            <Wrapper as clap::Parser>::try_parse_from(argv).is_err(),
            "{conflicting:?}"
        );
    }
}

/// A stand-in for the Actions runtime and for the broker's documented answer
/// to a `github` role, on one loopback listener; records the request bodies.
async fn github_stand_in(bodies: std::sync::Arc<std::sync::Mutex<Vec<Value>>>) -> String {
    use axum::routing::{get, post};
    let router = axum::Router::new()
        .route(
            "/token",
            get(|| async { axum::Json(json!({"value": "aaa.bbb.ccc"})) }),
        )
        .route(
            "/issue",
            post(move |body: axum::body::Bytes| {
                bodies
                    .lock()
                    .unwrap()
                    .push(serde_json::from_slice(&body).unwrap());
                async move {
                    (
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        GITHUB_ANSWER,
                    )
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{address}")
}

#[tokio::test]
async fn fetch_delivers_a_github_token_and_never_caches_it() {
    let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let base = github_stand_in(std::sync::Arc::clone(&bodies)).await;
    let temp = tempfile::tempdir().unwrap();
    let env_file = temp.path().join("env");
    let mut env = actions_env();
    env.insert(
        "ACTIONS_ID_TOKEN_REQUEST_URL".into(),
        format!("{base}/token?api-version=2.0"),
    );
    env.insert("BROKER_URL".into(), base);
    env.insert("GITHUB_ENV".into(), env_file.display().to_string());
    env.insert("RUNNER_TEMP".into(), temp.path().display().to_string());

    let args = parse_args(&["--github-env", "--permission", "contents=read"]);
    let mut out = Vec::new();
    fetch(&args, &env, &mut out).await.unwrap();
    let out = String::from_utf8(out).unwrap();
    assert!(
        out.starts_with(&format!("::add-mask::{GH_TOKEN}\n")),
        "{out}"
    );
    assert_eq!(
        std::fs::read_to_string(&env_file).unwrap(),
        format!("GH_TOKEN={GH_TOKEN}\n")
    );
    assert_eq!(
        bodies.lock().unwrap()[0]["permissions"],
        json!({"contents": "read"})
    );

    let args = parse_args(&["--credential-process"]);
    let mut out = Vec::new();
    let err = fetch(&args, &env, &mut out).await.unwrap_err();
    assert_eq!(err.exit_code(), EXIT_USAGE);
    assert!(out.is_empty(), "nothing on stdout");
    let cache_dir = temp.path().join(super::cache::DIR_NAME);
    let cached: Vec<_> = std::fs::read_dir(&cache_dir)
        .map(|entries| entries.map(|entry| entry.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(cached.is_empty(), "{cached:?}");
    assert_eq!(bodies.lock().unwrap().len(), 2);
}
