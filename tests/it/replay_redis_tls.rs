//! `rediss://`: the replay store over TLS (rustls on aws-lc-rs), against a
//! real TLS-only `redis-server` whose certificate comes from a CA made for the
//! test and named by `replay.redis_ca_file`; and `check-config` refusing the
//! TLS settings `serve` could not use.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::replay::count_issued;
use crate::replay_redis::Upstreams;
use crate::support::broker::{RunOutput, run_to_completion};
use crate::support::redis::RedisServer;
use crate::support::{
    Broker, BrokerSpec, DEFAULT_POLICY, assert_forbidden, assert_issued, assert_unavailable,
};

impl Upstreams {
    /// A broker whose replay store is `redis` over TLS; `ca_file` trusts its CA.
    fn tls_spec(&self, redis: &RedisServer, ca_file: bool) -> BrokerSpec {
        let mut spec =
            BrokerSpec::new(&self.jwks.issuer(), self.sts.url().as_str(), DEFAULT_POLICY);
        spec.set("replay.store", "redis")
            .set("replay.redis_url", redis.url())
            .set("replay.redis_timeout_ms", 1000)
            .set("server.rate_limit_per_repository_per_minute", 0);
        if ca_file {
            spec.set(
                "replay.redis_ca_file",
                redis.ca_file().display().to_string(),
            );
        }
        spec
    }
}

fn body(token: &str) -> Value {
    json!({ "oidc_token": token })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_on_a_tls_redis_issue_each_token_once() {
    let Some(redis) = RedisServer::start_tls() else {
        return;
    };
    let up = Upstreams::start().await;
    let brokers = [
        Arc::new(Broker::start(&up.tls_spec(&redis, true)).await),
        Arc::new(Broker::start(&up.tls_spec(&redis, true)).await),
    ];
    for round in 0..5 {
        let token = up.token().build();
        let calls_before = up.sts.calls();
        let start = Arc::new(tokio::sync::Barrier::new(40));
        let tasks: Vec<_> = (0..40)
            .map(|index| {
                let broker = Arc::clone(&brokers[index % 2]);
                let (start, body) = (Arc::clone(&start), body(&token));
                tokio::spawn(async move {
                    start.wait().await;
                    broker.issue(&body).await
                })
            })
            .collect();
        let issued = count_issued(tasks).await;
        assert_eq!(issued, 1, "round {round}: exactly one issuance");
        assert_eq!(up.sts.calls() - calls_before, 1, "round {round}");
    }
    // Sequentially too: used on one replica, refused on the other.
    let token = up.token().build();
    assert_issued(&brokers[0].issue(&body(&token)).await);
    assert_forbidden(&brokers[1].issue(&body(&token)).await);
}

/// Without `redis_ca_file` only the system roots are trusted: the test CA is
/// not, so the handshake fails, the broker is not ready and refuses with 503.
/// Certificate verification is on.
#[tokio::test]
async fn a_tls_redis_with_an_untrusted_certificate_is_refused() {
    let Some(redis) = RedisServer::start_tls() else {
        return;
    };
    let up = Upstreams::start().await;
    let mut spec = up.tls_spec(&redis, false);
    spec.wait_ready = false;
    let broker = Broker::start(&spec).await;
    let ready = broker.admin_get("/readyz").await;
    assert_eq!(ready.status, 503, "{}", ready.text());
    assert!(ready.text().contains("replay_store"), "{}", ready.text());
    assert_unavailable(&broker.issue(&body(&up.token().build())).await);
    assert_eq!(up.sts.calls(), 0);
}

async fn check_config(spec: &BrokerSpec) -> RunOutput {
    let dir = tempfile::tempdir().unwrap();
    let config = spec.write_to(dir.path()).display().to_string();
    run_to_completion(&["check-config", "--config", &config], &[]).await
}

/// Asserts exit 64 with one `FILE: key `KEY`: …` line naming `key` and `reason`.
fn assert_refused(out: &RunOutput, key: &str, reason: &str) {
    assert_eq!(out.code, Some(64), "{}", out.all());
    let line = out
        .stderr
        .lines()
        .find(|line| line.contains(&format!("key `{key}`:")))
        .unwrap_or_else(|| panic!("no error naming `{key}`:\n{}", out.all()));
    assert!(line.contains("broker.toml"), "{line}");
    assert!(line.contains(reason), "expected {reason:?} in {line}");
}

#[tokio::test]
async fn check_config_accepts_rediss_and_refuses_what_serve_cannot_use() {
    let Some(redis) = RedisServer::start_tls() else {
        return;
    };
    let up = Upstreams::start().await;
    let dir = tempfile::tempdir().unwrap();

    let out = check_config(&up.tls_spec(&redis, true)).await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    let out = check_config(&up.tls_spec(&redis, false)).await;
    assert_eq!(out.code, Some(0), "system roots: {}", out.all());

    let mut spec = up.tls_spec(&redis, false);
    spec.set(
        "replay.redis_ca_file",
        dir.path().join("missing.pem").display().to_string(),
    );
    assert_refused(
        &check_config(&spec).await,
        "replay.redis_ca_file",
        "cannot read",
    );

    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    spec.set("replay.redis_ca_file", garbage.display().to_string());
    assert_refused(
        &check_config(&spec).await,
        "replay.redis_ca_file",
        "no CERTIFICATE",
    );

    let broken = dir.path().join("broken.pem");
    std::fs::write(
        &broken,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    spec.set("replay.redis_ca_file", broken.display().to_string());
    assert_refused(
        &check_config(&spec).await,
        "replay.redis_ca_file",
        "CA certificate",
    );

    let mut spec = up.tls_spec(&redis, true);
    spec.set("replay.redis_url", "redis://127.0.0.1:6379");
    assert_refused(
        &check_config(&spec).await,
        "replay.redis_ca_file",
        "rediss://",
    );

    let mut spec = up.tls_spec(&redis, false);
    spec.set("replay.redis_url", format!("{}#insecure", redis.url()));
    assert_refused(&check_config(&spec).await, "replay.redis_url", "#insecure");

    for url in [
        "http://127.0.0.1:6379",
        "unix:///tmp/redis.sock",
        "redis://127.0.0.1:6379/db",
    ] {
        let mut spec = up.tls_spec(&redis, false);
        spec.set("replay.redis_url", url);
        assert_refused(&check_config(&spec).await, "replay.redis_url", "");
    }
}
