//! Revoking installation tokens: `DELETE /installation/token`, authenticated
//! with the token itself.
//!
//! [`Revoker`] holds every token the broker issued until its revocation time
//! (memory only, a bounded count; a restart loses them and they then expire
//! on GitHub's clock, one hour after issue). A token GitHub already
//! considers invalid (401, 404) counts as revoked. A failed revocation is
//! retried a few times, a minute apart, then counted as `error`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use secrecy::SecretString;
use tokio::time::Instant;
use url::Url;

use super::GithubError;
use super::call::{Operation, Transport, endpoint};
use crate::metrics::Metrics;

/// Most tokens waiting for revocation; past it, no token is issued.
pub(crate) const MAX_PENDING_REVOCATIONS: usize = 100_000;
/// Attempts per token before it is counted as an error.
const MAX_ATTEMPTS: u32 = 3;
/// Wait between attempts.
const RETRY_DELAY: Duration = Duration::from_secs(60);
/// Revocations in flight at once.
const MAX_CONCURRENT: usize = 16;

/// What GitHub said to a revocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RevokeOutcome {
    /// 204: revoked now.
    Revoked,
    /// 401: the token was already invalid (revoked or expired).
    AlreadyInvalid,
    /// 404: GitHub does not know the token (or the API URL is wrong).
    NotFound,
}

/// Revokes `token` against `api`.
pub async fn revoke_token(
    transport: &Transport,
    api: &Url,
    token: &SecretString,
) -> Result<RevokeOutcome, GithubError> {
    let url = endpoint(api, &["installation", "token"]);
    let answer = transport
        .send(
            Operation::Revoke,
            Method::DELETE,
            url,
            Some(token),
            &[],
            None,
            &mut Vec::new(),
        )
        .await?;
    match answer.status {
        StatusCode::NO_CONTENT => Ok(RevokeOutcome::Revoked),
        StatusCode::UNAUTHORIZED => Ok(RevokeOutcome::AlreadyInvalid),
        StatusCode::NOT_FOUND => Ok(RevokeOutcome::NotFound),
        _ => Err(answer.error(Operation::Revoke)),
    }
}

/// One token waiting.
struct Pending {
    token: SecretString,
    attempts: u32,
}

/// Tokens waiting for revocation, by due time; cheap to clone.
#[derive(Clone)]
pub(super) struct Revoker(Arc<Inner>);

struct Inner {
    queue: Mutex<BTreeMap<(Instant, u64), Pending>>,
    sequence: AtomicU64,
    wake: tokio::sync::Notify,
    metrics: Metrics,
}

impl Revoker {
    pub(super) fn new(metrics: Metrics) -> Self {
        Self(Arc::new(Inner {
            queue: Mutex::new(BTreeMap::new()),
            sequence: AtomicU64::new(0),
            wake: tokio::sync::Notify::new(),
            metrics,
        }))
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, BTreeMap<(Instant, u64), Pending>> {
        self.0.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether another token can be scheduled.
    pub(super) fn has_room(&self) -> bool {
        self.pending() < MAX_PENDING_REVOCATIONS
    }

    /// Tokens waiting.
    pub(super) fn pending(&self) -> usize {
        self.queue().len()
    }

    /// Revokes `token` at `at`.
    pub(super) fn schedule(&self, token: SecretString, at: Instant) {
        self.push(Pending { token, attempts: 0 }, at);
    }

    fn push(&self, pending: Pending, at: Instant) {
        let sequence = self.0.sequence.fetch_add(1, Ordering::Relaxed);
        self.queue().insert((at, sequence), pending);
        self.0.wake.notify_one();
    }

    /// The tokens due at `now`, removed from the queue.
    fn take_due(&self, now: Instant) -> Vec<Pending> {
        let mut queue = self.queue();
        let mut due = Vec::new();
        while let Some(entry) = queue.first_entry() {
            if entry.key().0 > now {
                break;
            }
            due.push(entry.remove());
        }
        due
    }

    fn next_due(&self) -> Option<Instant> {
        self.queue().first_key_value().map(|(key, _)| key.0)
    }

    /// Revokes tokens as they fall due, forever.
    pub(super) async fn run(self, transport: Transport, api: Url) {
        let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT));
        loop {
            let now = Instant::now();
            for pending in self.take_due(now) {
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    return;
                };
                let revoker = self.clone();
                let transport = transport.clone();
                let api = api.clone();
                tokio::spawn(async move {
                    revoker.revoke(pending, &transport, &api).await;
                    drop(permit);
                });
            }
            match self.next_due() {
                Some(at) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        () = self.0.wake.notified() => {}
                    }
                }
                None => self.0.wake.notified().await,
            }
        }
    }

    async fn revoke(&self, mut pending: Pending, transport: &Transport, api: &Url) {
        pending.attempts += 1;
        match revoke_token(transport, api, &pending.token).await {
            Ok(_) => self.0.metrics.github_token_revoked("scheduled"),
            Err(err) if pending.attempts < MAX_ATTEMPTS => {
                tracing::warn!(error = %err, attempt = pending.attempts, "cannot revoke an issued GitHub token yet; will retry");
                self.push(pending, Instant::now() + RETRY_DELAY);
            }
            Err(err) => {
                self.0.metrics.github_token_revoked("error");
                tracing::error!(error = %err, "cannot revoke an issued GitHub token; it stays valid until GitHub expires it");
            }
        }
    }
}
