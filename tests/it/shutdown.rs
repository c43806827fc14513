//! Graceful shutdown of the real binary: on SIGTERM readiness fails at once,
//! the main listener refuses new connections, a request already in flight
//! finishes with its answer, and the process exits 0 — over plain HTTP and
//! over TLS. A request that outlives the grace period does not keep the
//! process alive.

use serde_json::json;

use crate::support::broker::{DEADLINE, eventually};
use crate::support::sts::Fault;
use crate::support::{Harness, Resp, assert_issued};
use crate::tls::{Pki, TlsDir, client_config, https_base, https_client, post_json, send};

/// Long STS and request deadlines so that only the test decides when the held
/// request ends, and a grace period it never needs to reach.
fn patient(spec: &mut crate::support::BrokerSpec, grace_seconds: i64) {
    spec.set("server.shutdown_grace_seconds", grace_seconds);
    spec.set("server.request_timeout_seconds", 120);
    spec.set("sts.attempt_timeout_seconds", 120);
    spec.set("sts.operation_timeout_seconds", 120);
}

/// Polls `/readyz` until it answers 503.
async fn wait_not_ready(h: &Harness) -> Resp {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let resp = h.broker.admin_get("/readyz").await;
        if resp.status == 503 {
            return resp;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz still {} after SIGTERM",
            resp.status
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Waits until a new TCP connection to the main listener is refused.
async fn wait_refused(h: &Harness) {
    let address = h.broker.base_url.trim_start_matches("http://").to_owned();
    eventually("the main listener to refuse connections", || {
        std::net::TcpStream::connect(&address).err().map(|_| ())
    })
    .await;
}

async fn drain_keeps_the_in_flight_request(tls: bool) {
    let pki = Pki::new("server CA");
    let files = TlsDir::new(&pki.server(), None);
    let mut h = Harness::start_with(|spec| {
        patient(spec, 120);
        if tls {
            files.configure(spec, false);
        }
    })
    .await;
    let (client, base) = if tls {
        (
            https_client(client_config(&pki.ca_pem(), None)),
            https_base(&h),
        )
    } else {
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        (client, h.broker.base_url.clone())
    };
    h.sts.fail_next(Fault::Hold, 1);
    let in_flight = in_flight_at_sts(&h, &client, &base).await;

    h.broker.signal("TERM");
    let ready = wait_not_ready(&h).await;
    assert_eq!(ready.json()["failing"], json!(["shutting_down"]));
    wait_refused(&h).await;
    assert!(
        !in_flight.is_finished(),
        "the held request is still in flight"
    );

    h.sts.release_held(1);
    let (resp, _) = in_flight.await.unwrap().unwrap();
    assert_issued(&resp);
    assert_eq!(h.broker.wait_exit().await, Some(0));
    logged_after_exit(&h, "the drain log line", "in-flight requests finished").await;
}

/// An issuance sent on `client` to `base`, once it has reached STS.
async fn in_flight_at_sts(
    h: &Harness,
    client: &reqwest::Client,
    base: &str,
) -> tokio::task::JoinHandle<Result<(Resp, Vec<u8>), reqwest::Error>> {
    let request = post_json(
        client,
        &format!("{base}/issue"),
        &json!({"oidc_token": h.token().build()}),
    );
    let in_flight = tokio::spawn(send(request));
    eventually("the request to reach STS", || {
        (h.sts.calls() == 1).then_some(())
    })
    .await;
    in_flight
}

/// Waits for the log line containing `text` (`what`): the output readers may
/// still be behind the exit.
async fn logged_after_exit(h: &Harness, what: &str, text: &str) {
    h.broker
        .wait_for_line(what, |line| line.contains(text))
        .await;
}

#[tokio::test]
async fn sigterm_drains_an_in_flight_request_then_exits_0() {
    drain_keeps_the_in_flight_request(false).await;
}

#[tokio::test]
async fn sigterm_drains_an_in_flight_request_over_tls_then_exits_0() {
    drain_keeps_the_in_flight_request(true).await;
}

#[tokio::test]
async fn a_request_that_outlives_the_grace_period_does_not_hold_the_exit() {
    let mut h = Harness::start_with(|spec| patient(spec, 1)).await;
    h.sts.fail_next(Fault::Hang, 1);
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let in_flight = in_flight_at_sts(&h, &client, &h.broker.base_url).await;

    h.broker.signal("TERM");
    assert_eq!(h.broker.wait_exit().await, Some(0));
    assert!(
        in_flight.await.unwrap().is_err(),
        "the connection is closed when the grace period ends"
    );
    logged_after_exit(&h, "the grace log line", "grace period over").await;
}

#[tokio::test]
async fn idle_keep_alive_connections_do_not_delay_the_exit() {
    let mut h = Harness::start_with(|spec| {
        patient(spec, 120);
        spec.set("server.header_read_timeout_seconds", 300);
    })
    .await;
    // The harness client keeps this connection open and idle.
    assert_issued(&h.issue_token(&h.token().build(), json!({})).await);
    h.broker.signal("TERM");
    assert_eq!(h.broker.wait_exit().await, Some(0));
    logged_after_exit(&h, "the drain log line", "in-flight requests finished").await;
}

#[tokio::test]
async fn a_sigterm_right_after_the_announcement_still_drains() {
    let mut h = Harness::start_with(|spec| spec.wait_ready = false).await;
    h.broker.signal("TERM");
    assert_eq!(
        h.broker.wait_exit().await,
        Some(0),
        "not killed by the default SIGTERM action"
    );
}
