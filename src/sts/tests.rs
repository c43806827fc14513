//! The real SDK client against loopback servers that speak AssumeRole's AWS
//! Query protocol: request encoding, answer parsing, retries and error mapping.

use secrecy::ExposeSecret;

use super::*;
use crate::testkit::sts::{Fault, Sts};

const ROLE_ARN: &str = "arn:aws:iam::123456789012:role/deploy";

fn test_credentials() -> aws_credential_types::Credentials {
    aws_credential_types::Credentials::new("AKIDTEST", "test-secret", None, None, "test")
}

fn claims() -> Vec<(&'static str, &'static str)> {
    vec![
        ("repository", "octo-org/octo-repo"),
        ("repository_id", "123456789"),
        ("repository_owner_id", "987654"),
        ("ref", "refs/heads/feat#1!"),
        ("sha", "0123456789abcdef0123456789abcdef01234567"),
        ("run_id", "1234567890"),
        ("run_attempt", "1"),
        ("check_run_id", "31337"),
        ("event_name", "push"),
        (
            "job_workflow_ref",
            "octo-org/octo-repo/.github/workflows/ci.yml@refs/heads/main",
        ),
    ]
}

/// The test kit's STS: the first calls fail with `queued` faults, in order,
/// then every call with `standing` (or succeeds when `None`). It records every
/// request.
async fn scripted(queued: &[Fault], standing: Option<Fault>) -> (url::Url, Sts) {
    let sts = Sts::start().await.unwrap();
    for fault in queued {
        sts.fail_next(*fault, 1);
    }
    sts.set_fault(standing);
    (sts.url().clone(), sts)
}

/// The parameters of request `index`, as sent.
fn form(sts: &Sts, index: usize) -> Vec<(String, String)> {
    sts.requests()[index].params.clone().into_iter().collect()
}

fn tuning(max_attempts: u32) -> Tuning {
    Tuning {
        connect: Duration::from_secs(5),
        attempt: Duration::from_secs(30),
        operation: Duration::from_secs(60),
        max_attempts,
        // Keeps the retry tests fast; the jitter and doubling are the SDK's.
        initial_backoff: Duration::from_millis(1),
    }
}

async fn client(endpoint: url::Url, tuning: Tuning) -> (StsClient, Metrics) {
    let config = StsConfig {
        endpoint_url: Some(endpoint),
        ..StsConfig::default()
    };
    let metrics = Metrics::new().unwrap();
    let client = StsClient::build(&config, Some(test_credentials()), metrics.clone(), tuning)
        .await
        .unwrap();
    (client, metrics)
}

fn value<'a>(form: &'a [(String, String)], key: &str) -> Option<&'a str> {
    form.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn success_sends_role_duration_name_and_tags() {
    let (endpoint, script) = scripted(&[], None).await;
    let (client, metrics) = client(endpoint, tuning(3)).await;

    let issued = client
        .assume_role(
            "test",
            &AwsSession::for_tests(ROLE_ARN, 1800, true, &claims()),
        )
        .await
        .unwrap();

    let sent = &script.issued()[0];
    assert_eq!(issued.access_key_id, sent.access_key_id);
    // Real secrets carry `+` and `/`; so do the kit's.
    assert!(sent.secret_access_key.contains('+') && sent.secret_access_key.contains('/'));
    assert_eq!(
        issued.secret_access_key.expose_secret(),
        sent.secret_access_key
    );
    assert_eq!(issued.session_token.expose_secret(), sent.session_token);
    assert_eq!(issued.session_name, "gh-1234567890-1-31337");
    let expected = SystemTime::from(
        time::OffsetDateTime::parse(
            &sent.expiration,
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap(),
    );
    assert_eq!(issued.expiration, expected);

    assert_eq!(script.calls(), 1);
    let form = form(&script, 0);
    assert_eq!(value(&form, "Action"), Some("AssumeRole"));
    assert_eq!(value(&form, "Version"), Some("2011-06-15"));
    assert_eq!(value(&form, "RoleArn"), Some(ROLE_ARN));
    assert_eq!(
        value(&form, "RoleSessionName"),
        Some("gh-1234567890-1-31337")
    );
    assert_eq!(value(&form, "DurationSeconds"), Some("1800"));
    assert_eq!(value(&form, "Tags.member.1.Key"), Some("repository"));
    assert_eq!(
        value(&form, "Tags.member.1.Value"),
        Some("octo-org/octo-repo")
    );
    assert_eq!(value(&form, "Tags.member.4.Key"), Some("ref"));
    assert_eq!(
        value(&form, "Tags.member.4.Value"),
        Some("refs/heads/feat-1-")
    );
    assert_eq!(value(&form, "Tags.member.9.Key"), Some("job_workflow_ref"));
    assert_eq!(
        value(&form, "Tags.member.9.Value"),
        Some("octo-org/octo-repo/.github/workflows/ci.yml@refs/heads/main")
    );
    assert_eq!(value(&form, "Tags.member.10.Key"), None);

    let text = metrics.render();
    assert!(text.contains("ci_sts_latency_seconds_count 1"), "{text}");
    assert_no_sts_errors(&text);
}

#[tokio::test]
async fn tags_are_left_out_when_the_role_turns_them_off() {
    let (endpoint, script) = scripted(&[], None).await;
    let (client, _) = client(endpoint, tuning(1)).await;

    client
        .assume_role(
            "test",
            &AwsSession::for_tests(ROLE_ARN, 900, false, &claims()),
        )
        .await
        .unwrap();

    let form = form(&script, 0);
    assert_eq!(value(&form, "DurationSeconds"), Some("900"));
    assert!(
        form.iter().all(|(key, _)| !key.starts_with("Tags.")),
        "{form:?}"
    );
}

#[tokio::test]
async fn access_denied_is_classified_and_keeps_the_code() {
    let (endpoint, script) = scripted(&[], Some(Fault::AccessDenied)).await;
    let (client, metrics) = client(endpoint, tuning(3)).await;

    let err = client
        .assume_role(
            "test",
            &AwsSession::for_tests(ROLE_ARN, 900, true, &claims()),
        )
        .await
        .unwrap_err();

    match &err {
        StsError::AccessDenied(detail) => {
            assert!(
                detail.starts_with("AccessDenied: User: arn:aws:sts::"),
                "{detail}"
            );
        }
        other => panic!("expected AccessDenied, got {other:?}"),
    }
    assert_eq!(err.kind(), "denied");
    // A client error is not retried.
    assert_eq!(script.calls(), 1);
    let text = metrics.render();
    assert!(
        text.contains(r#"ci_sts_errors_total{kind="denied"} 1"#),
        "{text}"
    );
}

#[tokio::test]
async fn throttling_is_retried_by_the_sdk() {
    let (endpoint, script) = scripted(&[Fault::Throttling, Fault::Throttling], None).await;
    let (client, metrics) = client(endpoint, tuning(3)).await;

    let issued = client
        .assume_role(
            "test",
            &AwsSession::for_tests(ROLE_ARN, 900, true, &claims()),
        )
        .await;

    assert!(issued.is_ok(), "{issued:?}");
    assert_eq!(script.calls(), 3);
    let text = metrics.render();
    assert_no_sts_errors(&text);
}

#[tokio::test]
async fn throttling_after_all_attempts_is_throttled_and_counted_once() {
    let (endpoint, script) = scripted(&[], Some(Fault::Throttling)).await;
    let (client, metrics) = client(endpoint, tuning(3)).await;

    let err = client
        .assume_role(
            "test",
            &AwsSession::for_tests(ROLE_ARN, 900, true, &claims()),
        )
        .await
        .unwrap_err();

    assert!(matches!(err, StsError::Throttled), "{err:?}");
    assert_eq!(script.calls(), 3);
    let text = metrics.render();
    assert!(
        text.contains(r#"ci_sts_errors_total{kind="throttled"} 1"#),
        "{text}"
    );
    assert!(text.contains("ci_sts_latency_seconds_count 1"), "{text}");
}

#[tokio::test]
async fn server_errors_are_retried_then_other() {
    let (endpoint, script) = scripted(&[], Some(Fault::ServiceUnavailable)).await;
    let (client, _) = client(endpoint, tuning(2)).await;

    let err = client
        .assume_role(
            "test",
            &AwsSession::for_tests(ROLE_ARN, 900, true, &claims()),
        )
        .await
        .unwrap_err();

    assert_eq!(script.calls(), 2);
    match err {
        StsError::Other(detail) => assert!(detail.contains("ServiceUnavailable"), "{detail}"),
        other => panic!("expected Other, got {other:?}"),
    }
}

#[tokio::test]
async fn invalid_client_token_is_other_with_its_code() {
    let (endpoint, _sts) = scripted(&[], Some(Fault::InvalidClientTokenId)).await;
    let (client, metrics) = client(endpoint, tuning(3)).await;

    let err = client
        .assume_role(
            "test",
            &AwsSession::for_tests(ROLE_ARN, 900, true, &claims()),
        )
        .await
        .unwrap_err();

    match err {
        StsError::Other(detail) => {
            assert!(detail.starts_with("InvalidClientTokenId: "), "{detail}")
        }
        other => panic!("expected Other, got {other:?}"),
    }
    assert!(
        metrics
            .render()
            .contains(r#"ci_sts_errors_total{kind="other"} 1"#)
    );
}

/// An answer missing a part of the credentials is `Other`, naming what is
/// missing. (For `Expiration` the SDK fills the missing member with the epoch
/// instead of failing; the client catches it.)
#[tokio::test]
async fn answers_without_a_part_of_the_credentials_are_other() {
    for (element, detail_names) in [
        ("Credentials", "no Credentials"),
        ("Expiration", "Expiration"),
        ("AccessKeyId", "incomplete"),
    ] {
        let (endpoint, _sts) = scripted(&[], Some(Fault::Without(element))).await;
        let (client, _) = client(endpoint, tuning(1)).await;

        let err = client
            .assume_role(
                "test",
                &AwsSession::for_tests(ROLE_ARN, 900, true, &claims()),
            )
            .await
            .unwrap_err();

        assert!(
            matches!(&err, StsError::Other(detail) if detail.contains(detail_names)),
            "without {element}: {err:?}"
        );
    }
}

/// With `fault` on every call and one short attempt, the call is a timeout
/// after exactly one request.
async fn assert_times_out(fault: Fault) {
    let (endpoint, sts) = scripted(&[], Some(fault)).await;
    let short = Tuning {
        attempt: Duration::from_millis(200),
        operation: Duration::from_secs(30),
        ..tuning(1)
    };
    let (client, metrics) = client(endpoint, short).await;

    let err = client
        .assume_role(
            "test",
            &AwsSession::for_tests(ROLE_ARN, 900, true, &claims()),
        )
        .await
        .unwrap_err();

    assert!(matches!(err, StsError::Timeout), "{fault:?}: {err:?}");
    assert_eq!(sts.requests().len(), 1, "{fault:?}");
    assert!(
        metrics
            .render()
            .contains(r#"ci_sts_errors_total{kind="timeout"} 1"#),
        "{fault:?}"
    );
}

#[tokio::test]
async fn an_unanswered_attempt_is_a_timeout() {
    assert_times_out(Fault::Hang).await;
}

#[tokio::test]
async fn an_answer_that_stalls_mid_body_is_a_timeout() {
    // Headers and half the document arrive, the rest never does: the
    // per-attempt timeout ends the attempt (the SDK's stalled-stream
    // protection is off, so nothing else would).
    assert_times_out(Fault::Stall).await;
}

#[tokio::test]
async fn new_builds_from_config_and_rejects_zero_attempts() {
    let config = StsConfig {
        endpoint_url: Some(url::Url::parse("http://127.0.0.1:9").unwrap()),
        ..StsConfig::default()
    };
    let metrics = Metrics::new().unwrap();
    assert!(
        StsClient::new(&config, Some(test_credentials()), metrics.clone())
            .await
            .is_ok()
    );
    // The default chain resolves credentials on the first call, not at start-up.
    assert!(StsClient::new(&config, None, metrics.clone()).await.is_ok());
    let zero = StsConfig {
        max_attempts: 0,
        ..config
    };
    let err = StsClient::new(&zero, Some(test_credentials()), metrics)
        .await
        .unwrap_err();
    assert!(matches!(err, StsError::Other(_)));
}

#[test]
fn codes_map_to_kinds() {
    for code in ["Throttling", "ThrottlingException", "RequestLimitExceeded"] {
        assert!(matches!(
            classify_code(Some(code), None),
            StsError::Throttled
        ));
    }
    for code in ["AccessDenied", "AccessDeniedException"] {
        match classify_code(Some(code), Some("no")) {
            StsError::AccessDenied(detail) => assert_eq!(detail, format!("{code}: no")),
            other => panic!("{other:?}"),
        }
    }
    for code in [Some("InvalidClientTokenId"), Some("ExpiredToken"), None] {
        assert!(matches!(classify_code(code, None), StsError::Other(_)));
    }
}

#[test]
fn endpoint_keeps_paths_but_drops_a_bare_slash() {
    let parse = |text: &str| url::Url::parse(text).unwrap();
    assert_eq!(
        endpoint_string(&parse("http://127.0.0.1:4566")),
        "http://127.0.0.1:4566"
    );
    assert_eq!(
        endpoint_string(&parse("https://sts.example/")),
        "https://sts.example"
    );
    assert_eq!(
        endpoint_string(&parse("https://sts.example/p/")),
        "https://sts.example/p/"
    );
}

/// Every `ci_sts_errors_total` series (all exported from start-up) is 0.
fn assert_no_sts_errors(text: &str) {
    let series: Vec<&str> = text
        .lines()
        .filter(|line| line.starts_with("ci_sts_errors_total{"))
        .collect();
    assert_eq!(series.len(), 4, "{text}");
    assert!(series.iter().all(|line| line.ends_with(" 0")), "{text}");
}
