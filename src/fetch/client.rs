//! The exchange itself: an ID token from the Actions runtime, then
//! `POST /issue`, both retried on transient failures within one time budget
//! (`--retry-max-seconds`), with a fresh ID token for every broker attempt.

use reqwest::header::{ACCEPT, CONTENT_TYPE};
use secrecy::{ExposeSecret as _, SecretString};
use tokio::time::Instant;
use url::Url;

use super::answer::{Issued, broker_error, parse_answer, parse_id_token, refused};
use super::transport::{self, Answer, RetryPolicy, SendError};
use super::{FetchArgs, FetchError, RunnerEnv};
use crate::api::{IssueRequest, JobId};

/// The two HTTP clients and where to send the request.
pub(super) struct Client {
    pub(super) runtime: reqwest::Client,
    pub(super) broker: reqwest::Client,
    pub(super) issue_url: Url,
    pub(super) policy: RetryPolicy,
}

/// The last failure of a retried call, kept to report once retries end.
enum LastFailure {
    Transport(String),
    Answer(Answer),
}

impl Client {
    /// ID token → `POST /issue`, retried as the module doc says.
    pub(super) async fn obtain(
        &self,
        args: &FetchArgs,
        runner: &RunnerEnv,
    ) -> Result<Issued, FetchError> {
        let deadline = Instant::now() + self.policy.total;
        let mut attempt = 1;
        loop {
            let token = self
                .request_id_token(runner, args.audience.as_deref(), deadline)
                .await?;
            let body = request_body(args, runner, &token);
            let request = self
                .broker
                .post(self.issue_url.clone())
                .header(CONTENT_TYPE, "application/json")
                .header(ACCEPT, "application/json")
                .body(body);
            let failure = match transport::send(request, transport::ATTEMPT_TIMEOUT).await {
                Ok(answer) if answer.status == 200 => return parse_answer(&answer.body),
                Ok(answer) if transport::is_transient_status(answer.status) => {
                    LastFailure::Answer(answer)
                }
                Ok(answer) => return Err(refused(&answer)),
                Err(SendError::TooLarge) => {
                    return Err(FetchError::Malformed("larger than 64 KiB".into()));
                }
                Err(SendError::Transport(detail)) => LastFailure::Transport(detail),
            };
            let retry_after = match &failure {
                LastFailure::Answer(answer) => transport::retry_after(&answer.headers),
                LastFailure::Transport(_) => None,
            };
            let Some(pause) = self.policy.pause_before(attempt, retry_after, deadline) else {
                return Err(self.give_up(failure, attempt));
            };
            crate::cli::output::report!(
                "attestation-broker fetch: attempt {attempt} failed ({}); retrying in {:.1} s ({} s of the {} s retry budget left)",
                describe_failure(&failure),
                pause.as_secs_f64(),
                deadline.saturating_duration_since(Instant::now()).as_secs(),
                self.policy.total.as_secs(),
            );
            tokio::time::sleep(pause).await;
            attempt += 1;
        }
    }

    /// The error once no retry is left: a broker error body means a refusal
    /// (with its request id), anything else means the broker is unreachable.
    fn give_up(&self, failure: LastFailure, attempts: u32) -> FetchError {
        match failure {
            LastFailure::Answer(answer) if broker_error(&answer).is_some() => refused(&answer),
            other => FetchError::Unreachable {
                url: self.issue_url.to_string(),
                attempts,
                budget_seconds: self.policy.total.as_secs(),
                detail: describe_failure(&other),
            },
        }
    }

    /// One ID token from the Actions runtime, retried on transient failures.
    async fn request_id_token(
        &self,
        runner: &RunnerEnv,
        audience: Option<&str>,
        deadline: Instant,
    ) -> Result<SecretString, FetchError> {
        let mut url = runner.id_token_url.clone();
        if let Some(audience) = audience.filter(|aud| !aud.is_empty()) {
            url.query_pairs_mut().append_pair("audience", audience);
        }
        let mut attempt = 1;
        loop {
            let request = self
                .runtime
                .get(url.clone())
                .bearer_auth(runner.id_token_request_token.expose_secret())
                .header(ACCEPT, "application/json; api-version=2.0");
            let failure = match transport::send(request, transport::ATTEMPT_TIMEOUT).await {
                Ok(answer) if answer.status == 200 => return parse_id_token(&answer.body),
                Ok(answer) if transport::is_transient_status(answer.status) => {
                    LastFailure::Answer(answer)
                }
                Ok(answer) => {
                    return Err(FetchError::IdToken(format!(
                        "the runtime answered HTTP {}",
                        answer.status
                    )));
                }
                Err(SendError::TooLarge) => {
                    return Err(FetchError::IdToken(
                        "the answer is larger than 64 KiB".into(),
                    ));
                }
                Err(SendError::Transport(detail)) => LastFailure::Transport(detail),
            };
            let retry_after = match &failure {
                LastFailure::Answer(answer) => transport::retry_after(&answer.headers),
                LastFailure::Transport(_) => None,
            };
            let Some(pause) = self.policy.pause_before(attempt, retry_after, deadline) else {
                return Err(FetchError::IdToken(describe_failure(&failure)));
            };
            tokio::time::sleep(pause).await;
            attempt += 1;
        }
    }
}

fn describe_failure(failure: &LastFailure) -> String {
    match failure {
        LastFailure::Transport(detail) => detail.clone(),
        LastFailure::Answer(answer) => match broker_error(answer) {
            Some((code, _, request_id)) => format!(
                "HTTP {} {} (request_id {})",
                answer.status,
                code.as_deref().unwrap_or("-"),
                request_id.as_deref().unwrap_or("-")
            ),
            None => format!("HTTP {}", answer.status),
        },
    }
}

/// The JSON body of `POST /issue`: the job's repository and commit, and
/// the optional fields only when given.
pub(super) fn request_body(args: &FetchArgs, runner: &RunnerEnv, token: &SecretString) -> Vec<u8> {
    let given = |value: Option<&String>| value.filter(|value| !value.is_empty()).cloned();
    let request = IssueRequest {
        duration_seconds: args.duration_seconds.map(u64::from),
        job_id: given(args.job_id.as_ref()).map(JobId::Text),
        oidc_token: Some(token.clone()),
        // Checked for duplicates before the first attempt (`fetch`).
        permissions: super::requested_permissions(&args.permissions)
            .ok()
            .flatten(),
        repo: Some(runner.repository.clone()),
        role: given(args.role.as_ref()),
        sha: Some(runner.sha.clone()),
    };
    // Writing strings and integers into a Vec cannot fail.
    serde_json::to_vec(&request).unwrap_or_default()
}
