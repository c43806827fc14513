//! Prometheus metrics. The names are a contract (DESIGN.md): dashboards and
//! alerts depend on them. Every label takes its values from a closed set or a
//! policy role name (bounded by the policy file), never from a request.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Latency buckets in seconds, from 0.5 ms (in-process work) to 10 s (a deadline).
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// All metrics of one broker instance, in a private registry.
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

struct Inner {
    registry: Registry,
    creds_issued: IntCounterVec,
    creds_expired: IntCounterVec,
    creds_active: IntGaugeVec,
    policy_denials: IntCounterVec,
    sts_latency: Histogram,
    sts_errors: IntCounterVec,
    token_rejections: IntCounterVec,
    binding_mismatches: IntCounterVec,
    replay_rejections: IntCounter,
    jwks_refresh: IntCounterVec,
    jwks_keys: IntGauge,
    jwks_key_age: IntGaugeVec,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    policy_info: IntGaugeVec,
    policy_reloads: IntCounterVec,
    replay_store_errors: IntCounter,
    replay_store_full: IntCounter,
    rate_limited: IntCounterVec,
    tls_reloads: IntCounterVec,
    /// Issued credentials still active, counted per expiration second and
    /// role: bounded by the longest duration times the number of roles, not
    /// by the issuance rate, and no timer per credential.
    live: Mutex<BTreeMap<u64, Vec<(String, u64)>>>,
}

fn unix_seconds(at: SystemTime) -> u64 {
    at.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

fn counter_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntCounterVec> {
    let metric = IntCounterVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

fn gauge_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntGaugeVec> {
    let metric = IntGaugeVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

impl Metrics {
    /// Creates and registers every metric in a fresh registry.
    pub fn new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        let r = &registry;
        let sts_latency = Histogram::with_opts(
            HistogramOpts::new("ci_sts_latency_seconds", "AssumeRole round trip, seconds")
                .buckets(LATENCY_BUCKETS.to_vec()),
        )?;
        registry.register(Box::new(sts_latency.clone()))?;
        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                "ci_http_request_duration_seconds",
                "HTTP request duration, seconds",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route"],
        )?;
        registry.register(Box::new(http_duration.clone()))?;
        let replay_rejections = IntCounter::new(
            "ci_replay_rejections_total",
            "Tokens refused because they were already used",
        )?;
        registry.register(Box::new(replay_rejections.clone()))?;
        let replay_store_errors = IntCounter::new(
            "ci_replay_store_errors_total",
            "Replay store operations that failed",
        )?;
        registry.register(Box::new(replay_store_errors.clone()))?;
        let replay_store_full = IntCounter::new(
            "ci_replay_store_full_total",
            "Requests refused because the in-memory replay marks were full of unexpired tokens",
        )?;
        registry.register(Box::new(replay_store_full.clone()))?;
        let jwks_keys = IntGauge::new("ci_jwks_keys", "Signing keys currently cached")?;
        registry.register(Box::new(jwks_keys.clone()))?;
        let inner = Inner {
            creds_issued: counter_vec(r, "ci_creds_issued_total", "Credentials issued", &["role"])?,
            creds_expired: counter_vec(
                r,
                "ci_creds_expired_total",
                "Issued credentials whose expiration has passed",
                &["role"],
            )?,
            creds_active: gauge_vec(
                r,
                "ci_creds_active",
                "Issued credentials not yet expired",
                &["role"],
            )?,
            policy_denials: counter_vec(
                r,
                "ci_opa_policy_denials_total",
                "Policy denials",
                &["role"],
            )?,
            sts_errors: counter_vec(r, "ci_sts_errors_total", "AssumeRole failures", &["kind"])?,
            token_rejections: counter_vec(
                r,
                "ci_token_rejections_total",
                "Tokens rejected by verification",
                &["reason"],
            )?,
            binding_mismatches: counter_vec(
                r,
                "ci_binding_mismatches_total",
                "Request fields that did not match the token",
                &["field"],
            )?,
            jwks_refresh: counter_vec(r, "ci_jwks_refresh_total", "JWKS fetches", &["result"])?,
            jwks_key_age: gauge_vec(
                r,
                "ci_jwks_last_success_age_seconds",
                "Seconds since the issuer's JWKS was last fetched successfully",
                &["issuer_index"],
            )?,
            http_requests: counter_vec(
                r,
                "ci_http_requests_total",
                "HTTP requests",
                &["route", "status"],
            )?,
            policy_reloads: counter_vec(
                r,
                "ci_policy_reloads_total",
                "Policy reload attempts",
                &["result"],
            )?,
            rate_limited: counter_vec(
                r,
                "ci_rate_limited_total",
                "Requests refused by a limit: repository (429) or global concurrency (503)",
                &["scope"],
            )?,
            tls_reloads: counter_vec(
                r,
                "ci_tls_reloads_total",
                "TLS certificate reload attempts",
                &["result"],
            )?,
            policy_info: gauge_vec(
                r,
                "ci_policy_info",
                "The loaded policy; the version label is a hash of its text",
                &["version"],
            )?,
            sts_latency,
            http_duration,
            replay_rejections,
            replay_store_errors,
            replay_store_full,
            jwks_keys,
            registry,
            live: Mutex::new(BTreeMap::new()),
        };
        // Both series exist from the start, so alerts on their rate see 0, not "no data".
        for scope in ["repository", "global"] {
            inner.rate_limited.with_label_values(&[scope]);
        }
        Ok(Self(Arc::new(inner)))
    }

    /// Records an issued credential for `role` that expires at `expiration`.
    pub fn credential_issued(&self, role: &str, expiration: SystemTime) {
        self.0.creds_issued.with_label_values(&[role]).inc();
        self.0.creds_active.with_label_values(&[role]).inc();
        if let Ok(mut live) = self.0.live.lock() {
            let roles = live.entry(unix_seconds(expiration)).or_default();
            match roles.iter_mut().find(|(known, _)| known == role) {
                Some((_, count)) => *count += 1,
                None => roles.push((role.to_owned(), 1)),
            }
        }
        self.expire_credentials(SystemTime::now());
    }

    /// Moves credentials whose expiration has passed from active to expired.
    pub fn expire_credentials(&self, now: SystemTime) {
        let Ok(mut live) = self.0.live.lock() else {
            return;
        };
        let now = unix_seconds(now);
        while let Some(entry) = live.first_entry() {
            if *entry.key() > now {
                break;
            }
            for (role, count) in entry.remove() {
                let count = i64::try_from(count).unwrap_or(i64::MAX);
                self.0.creds_active.with_label_values(&[&role]).sub(count);
                self.0
                    .creds_expired
                    .with_label_values(&[&role])
                    .inc_by(count.unsigned_abs());
            }
        }
    }

    /// A policy denial; `role` is the evaluated role or `none`.
    pub fn policy_denied(&self, role: &str) {
        self.0.policy_denials.with_label_values(&[role]).inc();
    }

    /// One AssumeRole round trip.
    pub fn sts_latency(&self, seconds: f64) {
        self.0.sts_latency.observe(seconds);
    }

    /// An AssumeRole failure of a closed `kind`.
    pub fn sts_error(&self, kind: &'static str) {
        self.0.sts_errors.with_label_values(&[kind]).inc();
    }

    /// A token refused by verification, with a closed `reason`.
    pub fn token_rejected(&self, reason: &'static str) {
        self.0.token_rejections.with_label_values(&[reason]).inc();
    }

    /// A request field that did not match the token.
    pub fn binding_mismatch(&self, field: &'static str) {
        self.0.binding_mismatches.with_label_values(&[field]).inc();
    }

    /// A replayed token.
    pub fn replay_rejected(&self) {
        self.0.replay_rejections.inc();
    }

    /// A replay-store operation failed.
    pub fn replay_store_error(&self) {
        self.0.replay_store_errors.inc();
    }

    /// A request refused because the replay marks were full.
    pub fn replay_store_full(&self) {
        self.0.replay_store_full.inc();
    }

    /// A JWKS fetch: `ok`, `error` or `unchanged`.
    pub fn jwks_refresh(&self, result: &'static str) {
        self.0.jwks_refresh.with_label_values(&[result]).inc();
    }

    /// Number of cached signing keys.
    pub fn set_jwks_keys(&self, count: usize) {
        self.0
            .jwks_keys
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// Age of an issuer's last good JWKS (issuer by its index in the config).
    pub fn set_jwks_age(&self, issuer_index: usize, seconds: u64) {
        self.0
            .jwks_key_age
            .with_label_values(&[&issuer_index.to_string()])
            .set(i64::try_from(seconds).unwrap_or(i64::MAX));
    }

    /// An HTTP response on a route template.
    pub fn http_request(&self, route: &str, status: u16, seconds: f64) {
        self.0
            .http_requests
            .with_label_values(&[route, &status.to_string()])
            .inc();
        self.0
            .http_duration
            .with_label_values(&[route])
            .observe(seconds);
    }

    /// The loaded policy's version; the previous version's series is removed.
    pub fn set_policy_version(&self, version: &str) {
        self.0.policy_info.reset();
        self.0.policy_info.with_label_values(&[version]).set(1);
    }

    /// A policy reload attempt: `ok` or `error`.
    pub fn policy_reload(&self, result: &'static str) {
        self.0.policy_reloads.with_label_values(&[result]).inc();
    }

    /// A request refused by a limit; `scope` is `repository` or `global`.
    pub fn rate_limited(&self, scope: &'static str) {
        self.0.rate_limited.with_label_values(&[scope]).inc();
    }

    /// A TLS reload attempt: `ok` or `error`.
    pub fn tls_reload(&self, result: &'static str) {
        self.0.tls_reloads.with_label_values(&[result]).inc();
    }

    /// Renders the registry in Prometheus text format.
    pub fn render(&self) -> String {
        self.expire_credentials(SystemTime::now());
        let mut out = Vec::new();
        if TextEncoder::new()
            .encode(&self.0.registry.gather(), &mut out)
            .is_err()
        {
            return String::new();
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn issued_credentials_move_from_active_to_expired() {
        let metrics = Metrics::new().unwrap();
        let now = SystemTime::now();
        metrics.credential_issued("deploy", now + Duration::from_secs(900));
        metrics.credential_issued("deploy", now + Duration::from_secs(1800));
        metrics.expire_credentials(now + Duration::from_secs(1000));
        let text = metrics.render();
        assert!(
            text.contains("ci_creds_issued_total{role=\"deploy\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("ci_creds_expired_total{role=\"deploy\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("ci_creds_active{role=\"deploy\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn two_instances_do_not_collide() {
        assert!(Metrics::new().is_ok());
        assert!(Metrics::new().is_ok());
    }
}
