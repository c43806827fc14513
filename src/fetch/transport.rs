//! HTTP for `fetch`: the two clients (Actions runtime, broker), bounded
//! reads, and the retry schedule.
//!
//! Invariants: every call has a connect timeout and a per-attempt deadline
//! that never runs past the overall budget; bodies are read up to a cap;
//! redirects are never followed (a POST carrying an ID token must not be
//! replayed to another host); proxies come only from the environment map the
//! caller passes in, never from the process environment behind its back.

use std::collections::BTreeMap;
use std::time::Duration;

use rand::Rng as _;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use tokio::time::Instant;

/// Largest answer body read from the runtime or the broker (bytes). A real
/// answer is a few kilobytes; anything bigger is malformed.
pub(super) const MAX_BODY_BYTES: usize = 64 * 1024;
/// TCP/TLS connect deadline per attempt.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Whole-request deadline per attempt (the broker's own deadline is 15 s by
/// default, but a healthy issuance takes well under a second).
pub(super) const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// When and how often to try again: as often as the budget allows, with
/// exponentially growing, fully jittered pauses.
#[derive(Clone, Copy, Debug)]
pub(super) struct RetryPolicy {
    /// Upper bound of the first pause; doubles per retry.
    pub base_delay: Duration,
    /// Largest upper bound of a single pause.
    pub max_delay: Duration,
    /// Retries start only while this much time has not passed since the
    /// first attempt (sleeps included). Each attempt has its own
    /// [`ATTEMPT_TIMEOUT`] on top.
    pub total: Duration,
}

/// Default `--retry-max-seconds`: long enough to ride out a rolling restart
/// of the broker's replicas (a pod's readiness gate plus a load balancer's
/// health check take tens of seconds), short enough that a broken broker
/// fails the step within about a minute.
pub(super) const DEFAULT_RETRY_MAX_SECONDS: u64 = 60;

impl RetryPolicy {
    /// Pauses drawn from [0, 1 s], [0, 2 s], [0, 4 s], [0, 8 s], then [0, 10 s]
    /// each, for `total`.
    pub(super) fn with_budget(total: Duration) -> Self {
        Self {
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(10),
            total,
        }
    }

    /// The upper bound of the pause before retry `retry` (1 = the first):
    /// `min(max_delay, base_delay * 2^(retry-1))`.
    pub(super) fn ceiling(&self, retry: u32) -> Duration {
        let exponent = retry.saturating_sub(1).min(16);
        self.base_delay
            .saturating_mul(1u32 << exponent)
            .min(self.max_delay)
    }

    /// "Full jitter": a uniformly random pause in `[0, ceiling(retry)]`, so
    /// that many jobs failing together (a broker rollout) spread their
    /// retries out instead of arriving in waves.
    pub(super) fn backoff(&self, retry: u32) -> Duration {
        let ceiling = u64::try_from(self.ceiling(retry).as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rand::rng().random_range(0..=ceiling))
    }

    /// The pause to take before retry `retry`, or `None` when the pause would
    /// end at or past `deadline` (including a `Retry-After` that asks for
    /// longer than the budget has left). A `Retry-After` is honoured as a
    /// minimum.
    pub(super) fn pause_before(
        &self,
        retry: u32,
        retry_after: Option<Duration>,
        deadline: Instant,
    ) -> Option<Duration> {
        let backoff = self.backoff(retry);
        let pause = retry_after.map_or(backoff, |asked| asked.max(backoff));
        // checked: a hostile `Retry-After` of u64::MAX seconds must not panic.
        Instant::now()
            .checked_add(pause)
            .is_some_and(|end| end < deadline)
            .then_some(pause)
    }
}

/// `Retry-After` as a number of seconds (the HTTP-date form is ignored: our
/// backoff applies then).
pub(super) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = headers.get(RETRY_AFTER)?.to_str().ok()?;
    text.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Statuses worth another attempt: 429 (the broker's per-repository rate
/// limit, or a gateway's), 500 and gateway trouble (502/503/504, what a
/// load balancer answers while replicas roll). No other 4xx: the same
/// request would fail the same way.
pub(super) fn is_transient_status(status: u16) -> bool {
    matches!(status, 429 | 500 | 502 | 503 | 504)
}

/// An HTTP answer read to the end (up to [`MAX_BODY_BYTES`]).
#[derive(Debug)]
pub(super) struct Answer {
    /// Status code.
    pub status: u16,
    /// Response headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Vec<u8>,
}

/// Why one attempt produced no answer.
#[derive(Debug)]
pub(super) enum SendError {
    /// Connecting or sending failed, or the attempt timed out.
    Transport(String),
    /// The answer's body exceeded [`MAX_BODY_BYTES`].
    TooLarge,
}

/// Sends one request and reads the whole answer, within `timeout`.
pub(super) async fn send(
    request: reqwest::RequestBuilder,
    timeout: Duration,
) -> Result<Answer, SendError> {
    let mut response = request
        .timeout(timeout)
        .send()
        .await
        .map_err(|err| SendError::Transport(describe(&err.without_url())))?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|err| SendError::Transport(describe(&err.without_url())))?
    {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(SendError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Answer {
        status,
        headers,
        body,
    })
}

/// An error and its causes on one line (reqwest's own `Display` stops at
/// "error sending request").
pub(super) fn describe(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Builds a client: connect timeout, no redirects, proxies from `env`, and,
/// when `roots` is given, those certificates as the only trust anchors.
pub(super) fn build_client(
    env: &BTreeMap<String, String>,
    roots: Option<Vec<reqwest::Certificate>>,
) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!(
            "attestation-broker-fetch/",
            env!("CARGO_PKG_VERSION")
        ))
        .no_proxy();
    for proxy in proxies_from_env(env)? {
        builder = builder.proxy(proxy);
    }
    if let Some(roots) = roots {
        builder = builder.tls_certs_only(roots);
    }
    builder.build().map_err(|err| describe(&err))
}

/// First non-empty value among `names`.
fn first<'a>(env: &'a BTreeMap<String, String>, names: &[&str]) -> Option<&'a str> {
    names
        .iter()
        .find_map(|name| env.get(*name).map(String::as_str).filter(|v| !v.is_empty()))
}

/// `HTTPS_PROXY` / `HTTP_PROXY` / `NO_PROXY` (either case), as curl and the
/// Actions toolkit read them, so self-hosted runners behind a proxy work.
fn proxies_from_env(env: &BTreeMap<String, String>) -> Result<Vec<reqwest::Proxy>, String> {
    let no_proxy = first(env, &["NO_PROXY", "no_proxy"]).and_then(reqwest::NoProxy::from_string);
    let mut proxies = Vec::new();
    if let Some(url) = first(env, &["HTTPS_PROXY", "https_proxy"]) {
        let proxy = reqwest::Proxy::https(url)
            .map_err(|_| "HTTPS_PROXY is not a valid proxy URL".to_owned())?;
        proxies.push(proxy.no_proxy(no_proxy.clone()));
    }
    if let Some(url) = first(env, &["HTTP_PROXY", "http_proxy"]) {
        let proxy = reqwest::Proxy::http(url)
            .map_err(|_| "HTTP_PROXY is not a valid proxy URL".to_owned())?;
        proxies.push(proxy.no_proxy(no_proxy));
    }
    Ok(proxies)
}
