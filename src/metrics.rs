//! Prometheus metrics. The names are a contract: dashboards and alerts depend
//! on them. Every label takes its values from a closed set or a policy role
//! name (bounded by the policy file), never from a request.
//!
//! Every labelled counter whose label values form a closed set is exported at
//! 0 for each value from start-up (and per-role series for every role of the
//! loaded policy): `increase()` and `rate()` only see a step between two
//! samples, so a series that first appears already at 1 would never fire an
//! alert.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Latency buckets in seconds, from 0.5 ms (in-process work) to 10 s (a deadline).
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// `ci_token_rejections_total{reason}`: every `VerifyError::reason_code`.
pub const TOKEN_REJECTION_REASONS: &[&str] = &[
    "malformed",
    "algorithm",
    "missing_kid",
    "issuer",
    "unknown_kid",
    "signature",
    "audience",
    "expired",
    "not_yet_valid",
    "issued_in_future",
    "missing_claim",
    "lifetime",
    "keys_unavailable",
];
/// `ci_sts_errors_total{kind}`: every `StsError::kind`.
pub const STS_ERROR_KINDS: &[&str] = &["throttled", "timeout", "denied", "other"];
/// `ci_binding_mismatches_total{field}`: the request fields bound to the token.
pub const BINDING_FIELDS: &[&str] = &["repo", "sha", "job_id"];
/// `ci_jwks_refresh_total{result}`.
pub(crate) const JWKS_REFRESH_RESULTS: &[&str] = &["ok", "error", "unchanged"];
/// `ci_policy_reloads_total{result}` and `ci_tls_reloads_total{result}`.
pub(crate) const RELOAD_RESULTS: &[&str] = &["ok", "error"];
/// `ci_rate_limited_total{scope}`.
pub(crate) const RATE_LIMIT_SCOPES: &[&str] = &["repository", "global"];
/// The statuses `POST /issue` answers with (the API's status map), exported
/// for `ci_http_requests_total{route="/issue"}` from start-up so that a 5xx
/// ratio has a denominator and numerator from the first scrape. (431 is
/// answered by the HTTP layer before any route is matched.)
pub(crate) const ISSUE_STATUSES: &[&str] = &[
    "200", "400", "401", "403", "405", "413", "415", "429", "500", "503",
];
/// `ci_github_api_requests_total{operation}` and
/// `ci_github_api_latency_seconds{operation}`: every GitHub call the broker makes.
pub const GITHUB_OPERATIONS: &[&str] = &[
    "app",
    "installation",
    "access_token",
    "revoke",
    "check_runs",
    "commit_pulls",
    "pull",
    "reviews",
];
/// `ci_github_api_requests_total{status}`: the answer's class; `timeout` when
/// no answer came (deadline passed or no connection). A 304 Not Modified is
/// an answer and counts as `2xx`.
pub const GITHUB_STATUSES: &[&str] = &["2xx", "4xx", "5xx", "timeout"];
/// `ci_github_tokens_revoked_total{reason}`.
pub const GITHUB_REVOKE_REASONS: &[&str] = &["scheduled", "error"];
/// `ci_context_checks_total{condition}`.
pub const CONTEXT_CONDITIONS: &[&str] = &["checks_passed", "pull_request_approvals"];
/// `ci_context_checks_total{result}`.
pub const CONTEXT_RESULTS: &[&str] = &["pass", "fail", "unavailable"];
/// The role label of a policy denial that matched no role.
pub(crate) const NO_ROLE: &str = "none";

/// The build's source revision: `BROKER_GIT_REVISION` at compile time (the
/// Dockerfile passes it as a build argument), `unknown` without it.
fn build_revision() -> &'static str {
    match option_env!("BROKER_GIT_REVISION") {
        Some(revision) if !revision.trim().is_empty() => revision.trim(),
        _ => "unknown",
    }
}

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
    jwks_last_success: IntGaugeVec,
    ready: IntGauge,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    policy_info: IntGaugeVec,
    policy_reloads: IntCounterVec,
    replay_store_errors: IntCounter,
    replay_store_full: IntCounter,
    rate_limited: IntCounterVec,
    tls_reloads: IntCounterVec,
    github_requests: IntCounterVec,
    github_latency: HistogramVec,
    github_rate_limit: IntGauge,
    github_revoked: IntCounterVec,
    context_checks: IntCounterVec,
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
        let github_latency = HistogramVec::new(
            HistogramOpts::new(
                "ci_github_api_latency_seconds",
                "GitHub API call round trip, seconds",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["operation"],
        )?;
        registry.register(Box::new(github_latency.clone()))?;
        let github_rate_limit = IntGauge::new(
            "ci_github_rate_limit_remaining",
            "GitHub's x-ratelimit-remaining on the latest answer; 0 until GitHub first answered",
        )?;
        registry.register(Box::new(github_rate_limit.clone()))?;
        let jwks_keys = IntGauge::new("ci_jwks_keys", "Signing keys currently cached")?;
        registry.register(Box::new(jwks_keys.clone()))?;
        let ready = IntGauge::new(
            "ci_ready",
            "1 while the instance would answer /readyz with 200, else 0",
        )?;
        registry.register(Box::new(ready.clone()))?;
        let build_info = gauge_vec(
            r,
            "ci_build_info",
            "Always 1; the labels name the running build",
            &["version", "revision"],
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), build_revision()])
            .set(1);
        // CPU, memory, open file descriptors and start time of this process
        // (`process_*`), read from /proc; Linux only.
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
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
                "Seconds since the issuer's JWKS was last fetched successfully; absent before the first success",
                &["issuer_index"],
            )?,
            jwks_last_success: gauge_vec(
                r,
                "ci_jwks_last_success_timestamp_seconds",
                "Unix time of the issuer's last successful JWKS fetch; 0 before the first success",
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
            github_requests: counter_vec(
                r,
                "ci_github_api_requests_total",
                "GitHub API calls, by operation and answer class",
                &["operation", "status"],
            )?,
            github_revoked: counter_vec(
                r,
                "ci_github_tokens_revoked_total",
                "Issued GitHub tokens revoked by the broker (scheduled) or that could not be (error)",
                &["reason"],
            )?,
            context_checks: counter_vec(
                r,
                "ci_context_checks_total",
                "Commit context conditions answered, by condition and result",
                &["condition", "result"],
            )?,
            github_latency,
            github_rate_limit,
            sts_latency,
            http_duration,
            replay_rejections,
            replay_store_errors,
            replay_store_full,
            jwks_keys,
            ready,
            registry,
            live: Mutex::new(BTreeMap::new()),
        };
        // Every closed label value exists from the start, at 0.
        let touch = |vec: &IntCounterVec, values: &[&str]| {
            for value in values {
                vec.with_label_values(&[value]);
            }
        };
        touch(&inner.token_rejections, TOKEN_REJECTION_REASONS);
        touch(&inner.sts_errors, STS_ERROR_KINDS);
        touch(&inner.binding_mismatches, BINDING_FIELDS);
        touch(&inner.jwks_refresh, JWKS_REFRESH_RESULTS);
        touch(&inner.policy_reloads, RELOAD_RESULTS);
        touch(&inner.tls_reloads, RELOAD_RESULTS);
        touch(&inner.rate_limited, RATE_LIMIT_SCOPES);
        touch(&inner.policy_denials, &[NO_ROLE]);
        touch(&inner.github_revoked, GITHUB_REVOKE_REASONS);
        for operation in GITHUB_OPERATIONS {
            inner.github_latency.with_label_values(&[operation]);
            for status in GITHUB_STATUSES {
                inner
                    .github_requests
                    .with_label_values(&[operation, status]);
            }
        }
        for condition in CONTEXT_CONDITIONS {
            for result in CONTEXT_RESULTS {
                inner.context_checks.with_label_values(&[condition, result]);
            }
        }
        for status in ISSUE_STATUSES {
            inner.http_requests.with_label_values(&["/issue", status]);
        }
        inner.http_duration.with_label_values(&["/issue"]);
        Ok(Self(Arc::new(inner)))
    }

    /// Exports the per-role series of every role of a loaded policy at 0
    /// (issued, expired, active, denials). Series of roles a reload removed
    /// stay: counters must not go backwards.
    pub fn register_roles<'a>(&self, roles: impl IntoIterator<Item = &'a str>) {
        for role in roles {
            self.0.creds_issued.with_label_values(&[role]);
            self.0.creds_expired.with_label_values(&[role]);
            self.0.creds_active.with_label_values(&[role]);
            self.0.policy_denials.with_label_values(&[role]);
        }
    }

    /// Whether the instance is ready (what `/readyz` answers), as 1 or 0.
    pub fn set_ready(&self, ready: bool) {
        self.0.ready.set(i64::from(ready));
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

    /// Age of an issuer's last good JWKS (issuer by its index in the config),
    /// `None` before the first success. Exported twice: as the Unix time of
    /// that success (0 before it), which graphs and alerts can use as is, and
    /// as an age in seconds, which is left out until there is one (an age of
    /// "never" has no honest number).
    pub fn set_jwks_age(&self, issuer_index: usize, age_seconds: Option<u64>) {
        let index = issuer_index.to_string();
        let labels = [index.as_str()];
        match age_seconds {
            Some(seconds) => {
                let at = SystemTime::now()
                    .checked_sub(Duration::from_secs(seconds))
                    .map_or(0, unix_seconds);
                self.0
                    .jwks_last_success
                    .with_label_values(&labels)
                    .set(i64::try_from(at).unwrap_or(i64::MAX));
                self.0
                    .jwks_key_age
                    .with_label_values(&labels)
                    .set(i64::try_from(seconds).unwrap_or(i64::MAX));
            }
            None => {
                self.0.jwks_last_success.with_label_values(&labels).set(0);
                // No age without a success; an error here only means the
                // series was not there.
                let _ = self.0.jwks_key_age.remove_label_values(&labels);
            }
        }
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

    /// One GitHub API call: closed `operation` and `status` labels.
    pub fn github_request(&self, operation: &'static str, status: &'static str, seconds: f64) {
        self.0
            .github_requests
            .with_label_values(&[operation, status])
            .inc();
        self.0
            .github_latency
            .with_label_values(&[operation])
            .observe(seconds);
    }

    /// GitHub's `x-ratelimit-remaining` on the latest answer.
    pub fn github_rate_limit_remaining(&self, remaining: i64) {
        self.0.github_rate_limit.set(remaining);
    }

    /// An issued GitHub token revoked (`scheduled`) or not (`error`).
    pub fn github_token_revoked(&self, reason: &'static str) {
        self.0.github_revoked.with_label_values(&[reason]).inc();
    }

    /// A commit context condition answered.
    pub fn context_check(&self, condition: &'static str, result: &'static str) {
        self.0
            .context_checks
            .with_label_values(&[condition, result])
            .inc();
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
mod tests;
