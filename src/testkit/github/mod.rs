//! A loopback stand-in for GitHub's REST API: the operations the broker's
//! GitHub App client uses, answered with bodies built from GitHub's own
//! published examples (`src/testkit/github/*.json`, taken from the OpenAPI
//! description in `tests/fixtures/github-api/`), so they have the shape the
//! real API answers. It is plainly fake: its tokens start `ghs_devfake`, its
//! App is `attestation-broker-dev`, and its key is generated at start.
//!
//! - App authentication: `GET /app`, the installation lookup and token
//!   creation want an RS256 App JWT signed by the App's key (`iss` = the
//!   App id or client id, `exp` at most 10 minutes after `iat`); anything
//!   else is a 401.
//! - Installation tokens: created for repositories of the installation and
//!   permissions the App was granted (422 otherwise); revoked by
//!   `DELETE /installation/token`; a revoked or unknown token is a 401.
//! - Repository data (check runs per commit, pull requests per commit, pull
//!   requests, reviews) as configured, for a token that reaches the
//!   repository with the permission; conditional requests (`ETag`,
//!   `If-None-Match` → 304) as GitHub does.
//! - Faults per operation ([`GithubFault`]): once per queued fault, or on
//!   every call while a standing fault is set.
//! - Every exchange is recorded ([`Exchange`]): method, path, query,
//!   headers and body of the request, status and body of the answer.
//!
//! This file holds the stand-in's state and its handle; `serve` answers.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use base64::Engine as _;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

mod serve;

use super::{KitError, base_url, bind_loopback, lock, loopback_addr, spawn_server};
use crate::api::{Access, Permissions};
use crate::github::Operation;

/// Prefix of every token the stand-in issues.
pub const FAKE_TOKEN_PREFIX: &str = "ghs_devfake";
/// The stand-in App's slug.
pub const APP_SLUG: &str = "attestation-broker-dev";
/// The stand-in App's numeric id.
pub const APP_ID: u64 = 424_242;
/// The stand-in App's client id.
pub const CLIENT_ID: &str = "Iv1.devfake0000000001";
/// Rate-limit budget per hour the stand-in announces.
const RATE_LIMIT: i64 = 5000;

/// A failure to serve instead of the answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GithubFault {
    /// 502 with GitHub's error body.
    ServerError,
    /// Accepts the request and never answers.
    Hang,
    /// 403 with `retry-after` (a secondary rate limit).
    SecondaryRateLimit {
        /// The `retry-after` seconds.
        retry_after: u64,
    },
    /// 403 with `x-ratelimit-remaining: 0` (the primary rate limit).
    PrimaryRateLimit,
    /// 422, GitHub's validation error.
    Unprocessable,
}

/// One check run on a commit.
#[derive(Clone, Debug)]
pub struct CheckRunSpec {
    /// The run's name.
    pub name: String,
    /// `queued`, `in_progress` or `completed`.
    pub status: String,
    /// `success`, `failure`, … when completed.
    pub conclusion: Option<String>,
    /// Slug of the App that created the run.
    pub app_slug: String,
}

impl CheckRunSpec {
    /// A completed run with `conclusion` by the App `app_slug`.
    pub fn completed(name: &str, conclusion: &str, app_slug: &str) -> Self {
        Self {
            name: name.to_owned(),
            status: "completed".to_owned(),
            conclusion: Some(conclusion.to_owned()),
            app_slug: app_slug.to_owned(),
        }
    }

    /// A run still going.
    pub fn in_progress(name: &str, app_slug: &str) -> Self {
        Self {
            name: name.to_owned(),
            status: "in_progress".to_owned(),
            conclusion: None,
            app_slug: app_slug.to_owned(),
        }
    }
}

/// A pull request.
#[derive(Clone, Debug)]
pub struct PullSpec {
    /// Its number.
    pub number: u64,
    /// Author's user id and login.
    pub author: (u64, String),
    /// The head commit.
    pub head_sha: String,
    /// The merge commit, once merged.
    pub merge_commit_sha: Option<String>,
    /// Whether it was merged.
    pub merged: bool,
}

/// A review.
#[derive(Clone, Debug)]
pub struct ReviewSpec {
    /// Reviewer's user id and login.
    pub reviewer: (u64, String),
    /// `APPROVED`, `CHANGES_REQUESTED`, `COMMENTED`, `DISMISSED`, `PENDING`.
    pub state: String,
    /// The commit reviewed.
    pub commit_id: String,
}

impl ReviewSpec {
    /// A review by user `id` (login `user-ID`).
    pub fn new(id: u64, state: &str, commit_id: &str) -> Self {
        Self {
            reviewer: (id, format!("user-{id}")),
            state: state.to_owned(),
            commit_id: commit_id.to_owned(),
        }
    }
}

/// One request and its answer, as the stand-in saw them.
#[derive(Clone, Debug)]
pub struct Exchange {
    /// The operation, when the path was one the stand-in knows.
    pub operation: Option<Operation>,
    /// `GET`, `POST`, `DELETE`.
    pub method: String,
    /// The path, percent-encoded as sent.
    pub path: String,
    /// The query string, if any.
    pub query: Option<String>,
    /// Request headers, names lowercase, in order.
    pub headers: Vec<(String, String)>,
    /// The request body.
    pub body: Vec<u8>,
    /// The answer's status (0 while a hanging request waits).
    pub status: u16,
    /// The answer's body, when it had one.
    pub response: Option<Value>,
}

impl Exchange {
    /// The first value of request header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// The value of query parameter `name`.
    pub fn query_param(&self, name: &str) -> Option<String> {
        url::form_urlencoded::parse(self.query.as_deref().unwrap_or_default().as_bytes())
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.into_owned())
    }
}

/// An issued token's state.
#[derive(Clone, Debug)]
struct TokenState {
    owner: String,
    repositories: BTreeSet<String>,
    permissions: Permissions,
    revoked: bool,
    internal_only: bool,
}

/// An installation: its id and the repositories it covers (lowercase names).
#[derive(Clone, Debug)]
struct Installation {
    id: u64,
    owner: String,
    repositories: BTreeSet<String>,
}

type RepoKey = (String, String);

struct Inner {
    decoding: jsonwebtoken::DecodingKey,
    key_pem: String,
    permissions: Mutex<Permissions>,
    installations: Mutex<BTreeMap<String, Installation>>,
    tokens: Mutex<HashMap<String, TokenState>>,
    check_runs: Mutex<HashMap<RepoKey, Vec<CheckRunSpec>>>,
    commit_pulls: Mutex<HashMap<RepoKey, Vec<u64>>>,
    pulls: Mutex<HashMap<(String, u64), PullSpec>>,
    reviews: Mutex<HashMap<(String, u64), Vec<ReviewSpec>>>,
    queued: Mutex<HashMap<Operation, VecDeque<GithubFault>>>,
    standing: Mutex<HashMap<Operation, GithubFault>>,
    exchanges: Mutex<Vec<Exchange>>,
    next_id: AtomicU64,
    remaining: AtomicI64,
}

/// The running stand-in; stops when dropped.
pub struct GithubStandIn {
    url: url::Url,
    inner: Arc<Inner>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for GithubStandIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GithubStandIn")
            .field("url", &self.url.as_str())
            .finish_non_exhaustive()
    }
}

impl GithubStandIn {
    /// Starts on 127.0.0.1:0 with a fresh App key, App permissions
    /// `checks: read, contents: write, pull_requests: write, issues: write`
    /// and no installation.
    pub async fn start() -> Result<Self, KitError> {
        Self::start_on(bind_loopback().await?).await
    }

    /// Serves on `listener` (loopback only).
    pub async fn start_on(listener: TcpListener) -> Result<Self, KitError> {
        let url = url::Url::parse(&base_url(loopback_addr(&listener)?))
            .map_err(|err| KitError::Listener(std::io::Error::other(err)))?;
        let (key_pem, decoding) = tokio::task::spawn_blocking(generate_app_key)
            .await
            .map_err(|_| KitError::Key)??;
        let permissions: Permissions = [
            ("checks", Access::Read),
            ("contents", Access::Write),
            ("issues", Access::Write),
            ("pull_requests", Access::Write),
        ]
        .into_iter()
        .map(|(name, access)| (name.to_owned(), access))
        .collect();
        let inner = Arc::new(Inner {
            decoding,
            key_pem,
            permissions: Mutex::new(permissions),
            installations: Mutex::default(),
            tokens: Mutex::default(),
            check_runs: Mutex::default(),
            commit_pulls: Mutex::default(),
            pulls: Mutex::default(),
            reviews: Mutex::default(),
            queued: Mutex::default(),
            standing: Mutex::default(),
            exchanges: Mutex::default(),
            next_id: AtomicU64::new(1000),
            remaining: AtomicI64::new(RATE_LIMIT),
        });
        let router = Router::new()
            .fallback(serve::handle)
            .with_state(Arc::clone(&inner));
        let task = spawn_server(listener, router, "test-github");
        Ok(Self { url, inner, task })
    }

    /// The API root, e.g. `http://127.0.0.1:41235/`: `[github] api_url`.
    pub fn url(&self) -> &url::Url {
        &self.url
    }

    /// The App's private key, PKCS#8 PEM: `[github] private_key_file`.
    pub fn app_key_pem(&self) -> &str {
        &self.inner.key_pem
    }

    /// Replaces the App's granted permissions.
    pub fn set_app_permissions(&self, permissions: Permissions) {
        *lock(&self.inner.permissions) = permissions;
    }

    /// Installs the App on `owner` for `repositories` (names); returns the
    /// installation id.
    pub fn install(&self, owner: &str, repositories: &[&str]) -> u64 {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let installation = Installation {
            id,
            owner: owner.to_owned(),
            repositories: repositories
                .iter()
                .map(|name| name.to_ascii_lowercase())
                .collect(),
        };
        lock(&self.inner.installations).insert(owner.to_ascii_lowercase(), installation);
        id
    }

    /// Removes the App's installation on `owner`.
    pub fn uninstall(&self, owner: &str) {
        lock(&self.inner.installations).remove(&owner.to_ascii_lowercase());
    }

    /// Sets the check runs of `repo` (`owner/name`) at `sha`, oldest first.
    pub fn set_check_runs(&self, repo: &str, sha: &str, runs: Vec<CheckRunSpec>) {
        lock(&self.inner.check_runs).insert((repo.to_ascii_lowercase(), sha.to_owned()), runs);
    }

    /// Adds a pull request of `repo`; when `associated_with` is given, the
    /// commit-pulls listing of that sha includes it.
    pub fn add_pull(&self, repo: &str, pull: PullSpec, associated_with: Option<&str>) {
        let repo = repo.to_ascii_lowercase();
        if let Some(sha) = associated_with {
            lock(&self.inner.commit_pulls)
                .entry((repo.clone(), sha.to_owned()))
                .or_default()
                .push(pull.number);
        }
        lock(&self.inner.pulls).insert((repo, pull.number), pull);
    }

    /// Sets the reviews of pull request `number` of `repo`, oldest first.
    pub fn set_reviews(&self, repo: &str, number: u64, reviews: Vec<ReviewSpec>) {
        lock(&self.inner.reviews).insert((repo.to_ascii_lowercase(), number), reviews);
    }

    /// The next `count` calls of `operation` fail with `fault`.
    pub fn fail_next(&self, operation: Operation, fault: GithubFault, count: usize) {
        lock(&self.inner.queued)
            .entry(operation)
            .or_default()
            .extend(std::iter::repeat_n(fault, count));
    }

    /// Every call of `operation` fails with `fault` until set to `None`.
    pub fn set_fault(&self, operation: Operation, fault: Option<GithubFault>) {
        let mut standing = lock(&self.inner.standing);
        match fault {
            Some(fault) => standing.insert(operation, fault),
            None => standing.remove(&operation),
        };
    }

    /// Every exchange so far.
    pub fn exchanges(&self) -> Vec<Exchange> {
        lock(&self.inner.exchanges).clone()
    }

    /// The exchanges of `operation` so far.
    pub fn calls(&self, operation: Operation) -> Vec<Exchange> {
        self.exchanges()
            .into_iter()
            .filter(|exchange| exchange.operation == Some(operation))
            .collect()
    }

    /// Every token issued for callers (not the broker's internal read-only
    /// ones), in order, with whether it was revoked.
    pub fn issued_tokens(&self) -> Vec<(String, bool)> {
        let exchanges = self.exchanges();
        let tokens = lock(&self.inner.tokens);
        exchanges
            .iter()
            .filter(|exchange| exchange.operation == Some(Operation::AccessToken))
            .filter_map(|exchange| exchange.response.as_ref()?.get("token")?.as_str())
            .filter_map(|token| {
                let state = tokens.get(token)?;
                (!state.internal_only).then(|| (token.to_owned(), state.revoked))
            })
            .collect()
    }

    /// Whether `token` is revoked (`None`: never issued).
    pub fn is_revoked(&self, token: &str) -> Option<bool> {
        lock(&self.inner.tokens)
            .get(token)
            .map(|state| state.revoked)
    }

    /// Stops the server.
    pub fn shutdown(self) {}
}

impl Drop for GithubStandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A fresh RSA 2048 App key: PKCS#8 PEM and the key that verifies its JWTs.
fn generate_app_key() -> Result<(String, jsonwebtoken::DecodingKey), KitError> {
    use aws_lc_rs::encoding::AsDer as _;
    use aws_lc_rs::signature::KeyPair as _;
    let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
        .map_err(|_| KitError::Key)?;
    let der = pair.as_der().map_err(|_| KitError::Key)?;
    let body = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for chunk in body.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(chunk));
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    let public = pair.public_key();
    let decoding = jsonwebtoken::DecodingKey::from_rsa_raw_components(
        public.modulus().big_endian_without_leading_zero(),
        public.exponent().big_endian_without_leading_zero(),
    );
    Ok((pem, decoding))
}
