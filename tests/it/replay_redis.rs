//! Replay protection across replicas: real broker binaries sharing one real
//! `redis-server` (`[replay] store = "redis"`), and what happens when Redis
//! goes away: 503 and not ready (fail closed), or issuance with readiness kept
//! when `fail_open = true` says so.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::support::redis::RedisServer;
use crate::support::sts::Fault;
use crate::support::{
    Broker, BrokerSpec, DEFAULT_POLICY, JwksServer, KEY_A, Resp, StsServer, TokenBuilder,
    assert_forbidden, assert_issued, assert_unavailable,
};

/// Loopback issuer and STS shared by every broker of a test.
pub(crate) struct Upstreams {
    pub(crate) jwks: JwksServer,
    pub(crate) sts: StsServer,
}

impl Upstreams {
    pub(crate) async fn start() -> Self {
        Self {
            jwks: JwksServer::start(vec![KEY_A.jwk()]).await.unwrap(),
            sts: StsServer::start().await.unwrap(),
        }
    }

    pub(crate) fn token(&self) -> TokenBuilder {
        crate::support::tokens::token(&self.jwks.issuer())
    }

    /// A broker using `redis` as its replay store, `fail_open` as given.
    async fn broker(&self, redis: &RedisServer, fail_open: bool) -> Broker {
        let mut spec =
            BrokerSpec::new(&self.jwks.issuer(), self.sts.url().as_str(), DEFAULT_POLICY);
        spec.set("replay.store", "redis")
            .set("replay.redis_url", redis.url())
            .set("replay.redis_timeout_ms", 300)
            .set("replay.fail_open", fail_open)
            .set("server.request_timeout_seconds", 5);
        Broker::start(&spec).await
    }
}

fn body(token: &str) -> Value {
    json!({ "oidc_token": token })
}

/// `/readyz`: status and the names of the failing checks.
async fn readiness(broker: &Broker) -> (u16, Vec<String>) {
    let resp = broker.admin_get("/readyz").await;
    let failing = resp.json()["failing"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|item| item.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    (resp.status, failing)
}

async fn store_errors(broker: &Broker) -> f64 {
    broker
        .metrics()
        .await
        .value_or_zero("ci_replay_store_errors_total", &[])
}

#[tokio::test]
async fn two_replicas_issue_once_for_one_token_under_concurrency() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let up = Upstreams::start().await;
    let brokers = [
        Arc::new(up.broker(&redis, false).await),
        Arc::new(up.broker(&redis, false).await),
    ];
    for round in 0..3 {
        let token = up.token().build();
        let calls_before = up.sts.calls();
        let requests = (0..20)
            .map(|index| (Arc::clone(&brokers[index % 2]), token.clone()))
            .collect();
        let answers = issue_concurrently(requests).await;
        let statuses: Vec<u16> = answers.iter().map(|resp| resp.status).collect();
        assert_eq!(
            statuses.iter().filter(|status| **status == 200).count(),
            1,
            "round {round}: exactly one issuance: {statuses:?}"
        );
        for resp in answers.iter().filter(|resp| resp.status != 200) {
            assert_forbidden(resp);
        }
        assert_eq!(
            up.sts.calls() - calls_before,
            1,
            "round {round}: one STS call"
        );
    }
    let mut replays = 0.0;
    for broker in &brokers {
        replays += broker
            .metrics()
            .await
            .value_or_zero("ci_replay_rejections_total", &[]);
    }
    assert_eq!(replays, 3.0 * 19.0, "every refusal counted as a replay");
}

#[tokio::test]
async fn a_token_used_on_one_replica_is_refused_on_the_other() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let up = Upstreams::start().await;
    let (a, b) = (
        up.broker(&redis, false).await,
        up.broker(&redis, false).await,
    );
    let token = up.token().build();
    assert_issued(&a.issue(&body(&token)).await);
    assert_forbidden(&b.issue(&body(&token)).await);
    assert_forbidden(&a.issue(&body(&token)).await);
    assert_eq!(up.sts.calls(), 1);
}

#[tokio::test]
async fn an_sts_failure_on_one_replica_frees_the_token_for_the_other() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let up = Upstreams::start().await;
    let (a, b) = (
        up.broker(&redis, false).await,
        up.broker(&redis, false).await,
    );
    let token = up.token().build();
    up.sts.fail_next(Fault::AccessDenied, 1);
    assert_unavailable(&a.issue(&body(&token)).await);
    assert_issued(&b.issue(&body(&token)).await);
    assert_forbidden(&a.issue(&body(&token)).await);
}

#[tokio::test]
async fn redis_stopped_mid_run_fails_closed_and_recovers() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let up = Upstreams::start().await;
    let broker = up.broker(&redis, false).await;
    assert_issued(&broker.issue(&body(&up.token().build())).await);
    let errors_before = store_errors(&broker).await;

    redis.stop();
    let calls_before = up.sts.calls();
    for _ in 0..3 {
        assert_unavailable(&broker.issue(&body(&up.token().build())).await);
    }
    assert_eq!(
        up.sts.calls(),
        calls_before,
        "no STS call without a replay mark"
    );
    assert!(store_errors(&broker).await >= errors_before + 3.0);
    let (status, failing) = readiness(&broker).await;
    assert_eq!(status, 503, "{failing:?}");
    assert!(
        failing.iter().any(|check| check == "replay_store"),
        "{failing:?}"
    );

    // A fresh, empty Redis on the same port: ready again, and issuing.
    redis.restart();
    broker.wait_ready().await;
    let token = up.token().build();
    assert_issued(&broker.issue(&body(&token)).await);
    assert_forbidden(&broker.issue(&body(&token)).await);
}

#[tokio::test]
async fn a_frozen_redis_is_a_503_not_a_hang() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let up = Upstreams::start().await;
    let broker = Arc::new(up.broker(&redis, false).await);
    assert_issued(&broker.issue(&body(&up.token().build())).await);

    redis.freeze();
    let calls_before = up.sts.calls();
    // Concurrent requests: several pool connections wait on the frozen server.
    let requests = (0..4)
        .map(|_| (Arc::clone(&broker), up.token().build()))
        .collect();
    let answers = issue_concurrently(requests).await;
    for resp in &answers {
        assert_unavailable(resp);
    }
    assert_eq!(up.sts.calls(), calls_before);
    let (status, failing) = readiness(&broker).await;
    assert_eq!(status, 503);
    assert!(
        failing.iter().any(|check| check == "replay_store"),
        "{failing:?}"
    );
    assert!(store_errors(&broker).await >= 4.0);

    redis.thaw();
    broker.wait_ready().await;
    assert_issued(&broker.issue(&body(&up.token().build())).await);
}

#[tokio::test]
async fn fail_open_issues_while_redis_is_down_and_stays_ready() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let up = Upstreams::start().await;
    let broker = up.broker(&redis, true).await;
    assert_issued(&broker.issue(&body(&up.token().build())).await);

    redis.stop();
    let errors_before = store_errors(&broker).await;
    assert_issued(&broker.issue(&body(&up.token().build())).await);
    assert_issued(&broker.issue(&body(&up.token().build())).await);
    assert!(store_errors(&broker).await >= errors_before + 2.0);
    let (status, failing) = readiness(&broker).await;
    assert_eq!(status, 200, "fail_open keeps readiness: {failing:?}");
    let warned = broker
        .wait_for_line("the fail-open warning", |line| {
            line.contains("replay.fail_open = true")
        })
        .await;
    assert!(warned.contains("\"WARN\""), "{warned}");
}

#[tokio::test]
async fn a_broker_whose_redis_never_answers_is_not_ready() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    redis.stop();
    let up = Upstreams::start().await;
    let mut spec = BrokerSpec::new(&up.jwks.issuer(), up.sts.url().as_str(), DEFAULT_POLICY);
    spec.set("replay.store", "redis")
        .set("replay.redis_url", redis.url())
        .set("replay.redis_timeout_ms", 300);
    spec.wait_ready = false;
    let broker = Broker::start(&spec).await;
    let (status, failing) = readiness(&broker).await;
    assert_eq!(status, 503);
    assert!(
        failing.iter().any(|check| check == "replay_store"),
        "{failing:?}"
    );
    assert_unavailable(&broker.issue(&body(&up.token().build())).await);
    assert_eq!(up.sts.calls(), 0);
}

/// Sends every `(broker, token)` request at once; answers in the same order.
async fn issue_concurrently(requests: Vec<(Arc<Broker>, String)>) -> Vec<Resp> {
    let tasks: Vec<_> = requests
        .into_iter()
        .map(|(broker, token)| tokio::spawn(async move { broker.issue(&body(&token)).await }))
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    answers
}

#[tokio::test]
async fn fail_open_still_refuses_a_replay_on_the_same_replica() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let up = Upstreams::start().await;
    let broker = up.broker(&redis, true).await;
    redis.stop();
    let token = up.token().build();
    assert_issued(&broker.issue(&body(&token)).await);
    assert_forbidden(&broker.issue(&body(&token)).await);
    assert_eq!(up.sts.calls(), 1);
}

#[tokio::test]
async fn a_replica_remembers_its_own_tokens_when_redis_loses_its_data() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let up = Upstreams::start().await;
    let broker = up.broker(&redis, false).await;
    let token = up.token().build();
    assert_issued(&broker.issue(&body(&token)).await);
    // A restart without persistence (or a failover to a lagging replica).
    redis.restart();
    broker.wait_ready().await;
    assert_forbidden(&broker.issue(&body(&token)).await);
    assert_eq!(up.sts.calls(), 1);
}

#[tokio::test]
async fn a_token_refused_with_503_can_be_used_once_redis_is_back() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let up = Upstreams::start().await;
    let broker = up.broker(&redis, false).await;
    redis.stop();
    let token = up.token().build();
    assert_unavailable(&broker.issue(&body(&token)).await);
    redis.restart();
    broker.wait_ready().await;
    assert_issued(&broker.issue(&body(&token)).await);
    assert_forbidden(&broker.issue(&body(&token)).await);
}

/// Redis down, `fail_open`: the replica's own marks are the fallback. Copies
/// of one token sent at once are still issued exactly once, trial after trial.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fail_open_with_redis_down_issues_concurrent_copies_once() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let up = Upstreams::start().await;
    let mut spec = BrokerSpec::new(&up.jwks.issuer(), up.sts.url().as_str(), DEFAULT_POLICY);
    spec.set("replay.store", "redis")
        .set("replay.redis_url", redis.url())
        .set("replay.redis_timeout_ms", 300)
        .set("replay.fail_open", true)
        .set("server.rate_limit_per_repository_per_minute", 0);
    let broker = Arc::new(Broker::start(&spec).await);
    redis.stop();
    for trial in 0..10 {
        let token = up.token().build();
        let calls_before = up.sts.calls();
        let requests = (0..50)
            .map(|_| (Arc::clone(&broker), token.clone()))
            .collect();
        let answers = issue_concurrently(requests).await;
        let issued = answers.iter().filter(|resp| resp.status == 200).count();
        for resp in answers.iter().filter(|resp| resp.status != 200) {
            assert_forbidden(resp);
        }
        assert_eq!(issued, 1, "trial {trial}: exactly one issuance");
        assert_eq!(up.sts.calls() - calls_before, 1, "trial {trial}");
    }
}
