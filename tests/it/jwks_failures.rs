//! The issuer's discovery document and JWKS misbehaving: the broker stays
//! closed (503, not ready) until it has good keys, keeps good keys through
//! outages, and follows rotations.

use std::time::Duration;

use serde_json::json;

use crate::metric_assert::AssertMetric;
use crate::support::broker::{Broker, BrokerSpec, eventually};
use crate::support::jwks::{
    DISCOVERY_PATH, JWKS_PATH, JwksServer, Mode, REDIRECTED_DISCOVERY_PATH, REDIRECTED_JWKS_PATH,
};
use crate::support::{
    DEFAULT_POLICY, Harness, KEY_A, KEY_B, StsServer, assert_invalid_token, assert_issued,
    assert_unavailable, msg,
};

/// Starts a broker whose issuer misbehaves from the start.
async fn harness_with_failing_issuer(discovery: Mode, jwks: Mode) -> Harness {
    let server = JwksServer::start(vec![KEY_A.jwk()]).await.unwrap();
    server.set_discovery_mode(discovery);
    server.set_jwks_mode(jwks);
    Harness::start_with_issuer(server, |spec| {
        spec.wait_ready = false;
    })
    .await
}

async fn not_ready(broker: &Broker) {
    let resp = broker.admin_get("/readyz").await;
    assert_ne!(
        resp.status,
        200,
        "/readyz is 200 without a usable JWKS: {}",
        resp.text()
    );
    let resp = broker.admin_get("/healthz").await;
    assert_eq!(resp.status, 200, "/healthz: the process serves");
}

/// No usable keys: not ready, and a valid token gets 503 (not 401) without STS.
async fn closed_without_keys(h: &Harness, path: &str) {
    let jwks = &h.jwks;
    eventually(&format!("a fetch of {path}"), || {
        (jwks.hits(path) >= 1).then_some(())
    })
    .await;
    not_ready(&h.broker).await;
    let resp = h.issue_token(&h.token().build(), json!({})).await;
    assert_unavailable(&resp);
    assert_eq!(h.sts.calls(), 0);
    not_ready(&h.broker).await;
}

/// A broker started while its issuer's JWKS answers 500, not waiting for
/// readiness, further configured by `configure`.
pub(crate) async fn start_while_the_jwks_fails(configure: impl FnOnce(&mut BrokerSpec)) -> Harness {
    let server = JwksServer::start(vec![KEY_A.jwk()]).await.unwrap();
    server.set_jwks_mode(Mode::Fail500);
    Harness::start_with_issuer(server, |spec| {
        spec.wait_ready = false;
        configure(spec);
    })
    .await
}

#[tokio::test]
async fn jwks_500_at_start() {
    let h = harness_with_failing_issuer(Mode::Normal, Mode::Fail500).await;
    closed_without_keys(&h, JWKS_PATH).await;
}

#[tokio::test]
async fn jwks_hanging_at_start() {
    let h = harness_with_failing_issuer(Mode::Normal, Mode::Hang).await;
    closed_without_keys(&h, JWKS_PATH).await;
}

#[tokio::test]
async fn jwks_body_over_1_mib() {
    let h = harness_with_failing_issuer(Mode::Normal, Mode::Huge).await;
    closed_without_keys(&h, JWKS_PATH).await;
}

#[tokio::test]
async fn jwks_not_json() {
    let h = harness_with_failing_issuer(Mode::Normal, Mode::Malformed).await;
    closed_without_keys(&h, JWKS_PATH).await;
}

#[tokio::test]
async fn jwks_redirect_is_not_followed() {
    let h = harness_with_failing_issuer(Mode::Normal, Mode::Redirect).await;
    closed_without_keys(&h, JWKS_PATH).await;
    assert_eq!(
        h.jwks.hits(REDIRECTED_JWKS_PATH),
        0,
        "the broker followed a JWKS redirect"
    );
}

#[tokio::test]
async fn discovery_500_at_start() {
    let h = harness_with_failing_issuer(Mode::Fail500, Mode::Normal).await;
    closed_without_keys(&h, DISCOVERY_PATH).await;
}

#[tokio::test]
async fn discovery_hanging_at_start() {
    let h = harness_with_failing_issuer(Mode::Hang, Mode::Normal).await;
    closed_without_keys(&h, DISCOVERY_PATH).await;
}

#[tokio::test]
async fn discovery_body_over_1_mib() {
    let h = harness_with_failing_issuer(Mode::Huge, Mode::Normal).await;
    closed_without_keys(&h, DISCOVERY_PATH).await;
}

#[tokio::test]
async fn discovery_not_json() {
    let h = harness_with_failing_issuer(Mode::Malformed, Mode::Normal).await;
    closed_without_keys(&h, DISCOVERY_PATH).await;
}

#[tokio::test]
async fn discovery_redirect_is_not_followed() {
    let h = harness_with_failing_issuer(Mode::Redirect, Mode::Normal).await;
    closed_without_keys(&h, DISCOVERY_PATH).await;
    assert_eq!(
        h.jwks.hits(REDIRECTED_DISCOVERY_PATH),
        0,
        "the broker followed a discovery redirect"
    );
}

#[tokio::test]
async fn recovers_when_the_jwks_comes_back() {
    let h = start_while_the_jwks_fails(|spec| {
        spec.set("jwks.refresh_seconds", 1)
            .set("jwks.unknown_kid_cooldown_seconds", 1);
    })
    .await;
    let jwks = &h.jwks;
    eventually("a first JWKS fetch", || {
        (jwks.hits(JWKS_PATH) >= 1).then_some(())
    })
    .await;
    not_ready(&h.broker).await;
    h.jwks.set_jwks_mode(Mode::Normal);
    h.broker.wait_ready().await;
    assert_issued(&h.issue_token(&h.token().build(), json!({})).await);
}

#[tokio::test]
async fn last_good_keys_keep_serving_through_an_outage() {
    let h = Harness::start_with(|spec| {
        spec.set("jwks.refresh_seconds", 1);
    })
    .await;
    let fetched = h.jwks.hits(JWKS_PATH);
    h.jwks.set_jwks_mode(Mode::Fail500);
    let jwks = &h.jwks;
    eventually("two failed refreshes", || {
        (jwks.hits(JWKS_PATH) >= fetched + 2).then_some(())
    })
    .await;
    assert_eq!(
        h.broker.admin_get("/readyz").await.status,
        200,
        "stale-but-usable keys are ready"
    );
    assert_issued(&h.issue_token(&h.token().build(), json!({})).await);
    let metrics = h.broker.metrics().await;
    metrics.assert_at_least("ci_jwks_refresh_total", &[("result", "error")], 1.0);
}

#[tokio::test]
async fn a_rotated_in_key_is_picked_up_on_an_unknown_kid() {
    let h = Harness::start_with(|spec| {
        spec.set("jwks.unknown_kid_cooldown_seconds", 1);
    })
    .await;
    let resp = h
        .issue_token(
            &h.token().header("kid", KEY_B.kid).signed_by(&KEY_B).build(),
            json!({}),
        )
        .await;
    assert_invalid_token(&resp, msg::BAD_SIGNATURE);
    h.jwks.set_keys(vec![KEY_A.jwk(), KEY_B.jwk()]);
    let deadline = tokio::time::Instant::now() + crate::support::broker::DEADLINE;
    loop {
        let token = h.token().header("kid", KEY_B.kid).signed_by(&KEY_B).build();
        let resp = h.issue_token(&token, json!({})).await;
        if resp.status == 200 {
            break;
        }
        assert_invalid_token(&resp, msg::BAD_SIGNATURE);
        assert!(
            tokio::time::Instant::now() < deadline,
            "the rotated-in key was never fetched"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The old key still works while it is published.
    assert_issued(&h.issue_token(&h.token().build(), json!({})).await);
}

#[tokio::test]
async fn a_rotated_out_key_stops_verifying_after_a_refresh() {
    let h = Harness::start_with(|spec| {
        spec.set("jwks.refresh_seconds", 1);
    })
    .await;
    assert_issued(&h.issue_token(&h.token().build(), json!({})).await);
    h.jwks.set_keys(vec![KEY_B.jwk()]);
    let deadline = tokio::time::Instant::now() + crate::support::broker::DEADLINE;
    loop {
        let resp = h.issue_token(&h.token().build(), json!({})).await;
        if resp.status == 401 {
            assert_invalid_token(&resp, msg::BAD_SIGNATURE);
            break;
        }
        assert_eq!(resp.status, 200, "{}", resp.text());
        assert!(
            tokio::time::Instant::now() < deadline,
            "a key removed from the JWKS kept verifying"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_issued(
        &h.issue_token(
            &h.token().header("kid", KEY_B.kid).signed_by(&KEY_B).build(),
            json!({}),
        )
        .await,
    );
}

#[tokio::test]
async fn jwks_metrics() {
    let h = Harness::start().await;
    let metrics = h.broker.metrics().await;
    metrics.assert_value("ci_jwks_keys", &[], 1.0);
    metrics.assert_at_least("ci_jwks_refresh_total", &[("result", "ok")], 1.0);
}

/// The broker's log line for a refused discovery document or key set.
async fn refusal_logged(broker: &Broker, reason: &str) -> String {
    broker
        .wait_for_line(
            &format!("a JWKS failure log line saying {reason:?}"),
            |line| line.contains("JWKS") && line.contains(reason),
        )
        .await
}

/// Keys were refused at start: not ready, 503 without STS, the error counted.
async fn closed_after_refusal(h: &Harness) {
    not_ready(&h.broker).await;
    let resp = h.issue_token(&h.token().build(), json!({})).await;
    assert_unavailable(&resp);
    assert_eq!(h.sts.calls(), 0);
    let metrics = h.broker.metrics().await;
    metrics.assert_at_least("ci_jwks_refresh_total", &[("result", "error")], 1.0);
    assert_eq!(
        metrics.value_or_zero("ci_jwks_refresh_total", &[("result", "ok")]),
        0.0,
        "{}",
        metrics.0
    );
}

#[tokio::test]
async fn a_discovery_document_naming_another_issuer_is_refused_at_start() {
    let server = JwksServer::start(vec![KEY_A.jwk()]).await.unwrap();
    let mut document = server.default_discovery_document();
    document["issuer"] = json!("https://token.actions.githubusercontent.com");
    server.set_discovery_document(Some(document));
    let h = Harness::start_with_issuer(server, |spec| spec.wait_ready = false).await;
    let line = refusal_logged(&h.broker, "is not the configured issuer").await;
    assert!(line.contains("no keys yet"), "{line}");
    closed_after_refusal(&h).await;
    assert_eq!(
        h.jwks.hits(JWKS_PATH),
        0,
        "the broker fetched the jwks_uri of a discovery document it should have refused"
    );
}

#[tokio::test]
async fn a_discovery_document_naming_another_issuer_on_refresh_keeps_the_old_keys() {
    let h = Harness::start_with(|spec| {
        spec.set("jwks.refresh_seconds", 1);
    })
    .await;
    assert_issued(&h.issue_token(&h.token().build(), json!({})).await);
    // The JWKS location is remembered until a JWKS fetch fails; make one
    // fail so the next refresh reads the discovery document again.
    let mut document = h.jwks.default_discovery_document();
    document["issuer"] = json!(format!("{}/other", h.jwks.issuer()));
    h.jwks.set_discovery_document(Some(document));
    let discovered = h.jwks.hits(DISCOVERY_PATH);
    h.jwks.set_jwks_mode(Mode::Fail500);
    let jwks = &h.jwks;
    eventually("a discovery after the failed JWKS fetch", || {
        (jwks.hits(DISCOVERY_PATH) > discovered).then_some(())
    })
    .await;
    h.jwks.set_jwks_mode(Mode::Normal);
    let fetched = h.jwks.hits(JWKS_PATH);
    let discovered = h.jwks.hits(DISCOVERY_PATH);
    eventually("two more refreshes reading the discovery document", || {
        (jwks.hits(DISCOVERY_PATH) >= discovered + 2).then_some(())
    })
    .await;
    assert_eq!(
        h.jwks.hits(JWKS_PATH),
        fetched,
        "the broker followed a discovery document naming another issuer"
    );
    let line = refusal_logged(&h.broker, "is not the configured issuer").await;
    assert!(line.contains("keeping the last good keys"), "{line}");
    assert_eq!(
        h.broker.admin_get("/readyz").await.status,
        200,
        "the last good keys are usable"
    );
    assert_issued(&h.issue_token(&h.token().build(), json!({})).await);
    let metrics = h.broker.metrics().await;
    metrics.assert_at_least("ci_jwks_refresh_total", &[("result", "error")], 3.0);
}

#[tokio::test]
async fn a_jwks_uri_on_another_origin_is_refused() {
    // Same host, another port: another origin.
    let elsewhere = JwksServer::start(vec![KEY_A.jwk()]).await.unwrap();
    let server = JwksServer::start(vec![KEY_A.jwk()]).await.unwrap();
    let mut document = server.default_discovery_document();
    document["jwks_uri"] = json!(elsewhere.jwks_url());
    server.set_discovery_document(Some(document));
    let h = Harness::start_with_issuer(server, |spec| spec.wait_ready = false).await;
    refusal_logged(&h.broker, "is not on the issuer's origin").await;
    closed_after_refusal(&h).await;
    assert_eq!(
        elsewhere.total_hits(),
        0,
        "the broker fetched a jwks_uri on another origin"
    );
}

#[tokio::test]
async fn an_explicit_jwks_url_on_another_origin_is_used() {
    let elsewhere = JwksServer::start(vec![KEY_A.jwk()]).await.unwrap();
    let url = elsewhere.jwks_url();
    let h = Harness::start_with(|spec| {
        spec.set_issuer_key(0, "jwks_url", url.as_str());
    })
    .await;
    assert_issued(&h.issue_token(&h.token().build(), json!({})).await);
    assert!(elsewhere.hits(JWKS_PATH) >= 1);
    assert_eq!(
        h.jwks.hits(DISCOVERY_PATH),
        0,
        "discovery ran although jwks_url is configured"
    );
}

#[tokio::test]
async fn a_key_set_listing_a_kid_twice_is_refused_at_start() {
    let server = JwksServer::start(vec![KEY_A.jwk(), KEY_B.jwk_with_kid(KEY_A.kid)])
        .await
        .unwrap();
    let h = Harness::start_with_issuer(server, |spec| spec.wait_ready = false).await;
    refusal_logged(&h.broker, "is listed more than once").await;
    closed_after_refusal(&h).await;
}

#[tokio::test]
async fn a_key_set_listing_a_kid_twice_on_refresh_keeps_the_old_keys() {
    let h = Harness::start_with(|spec| {
        spec.set("jwks.refresh_seconds", 1);
    })
    .await;
    assert_issued(&h.issue_token(&h.token().build(), json!({})).await);
    // Before the fix the first entry won: KEY_B under KEY_A's kid.
    h.jwks
        .set_keys(vec![KEY_B.jwk_with_kid(KEY_A.kid), KEY_A.jwk()]);
    let fetched = h.jwks.hits(JWKS_PATH);
    let jwks = &h.jwks;
    // Refreshes run one after the other: the first of two is done.
    eventually("two refreshes of the doubled key set", || {
        (jwks.hits(JWKS_PATH) >= fetched + 2).then_some(())
    })
    .await;
    assert_issued(&h.issue_token(&h.token().build(), json!({})).await);
    refusal_logged(&h.broker, "is listed more than once").await;
    assert_eq!(h.broker.admin_get("/readyz").await.status, 200);
}

#[tokio::test]
async fn an_unreachable_issuer_is_logged_with_the_cause_and_no_keys_yet() {
    // A loopback port nobody listens on: the connection is refused.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let sts = StsServer::start().await.unwrap();
    let mut spec = BrokerSpec::new(
        &format!("http://{closed}"),
        sts.url().as_str(),
        DEFAULT_POLICY,
    );
    spec.wait_ready = false;
    let broker = Broker::start(&spec).await;
    let line = broker
        .wait_for_line("the start-up JWKS failure", |line| {
            line.contains("JWKS refresh failed")
        })
        .await;
    assert!(
        !line.contains("keeping the last good keys"),
        "claims keys it never had: {line}"
    );
    assert!(line.contains("no keys yet"), "{line}");
    assert!(
        line.to_ascii_lowercase().contains("connection refused"),
        "the cause (connection refused) is missing: {line}"
    );
    not_ready(&broker).await;
}
