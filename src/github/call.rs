//! One GitHub API call: the headers GitHub asks for, a deadline, a capped
//! body, no redirects, the metrics of every call, and the mapping of
//! GitHub's answers (rate limits above all) to [`GithubError`].

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use reqwest::header::{ACCEPT, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret as _, SecretString};
use url::Url;

use crate::metrics::Metrics;

/// `X-GitHub-Api-Version` of every call: the version the broker was written against.
pub(crate) const API_VERSION: &str = "2022-11-28";
/// `Accept` of every call.
pub(crate) const ACCEPT_GITHUB_JSON: &str = "application/vnd.github+json";
/// `User-Agent` of every call (GitHub refuses requests without one).
pub(crate) const USER_AGENT: &str = concat!("attestation-broker/", env!("CARGO_PKG_VERSION"));
/// Largest body read from GitHub: a page of 100 pull requests is about 2 MiB.
pub(crate) const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// Longest `Retry-After` passed on to a caller, seconds.
pub(crate) const MAX_RETRY_AFTER_SECONDS: u64 = 60;
/// `Retry-After` when GitHub gave none (5xx, timeout), seconds.
pub(crate) const DEFAULT_RETRY_AFTER_SECONDS: u64 = 2;

/// The GitHub operations the broker uses; the `operation` metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    /// `GET /app`.
    App,
    /// `GET /repos/{owner}/{repo}/installation`.
    Installation,
    /// `POST /app/installations/{id}/access_tokens`.
    AccessToken,
    /// `DELETE /installation/token`.
    Revoke,
    /// `GET /repos/{owner}/{repo}/commits/{sha}/check-runs`.
    CheckRuns,
    /// `GET /repos/{owner}/{repo}/commits/{sha}/pulls`.
    CommitPulls,
    /// `GET /repos/{owner}/{repo}/pulls/{n}`.
    Pull,
    /// `GET /repos/{owner}/{repo}/pulls/{n}/reviews`.
    Reviews,
}

impl Operation {
    /// The metric label (one of `metrics::GITHUB_OPERATIONS`).
    pub fn label(self) -> &'static str {
        match self {
            Self::App => "app",
            Self::Installation => "installation",
            Self::AccessToken => "access_token",
            Self::Revoke => "revoke",
            Self::CheckRuns => "check_runs",
            Self::CommitPulls => "commit_pulls",
            Self::Pull => "pull",
            Self::Reviews => "reviews",
        }
    }
}

/// Why a GitHub call gave no usable answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GithubError {
    /// The App is not installed on the repository (404 on the lookup).
    #[error("the GitHub App is not installed on {0}")]
    NotInstalled(String),
    /// GitHub refused the repositories or permissions asked (422, or a 403
    /// that is not a rate limit).
    #[error("GitHub refused {operation} with {status}")]
    Refused {
        /// The operation's label.
        operation: &'static str,
        /// GitHub's status.
        status: u16,
    },
    /// A primary or secondary rate limit.
    #[error("GitHub rate limit reached on {operation}; retry in {retry_after} s")]
    RateLimited {
        /// The operation's label.
        operation: &'static str,
        /// Seconds GitHub asked to wait (bounded).
        retry_after: u64,
    },
    /// A 5xx.
    #[error("GitHub answered {status} to {operation}")]
    ServerError {
        /// The operation's label.
        operation: &'static str,
        /// GitHub's status.
        status: u16,
    },
    /// No answer within the deadline, or no connection.
    #[error("no answer from GitHub to {operation}: {reason}")]
    Timeout {
        /// The operation's label.
        operation: &'static str,
        /// What happened.
        reason: String,
    },
    /// An answer that is not what GitHub documents.
    #[error("GitHub's answer to {operation} was not understood: {reason}")]
    Invalid {
        /// The operation's label.
        operation: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// A status the operation does not expect (401 on the App JWT: a wrong
    /// key or app id).
    #[error("GitHub answered {status} to {operation}")]
    Unexpected {
        /// The operation's label.
        operation: &'static str,
        /// GitHub's status.
        status: u16,
    },
    /// The App JWT could not be signed.
    #[error("cannot sign the App JWT")]
    Signing,
    /// Too many issued tokens are waiting for revocation to issue another.
    #[error("too many issued GitHub tokens are waiting for revocation")]
    RevocationsFull,
}

impl GithubError {
    /// A closed reason code for the audit event.
    pub fn reason_code(&self) -> &'static str {
        match self {
            Self::NotInstalled(_) => "github_not_installed",
            Self::Refused { .. } => "github_refused",
            Self::RateLimited { .. } => "github_rate_limited",
            Self::ServerError { .. } => "github_server_error",
            Self::Timeout { .. } => "github_timeout",
            Self::Invalid { .. } => "github_invalid_answer",
            Self::Unexpected { .. } => "github_unexpected_status",
            Self::Signing => "github_signing",
            Self::RevocationsFull => "github_revocations_full",
        }
    }

    /// Whether the answer is a refusal of this request (403) rather than
    /// GitHub being unable to serve it now (503).
    pub fn is_refusal(&self) -> bool {
        matches!(self, Self::NotInstalled(_) | Self::Refused { .. })
    }

    /// Seconds a caller should wait before retrying, within
    /// 1..=[`MAX_RETRY_AFTER_SECONDS`].
    pub fn retry_after_seconds(&self) -> u64 {
        match self {
            Self::RateLimited { retry_after, .. } => {
                (*retry_after).clamp(1, MAX_RETRY_AFTER_SECONDS)
            }
            _ => DEFAULT_RETRY_AFTER_SECONDS,
        }
    }
}

/// How a call authenticates: `Authorization: Bearer` with an App JWT or an
/// installation token.
pub(crate) type Credential<'a> = &'a SecretString;

/// A GitHub answer that arrived.
#[derive(Debug)]
pub struct Answer {
    /// The status.
    pub status: StatusCode,
    /// The body (at most [`MAX_BODY_BYTES`]).
    pub body: Bytes,
    /// The `ETag`, if any.
    pub etag: Option<String>,
    /// The headers (rate limits, `Retry-After`).
    pub headers: HeaderMap,
}

impl Answer {
    /// The body as JSON of `T`.
    pub fn json<T: serde::de::DeserializeOwned>(
        &self,
        operation: Operation,
    ) -> Result<T, GithubError> {
        serde_json::from_slice(&self.body).map_err(|err| GithubError::Invalid {
            operation: operation.label(),
            reason: format!("body: {err}"),
        })
    }

    /// The error for a status the caller did not take as an answer: rate
    /// limits and 5xx first, then `Unexpected`.
    pub fn error(&self, operation: Operation) -> GithubError {
        classify(operation, self.status, &self.headers).unwrap_or(GithubError::Unexpected {
            operation: operation.label(),
            status: self.status.as_u16(),
        })
    }
}

/// Rate limits and server errors, which are never an answer to any call.
pub(crate) fn classify(
    operation: Operation,
    status: StatusCode,
    headers: &HeaderMap,
) -> Option<GithubError> {
    let label = operation.label();
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::trim)
    };
    if status == StatusCode::FORBIDDEN || status == StatusCode::TOO_MANY_REQUESTS {
        // Secondary limits: `retry-after`. Primary: remaining 0 and a reset time.
        if let Some(seconds) = header("retry-after").and_then(|value| value.parse::<u64>().ok()) {
            return Some(GithubError::RateLimited {
                operation: label,
                retry_after: seconds.clamp(1, MAX_RETRY_AFTER_SECONDS),
            });
        }
        if header("x-ratelimit-remaining") == Some("0") {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |elapsed| elapsed.as_secs());
            let reset = header("x-ratelimit-reset")
                .and_then(|value| value.parse::<u64>().ok())
                .map_or(MAX_RETRY_AFTER_SECONDS, |reset| reset.saturating_sub(now));
            return Some(GithubError::RateLimited {
                operation: label,
                retry_after: reset.clamp(1, MAX_RETRY_AFTER_SECONDS),
            });
        }
        if status == StatusCode::TOO_MANY_REQUESTS {
            return Some(GithubError::RateLimited {
                operation: label,
                retry_after: MAX_RETRY_AFTER_SECONDS,
            });
        }
    }
    if status.is_server_error() {
        return Some(GithubError::ServerError {
            operation: label,
            status: status.as_u16(),
        });
    }
    None
}

/// The HTTP side of every GitHub call; cheap to clone.
#[derive(Clone, Debug)]
pub struct Transport {
    http: reqwest::Client,
    timeout: Duration,
    metrics: Option<Metrics>,
}

impl Transport {
    /// A client with `timeout` per call (connect included), no redirects,
    /// GitHub's headers; `metrics` counts every call when given.
    pub fn new(timeout: Duration, metrics: Option<Metrics>) -> Result<Self, reqwest::Error> {
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static(ACCEPT_GITHUB_JSON));
        headers.insert(
            "x-github-api-version",
            HeaderValue::from_static(API_VERSION),
        );
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(timeout)
            .timeout(timeout)
            .user_agent(USER_AGENT)
            .default_headers(headers)
            .build()?;
        Ok(Self {
            http,
            timeout,
            metrics,
        })
    }

    /// Sends one call and reads its answer. `request_ids` receives GitHub's
    /// `x-github-request-id` when there is one. Every status is an
    /// [`Answer`]; only a missing answer (deadline, connection, a body over
    /// the cap) is an error.
    #[expect(
        clippy::too_many_arguments,
        reason = "one call's parts, each used once; a builder would only rename them"
    )]
    pub async fn send(
        &self,
        operation: Operation,
        method: Method,
        url: Url,
        credential: Option<Credential<'_>>,
        extra: &[(&'static str, String)],
        body: Option<&serde_json::Value>,
        request_ids: &mut Vec<String>,
    ) -> Result<Answer, GithubError> {
        let started = tokio::time::Instant::now();
        let mut request = self.http.request(method, url);
        if let Some(credential) = credential {
            let mut value = HeaderValue::try_from(format!("Bearer {}", credential.expose_secret()))
                .map_err(|_| GithubError::Invalid {
                    operation: operation.label(),
                    reason: "the credential is not a valid header value".into(),
                })?;
            value.set_sensitive(true);
            request = request.header(reqwest::header::AUTHORIZATION, value);
        }
        for (name, value) in extra {
            request = request.header(*name, value);
        }
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_string());
        }
        let outcome = tokio::time::timeout(self.timeout, read(request, operation)).await;
        let seconds = started.elapsed().as_secs_f64();
        let result = match outcome {
            Ok(result) => result,
            Err(_) => Err(GithubError::Timeout {
                operation: operation.label(),
                reason: format!("deadline of {} s passed", self.timeout.as_secs()),
            }),
        };
        let status_label = match &result {
            Ok(answer) if answer.status.is_server_error() => "5xx",
            Ok(answer) if answer.status.is_client_error() => "4xx",
            Ok(_) => "2xx",
            Err(_) => "timeout",
        };
        if let Some(metrics) = &self.metrics {
            metrics.github_request(operation.label(), status_label, seconds);
        }
        if let Ok(answer) = &result {
            let header = |name: &str| answer.headers.get(name).and_then(|v| v.to_str().ok());
            if let Some(id) = header("x-github-request-id") {
                request_ids.push(id.chars().take(64).collect());
            }
            if let (Some(metrics), Some(remaining)) = (
                &self.metrics,
                header("x-ratelimit-remaining").and_then(|v| v.trim().parse::<i64>().ok()),
            ) {
                metrics.github_rate_limit_remaining(remaining);
            }
        }
        result
    }
}

/// Sends and reads the body within the cap.
async fn read(
    request: reqwest::RequestBuilder,
    operation: Operation,
) -> Result<Answer, GithubError> {
    let label = operation.label();
    let no_answer = |err: reqwest::Error| GithubError::Timeout {
        operation: label,
        reason: if err.is_timeout() {
            "deadline passed".to_owned()
        } else if err.is_connect() {
            "cannot connect".to_owned()
        } else {
            "connection failed".to_owned()
        },
    };
    let mut response = request.send().await.map_err(no_answer)?;
    let too_large = || GithubError::Invalid {
        operation: label,
        reason: format!("body larger than {MAX_BODY_BYTES} bytes"),
    };
    if response
        .content_length()
        .is_some_and(|len| len > MAX_BODY_BYTES as u64)
    {
        return Err(too_large());
    }
    let status = response.status();
    let headers = response.headers().clone();
    let etag = headers
        .get(reqwest::header::ETAG)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(no_answer)? {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Answer {
        status,
        body: Bytes::from(body),
        etag,
        headers,
    })
}

/// `api` with `segments` appended, each percent-encoded as one segment.
pub(crate) fn endpoint(api: &Url, segments: &[&str]) -> Url {
    let mut url = api.clone();
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty();
        path.extend(segments);
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn rate_limits_and_server_errors_are_told_apart_from_refusals() {
        let op = Operation::AccessToken;
        let secondary = classify(
            op,
            StatusCode::FORBIDDEN,
            &headers(&[("retry-after", "30")]),
        );
        assert_eq!(
            secondary.as_ref().map(GithubError::retry_after_seconds),
            Some(30)
        );
        let huge = classify(
            op,
            StatusCode::FORBIDDEN,
            &headers(&[("retry-after", "86400")]),
        );
        assert_eq!(huge.map(|err| err.retry_after_seconds()), Some(60));
        let primary = classify(
            op,
            StatusCode::FORBIDDEN,
            &headers(&[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "1")]),
        );
        assert!(matches!(primary, Some(GithubError::RateLimited { .. })));
        assert!(classify(op, StatusCode::FORBIDDEN, &headers(&[])).is_none());
        assert!(classify(op, StatusCode::UNPROCESSABLE_ENTITY, &headers(&[])).is_none());
        assert!(matches!(
            classify(op, StatusCode::BAD_GATEWAY, &headers(&[])),
            Some(GithubError::ServerError { status: 502, .. })
        ));
    }

    #[test]
    fn endpoints_keep_the_api_path_and_encode_segments() {
        let ghes = Url::parse("https://ghes.example/api/v3").unwrap();
        assert_eq!(
            endpoint(&ghes, &["repos", "o", "r", "installation"]).as_str(),
            "https://ghes.example/api/v3/repos/o/r/installation"
        );
        let dotcom = Url::parse("https://api.github.com/").unwrap();
        assert_eq!(
            endpoint(&dotcom, &["repos", "a/b", "r"]).as_str(),
            "https://api.github.com/repos/a%2Fb/r"
        );
    }
}
