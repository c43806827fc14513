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

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::{KitError, base_url, bind_loopback, lock, loopback_addr, random_string, spawn_server};
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
/// GitHub's documentation link in error bodies.
const DOCS: &str = "https://docs.github.com/rest";
/// Rate-limit budget per hour the stand-in announces.
const RATE_LIMIT: i64 = 5000;

const APP_TEMPLATE: &str = include_str!("github/app.json");
const INSTALLATION_TEMPLATE: &str = include_str!("github/installation.json");
const ACCESS_TOKEN_TEMPLATE: &str = include_str!("github/access_token.json");
const REPOSITORY_TEMPLATE: &str = include_str!("github/repository.json");
const CHECK_RUN_TEMPLATE: &str = include_str!("github/check_run.json");
const PULL_SIMPLE_TEMPLATE: &str = include_str!("github/pull_simple.json");
const PULL_TEMPLATE: &str = include_str!("github/pull.json");
const REVIEW_TEMPLATE: &str = include_str!("github/review.json");

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
            .fallback(handle)
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

fn template(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

fn rfc3339(at: SystemTime) -> String {
    let seconds = at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    time::OffsetDateTime::from_unix_timestamp(i64::try_from(seconds).unwrap_or(0))
        .ok()
        .and_then(|at| at.format(&format).ok())
        .unwrap_or_default()
}

/// Sets `value[path…] = new` when every step exists.
fn set(value: &mut Value, path: &[&str], new: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut at = value;
    for step in parents {
        match at.get_mut(*step) {
            Some(next) => at = next,
            None => return,
        }
    }
    if let Some(object) = at.as_object_mut() {
        object.insert((*last).to_owned(), new);
    }
}

fn error_body(message: &str, status: StatusCode) -> Value {
    json!({
        "message": message,
        "documentation_url": DOCS,
        "status": status.as_u16().to_string(),
    })
}

/// What the router understood of a request.
struct Route {
    operation: Operation,
    owner: String,
    repo: String,
    rest: Vec<String>,
}

fn route(method: &Method, path: &str) -> Option<Route> {
    let segments: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .map(percent_encoding_decode)
        .collect();
    let parts: Vec<&str> = segments.iter().map(String::as_str).collect();
    let plain = |operation| Route {
        operation,
        owner: String::new(),
        repo: String::new(),
        rest: Vec::new(),
    };
    let repo = |operation, owner: &str, repo: &str, rest: &[&str]| Route {
        operation,
        owner: owner.to_owned(),
        repo: repo.to_owned(),
        rest: rest.iter().map(|part| (*part).to_owned()).collect(),
    };
    match (method.as_str(), parts.as_slice()) {
        ("GET", ["app"]) => Some(plain(Operation::App)),
        ("POST", ["app", "installations", id, "access_tokens"]) => Some(Route {
            rest: vec![(*id).to_owned()],
            ..plain(Operation::AccessToken)
        }),
        ("DELETE", ["installation", "token"]) => Some(plain(Operation::Revoke)),
        ("GET", ["repos", owner, name, "installation"]) => {
            Some(repo(Operation::Installation, owner, name, &[]))
        }
        ("GET", ["repos", owner, name, "commits", sha, "check-runs"]) => {
            Some(repo(Operation::CheckRuns, owner, name, &[sha]))
        }
        ("GET", ["repos", owner, name, "commits", sha, "pulls"]) => {
            Some(repo(Operation::CommitPulls, owner, name, &[sha]))
        }
        ("GET", ["repos", owner, name, "pulls", number]) => {
            Some(repo(Operation::Pull, owner, name, &[number]))
        }
        ("GET", ["repos", owner, name, "pulls", number, "reviews"]) => {
            Some(repo(Operation::Reviews, owner, name, &[number]))
        }
        _ => None,
    }
}

fn percent_encoding_decode(segment: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", segment.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default()
}

/// An answer being built: status, body, extra headers.
struct Reply {
    status: StatusCode,
    body: Option<Value>,
    headers: Vec<(&'static str, String)>,
}

impl Reply {
    fn json(status: StatusCode, body: Value) -> Self {
        Self {
            status,
            body: Some(body),
            headers: Vec::new(),
        }
    }
    fn error(status: StatusCode, message: &str) -> Self {
        Self::json(status, error_body(message, status))
    }
}

async fn handle(
    State(inner): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let route = route(&method, uri.path());
    let index = {
        let mut exchanges = lock(&inner.exchanges);
        exchanges.push(Exchange {
            operation: route.as_ref().map(|route| route.operation),
            method: method.to_string(),
            path: uri.path().to_owned(),
            query: uri.query().map(str::to_owned),
            headers: headers
                .iter()
                .map(|(name, value)| {
                    (
                        name.as_str().to_owned(),
                        String::from_utf8_lossy(value.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body: body.to_vec(),
            status: 0,
            response: None,
        });
        exchanges.len() - 1
    };
    let reply = match &route {
        None => Reply::error(StatusCode::NOT_FOUND, "Not Found"),
        Some(route) => match fault(&inner, route.operation) {
            Some(GithubFault::Hang) => std::future::pending().await,
            Some(fault) => fault_reply(fault),
            None => answer(&inner, route, &headers, &body, uri.query()),
        },
    };
    // Conditional requests: a 304 when the ETag matches, without the body.
    let etag = reply
        .body
        .as_ref()
        .filter(|_| reply.status == StatusCode::OK && method == Method::GET)
        .map(|body| {
            let digest = Sha256::digest(body.to_string().as_bytes());
            format!(
                "W/\"{}\"",
                hex::encode(digest.get(..16).unwrap_or_default())
            )
        });
    let not_modified = etag.as_ref().is_some_and(|etag| {
        headers
            .get(header::IF_NONE_MATCH)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|sent| sent == etag)
    });
    let (status, body) = if not_modified {
        (StatusCode::NOT_MODIFIED, None)
    } else {
        (reply.status, reply.body)
    };
    if !not_modified {
        inner.remaining.fetch_sub(1, Ordering::Relaxed);
    }
    if let Some(exchange) = lock(&inner.exchanges).get_mut(index) {
        exchange.status = status.as_u16();
        exchange.response.clone_from(&body);
    }
    let mut response = match &body {
        Some(body) => (status, axum::Json(body.clone())).into_response(),
        None => status.into_response(),
    };
    let out = response.headers_mut();
    let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
    let mut set_header = |name: &'static str, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            out.insert(name, value);
        }
    };
    set_header("x-github-request-id", format!("FAKE:{id:X}:DEV"));
    set_header("x-ratelimit-limit", RATE_LIMIT.to_string());
    set_header("x-ratelimit-reset", (now_unix() + 3600).to_string());
    let mut remaining = inner.remaining.load(Ordering::Relaxed).max(0).to_string();
    for (name, value) in reply.headers {
        if name == "x-ratelimit-remaining" {
            remaining = value;
        } else {
            set_header(name, value);
        }
    }
    set_header("x-ratelimit-remaining", remaining);
    if let Some(etag) = etag {
        set_header("etag", etag);
    }
    response
}

fn fault(inner: &Inner, operation: Operation) -> Option<GithubFault> {
    let queued = lock(&inner.queued)
        .get_mut(&operation)
        .and_then(VecDeque::pop_front);
    queued.or_else(|| lock(&inner.standing).get(&operation).copied())
}

fn fault_reply(fault: GithubFault) -> Reply {
    match fault {
        GithubFault::ServerError | GithubFault::Hang => {
            Reply::error(StatusCode::BAD_GATEWAY, "Server Error")
        }
        GithubFault::SecondaryRateLimit { retry_after } => {
            let mut reply = Reply::error(
                StatusCode::FORBIDDEN,
                "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
            );
            reply.headers.push(("retry-after", retry_after.to_string()));
            reply
        }
        GithubFault::PrimaryRateLimit => {
            let mut reply = Reply::error(StatusCode::FORBIDDEN, "API rate limit exceeded");
            reply
                .headers
                .push(("x-ratelimit-remaining", "0".to_owned()));
            reply
        }
        GithubFault::Unprocessable => Reply::json(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"message": "Validation Failed", "documentation_url": DOCS, "errors": [{"code": "invalid"}]}),
        ),
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

/// Whether the request carries a valid App JWT.
fn app_authenticated(inner: &Inner, headers: &HeaderMap) -> bool {
    let Some(jwt) = bearer(headers) else {
        return false;
    };
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.validate_aud = false;
    validation.set_required_spec_claims(&["exp", "iat", "iss"]);
    validation.set_issuer(&[APP_ID.to_string().as_str(), CLIENT_ID]);
    validation.leeway = 0;
    let Ok(data) = jsonwebtoken::decode::<Value>(jwt, &inner.decoding, &validation) else {
        return false;
    };
    let claim = |name: &str| data.claims.get(name).and_then(Value::as_u64);
    match (claim("iat"), claim("exp")) {
        // GitHub: at most ten minutes of life, not issued in the future.
        (Some(iat), Some(exp)) => exp > iat && exp - iat <= 600 && iat <= now_unix() + 60,
        _ => false,
    }
}

fn answer(
    inner: &Inner,
    route: &Route,
    headers: &HeaderMap,
    body: &[u8],
    query: Option<&str>,
) -> Reply {
    let app_operation = matches!(
        route.operation,
        Operation::App | Operation::Installation | Operation::AccessToken
    );
    if app_operation && !app_authenticated(inner, headers) {
        return Reply::error(
            StatusCode::UNAUTHORIZED,
            "A JSON web token could not be decoded",
        );
    }
    match route.operation {
        Operation::App => app(inner),
        Operation::Installation => installation(inner, route),
        Operation::AccessToken => access_token(inner, route, body),
        Operation::Revoke => revoke(inner, headers),
        Operation::CheckRuns | Operation::CommitPulls | Operation::Pull | Operation::Reviews => {
            repository_data(inner, route, headers, query)
        }
    }
}

fn permissions_json(permissions: &Permissions) -> Value {
    Value::Object(
        permissions
            .iter()
            .map(|(name, access)| (name.clone(), Value::from(access.as_str())))
            .collect(),
    )
}

fn app(inner: &Inner) -> Reply {
    let mut body = template(APP_TEMPLATE);
    set(&mut body, &["id"], json!(APP_ID));
    set(&mut body, &["slug"], json!(APP_SLUG));
    set(&mut body, &["client_id"], json!(CLIENT_ID));
    set(
        &mut body,
        &["name"],
        json!("attestation-broker (development stand-in)"),
    );
    set(
        &mut body,
        &["permissions"],
        permissions_json(&lock(&inner.permissions)),
    );
    Reply::json(StatusCode::OK, body)
}

fn installation(inner: &Inner, route: &Route) -> Reply {
    let installations = lock(&inner.installations);
    let Some(found) = installations
        .get(&route.owner.to_ascii_lowercase())
        .filter(|found| {
            found
                .repositories
                .contains(&route.repo.to_ascii_lowercase())
        })
    else {
        return Reply::error(StatusCode::NOT_FOUND, "Not Found");
    };
    let mut body = template(INSTALLATION_TEMPLATE);
    set(&mut body, &["id"], json!(found.id));
    set(&mut body, &["app_id"], json!(APP_ID));
    set(&mut body, &["app_slug"], json!(APP_SLUG));
    set(&mut body, &["account", "login"], json!(found.owner));
    set(&mut body, &["repository_selection"], json!("selected"));
    set(
        &mut body,
        &["permissions"],
        permissions_json(&lock(&inner.permissions)),
    );
    Reply::json(StatusCode::OK, body)
}

fn access_token(inner: &Inner, route: &Route, body: &[u8]) -> Reply {
    let id: u64 = route
        .rest
        .first()
        .and_then(|id| id.parse().ok())
        .unwrap_or(0);
    let Some(found) = lock(&inner.installations)
        .values()
        .find(|found| found.id == id)
        .cloned()
    else {
        return Reply::error(StatusCode::NOT_FOUND, "Not Found");
    };
    let request: Value = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(body) {
            Ok(request) => request,
            Err(_) => return Reply::error(StatusCode::BAD_REQUEST, "Problems parsing JSON"),
        }
    };
    let refused = |message: &str| {
        Reply::json(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"message": message, "documentation_url": DOCS}),
        )
    };
    let repositories: BTreeSet<String> = match request.get("repositories") {
        None => found.repositories.clone(),
        Some(Value::Array(names)) => names
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_ascii_lowercase)
            .collect(),
        Some(_) => return refused("repositories must be an array"),
    };
    if repositories
        .iter()
        .any(|name| !found.repositories.contains(name))
    {
        return refused(
            "There is at least one repository that does not exist or is not accessible to the parent installation.",
        );
    }
    let granted = lock(&inner.permissions).clone();
    let permissions: Permissions = match request.get("permissions") {
        None => granted.clone(),
        Some(Value::Object(asked)) => {
            let mut permissions = Permissions::new();
            for (name, level) in asked {
                let access = match level.as_str() {
                    Some("read") => Access::Read,
                    Some("write") => Access::Write,
                    Some("admin") => Access::Admin,
                    _ => return refused("The permissions requested are not valid."),
                };
                permissions.insert(name.clone(), access);
            }
            permissions
        }
        Some(_) => return refused("permissions must be an object"),
    };
    if permissions
        .iter()
        .any(|(name, level)| granted.get(name).is_none_or(|have| have < level))
    {
        return refused("The permissions requested are not granted to this installation.");
    }
    let token = format!(
        "{FAKE_TOKEN_PREFIX}_{}",
        random_string(
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
            28
        )
    );
    // The broker's internal read-only tokens ask exactly checks + pull_requests read.
    let internal_only = permissions.len() == 2
        && permissions.get("checks") == Some(&Access::Read)
        && permissions.get("pull_requests") == Some(&Access::Read);
    lock(&inner.tokens).insert(
        token.clone(),
        TokenState {
            owner: found.owner.to_ascii_lowercase(),
            repositories: repositories.clone(),
            permissions: permissions.clone(),
            revoked: false,
            internal_only,
        },
    );
    let mut body = template(ACCESS_TOKEN_TEMPLATE);
    set(&mut body, &["token"], json!(token));
    set(
        &mut body,
        &["expires_at"],
        json!(rfc3339(SystemTime::now() + Duration::from_secs(3600))),
    );
    set(&mut body, &["permissions"], permissions_json(&permissions));
    set(&mut body, &["repository_selection"], json!("selected"));
    let repository_bodies: Vec<Value> = repositories
        .iter()
        .map(|name| {
            let mut repository = template(REPOSITORY_TEMPLATE);
            set(&mut repository, &["name"], json!(name));
            set(
                &mut repository,
                &["full_name"],
                json!(format!("{}/{name}", found.owner)),
            );
            set(&mut repository, &["owner", "login"], json!(found.owner));
            repository
        })
        .collect();
    set(
        &mut body,
        &["repositories"],
        Value::Array(repository_bodies),
    );
    Reply::json(StatusCode::CREATED, body)
}

fn revoke(inner: &Inner, headers: &HeaderMap) -> Reply {
    let mut tokens = lock(&inner.tokens);
    match bearer(headers).and_then(|token| tokens.get_mut(token)) {
        Some(state) if !state.revoked => {
            state.revoked = true;
            Reply {
                status: StatusCode::NO_CONTENT,
                body: None,
                headers: Vec::new(),
            }
        }
        _ => Reply::error(StatusCode::UNAUTHORIZED, "Bad credentials"),
    }
}

fn repository_data(
    inner: &Inner,
    route: &Route,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Reply {
    let owner = route.owner.to_ascii_lowercase();
    let name = route.repo.to_ascii_lowercase();
    let needed = match route.operation {
        Operation::CheckRuns => "checks",
        _ => "pull_requests",
    };
    {
        let tokens = lock(&inner.tokens);
        let Some(state) = bearer(headers)
            .and_then(|token| tokens.get(token))
            .filter(|state| !state.revoked)
        else {
            return Reply::error(StatusCode::UNAUTHORIZED, "Bad credentials");
        };
        if state.owner != owner
            || !state.repositories.contains(&name)
            || !state.permissions.contains_key(needed)
        {
            return Reply::error(
                StatusCode::FORBIDDEN,
                "Resource not accessible by integration",
            );
        }
    }
    let repo = format!("{owner}/{name}");
    let param = |key: &str| {
        url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .find(|(name, _)| name == key)
            .map(|(_, value)| value.into_owned())
    };
    let first = route.rest.first().cloned().unwrap_or_default();
    match route.operation {
        Operation::CheckRuns => {
            let runs = lock(&inner.check_runs)
                .get(&(repo.clone(), first.clone()))
                .cloned()
                .unwrap_or_default();
            let wanted = param("check_name");
            let latest_only = param("filter").as_deref() != Some("all");
            let mut listed: Vec<(usize, &CheckRunSpec)> = runs
                .iter()
                .enumerate()
                .filter(|(_, run)| wanted.as_ref().is_none_or(|name| *name == run.name))
                .collect();
            if latest_only {
                // GitHub's `latest`: the most recent run per name and App.
                let mut seen = BTreeSet::new();
                listed.reverse();
                listed.retain(|(_, run)| seen.insert((run.name.clone(), run.app_slug.clone())));
                listed.reverse();
            }
            let bodies: Vec<Value> = listed
                .iter()
                .map(|(index, run)| check_run_body(&repo, &first, *index, run))
                .collect();
            Reply::json(
                StatusCode::OK,
                json!({"total_count": bodies.len(), "check_runs": bodies}),
            )
        }
        Operation::CommitPulls => {
            let numbers = lock(&inner.commit_pulls)
                .get(&(repo.clone(), first))
                .cloned()
                .unwrap_or_default();
            let pulls = lock(&inner.pulls);
            let bodies: Vec<Value> = numbers
                .iter()
                .filter_map(|number| pulls.get(&(repo.clone(), *number)))
                .map(|pull| pull_body(PULL_SIMPLE_TEMPLATE, &repo, pull))
                .collect();
            Reply::json(StatusCode::OK, Value::Array(bodies))
        }
        Operation::Pull => {
            let number: u64 = first.parse().unwrap_or(0);
            match lock(&inner.pulls).get(&(repo.clone(), number)) {
                Some(pull) => Reply::json(StatusCode::OK, pull_body(PULL_TEMPLATE, &repo, pull)),
                None => Reply::error(StatusCode::NOT_FOUND, "Not Found"),
            }
        }
        _ => {
            let number: u64 = first.parse().unwrap_or(0);
            if !lock(&inner.pulls).contains_key(&(repo.clone(), number)) {
                return Reply::error(StatusCode::NOT_FOUND, "Not Found");
            }
            let reviews = lock(&inner.reviews)
                .get(&(repo.clone(), number))
                .cloned()
                .unwrap_or_default();
            let per_page: usize = param("per_page")
                .and_then(|value| value.parse().ok())
                .unwrap_or(30)
                .clamp(1, 100);
            let page: usize = param("page")
                .and_then(|value| value.parse().ok())
                .unwrap_or(1)
                .max(1);
            let bodies: Vec<Value> = reviews
                .iter()
                .enumerate()
                .skip((page - 1) * per_page)
                .take(per_page)
                .map(|(index, review)| review_body(&repo, number, index, review))
                .collect();
            Reply::json(StatusCode::OK, Value::Array(bodies))
        }
    }
}

fn check_run_body(repo: &str, sha: &str, index: usize, run: &CheckRunSpec) -> Value {
    let mut body = template(CHECK_RUN_TEMPLATE);
    set(&mut body, &["id"], json!(index + 1));
    set(&mut body, &["name"], json!(run.name));
    set(&mut body, &["head_sha"], json!(sha));
    set(&mut body, &["status"], json!(run.status));
    set(&mut body, &["conclusion"], json!(run.conclusion));
    if run.conclusion.is_none() {
        set(&mut body, &["completed_at"], Value::Null);
    }
    set(&mut body, &["app", "slug"], json!(run.app_slug));
    set(
        &mut body,
        &["url"],
        json!(format!(
            "https://api.github.com/repos/{repo}/check-runs/{}",
            index + 1
        )),
    );
    body
}

fn user_fields(body: &mut Value, path: &[&str], (id, login): &(u64, String)) {
    let mut id_path = path.to_vec();
    id_path.push("id");
    set(body, &id_path, json!(id));
    let mut login_path = path.to_vec();
    login_path.push("login");
    set(body, &login_path, json!(login));
}

fn pull_body(template_text: &str, repo: &str, pull: &PullSpec) -> Value {
    let mut body = template(template_text);
    set(&mut body, &["number"], json!(pull.number));
    set(&mut body, &["id"], json!(pull.number + 100_000));
    user_fields(&mut body, &["user"], &pull.author);
    set(&mut body, &["head", "sha"], json!(pull.head_sha));
    set(
        &mut body,
        &["merge_commit_sha"],
        json!(pull.merge_commit_sha),
    );
    set(
        &mut body,
        &["state"],
        json!(if pull.merged { "closed" } else { "open" }),
    );
    let merged_at = pull.merged.then_some("2026-11-20T10:00:00Z");
    set(&mut body, &["merged_at"], json!(merged_at));
    set(&mut body, &["merged"], json!(pull.merged));
    set(
        &mut body,
        &["url"],
        json!(format!(
            "https://api.github.com/repos/{repo}/pulls/{}",
            pull.number
        )),
    );
    body
}

fn review_body(repo: &str, number: u64, index: usize, review: &ReviewSpec) -> Value {
    let mut body = template(REVIEW_TEMPLATE);
    set(&mut body, &["id"], json!(index + 1));
    user_fields(&mut body, &["user"], &review.reviewer);
    set(&mut body, &["state"], json!(review.state));
    set(&mut body, &["commit_id"], json!(review.commit_id));
    set(
        &mut body,
        &["pull_request_url"],
        json!(format!(
            "https://api.github.com/repos/{repo}/pulls/{number}"
        )),
    );
    body
}
