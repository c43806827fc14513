//! Nothing secret reaches the logs, even at `trace`.

use attestation_broker::api::CredentialProcess;
use serde_json::json;

use crate::support::broker::{BROKER_AWS_SECRET, Resp};
use crate::support::sts::Fault;
use crate::support::tokens::{self, KEY_B, now};
use crate::support::{
    Harness, Req, assert_forbidden, assert_invalid_token, assert_issued, assert_issued_as, msg,
};

/// A request, whether STS throttles its first attempt, the expected answer.
type Case = (Req, bool, fn(&Resp));

async fn nothing_secret_is_logged_at(level: &str) {
    let h = Harness::start_with(|spec| {
        spec.env("BROKER_LOG__LEVEL", level);
    })
    .await;
    let token = h.token().build();
    let bearer = h.token().build();
    let process = h.token().build();
    let retried = h.token().build();
    let forged = h.token().signed_by(&KEY_B).build();
    let expired = h.token().issued_at(now() - 3600).build();
    let mismatched = h.token().build();
    let denied = h.token().claim("runner_environment", "self-hosted").build();
    let cases: [Case; 9] = [
        // Issuance through the body, the Bearer header and credential_process.
        (
            Req::json(&json!({
                "oidc_token": token, "repo": tokens::REPOSITORY, "job_id": tokens::CHECK_RUN_ID
            })),
            false,
            |resp| {
                assert_issued(resp);
            },
        ),
        (Req::raw(None, Vec::new()).bearer(&bearer), false, |resp| {
            assert_issued(resp);
        }),
        (
            Req::json(&json!({"oidc_token": process})).path("/issue?format=credential_process"),
            false,
            |resp| {
                assert_issued_as::<CredentialProcess>(resp);
            },
        ),
        // A throttled first attempt, then success.
        (Req::json(&json!({"oidc_token": retried})), true, |resp| {
            assert_issued(resp);
        }),
        // Rejections: replay, bad signature, expired, binding mismatch, policy denial.
        (
            Req::json(&json!({"oidc_token": token})),
            false,
            assert_forbidden,
        ),
        (Req::raw(None, Vec::new()).bearer(&forged), false, |resp| {
            assert_invalid_token(resp, msg::BAD_SIGNATURE)
        }),
        (Req::json(&json!({"oidc_token": expired})), false, |resp| {
            assert_invalid_token(resp, msg::EXPIRED)
        }),
        (
            Req::json(&json!({"oidc_token": mismatched, "repo": "ourorg/other"})),
            false,
            assert_forbidden,
        ),
        (
            Req::json(&json!({"oidc_token": denied})),
            false,
            assert_forbidden,
        ),
    ];
    let mut request_ids = Vec::new();
    for (request, throttle, check) in cases {
        if throttle {
            h.sts.fail_next(Fault::Throttling, 1);
        }
        let resp = h.broker.call(request).await;
        check(&resp);
        request_ids.push(resp.request_id());
    }
    let tokens_used = [
        token, bearer, process, retried, forged, expired, mismatched, denied,
    ];

    // Every decision has been logged before we look at the output.
    for request_id in &request_ids {
        h.broker.wait_for_audit(request_id).await;
    }

    let issued = h.sts.issued();
    assert_eq!(issued.len(), 4);
    let mut secrets: Vec<(String, String)> = vec![(
        "the broker's AWS secret key".into(),
        BROKER_AWS_SECRET.into(),
    )];
    for (index, token) in tokens_used.iter().enumerate() {
        secrets.push((format!("token #{index}"), token.clone()));
        secrets.push((
            format!("signature of token #{index}"),
            tokens::signature_of(token),
        ));
    }
    for (index, credentials) in issued.iter().enumerate() {
        secrets.push((
            format!("secret access key #{index}"),
            credentials.secret_access_key.clone(),
        ));
        secrets.push((
            format!("session token #{index}"),
            credentials.session_token.clone(),
        ));
    }
    let lines = h.broker.lines();
    for line in &lines {
        for (what, secret) in &secrets {
            assert!(
                !line.contains(secret.as_str()),
                "a log line contains {what}:\n{line}"
            );
        }
    }
    if level == "trace" {
        assert!(
            lines
                .iter()
                .any(|line| line.contains("\"level\":\"TRACE\"")
                    || line.contains("\"level\":\"DEBUG\"")),
            "BROKER_LOG__LEVEL=trace produced no debug or trace lines; is the override applied?"
        );
    }
}

#[tokio::test]
async fn nothing_secret_is_logged_at_trace_level() {
    nothing_secret_is_logged_at("trace").await;
}

#[tokio::test]
async fn nothing_secret_is_logged_at_the_default_level() {
    nothing_secret_is_logged_at("info").await;
}

#[tokio::test]
async fn log_lines_are_json() {
    let h = Harness::start().await;
    assert_issued(&h.issue_token(&h.token().build(), json!({})).await);
    h.broker
        .wait_for_line("an audit line", |line| {
            line.contains("\"target\":\"audit\"")
        })
        .await;
    for line in h.broker.lines() {
        if line.trim().is_empty() {
            continue;
        }
        assert!(
            serde_json::from_str::<serde_json::Value>(&line).is_ok(),
            "not a JSON log line: {line}"
        );
    }
}
