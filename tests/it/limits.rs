//! Inbound limits: head size and header count (431), the slow-client
//! deadlines for the head and the body, the request deadline, load shedding
//! when too many requests are in flight, and the per-repository rate limit.

use std::io::{Read as _, Write as _};

use serde_json::json;

use crate::metric_assert::AssertMetric;
use crate::support::broker::{DEADLINE, eventually, field};
use crate::support::sts::Fault;
use crate::support::{
    Harness, assert_bad_request, assert_error, assert_issued, assert_unavailable, msg,
};

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

/// [`head_with`] padded by an `X-Padding` header to exactly `size` bytes.
fn head_of_size(size: usize) -> String {
    let bare = head_with("X-Padding: \r\n").len();
    head_with(&format!("X-Padding: {}\r\n", "a".repeat(size - bare)))
}

/// The HTTP layer's own answer: a status line, `connection: close`,
/// `content-length: 0` and a date; no body and no request id (it never
/// reaches the router).
fn assert_bare(resp: &crate::support::Resp, status: u16) {
    assert_eq!(resp.status, status, "{}", resp.text());
    let mut names: Vec<&str> = resp.headers.keys().map(|name| name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["connection", "content-length", "date"]);
    assert_eq!(resp.header("connection").as_deref(), Some("close"));
    assert_eq!(resp.header("content-length").as_deref(), Some("0"));
    assert!(resp.body.is_empty(), "{}", resp.text());
}

#[tokio::test]
async fn a_head_of_max_header_bytes_is_accepted_and_one_byte_more_gets_431() {
    // Not a power of two: the HTTP layer's read buffer then never ends at
    // exactly this size, so a head one byte over it is read whole and
    // refused by the broker itself, with a request id.
    let h = Harness::start_with(|spec| {
        spec.set("server.max_header_bytes", 60_000);
    })
    .await;
    let resp = h.broker.call_tcp(head_of_size(60_000), Vec::new()).await;
    assert_bad_request(&resp, msg::NO_TOKEN);

    let resp = h.broker.call_tcp(head_of_size(60_001), Vec::new()).await;
    assert_error(&resp, 431, "invalid_request", "request head is too large");
    assert_eq!(resp.header("connection").as_deref(), Some("close"));
    let metrics = h.broker.metrics().await;
    metrics.assert_value(
        "ci_http_requests_total",
        &[("route", "/issue"), ("status", "431")],
        1.0,
    );

    // Well over it, but within what the HTTP layer may have buffered (up to
    // twice the limit): refused too, by whichever notices first.
    let resp = h.broker.call_tcp(head_of_size(90_000), Vec::new()).await;
    assert_eq!(resp.status, 431, "{}", resp.text());
    if resp.header("x-request-id").is_none() {
        assert_bare(&resp, 431);
    }
}

#[tokio::test]
async fn an_oversized_head_gets_431_before_any_handler() {
    let h = Harness::start_with(|spec| {
        spec.set("server.max_header_bytes", 8192);
    })
    .await;
    let big = format!("X-Padding: {}\r\n", "a".repeat(9000));
    let resp = h.broker.call_tcp(head_with(&big), Vec::new()).await;
    // At the 8192 minimum the HTTP layer's buffer is exactly the limit: it
    // answers itself.
    assert_bare(&resp, 431);

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
    assert_bare(&resp, 431);

    let few: String = (0..5).map(|i| format!("X-H{i}: v\r\n")).collect();
    let resp = h.broker.call_tcp(head_with(&few), Vec::new()).await;
    assert_eq!(resp.status, 400, "{}", resp.text());
}

#[tokio::test]
async fn a_head_that_does_not_parse_gets_a_bare_400() {
    let h = Harness::start().await;
    let resp = h
        .broker
        .call_tcp("NOT AN HTTP HEAD\r\n\r\n".to_owned(), Vec::new())
        .await;
    assert_bare(&resp, 400);
}

/// Opens `count` connections that each send a complete `POST /issue` head
/// declaring a 200-byte body, then only the body's first byte.
fn trickling_senders(address: &str, count: usize) -> Vec<std::net::TcpStream> {
    (0..count)
        .map(|_| {
            let mut stream = std::net::TcpStream::connect(address).unwrap();
            stream
                .write_all(
                    b"POST /issue HTTP/1.1\r\nHost: broker\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{",
                )
                .unwrap();
            stream
        })
        .collect()
}

#[tokio::test]
async fn clients_trickling_their_bodies_hold_no_issuance_capacity() {
    let h = Harness::start_with(|spec| {
        spec.set("server.max_concurrent_requests", 2);
        // Longer than the test: the flood is held for all of it.
        spec.set("server.body_read_timeout_ms", 60_000);
        spec.set("server.request_timeout_seconds", 60);
    })
    .await;
    let address = main_address(&h);
    // Three times as many as there are places.
    let flood = tokio::task::spawn_blocking(move || trickling_senders(&address, 6))
        .await
        .unwrap();

    for _ in 0..3 {
        assert_issued(&h.issue_token(&h.token().build(), json!({})).await);
    }
    // The flood is still there, unanswered.
    for mut stream in flood {
        stream.set_nonblocking(true).unwrap();
        let mut buf = [0_u8; 64];
        let read = stream.read(&mut buf).map_err(|err| err.kind());
        assert_eq!(read, Err(std::io::ErrorKind::WouldBlock));
    }
    let metrics = h.broker.metrics().await;
    assert_eq!(
        metrics.value_or_zero("ci_rate_limited_total", &[("scope", "global")]),
        0.0
    );
}

#[tokio::test]
async fn a_body_slower_than_its_deadline_gets_408() {
    let h = Harness::start_with(|spec| {
        spec.set("server.body_read_timeout_ms", 200);
    })
    .await;
    let head = "POST /issue HTTP/1.1\r\nHost: broker\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n";
    // The first byte of the body, then nothing: the broker answers and closes.
    let resp = h.broker.call_tcp(head.to_owned(), b"{".to_vec()).await;
    assert_error(
        &resp,
        408,
        "invalid_request",
        "request body was not received in time",
    );
    assert_eq!(resp.header("connection").as_deref(), Some("close"));
    let event = h.broker.wait_for_audit(&resp.request_id()).await;
    assert_eq!(field(&event, "reason").as_deref(), Some("body_timeout"));
    assert_eq!(field(&event, "status").as_deref(), Some("408"));
    assert_eq!(h.sts.calls(), 0);
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
    metrics.assert_value("ci_rate_limited_total", &[("scope", "global")], 1.0);
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
    metrics.assert_value("ci_rate_limited_total", &[("scope", "repository")], 1.0);
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
