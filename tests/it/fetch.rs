//! `attestation-broker fetch` end to end: the real binary, run as a CI step
//! would run it (cleared environment, Actions variables, GITHUB_ENV /
//! GITHUB_OUTPUT files), against the real broker, a fake Actions runtime that
//! mints ID tokens from the harness issuer, and, for the retry cases, a flaky
//! proxy or a throttled STS.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::task::JoinHandle;

use crate::support::broker::{BIN, DEADLINE, field};
use crate::support::sts::Fault;
use crate::support::tokens::{AUDIENCE, CHECK_RUN_ID, REPOSITORY, SHA};
use crate::support::{Harness, ROLE_ARN};

/// The bearer token the fake runtime expects (ACTIONS_ID_TOKEN_REQUEST_TOKEN).
pub(crate) const RUNTIME_BEARER: &str = "runtime-request-token-5f1e";
/// The fetch client's exit codes (module doc of `src/fetch.rs`).
const EXIT_NOT_IN_ACTIONS: i32 = 3;
const EXIT_NO_ID_TOKEN: i32 = 4;
const EXIT_ID_TOKEN_FAILED: i32 = 5;
const EXIT_UNREACHABLE: i32 = 6;
const EXIT_REFUSED: i32 = 7;
const EXIT_MALFORMED: i32 = 8;
const EXIT_OUTPUT: i32 = 9;
const EXIT_USAGE: i32 = 64;

// --- fake Actions runtime --------------------------------------------------------

struct RuntimeInner {
    issuer: String,
    /// Claims set on every minted token (e.g. another `ref`).
    claims: Mutex<Vec<(String, Value)>>,
    /// `audience` query values seen (None when absent).
    audiences: Mutex<Vec<Option<String>>>,
    /// Bearer tokens that were refused.
    refused: Mutex<usize>,
}

/// The runtime's ID-token endpoint, as `ACTIONS_ID_TOKEN_REQUEST_URL` points
/// at it: checks the bearer, mints a token for the requested audience.
pub(crate) struct FakeRuntime {
    pub(crate) url: String,
    inner: Arc<RuntimeInner>,
    task: JoinHandle<()>,
}

impl FakeRuntime {
    pub(crate) async fn start(issuer: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/_apis/actionstoken/generate?api-version=2.0",
            listener.local_addr().unwrap()
        );
        let inner = Arc::new(RuntimeInner {
            issuer: issuer.to_owned(),
            claims: Mutex::new(Vec::new()),
            audiences: Mutex::new(Vec::new()),
            refused: Mutex::new(0),
        });
        let app = Router::new().fallback(mint).with_state(Arc::clone(&inner));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, inner, task }
    }

    fn set_claim(&self, name: &str, value: impl Into<Value>) {
        self.inner
            .claims
            .lock()
            .unwrap()
            .push((name.to_owned(), value.into()));
    }

    /// Audiences of the tokens minted so far.
    fn audiences(&self) -> Vec<Option<String>> {
        self.inner.audiences.lock().unwrap().clone()
    }

    pub(crate) fn minted(&self) -> usize {
        self.audiences().len()
    }

    fn refused(&self) -> usize {
        *self.inner.refused.lock().unwrap()
    }
}

impl Drop for FakeRuntime {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn mint(
    State(inner): State<Arc<RuntimeInner>>,
    Query(query): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    if bearer != Some(&format!("Bearer {RUNTIME_BEARER}")) || !query.contains_key("api-version") {
        *inner.refused.lock().unwrap() += 1;
        return (StatusCode::FORBIDDEN, "bad runtime token").into_response();
    }
    let audience = query.get("audience").cloned();
    inner.audiences.lock().unwrap().push(audience.clone());
    let mut token = crate::support::tokens::token(&inner.issuer)
        .claim("aud", audience.unwrap_or_else(|| AUDIENCE.to_owned()));
    for (name, value) in inner.claims.lock().unwrap().iter() {
        token = token.claim(name, value.clone());
    }
    axum::Json(json!({ "value": token.build() })).into_response()
}

// --- a proxy in front of the broker that fails the first requests ---------------

struct FlakyProxy {
    url: String,
    hits: Arc<Mutex<usize>>,
    task: JoinHandle<()>,
}

#[derive(Clone)]
struct ProxyState {
    upstream: String,
    fail_first: usize,
    status: StatusCode,
    hits: Arc<Mutex<usize>>,
    client: reqwest::Client,
}

impl FlakyProxy {
    /// Answers the first `fail_first` requests with a bare 503 (as a load
    /// balancer with no healthy backend would), then forwards to `upstream`.
    async fn start(upstream: &str, fail_first: usize) -> Self {
        Self::failing_with(upstream, fail_first, StatusCode::SERVICE_UNAVAILABLE).await
    }

    /// Like [`FlakyProxy::start`], failing with `status` (and `Retry-After: 1`).
    async fn failing_with(upstream: &str, fail_first: usize, status: StatusCode) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let hits = Arc::new(Mutex::new(0));
        let state = ProxyState {
            upstream: upstream.to_owned(),
            fail_first,
            status,
            hits: Arc::clone(&hits),
            client: reqwest::Client::builder().no_proxy().build().unwrap(),
        };
        let app = Router::new().fallback(forward).with_state(state);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, hits, task }
    }

    fn hits(&self) -> usize {
        *self.hits.lock().unwrap()
    }
}

impl Drop for FlakyProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(
    State(state): State<ProxyState>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let seen = {
        let mut hits = state.hits.lock().unwrap();
        *hits += 1;
        *hits
    };
    if seen <= state.fail_first {
        return (
            state.status,
            [(header::RETRY_AFTER, "1")],
            "no healthy upstream",
        )
            .into_response();
    }
    let mut request = state
        .client
        .post(format!("{}{}", state.upstream, uri.path()))
        .body(body);
    if let Some(content_type) = headers.get(header::CONTENT_TYPE) {
        request = request.header(header::CONTENT_TYPE, content_type);
    }
    let answer = request.send().await.unwrap();
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap();
    let request_id = answer
        .headers()
        .get("x-request-id")
        .map(|value| value.to_str().unwrap().to_owned());
    let bytes = answer.bytes().await.unwrap();
    let mut response = (status, bytes).into_response();
    if let Some(id) = request_id {
        response
            .headers_mut()
            .insert("x-request-id", id.parse().unwrap());
    }
    response
}

/// A "broker" that answers every request with a fixed 200 body.
async fn fixed_answer(body: &'static str) -> (String, JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = Router::new().fallback(move || async move {
        ([(header::CONTENT_TYPE, "application/json")], body).into_response()
    });
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, task)
}

// --- running the client as a CI step would ---------------------------------------

/// A job's environment: the runner's variables and its command files.
struct Job {
    dir: TempDir,
    env: BTreeMap<String, String>,
}

impl Job {
    fn new(runtime: &FakeRuntime) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let env_file = dir.path().join("github_env");
        let output_file = dir.path().join("github_output");
        std::fs::write(&env_file, "EARLIER_STEP=kept\n").unwrap();
        std::fs::write(&output_file, "").unwrap();
        let env = [
            ("GITHUB_ACTIONS", "true".to_owned()),
            ("GITHUB_REPOSITORY", REPOSITORY.to_owned()),
            ("GITHUB_SHA", SHA.to_owned()),
            ("GITHUB_ENV", env_file.display().to_string()),
            ("GITHUB_OUTPUT", output_file.display().to_string()),
            ("ACTIONS_ID_TOKEN_REQUEST_URL", runtime.url.clone()),
            ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", RUNTIME_BEARER.to_owned()),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect();
        Self { dir, env }
    }

    fn without(mut self, name: &str) -> Self {
        self.env.remove(name);
        self
    }

    fn with(mut self, name: &str, value: &str) -> Self {
        self.env.insert(name.to_owned(), value.to_owned());
        self
    }

    fn env_file(&self) -> PathBuf {
        self.dir.path().join("github_env")
    }

    fn output_file(&self) -> PathBuf {
        self.dir.path().join("github_output")
    }

    /// Runs `attestation-broker fetch ARGS` with exactly this environment.
    async fn fetch(&self, args: &[&str]) -> Outcome {
        run_fetch(&self.env, args).await
    }
}

/// Runs `attestation-broker fetch ARGS` with exactly the environment `env`.
async fn run_fetch(env: &BTreeMap<String, String>, args: &[&str]) -> Outcome {
    let mut command = tokio::process::Command::new(BIN);
    command
        .arg("fetch")
        .args(args)
        .env_clear()
        .envs(env)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let started = tokio::time::Instant::now();
    let output = tokio::time::timeout(DEADLINE * 4, command.output())
        .await
        .expect("fetch did not finish in time")
        .unwrap();
    Outcome {
        code: output.status.code(),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
        elapsed: started.elapsed(),
    }
}

impl Job {
    /// [`Job::fetch`] with stdout a pipe whose reading end is already closed
    /// (the reader went away before the credentials came).
    async fn fetch_into_closed_stdout(&self, args: &[&str]) -> Outcome {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let mut command = tokio::process::Command::new(BIN);
        command
            .arg("fetch")
            .args(args)
            .env_clear()
            .envs(&self.env)
            .stdin(std::process::Stdio::null())
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let started = tokio::time::Instant::now();
        // Not `output()`: it would replace stdout with a pipe of its own.
        let child = command.spawn().unwrap();
        let output = tokio::time::timeout(DEADLINE * 2, child.wait_with_output())
            .await
            .expect("fetch did not finish in time")
            .unwrap();
        Outcome {
            code: output.status.code(),
            stdout: String::new(),
            stderr: String::from_utf8(output.stderr).unwrap(),
            elapsed: started.elapsed(),
        }
    }
}

#[derive(Debug)]
struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

impl Outcome {
    fn assert_code(&self, code: i32) {
        assert_eq!(
            self.code,
            Some(code),
            "unexpected exit code\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
    }

    fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

/// The request id `fetch` printed with a refusal.
fn request_id_in(stderr: &str) -> String {
    let (_, rest) = stderr
        .split_once("(request_id ")
        .unwrap_or_else(|| unreachable!("no request id in:\n{stderr}"));
    rest.split(')').next().unwrap().to_owned()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

/// `NAME=value` lines of a command file, in order.
fn pairs(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(|line| {
            let (name, value) = line.split_once('=').unwrap();
            (name.to_owned(), value.to_owned())
        })
        .collect()
}

/// A broker with the default policy and a fake runtime minting from its issuer.
async fn setup() -> (Harness, FakeRuntime) {
    let harness = Harness::start().await;
    let runtime = FakeRuntime::start(&harness.jwks.issuer()).await;
    (harness, runtime)
}

/// The standard arguments plus the delivery flag.
fn args<'a>(broker_url: &'a str, mode: &'a str) -> Vec<&'a str> {
    vec![
        "--broker-url",
        broker_url,
        "--audience",
        AUDIENCE,
        "--role",
        "deploy",
        "--job-id",
        CHECK_RUN_ID,
        mode,
    ]
}

/// The first two stdout lines mask the secret and the session token, and
/// neither value appears anywhere else in the output.
fn assert_masked_first(outcome: &Outcome, secret: &str, token: &str) {
    let lines: Vec<&str> = outcome.stdout.lines().collect();
    assert!(lines.len() >= 2, "stdout:\n{}", outcome.stdout);
    assert_eq!(lines[0], format!("::add-mask::{secret}"));
    assert_eq!(lines[1], format!("::add-mask::{token}"));
    assert_eq!(
        outcome.all().matches(secret).count(),
        1,
        "{}",
        outcome.all()
    );
    assert_eq!(outcome.all().matches(token).count(), 1, "{}", outcome.all());
}

// --- delivery modes --------------------------------------------------------------

#[tokio::test]
async fn github_env_mode_appends_the_credentials_after_masking_them() {
    let (harness, runtime) = setup().await;
    let job = Job::new(&runtime);
    let outcome = job
        .fetch(&args(&harness.broker.base_url, "--github-env"))
        .await;
    outcome.assert_code(0);

    let issued = harness.sts.issued();
    assert_eq!(issued.len(), 1);
    let issued = &issued[0];
    assert_eq!(
        pairs(&read(&job.env_file())),
        [
            ("EARLIER_STEP", "kept"),
            ("AWS_ACCESS_KEY_ID", issued.access_key_id.as_str()),
            ("AWS_SECRET_ACCESS_KEY", issued.secret_access_key.as_str()),
            ("AWS_SESSION_TOKEN", issued.session_token.as_str()),
            ("AWS_CREDENTIAL_EXPIRATION", issued.expiration.as_str()),
        ]
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
    );
    assert_eq!(read(&job.output_file()), "", "GITHUB_OUTPUT untouched");
    assert_masked_first(&outcome, &issued.secret_access_key, &issued.session_token);
    assert!(outcome.stdout.contains(&issued.access_key_id));
    assert!(outcome.stdout.contains("GITHUB_ENV"), "{}", outcome.stdout);

    // The runtime was asked for the broker's audience with the job's bearer.
    assert_eq!(runtime.audiences(), [Some(AUDIENCE.to_owned())]);
    assert_eq!(runtime.refused(), 0);
    // The broker issued to this job: repo, sha and job id were bound.
    assert_eq!(harness.sts.requests()[0].role_arn, ROLE_ARN);
    let audit = harness
        .broker
        .wait_for_line("the issuance audit event", |line| {
            line.contains("credential_issued")
        })
        .await;
    let audit: Value = serde_json::from_str(&audit).unwrap();
    assert_eq!(field(&audit, "check_run_id").as_deref(), Some(CHECK_RUN_ID));
    assert_eq!(
        field(&audit, "access_key_id").as_deref(),
        Some(issued.access_key_id.as_str())
    );
}

#[tokio::test]
async fn github_output_mode_writes_step_outputs_after_masking_them() {
    let (harness, runtime) = setup().await;
    let job = Job::new(&runtime).without("GITHUB_ENV");
    let outcome = job
        .fetch(&args(&harness.broker.base_url, "--github-output"))
        .await;
    outcome.assert_code(0);

    let issued = harness.sts.issued()[0].clone();
    assert_eq!(
        pairs(&read(&job.output_file())),
        [
            ("aws-access-key-id", issued.access_key_id.as_str()),
            ("aws-secret-access-key", issued.secret_access_key.as_str()),
            ("aws-session-token", issued.session_token.as_str()),
            ("expiration", issued.expiration.as_str()),
        ]
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
    );
    assert_eq!(read(&job.env_file()), "EARLIER_STEP=kept\n");
    assert_masked_first(&outcome, &issued.secret_access_key, &issued.session_token);
}

#[tokio::test]
async fn credential_process_mode_prints_only_the_json_document() {
    let (harness, runtime) = setup().await;
    // Not needed in this mode, and a base URL that already ends in /issue.
    let job = Job::new(&runtime)
        .without("GITHUB_ENV")
        .without("GITHUB_OUTPUT");
    let url = format!("{}/issue", harness.broker.base_url);
    let outcome = job.fetch(&args(&url, "--credential-process")).await;
    outcome.assert_code(0);

    let issued = harness.sts.issued()[0].clone();
    // Byte for byte: this line is what the AWS SDKs read.
    assert_eq!(
        outcome.stdout,
        format!(
            "{{\"AccessKeyId\":\"{}\",\"Expiration\":\"{}\",\"SecretAccessKey\":\"{}\",\"SessionToken\":\"{}\",\"Version\":1}}\n",
            issued.access_key_id, issued.expiration, issued.secret_access_key, issued.session_token,
        )
    );
    assert_eq!(outcome.stdout.lines().count(), 1);
    assert!(!outcome.stdout.contains("::add-mask::"));
    assert!(!outcome.stderr.contains(&issued.secret_access_key));
}

// --- distinct errors -------------------------------------------------------------

#[tokio::test]
async fn outside_actions_it_says_so_and_asks_nobody() {
    let (harness, runtime) = setup().await;
    let job = Job::new(&runtime).without("GITHUB_ACTIONS");
    let outcome = job
        .fetch(&args(&harness.broker.base_url, "--github-env"))
        .await;
    outcome.assert_code(EXIT_NOT_IN_ACTIONS);
    assert!(
        outcome
            .stderr
            .contains("not running in a GitHub Actions job"),
        "{}",
        outcome.stderr
    );

    let job = Job::new(&runtime).without("GITHUB_ENV");
    let outcome = job
        .fetch(&args(&harness.broker.base_url, "--github-env"))
        .await;
    outcome.assert_code(EXIT_NOT_IN_ACTIONS);
    assert!(
        outcome.stderr.contains("GITHUB_ENV not set"),
        "{}",
        outcome.stderr
    );

    assert_eq!(runtime.minted() + runtime.refused(), 0);
    assert!(harness.broker.audit_events().is_empty());
}

#[tokio::test]
async fn without_id_token_permission_it_names_the_missing_permission() {
    let (harness, runtime) = setup().await;
    for missing in [
        "ACTIONS_ID_TOKEN_REQUEST_URL",
        "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
    ] {
        let job = Job::new(&runtime).without(missing);
        let outcome = job
            .fetch(&args(&harness.broker.base_url, "--github-output"))
            .await;
        outcome.assert_code(EXIT_NO_ID_TOKEN);
        assert!(
            outcome.stderr.contains("permissions: id-token: write"),
            "{}",
            outcome.stderr
        );
        assert_eq!(read(&job.output_file()), "");
    }
    assert!(harness.broker.audit_events().is_empty());
}

#[tokio::test]
async fn a_runtime_refusal_is_an_id_token_failure() {
    let (harness, runtime) = setup().await;
    let job = Job::new(&runtime).with("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "not-the-runtime-token");
    let outcome = job
        .fetch(&args(&harness.broker.base_url, "--github-env"))
        .await;
    outcome.assert_code(EXIT_ID_TOKEN_FAILED);
    assert!(
        outcome
            .stderr
            .contains("did not issue an ID token: the runtime answered HTTP 403"),
        "{}",
        outcome.stderr
    );
    assert_eq!(runtime.refused(), 1, "403 is not retried");
    assert!(!outcome.all().contains("not-the-runtime-token"));
}

/// A loopback address where nothing listens.
fn closed_port() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// The `N` of "after N attempt(s)" in `fetch`'s final error.
fn attempts_in(stderr: &str) -> usize {
    let (_, rest) = stderr
        .split_once("could not be reached after ")
        .unwrap_or_else(|| unreachable!("no attempt count in:\n{stderr}"));
    rest.split(' ').next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn an_unreachable_broker_is_retried_within_the_budget_then_reported() {
    let (_harness, runtime) = setup().await;
    let closed = format!("http://{}", closed_port());
    let job = Job::new(&runtime);
    let mut args = args(&closed, "--github-env");
    args.extend(["--retry-max-seconds", "2"]);
    let outcome = job.fetch(&args).await;
    outcome.assert_code(EXIT_UNREACHABLE);
    assert!(
        outcome.stderr.contains(&format!(
            "the broker at {closed}/issue could not be reached after "
        )),
        "{}",
        outcome.stderr
    );
    assert!(
        outcome.stderr.contains("within the 2 s retry budget"),
        "{}",
        outcome.stderr
    );
    let attempts = attempts_in(&outcome.stderr);
    assert!(attempts >= 2, "{}", outcome.stderr);
    assert_eq!(
        outcome.stderr.matches("retrying in").count(),
        attempts - 1,
        "{}",
        outcome.stderr
    );
    // A fresh ID token for every attempt: the broker accepts each token once.
    assert_eq!(runtime.minted(), attempts);
    assert!(outcome.stderr.contains("--retry-max-seconds"), "the hint");
    assert_eq!(read(&job.env_file()), "EARLIER_STEP=kept\n");
}

#[tokio::test]
async fn a_zero_retry_budget_makes_one_attempt() {
    let (_harness, runtime) = setup().await;
    let closed = format!("http://{}", closed_port());
    let job = Job::new(&runtime);
    let mut args = args(&closed, "--github-env");
    args.extend(["--retry-max-seconds", "0"]);
    let outcome = job.fetch(&args).await;
    outcome.assert_code(EXIT_UNREACHABLE);
    assert_eq!(attempts_in(&outcome.stderr), 1, "{}", outcome.stderr);
    assert!(
        !outcome.stderr.contains("retrying in"),
        "{}",
        outcome.stderr
    );
    assert_eq!(runtime.minted(), 1);
}

#[tokio::test]
async fn a_broker_that_is_down_then_comes_up_is_waited_for() {
    // The broker's address is known, but nothing listens there yet: a rollout.
    let jwks = crate::support::jwks::JwksServer::start(vec![crate::support::tokens::KEY_A.jwk()])
        .await
        .unwrap();
    let runtime = FakeRuntime::start(&jwks.issuer()).await;
    let addr = closed_port();
    let job = Job::new(&runtime);
    let url = format!("http://{addr}");
    let fetch = {
        // The default budget, no flag: a CI author's plain command.
        let args: Vec<String> = args(&url, "--github-env")
            .into_iter()
            .map(str::to_owned)
            .collect();
        let env = job.env.clone();
        tokio::spawn(async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run_fetch(&env, &args).await
        })
    };
    // The rollout outlasts four failed attempts (the fifth asks for its ID
    // token only after the fourth was refused).
    let deadline = tokio::time::Instant::now() + DEADLINE * 3;
    while runtime.minted() < 5 {
        assert!(
            !fetch.is_finished(),
            "fetch gave up after {} attempt(s): {:?}",
            runtime.minted(),
            fetch.await.unwrap()
        );
        assert!(tokio::time::Instant::now() < deadline, "no fifth attempt");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let harness = Harness::start_with_issuer(jwks, |spec| {
        spec.set("server.listen", addr.to_string());
    })
    .await;
    let outcome = fetch.await.unwrap();
    outcome.assert_code(0);
    assert!(
        outcome.stderr.contains("attempt 1 failed ("),
        "{}",
        outcome.stderr
    );
    let issued = harness.sts.issued();
    assert_eq!(issued.len(), 1);
    assert!(
        read(&job.env_file()).contains(&format!("AWS_ACCESS_KEY_ID={}\n", issued[0].access_key_id))
    );
}

#[tokio::test]
async fn a_429_is_retried_after_its_retry_after_but_other_4xx_are_not() {
    let (harness, runtime) = setup().await;
    let proxy =
        FlakyProxy::failing_with(&harness.broker.base_url, 1, StatusCode::TOO_MANY_REQUESTS).await;
    let job = Job::new(&runtime);
    let outcome = job.fetch(&args(&proxy.url, "--github-output")).await;
    outcome.assert_code(0);
    assert_eq!(proxy.hits(), 2);
    assert!(
        outcome
            .stderr
            .contains("attempt 1 failed (HTTP 429); retrying in"),
        "{}",
        outcome.stderr
    );
    // Retry-After: 1 was honoured as the least pause.
    assert!(
        outcome.elapsed >= Duration::from_secs(1),
        "{:?}",
        outcome.elapsed
    );

    for status in [
        StatusCode::NOT_FOUND,
        StatusCode::REQUEST_TIMEOUT,
        StatusCode::CONFLICT,
    ] {
        let proxy = FlakyProxy::failing_with(&harness.broker.base_url, 1, status).await;
        let job = Job::new(&runtime);
        let outcome = job.fetch(&args(&proxy.url, "--github-output")).await;
        outcome.assert_code(EXIT_REFUSED);
        assert_eq!(proxy.hits(), 1, "{status} is not retried");
        assert!(
            outcome
                .stderr
                .contains(&format!("HTTP {}", status.as_u16())),
            "{}",
            outcome.stderr
        );
    }
    assert_eq!(harness.sts.issued().len(), 1);
}

#[tokio::test]
async fn a_policy_denial_is_reported_with_status_code_and_request_id_and_not_retried() {
    let (harness, runtime) = setup().await;
    runtime.set_claim("ref", "refs/heads/feature/unreviewed");
    let job = Job::new(&runtime);
    let outcome = job
        .fetch(&args(&harness.broker.base_url, "--github-env"))
        .await;
    outcome.assert_code(EXIT_REFUSED);

    let request_id = request_id_in(&outcome.stderr);
    let event = harness.broker.wait_for_audit(&request_id).await;
    assert_eq!(field(&event, "event").as_deref(), Some("credential_denied"));
    assert!(
        outcome.stderr.contains(&format!(
            "the broker refused the request: HTTP 403 forbidden: \
             the token is not permitted to obtain credentials for this request (request_id {request_id})"
        )),
        "{}",
        outcome.stderr
    );
    assert!(
        outcome.stderr.contains("audit log"),
        "the hint says where to look"
    );
    assert_eq!(runtime.minted(), 1, "403 is not retried");
    assert_eq!(outcome.stdout, "", "nothing to mask, nothing printed");
    assert_eq!(read(&job.env_file()), "EARLIER_STEP=kept\n");
}

#[tokio::test]
async fn a_wrong_audience_is_a_401_refusal() {
    let (harness, runtime) = setup().await;
    let job = Job::new(&runtime);
    let url = harness.broker.base_url.clone();
    let outcome = job
        .fetch(&[
            "--broker-url",
            &url,
            "--audience",
            "sts.amazonaws.com",
            "--github-env",
        ])
        .await;
    outcome.assert_code(EXIT_REFUSED);
    assert!(
        outcome
            .stderr
            .contains("HTTP 401 invalid_token: token audience is not accepted (request_id "),
        "{}",
        outcome.stderr
    );
    assert!(outcome.stderr.contains("--audience"), "hint names the flag");
    assert_eq!(runtime.audiences(), [Some("sts.amazonaws.com".to_owned())]);
}

#[tokio::test]
async fn a_job_id_that_is_not_this_job_is_refused() {
    let (harness, runtime) = setup().await;
    let job = Job::new(&runtime);
    let url = harness.broker.base_url.clone();
    let outcome = job
        .fetch(&[
            "--broker-url",
            &url,
            "--audience",
            AUDIENCE,
            "--job-id",
            "1111",
            "--github-env",
        ])
        .await;
    outcome.assert_code(EXIT_REFUSED);
    let event = harness
        .broker
        .wait_for_audit(&request_id_in(&outcome.stderr))
        .await;
    assert_eq!(
        field(&event, "reason").as_deref(),
        Some("binding_mismatch_job_id")
    );
}

#[tokio::test]
async fn a_malformed_answer_is_reported_and_nothing_is_written() {
    let (_harness, runtime) = setup().await;
    for body in [
        r#"{"access_key_id":"ASIAONLY"}"#,
        "<html>login</html>",
        // A newline would smuggle an extra variable into GITHUB_ENV.
        r#"{"access_key_id":"ASIAX","secret_access_key":"s\nLD_PRELOAD=/tmp/x.so","session_token":"t","expiration":"2030-01-01T00:00:00Z"}"#,
    ] {
        let (url, task) = fixed_answer(body).await;
        let job = Job::new(&runtime);
        let outcome = job.fetch(&args(&url, "--github-env")).await;
        outcome.assert_code(EXIT_MALFORMED);
        assert!(
            outcome.stderr.contains("the broker's answer is malformed"),
            "{}",
            outcome.stderr
        );
        assert!(!outcome.all().contains("LD_PRELOAD"), "{}", outcome.all());
        assert_eq!(outcome.stdout, "");
        assert_eq!(read(&job.env_file()), "EARLIER_STEP=kept\n");
        task.abort();
    }
}

#[tokio::test]
async fn an_unwritable_github_env_is_an_output_error_after_masking() {
    let (harness, runtime) = setup().await;
    let job = Job::new(&runtime);
    // A directory cannot be appended to.
    let directory = job.dir.path().display().to_string();
    let job = job.with("GITHUB_ENV", &directory);
    let outcome = job
        .fetch(&args(&harness.broker.base_url, "--github-env"))
        .await;
    outcome.assert_code(EXIT_OUTPUT);
    assert!(
        outcome
            .stderr
            .contains("cannot write the credentials to GITHUB_ENV"),
        "{}",
        outcome.stderr
    );
    // The credentials were issued, so they were masked before the write failed.
    let issued = harness.sts.issued()[0].clone();
    assert_masked_first(&outcome, &issued.secret_access_key, &issued.session_token);
}

#[tokio::test]
async fn bad_urls_and_ca_files_are_usage_errors() {
    let (_harness, runtime) = setup().await;
    let job = Job::new(&runtime);
    let outcome = job
        .fetch(&args("http://broker.example.com", "--github-env"))
        .await;
    outcome.assert_code(EXIT_USAGE);
    assert!(
        outcome.stderr.contains("must use https://"),
        "{}",
        outcome.stderr
    );

    let outcome = job.fetch(&["--github-env"]).await;
    outcome.assert_code(EXIT_USAGE);
    assert!(outcome.stderr.contains("BROKER_URL"), "{}", outcome.stderr);

    let not_pem = job.dir.path().join("ca.pem");
    std::fs::write(&not_pem, "not a certificate\n").unwrap();
    let not_pem = not_pem.display().to_string();
    let outcome = job
        .fetch(&[
            "--broker-url",
            "https://broker.example.com",
            "--ca-file",
            &not_pem,
            "--github-env",
        ])
        .await;
    outcome.assert_code(EXIT_USAGE);
    assert!(outcome.stderr.contains("--ca-file"), "{}", outcome.stderr);

    // Exactly one delivery mode.
    let outcome = job
        .fetch(&[
            "--broker-url",
            "https://broker.example.com",
            "--github-env",
            "--github-output",
        ])
        .await;
    outcome.assert_code(2);
    assert_eq!(runtime.minted(), 0);
}

#[tokio::test]
async fn broker_url_falls_back_to_the_environment() {
    let (harness, runtime) = setup().await;
    let job = Job::new(&runtime).with("BROKER_URL", &harness.broker.base_url);
    let outcome = job
        .fetch(&["--audience", AUDIENCE, "--role", "deploy", "--github-env"])
        .await;
    outcome.assert_code(0);
    assert_eq!(harness.sts.issued().len(), 1);
}

// --- retries ---------------------------------------------------------------------

#[tokio::test]
async fn a_503_from_a_flaky_proxy_is_retried_with_a_fresh_token() {
    let (harness, runtime) = setup().await;
    let proxy = FlakyProxy::start(&harness.broker.base_url, 1).await;
    let job = Job::new(&runtime);
    let outcome = job.fetch(&args(&proxy.url, "--github-output")).await;
    outcome.assert_code(0);
    assert_eq!(proxy.hits(), 2);
    assert_eq!(runtime.minted(), 2, "one ID token per attempt");
    assert!(
        outcome
            .stderr
            .contains("attempt 1 failed (HTTP 503); retrying in"),
        "{}",
        outcome.stderr
    );
    // Retry-After: 1 was honoured.
    assert!(
        outcome.elapsed >= Duration::from_secs(1),
        "{:?}",
        outcome.elapsed
    );
    let issued = harness.sts.issued();
    assert_eq!(issued.len(), 1);
    assert_masked_first(
        &outcome,
        &issued[0].secret_access_key,
        &issued[0].session_token,
    );
}

#[tokio::test]
async fn a_503_from_the_broker_is_retried() {
    let (harness, runtime) = setup().await;
    // The broker tries STS up to 3 times per request, then answers 503.
    harness.sts.fail_next(Fault::Throttling, 3);
    let job = Job::new(&runtime);
    let outcome = job
        .fetch(&args(&harness.broker.base_url, "--github-env"))
        .await;
    outcome.assert_code(0);
    assert!(
        outcome
            .stderr
            .contains("attempt 1 failed (HTTP 503 unavailable (request_id "),
        "{}",
        outcome.stderr
    );
    harness
        .broker
        .wait_for_line("the issuance audit event", |line| {
            line.contains("credential_issued")
        })
        .await;
    let events = harness.broker.audit_events();
    let events: Vec<Option<String>> = events.iter().map(|e| field(e, "event")).collect();
    assert_eq!(
        events,
        [
            Some("credential_denied".to_owned()),
            Some("credential_issued".to_owned())
        ]
    );
    assert_eq!(runtime.minted(), 2);
    assert!(read(&job.env_file()).contains("AWS_SESSION_TOKEN="));
}

#[tokio::test]
async fn a_closed_stdout_is_an_output_error_and_nothing_is_delivered() {
    let (harness, runtime) = setup().await;
    let job = Job::new(&runtime);
    for mode in ["--github-env", "--credential-process"] {
        let outcome = job
            .fetch_into_closed_stdout(&args(&harness.broker.base_url, mode))
            .await;
        outcome.assert_code(EXIT_OUTPUT);
        assert!(!outcome.stderr.contains("panicked"), "{mode}: {outcome:?}");
    }
    // The masks could not be printed, so the secrets went nowhere.
    assert_eq!(read(&job.env_file()), "EARLIER_STEP=kept\n");
}

// --- credential_process cache ----------------------------------------------------

/// Mode bits of `path` (permission part).
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The files in the job's credential cache under `RUNNER_TEMP`.
fn cache_files(job: &Job) -> Vec<PathBuf> {
    let dir = job.dir.path().join("runner_temp/attestation-broker-cache");
    match std::fs::read_dir(&dir) {
        Ok(entries) => entries.map(|entry| entry.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    }
}

/// A job with `RUNNER_TEMP`, as every hosted and self-hosted runner sets it.
fn job_with_runner_temp(runtime: &FakeRuntime) -> Job {
    let job = Job::new(runtime)
        .without("GITHUB_ENV")
        .without("GITHUB_OUTPUT");
    let temp = job.dir.path().join("runner_temp");
    std::fs::create_dir(&temp).unwrap();
    let temp = temp.display().to_string();
    job.with("RUNNER_TEMP", &temp)
}

#[tokio::test]
async fn credential_process_reuses_the_cached_credential_while_it_is_comfortably_valid() {
    let (harness, runtime) = setup().await;
    let job = job_with_runner_temp(&runtime);
    let args = args(&harness.broker.base_url, "--credential-process");
    let first = job.fetch(&args).await;
    first.assert_code(0);
    for _ in 0..4 {
        let again = job.fetch(&args).await;
        again.assert_code(0);
        assert_eq!(again.stdout, first.stdout, "the same credential");
    }
    assert_eq!(harness.sts.issued().len(), 1, "one issuance for five runs");
    assert_eq!(runtime.minted(), 1, "one ID token for five runs");

    // Private: directory 0700, one file 0600, nothing of it on stderr.
    let dir = job.dir.path().join("runner_temp/attestation-broker-cache");
    assert_eq!(mode(&dir), 0o700);
    let files = cache_files(&job);
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(mode(&files[0]), 0o600);
    let issued = harness.sts.issued()[0].clone();
    assert!(!first.stderr.contains(&issued.secret_access_key));

    // A margin longer than what is left of the credential: a new one.
    let mut strict = args.clone();
    strict.extend(["--cache-margin-seconds", "900"]);
    let renewed = job.fetch(&strict).await;
    renewed.assert_code(0);
    assert_eq!(harness.sts.issued().len(), 2);
    assert_ne!(renewed.stdout, first.stdout);
    // --no-cache always asks.
    let mut uncached = args.clone();
    uncached.push("--no-cache");
    job.fetch(&uncached).await.assert_code(0);
    assert_eq!(harness.sts.issued().len(), 3);
    // The renewed credential is the cached one now.
    let cached = job.fetch(&args).await;
    assert_eq!(cached.stdout, renewed.stdout);
    assert_eq!(harness.sts.issued().len(), 3);
}

#[tokio::test]
async fn a_cache_file_with_loose_permissions_is_not_read_and_is_replaced() {
    let (harness, runtime) = setup().await;
    let job = job_with_runner_temp(&runtime);
    let args = args(&harness.broker.base_url, "--credential-process");
    let first = job.fetch(&args).await;
    first.assert_code(0);
    let file = cache_files(&job).pop().unwrap();
    set_mode(&file, 0o644);
    let second = job.fetch(&args).await;
    second.assert_code(0);
    assert_ne!(second.stdout, first.stdout, "the readable file was ignored");
    assert_eq!(harness.sts.issued().len(), 2);
    assert_eq!(mode(&file), 0o600, "replaced by a private file");
}

#[tokio::test]
async fn a_cache_directory_others_can_enter_is_refused() {
    let (harness, runtime) = setup().await;
    let job = job_with_runner_temp(&runtime);
    let shared = job.dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    set_mode(&shared, 0o755);
    let shared = shared.display().to_string();
    let mut args = args(&harness.broker.base_url, "--credential-process");
    args.extend(["--cache-dir", &shared]);
    let outcome = job.fetch(&args).await;
    outcome.assert_code(EXIT_USAGE);
    assert!(
        outcome.stderr.contains("gives group or other users access"),
        "{}",
        outcome.stderr
    );
    assert_eq!(outcome.stdout, "");
    assert_eq!(runtime.minted(), 0);
}

// --- region, masking, cleanup ----------------------------------------------------

#[tokio::test]
async fn the_region_is_exported_and_the_access_key_id_can_be_masked() {
    let (harness, runtime) = setup().await;
    let job = Job::new(&runtime);
    let mut env_args = args(&harness.broker.base_url, "--github-env");
    env_args.extend(["--region", "eu-west-1", "--mask-access-key-id"]);
    let outcome = job.fetch(&env_args).await;
    outcome.assert_code(0);
    let issued = harness.sts.issued()[0].clone();
    let written = pairs(&read(&job.env_file()));
    assert_eq!(
        written[written.len() - 2..],
        [
            ("AWS_REGION".to_owned(), "eu-west-1".to_owned()),
            ("AWS_DEFAULT_REGION".to_owned(), "eu-west-1".to_owned())
        ]
    );
    assert_masked_first(&outcome, &issued.secret_access_key, &issued.session_token);
    let lines: Vec<&str> = outcome.stdout.lines().collect();
    assert_eq!(lines[2], format!("::add-mask::{}", issued.access_key_id));
    assert_eq!(outcome.all().matches(&issued.access_key_id).count(), 1);

    let job = Job::new(&runtime);
    let mut output_args = args(&harness.broker.base_url, "--github-output");
    output_args.extend(["--region", "us-gov-west-1"]);
    job.fetch(&output_args).await.assert_code(0);
    assert!(
        read(&job.output_file()).ends_with("\naws-region=us-gov-west-1\n"),
        "{}",
        read(&job.output_file())
    );

    // A credential_process cannot carry a region; a bad region is refused.
    let mut process_args = args(&harness.broker.base_url, "--credential-process");
    process_args.extend(["--region", "eu-west-1"]);
    job.fetch(&process_args).await.assert_code(2);
    let mut bad = args(&harness.broker.base_url, "--github-env");
    bad.extend(["--region", "eu-west-1\nX=1"]);
    job.fetch(&bad).await.assert_code(2);
    assert_eq!(harness.sts.issued().len(), 2);
}

#[tokio::test]
async fn cleanup_blanks_the_variables_and_removes_the_cached_credentials() {
    let (harness, runtime) = setup().await;
    let job = job_with_runner_temp(&runtime);
    job.fetch(&args(&harness.broker.base_url, "--credential-process"))
        .await
        .assert_code(0);
    assert_eq!(cache_files(&job).len(), 1);
    let env_file = job.env_file();
    let job = job.with("GITHUB_ENV", &env_file.display().to_string());
    job.fetch(&args(&harness.broker.base_url, "--github-env"))
        .await
        .assert_code(0);

    // The last step: no broker URL, no ID token needed.
    let outcome = job.fetch(&["--cleanup"]).await;
    outcome.assert_code(0);
    assert!(
        outcome.stdout.contains("removed 1 cached credential(s)"),
        "{}",
        outcome.stdout
    );
    assert!(cache_files(&job).is_empty());
    assert!(
        !job.dir
            .path()
            .join("runner_temp/attestation-broker-cache")
            .exists()
    );
    let written = read(&env_file);
    assert!(
        written.ends_with(
            "AWS_ACCESS_KEY_ID=\nAWS_SECRET_ACCESS_KEY=\nAWS_SESSION_TOKEN=\n\
             AWS_CREDENTIAL_EXPIRATION=\nAWS_REGION=\nAWS_DEFAULT_REGION=\n"
        ),
        "{written}"
    );
    assert_eq!(runtime.minted(), 2, "cleanup asked for no token");

    // Again, with nothing left: still success (`if: always()`).
    job.fetch(&["--cleanup"]).await.assert_code(0);
    // An unwritable GITHUB_ENV is an output error.
    let directory = job.dir.path().display().to_string();
    let job = job.with("GITHUB_ENV", &directory);
    job.fetch(&["--cleanup"]).await.assert_code(EXIT_OUTPUT);
}

// --- GitHub installation tokens (roles of kind `github`) -------------------------
//
// The real binary against a "broker" answering the documented 200 answer of a
// `github` role; the issuance itself is tested with the broker's GitHub App
// client against its GitHub stand-in.

const GH_TOKEN: &str = "ghs_16C7e42F292c6912E7710c838347Ae178B4a";
const GITHUB_ANSWER: &str = r#"{"expires_at":"2030-01-01T01:00:00Z","permissions":{"contents":"write"},"repositories":["octo-org/octo-repo"],"revoke_at":"2030-01-01T00:15:00Z","role":"release-notes","token":"ghs_16C7e42F292c6912E7710c838347Ae178B4a"}"#;

#[tokio::test]
async fn a_github_token_is_masked_first_delivered_and_never_on_stderr() {
    let (_harness, runtime) = setup().await;
    let (url, task) = fixed_answer(GITHUB_ANSWER).await;

    let job = Job::new(&runtime);
    let outcome = job.fetch(&args(&url, "--github-env")).await;
    outcome.assert_code(0);
    assert_eq!(
        outcome.stdout.lines().next(),
        Some(format!("::add-mask::{GH_TOKEN}").as_str())
    );
    assert_eq!(
        outcome.all().matches(GH_TOKEN).count(),
        1,
        "{}",
        outcome.all()
    );
    assert!(!outcome.stderr.contains("ghs_"), "{}", outcome.stderr);
    assert_eq!(
        read(&job.env_file()),
        format!("EARLIER_STEP=kept\nGH_TOKEN={GH_TOKEN}\n")
    );

    let job = Job::new(&runtime);
    let outcome = job.fetch(&args(&url, "--github-output")).await;
    outcome.assert_code(0);
    assert_eq!(
        outcome.all().matches(GH_TOKEN).count(),
        1,
        "{}",
        outcome.all()
    );
    assert_eq!(
        pairs(&read(&job.output_file())),
        [
            ("token".to_owned(), GH_TOKEN.to_owned()),
            ("expires-at".to_owned(), "2030-01-01T01:00:00Z".to_owned()),
            ("revoke-at".to_owned(), "2030-01-01T00:15:00Z".to_owned()),
        ]
    );
    task.abort();
}

#[tokio::test]
async fn credential_process_refuses_a_github_token_prints_nothing_and_caches_nothing() {
    let (_harness, runtime) = setup().await;
    let (url, task) = fixed_answer(GITHUB_ANSWER).await;
    let job = job_with_runner_temp(&runtime);
    let outcome = job.fetch(&args(&url, "--credential-process")).await;
    outcome.assert_code(EXIT_USAGE);
    assert_eq!(outcome.stdout, "");
    assert!(!outcome.all().contains("ghs_"), "{}", outcome.all());
    assert!(
        outcome.stderr.contains(
            "issued a GitHub installation token, which --credential-process cannot deliver"
        ),
        "{}",
        outcome.stderr
    );
    assert!(
        outcome
            .stderr
            .contains("hint: fetch a role of kind github with --github-env")
    );
    assert_eq!(cache_files(&job), Vec::<PathBuf>::new());
    task.abort();
}

// --- a GitHub installation token, from the broker to the job's last step ---------

/// One role of kind `github` for the harness's repository owner.
const GITHUB_POLICY: &str = r#"
[[roles]]
name = "release-notes"
kind = "github"
permissions = { contents = "write", pull_requests = "read" }

[[roles.allow]]
repository_owner_id = "1234567"
ref = "refs/heads/main"
"#;

#[tokio::test]
async fn a_github_token_travels_from_github_through_the_broker_to_gh_token_and_is_revoked_by_the_job()
 {
    use attestation_broker::github::Operation;
    use attestation_broker::testkit::github::{APP_ID, GithubStandIn};

    let github = GithubStandIn::start().await.unwrap();
    let (owner, name) = REPOSITORY.split_once('/').unwrap();
    github.install(owner, &[name]);
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("app.pem");
    std::fs::write(&key, github.app_key_pem()).unwrap();
    let api_url = github.url().to_string();
    let harness = Harness::start_with(|spec| {
        spec.policy = GITHUB_POLICY.to_owned();
        spec.set("github.api_url", api_url.as_str())
            .set("github.app_id", APP_ID.to_string())
            .set("github.private_key_file", key.display().to_string());
    })
    .await;
    let runtime = FakeRuntime::start(&harness.jwks.issuer()).await;
    let job = Job::new(&runtime);

    // The job asks for less than the role allows.
    let outcome = job
        .fetch(&[
            "--broker-url",
            &harness.broker.base_url,
            "--audience",
            AUDIENCE,
            "--role",
            "release-notes",
            "--job-id",
            CHECK_RUN_ID,
            "--permission",
            "contents=read",
            "--github-env",
        ])
        .await;
    outcome.assert_code(0);

    // GitHub minted exactly one token for the caller, scoped as asked.
    let issued = github.issued_tokens();
    assert_eq!(issued.len(), 1, "{issued:?}");
    let (token, revoked) = issued[0].clone();
    assert!(!revoked);
    let minted: Vec<Value> = github
        .calls(Operation::AccessToken)
        .iter()
        .map(|exchange| serde_json::from_slice(&exchange.body).unwrap())
        .filter(|body: &Value| body["permissions"] == json!({"contents": "read"}))
        .collect();
    assert_eq!(minted.len(), 1, "{minted:?}");
    assert_eq!(minted[0]["repositories"], json!([name]));

    // The job got it as GH_TOKEN, masked before anything else was printed,
    // and it appears nowhere else: not in fetch's output, not in the broker's.
    assert_eq!(
        pairs(&read(&job.env_file())),
        [("EARLIER_STEP", "kept"), ("GH_TOKEN", token.as_str())]
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
    );
    assert_eq!(
        outcome.stdout.lines().next(),
        Some(format!("::add-mask::{token}").as_str())
    );
    assert_eq!(outcome.all().matches(token.as_str()).count(), 1);
    let audit = harness
        .broker
        .wait_for_line("the issuance audit event", |line| {
            line.contains("credential_issued")
        })
        .await;
    assert!(!audit.contains(&token));
    assert!(
        harness
            .broker
            .lines()
            .iter()
            .all(|line| !line.contains(&token))
    );

    // The job's last step revokes it; GitHub sees the token itself as the credential.
    let env = vec![
        ("GH_TOKEN".to_owned(), token.clone()),
        ("GITHUB_API_URL".to_owned(), api_url.clone()),
    ];
    let out = crate::support::broker::run_to_completion(&["revoke-github-token"], &env).await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert_eq!(github.is_revoked(&token), Some(true));
    assert!(!out.all().contains(&token));
}
