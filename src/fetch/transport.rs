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
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// TCP/TLS connect deadline per attempt.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Whole-request deadline per attempt (the broker's own deadline is 15 s by
/// default, but a healthy issuance takes well under a second).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// When and how often to try again.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Attempts in total, the first included.
    pub max_attempts: u32,
    /// First backoff; doubles per attempt.
    pub base_delay: Duration,
    /// Largest single backoff.
    pub max_delay: Duration,
    /// Largest `Retry-After` honoured; a longer one ends the retries.
    pub max_retry_after: Duration,
    /// Budget for everything, sleeps included.
    pub total: Duration,
}

impl Default for RetryPolicy {
    /// 4 attempts, 0.5 s → 1 s → 2 s (with jitter), `Retry-After` up to 10 s,
    /// 30 s in all: a CI step should fail fast and clearly rather than hang.
    fn default() -> Self {
        Self {
            max_attempts: 4,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(4),
            max_retry_after: Duration::from_secs(10),
            total: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The pause before attempt `next` (2 = the first retry): half the
    /// exponential step plus a random part of the other half, so that many
    /// jobs failing together do not retry in lockstep.
    pub fn backoff(&self, next: u32) -> Duration {
        let exponent = next.saturating_sub(2).min(16);
        let step = self
            .base_delay
            .saturating_mul(1u32 << exponent)
            .min(self.max_delay);
        let half = step / 2;
        let jitter_ms = u64::try_from(half.as_millis()).unwrap_or(u64::MAX);
        half + Duration::from_millis(rand::rng().random_range(0..=jitter_ms))
    }

    /// The pause to take before attempt `next`, or `None` when no attempt is
    /// left, the server asked for more than we honour, or the pause would end
    /// past `deadline`.
    pub fn pause_before(
        &self,
        next: u32,
        retry_after: Option<Duration>,
        deadline: Instant,
    ) -> Option<Duration> {
        if next > self.max_attempts {
            return None;
        }
        let pause = match retry_after {
            Some(asked) if asked > self.max_retry_after => return None,
            Some(asked) => asked.max(self.backoff(next)),
            None => self.backoff(next),
        };
        (Instant::now() + pause < deadline).then_some(pause)
    }
}

/// `Retry-After` as a number of seconds (the HTTP-date form is ignored: our
/// backoff applies then).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = headers.get(RETRY_AFTER)?.to_str().ok()?;
    text.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Statuses worth another attempt: overload and gateway trouble. Never
/// 400/401/403: the same request would fail the same way.
pub fn is_transient_status(status: u16) -> bool {
    matches!(status, 429 | 502 | 503 | 504)
}

/// An HTTP answer read to the end (up to [`MAX_BODY_BYTES`]).
#[derive(Debug)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// Response headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Vec<u8>,
}

/// Why one attempt produced no answer.
#[derive(Debug)]
pub enum SendError {
    /// Connecting or sending failed, or the attempt timed out.
    Transport(String),
    /// The answer's body exceeded [`MAX_BODY_BYTES`].
    TooLarge,
}

/// Sends one request and reads the whole answer, within `timeout`.
pub async fn send(
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
pub fn describe(err: &(dyn std::error::Error + 'static)) -> String {
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
pub fn build_client(
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
