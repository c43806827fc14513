//! Inbound limits: head size and header count (hyper answers 431 before any
//! handler runs), the slow-client deadline, the request deadline, load
//! shedding when too many requests are in flight, and the per-repository rate
//! limit.

use std::io::{Read as _, Write as _};

use serde_json::json;

use crate::support::broker::{DEADLINE, eventually, field};
use crate::support::sts::Fault;
use crate::support::{Harness, assert_error, assert_issued, assert_unavailable};

const RATE_LIMITED: &str = "too many requests; retry later";

/// `host:port` of the main listener.
fn main_address(h: &Harness) -> String {
    h.broker.base_url.trim_start_matches("http://").to_owned()
}

/// A POST /issue head with `extra` header lines and an empty body.
fn head_with(extra: &str) -> String {
    format!(
        "POST /issue HTTP/1.1\r\nHost: broker\r\nContent-Type: application/json\r\nContent-Length: 0\r\nConnection: close\r\n{extra}\r\n"
    )
}

#[tokio::test]
async fn an_oversized_head_gets_431_before_any_handler() {
    let h = Harness::start_with(|spec| {
        spec.set("server.max_header_bytes", 8192);
    })
    .await;
    let big = format!("X-Padding: {}\r\n", "a".repeat(9000));
    let resp = h.broker.call_tcp(head_with(&big), Vec::new()).await;
    assert_eq!(resp.status, 431, "{}", resp.text());

    // Just under the limit is an ordinary request (here: no token, 400).
    let fits = format!("X-Padding: {}\r\n", "a".repeat(6000));
    let resp = h.broker.call_tcp(head_with(&fits), Vec::new()).await;
    assert_eq!(resp.status, 400, "{}", resp.text());

    let metrics = h.broker.metrics().await;
    assert_eq!(
        metrics.value_or_zero("ci_http_requests_total", &[("status", "431")]),
        0.0,
        "a refused head never reaches the router"
    );
}

#[tokio::test]
async fn too_many_headers_get_431() {
    let h = Harness::start_with(|spec| {
        spec.set("server.max_headers", 16);
    })
    .await;
    let many: String = (0..20).map(|i| format!("X-H{i}: v\r\n")).collect();
    let resp = h.broker.call_tcp(head_with(&many), Vec::new()).await;
    assert_eq!(resp.status, 431, "{}", resp.text());

    let few: String = (0..5).map(|i| format!("X-H{i}: v\r\n")).collect();
    let resp = h.broker.call_tcp(head_with(&few), Vec::new()).await;
    assert_eq!(resp.status, 400, "{}", resp.text());
}

#[tokio::test]
async fn a_client_that_stalls_in_its_head_is_disconnected() {
    let h = Harness::start_with(|spec| {
        spec.set("server.header_read_timeout_seconds", 1);
    })
    .await;
    let address = main_address(&h);
    let (read, received) = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(&address).unwrap();
        // The harness deadline, not a threshold: the broker must close first.
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        stream
            .write_all(b"POST /issue HTTP/1.1\r\nHost: broker\r\n")
            .unwrap();
        let mut received = Vec::new();
        let read = stream.read_to_end(&mut received);
        (read.map_err(|err| err.kind()), received)
    })
    .await
    .unwrap();
    assert_eq!(read, Ok(0), "the broker should close the connection");
    assert!(
        received.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&received)
    );
}

#[tokio::test]
async fn a_request_past_its_deadline_gets_503_and_an_audit_event() {
    let h = Harness::start_with(|spec| {
        spec.set("server.request_timeout_seconds", 1);
        spec.set("sts.attempt_timeout_seconds", 60);
        spec.set("sts.operation_timeout_seconds", 60);
    })
    .await;
    h.sts.fail_next(Fault::Hang, 1);
    let resp = h.issue_token(&h.token().build(), json!({})).await;
    assert_unavailable(&resp);
    let event = h.broker.wait_for_audit(&resp.request_id()).await;
    assert_eq!(field(&event, "reason").as_deref(), Some("deadline"));
}

#[tokio::test]
async fn requests_beyond_the_concurrency_limit_are_shed_at_once() {
    let h = Harness::start_with(|spec| {
        spec.set("server.max_concurrent_requests", 1);
        spec.set("sts.attempt_timeout_seconds", 60);
        spec.set("sts.operation_timeout_seconds", 60);
        spec.set("server.request_timeout_seconds", 60);
    })
    .await;
    h.sts.fail_next(Fault::Hold, 1);
    let held_token = h.token().build();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = format!("{}/issue", h.broker.base_url);
    let held = tokio::spawn(crate::tls::send(crate::tls::post_json(
        &client,
        &url,
        &json!({"oidc_token": held_token}),
    )));
    eventually("the first request to reach STS", || {
        (h.sts.calls() == 1).then_some(())
    })
    .await;

    let shed = h.issue_token(&h.token().build(), json!({})).await;
    assert_unavailable(&shed);
    assert_eq!(shed.header("retry-after").as_deref(), Some("2"));
    let event = h.broker.wait_for_audit(&shed.request_id()).await;
    assert_eq!(field(&event, "reason").as_deref(), Some("overloaded"));
    assert_eq!(field(&event, "status").as_deref(), Some("503"));
    assert_eq!(h.sts.calls(), 1, "a shed request never reaches STS");

    h.sts.release_held(1);
    let (held, _) = held.await.unwrap().unwrap();
    assert_issued(&held);
    let metrics = h.broker.metrics().await;
    assert_eq!(
        metrics.value("ci_rate_limited_total", &[("scope", "global")]),
        Some(1.0),
        "{}",
        metrics.0
    );
    // Once the first request is done, the slot is free again.
    assert_issued(&h.issue_token(&h.token().build(), json!({})).await);
}

#[tokio::test]
async fn a_repository_over_its_rate_gets_429_with_retry_after() {
    let h = Harness::start_with(|spec| {
        spec.set("server.rate_limit_per_repository_per_minute", 1);
        spec.set("server.rate_limit_burst", 2);
    })
    .await;
    assert_issued(&h.issue_token(&h.token().build(), json!({})).await);
    assert_issued(&h.issue_token(&h.token().build(), json!({})).await);
    let calls = h.sts.calls();

    let limited = h.issue_token(&h.token().build(), json!({})).await;
    assert_error(&limited, 429, "rate_limited", RATE_LIMITED);
    let retry_after: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!(
        (1..=60).contains(&retry_after),
        "one request per minute refills within a minute: {retry_after}"
    );
    assert_eq!(h.sts.calls(), calls, "a limited request never reaches STS");
    let event = h.broker.wait_for_audit(&limited.request_id()).await;
    assert_eq!(field(&event, "reason").as_deref(), Some("rate_limited"));
    assert_eq!(field(&event, "status").as_deref(), Some("429"));
    assert_eq!(
        field(&event, "repository_id").as_deref(),
        Some(crate::support::tokens::REPOSITORY_ID)
    );

    // Another repository has its own budget.
    let other = h
        .token()
        .claim("repository", "ourorg/other-service")
        .claim("repository_id", "900000001")
        .build();
    assert_issued(&h.issue_token(&other, json!({})).await);

    let metrics = h.broker.metrics().await;
    assert_eq!(
        metrics.value("ci_rate_limited_total", &[("scope", "repository")]),
        Some(1.0),
        "{}",
        metrics.0
    );
    assert_eq!(
        metrics.value("ci_rate_limited_total", &[("scope", "global")]),
        Some(0.0)
    );
}

#[tokio::test]
async fn an_unverified_token_spends_no_repository_budget() {
    let h = Harness::start_with(|spec| {
        spec.set("server.rate_limit_per_repository_per_minute", 1);
        spec.set("server.rate_limit_burst", 1);
    })
    .await;
    // Forged tokens naming the same repository are refused before the limiter.
    for _ in 0..3 {
        let forged = h.token().signed_by(&crate::support::KEY_B).build();
        let resp = h.issue_token(&forged, json!({})).await;
        assert_eq!(resp.status, 401, "{}", resp.text());
    }
    assert_issued(&h.issue_token(&h.token().build(), json!({})).await);
}
