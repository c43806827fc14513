//! The bytes of every `POST /issue` answer, pinned exactly: key order,
//! spelling and number formatting are the contract clients parse, so these
//! are compared as strings, not as parsed JSON.

use serde_json::json;

use crate::support::{Harness, Req, msg};

#[tokio::test]
async fn the_json_answer_is_byte_exact() {
    let h = Harness::start().await;
    let resp = h.issue_token(&h.token().build(), json!({})).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(
        resp.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(resp.header("cache-control").as_deref(), Some("no-store"));
    let issued = h.sts.issued()[0].clone();
    let session_name = h.sts.requests()[0].session_name.clone();
    let expected = format!(
        r#"{{"access_key_id":"{}","expiration":"{}","role":"deploy","secret_access_key":"{}","session_name":"{session_name}","session_token":"{}"}}"#,
        issued.access_key_id, issued.expiration, issued.secret_access_key, issued.session_token,
    );
    assert_eq!(resp.text(), expected);
}

#[tokio::test]
async fn the_credential_process_answer_is_byte_exact() {
    let h = Harness::start().await;
    let body = json!({ "oidc_token": h.token().build() });
    let resp = h
        .broker
        .call(Req::json(&body).path("/issue?format=credential_process"))
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(
        resp.header("content-type").as_deref(),
        Some("application/json")
    );
    let issued = h.sts.issued()[0].clone();
    let expected = format!(
        r#"{{"AccessKeyId":"{}","Expiration":"{}","SecretAccessKey":"{}","SessionToken":"{}","Version":1}}"#,
        issued.access_key_id, issued.expiration, issued.secret_access_key, issued.session_token,
    );
    assert_eq!(resp.text(), expected);
}

#[tokio::test]
async fn error_answers_are_byte_exact() {
    let h = Harness::start().await;
    let cases = [
        (
            Req::raw(Some("application/json"), "{}"),
            400,
            "invalid_request",
            msg::NO_TOKEN,
        ),
        (
            Req::raw(Some("text/plain"), "x"),
            415,
            "invalid_request",
            msg::NOT_JSON_TYPE,
        ),
        (
            Req::json(&json!({ "oidc_token": "a.b.c" })),
            401,
            "invalid_token",
            msg::MALFORMED,
        ),
        (
            Req::json(&json!({ "oidc_token": h.token().build(), "repo": "other/repo" })),
            403,
            "forbidden",
            msg::FORBIDDEN,
        ),
        (
            Req::raw(Some("application/json"), "{}").path("/nowhere"),
            404,
            "not_found",
            "no such endpoint",
        ),
    ];
    for (request, status, code, message) in cases {
        let resp = h.broker.call(request).await;
        assert_eq!(resp.status, status, "{}", resp.text());
        assert_eq!(
            resp.header("content-type").as_deref(),
            Some("application/json")
        );
        assert_eq!(resp.header("cache-control").as_deref(), Some("no-store"));
        let request_id = resp.request_id();
        assert_eq!(
            resp.text(),
            format!(r#"{{"error":"{code}","message":"{message}","request_id":"{request_id}"}}"#)
        );
    }
}
