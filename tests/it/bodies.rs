//! Request bodies the broker must refuse before looking at any token.

use serde_json::json;

use crate::support::{Harness, Req, assert_bad_request, assert_error, assert_issued, msg};

/// Bodies refused before any token is looked at, against one broker. Each case
/// asserts that the STS was never called; the last one then issues its token
/// (none of the refusals burned it).
#[tokio::test]
async fn refused_bodies_share_one_broker() {
    let h = Harness::in_process().await;
    body_that_is_not_json(&h).await;
    no_token_anywhere(&h).await;
    body_far_over_the_limit_is_413(&h).await;
    chunked_body_over_64_kib_is_413(&h).await;
    wrong_content_type_is_415(&h).await;
    form_body_with_a_bearer_token_is_still_415(&h).await;
    fields_of_the_wrong_type(&h).await;
}

async fn body_that_is_not_json(h: &Harness) {
    for body in [
        &b"oidc_token=abc"[..],
        b"{\"oidc_token\": ",
        b"\xff\xfe{}",
        b"null",
        b"[]",
        b"\"token\"",
    ] {
        let resp = h
            .broker
            .call(Req::raw(Some("application/json"), body))
            .await;
        let shown = String::from_utf8_lossy(body);
        assert_eq!(resp.json()["message"], msg::BAD_JSON, "body {shown:?}");
        assert_bad_request(&resp, msg::BAD_JSON);
    }
    assert_eq!(h.sts.calls(), 0);
}

async fn fields_of_the_wrong_type(h: &Harness) {
    let token = h.token().build();
    for body in [
        json!({"oidc_token": 5}),
        json!([token]),
        json!({"oidc_token": [token]}),
        json!({"oidc_token": token, "duration_seconds": "900"}),
        json!({"oidc_token": token, "duration_seconds": -900}),
        json!({"oidc_token": token, "duration_seconds": 900.5}),
        json!({"oidc_token": token, "role": 5}),
        json!({"oidc_token": token, "repo": {"owner": "ourorg"}}),
        json!({"oidc_token": token, "job_id": true}),
        json!({"oidc_token": token, "sha": ["x"]}),
    ] {
        let resp = h.broker.issue(&body).await;
        assert_eq!(resp.json()["message"], msg::BAD_JSON, "body {body}");
        assert_bad_request(&resp, msg::BAD_JSON);
    }
    assert_eq!(h.sts.calls(), 0);
    // None of those refusals burned the token.
    assert_issued(&h.issue_token(&token, json!({})).await);
}

async fn no_token_anywhere(h: &Harness) {
    for req in [
        Req::json(&json!({})),
        Req::json(&json!({"repo": "ourorg/widget-service", "job_id": "1"})),
        Req::raw(None, Vec::new()),
    ] {
        let resp = h.broker.call(req).await;
        assert_bad_request(&resp, msg::NO_TOKEN);
    }
    assert_eq!(h.sts.calls(), 0);
}

#[tokio::test]
async fn unknown_fields_are_ignored() {
    let h = Harness::in_process().await;
    let resp = h
        .issue_token(
            &h.token().build(),
            json!({"client": "fetch_ephemeral_creds.py", "extra": [1, 2]}),
        )
        .await;
    assert_issued(&resp);
}

fn post_head(headers: &str) -> String {
    format!(
        "POST /issue HTTP/1.1\r\nHost: broker\r\nContent-Type: application/json\r\nConnection: close\r\n{headers}\r\n"
    )
}

#[tokio::test]
async fn body_over_64_kib_is_413() {
    let h = Harness::in_process().await;
    let token = h.token().build();
    let body = serde_json::to_vec(&json!({"oidc_token": token, "padding": "x".repeat(65 * 1024)}))
        .unwrap();
    let head = post_head(&format!("Content-Length: {}\r\n", body.len()));
    let resp = h.broker.call_tcp(head, body).await;
    assert_error(&resp, 413, "invalid_request", msg::TOO_LARGE);
    assert_eq!(h.sts.calls(), 0);
    // Exactly 64 KiB is fine.
    let token = h.token().build();
    let mut body = json!({"oidc_token": token, "padding": ""});
    let size = serde_json::to_vec(&body).unwrap().len();
    body["padding"] = json!("x".repeat(64 * 1024 - size));
    assert_eq!(serde_json::to_vec(&body).unwrap().len(), 64 * 1024);
    assert_issued(&h.broker.issue(&body).await);
}

async fn body_far_over_the_limit_is_413(h: &Harness) {
    let body = vec![b' '; 512 * 1024];
    let head = post_head(&format!("Content-Length: {}\r\n", body.len()));
    let resp = h.broker.call_tcp(head, body).await;
    assert_error(&resp, 413, "invalid_request", msg::TOO_LARGE);
}

async fn chunked_body_over_64_kib_is_413(h: &Harness) {
    // No Content-Length: the limit must hold while streaming too.
    let token = h.token().build();
    let json = serde_json::to_vec(&json!({"oidc_token": token, "padding": "x".repeat(80 * 1024)}))
        .unwrap();
    let mut body = Vec::new();
    for chunk in json.chunks(8 * 1024) {
        body.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        body.extend_from_slice(chunk);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\n\r\n");
    let resp = h
        .broker
        .call_tcp(post_head("Transfer-Encoding: chunked\r\n"), body)
        .await;
    assert_error(&resp, 413, "invalid_request", msg::TOO_LARGE);
    assert_eq!(h.sts.calls(), 0);
}

async fn wrong_content_type_is_415(h: &Harness) {
    let token = h.token().build();
    let body = serde_json::to_vec(&json!({"oidc_token": token})).unwrap();
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("application/jsonx"),
        None,
    ] {
        let resp = h.broker.call(Req::raw(content_type, body.clone())).await;
        assert_error(&resp, 415, "invalid_request", msg::NOT_JSON_TYPE);
    }
    assert_eq!(h.sts.calls(), 0);
}

async fn form_body_with_a_bearer_token_is_still_415(h: &Harness) {
    let token = h.token().build();
    let req = Req::raw(Some("application/x-www-form-urlencoded"), "role=deploy").bearer(&token);
    let resp = h.broker.call(req).await;
    assert_error(&resp, 415, "invalid_request", msg::NOT_JSON_TYPE);
    assert_eq!(h.sts.calls(), 0);
}
