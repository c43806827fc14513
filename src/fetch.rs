//! `attestation-broker fetch`: the CI-side client, run inside a GitHub
//! Actions step.
//!
//! It asks the Actions runtime for an ID token (`ACTIONS_ID_TOKEN_REQUEST_URL`
//! with `&audience=…`, authorised by `ACTIONS_ID_TOKEN_REQUEST_TOKEN`), posts
//! `{oidc_token, repo, sha, job_id, role, duration_seconds}` to the broker's
//! `POST /issue`, and hands the credentials over in one of three ways:
//! appended to `$GITHUB_ENV`, written as step outputs to `$GITHUB_OUTPUT`, or
//! printed as AWS `credential_process` JSON on stdout.
//!
//! Invariants:
//! - The environment is read once, from the map the caller passes in.
//! - In the Actions modes the first two lines on stdout are `::add-mask::` for
//!   the secret key and the session token, flushed before the credentials are
//!   written anywhere. Nothing else ever prints either of them, nor the ID
//!   token; error messages name fields, never values.
//! - Values written to `$GITHUB_ENV` / `$GITHUB_OUTPUT` are checked to be
//!   printable ASCII without spaces, so a hostile answer cannot inject extra
//!   variables or workflow commands.
//! - Transient failures (no connection, timeouts, 429, 502, 503, 504) are
//!   retried up to 4 attempts within 30 s, with exponential backoff and jitter,
//!   honouring `Retry-After` up to 10 s. 400/401/403 are never retried. Every
//!   attempt uses a fresh ID token: the broker remembers each token's `jti`,
//!   so resending a token it may already have seen would be refused as a
//!   replay.
//! - `--broker-url` must be `https://` (`http://` only for loopback hosts); the
//!   broker is trusted through the system roots or, with `--ca-file`, only
//!   through the certificates in that PEM bundle.
//!
//! Exit codes (each failure class has its own):
//!
//! | code | meaning |
//! |---|---|
//! | 0 | credentials delivered |
//! | 2 | command-line usage error (reported by the argument parser) |
//! | 3 | not running in a GitHub Actions job (`GITHUB_ACTIONS`, `GITHUB_REPOSITORY`, `GITHUB_SHA`, or the mode's `GITHUB_ENV` / `GITHUB_OUTPUT` missing) |
//! | 4 | no ID token available: the job lacks `permissions: id-token: write` |
//! | 5 | the Actions runtime failed to issue an ID token |
//! | 6 | the broker could not be reached (connection, timeout, gateway errors) |
//! | 7 | the broker refused: status, error code and request id are printed |
//! | 8 | the broker's answer was malformed |
//! | 9 | the credentials could not be written (`GITHUB_ENV`, `GITHUB_OUTPUT`, stdout) |
//! | 64 | bad `--broker-url` / `BROKER_URL`, `--ca-file` or proxy setting |

mod transport;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use reqwest::header::{ACCEPT, CONTENT_TYPE};
use secrecy::{ExposeSecret as _, SecretString};
use serde_json::{Value, json};
use tokio::time::Instant;
use url::{Host, Url};

use self::transport::{Answer, RetryPolicy, SendError};

/// Exit code: not running in a GitHub Actions job.
pub const EXIT_NOT_IN_ACTIONS: u8 = 3;
/// Exit code: no ID token available (`permissions: id-token: write` missing).
pub const EXIT_NO_ID_TOKEN: u8 = 4;
/// Exit code: the Actions runtime failed to issue an ID token.
pub const EXIT_ID_TOKEN_FAILED: u8 = 5;
/// Exit code: the broker could not be reached.
pub const EXIT_UNREACHABLE: u8 = 6;
/// Exit code: the broker refused the request.
pub const EXIT_REFUSED: u8 = 7;
/// Exit code: the broker's answer was malformed.
pub const EXIT_MALFORMED: u8 = 8;
/// Exit code: the credentials could not be written out.
pub const EXIT_OUTPUT: u8 = 9;
/// Exit code: a bad URL, CA bundle or proxy setting (as `check-config`'s 64).
pub const EXIT_USAGE: u8 = 64;

/// Largest `--ca-file` read (bytes).
const MAX_CA_FILE_BYTES: u64 = 1024 * 1024;
/// Longest credential field accepted. STS session tokens with session tags
/// run to a few kilobytes.
const MAX_FIELD_CHARS: usize = 16 * 1024;

/// Arguments of `attestation-broker fetch` (DESIGN.md, "Command line").
#[derive(Debug, clap::Args)]
pub struct FetchArgs {
    /// Broker base URL; requests go to `<URL>/issue` (a URL already ending in
    /// `/issue` is used as is). Default: the BROKER_URL environment variable.
    #[arg(long, value_name = "URL")]
    pub broker_url: Option<String>,
    /// Audience to request the ID token for (must be one the broker accepts).
    /// Default: GitHub's default audience.
    #[arg(long, value_name = "AUD")]
    pub audience: Option<String>,
    /// Policy role to request; needed when more than one role matches.
    #[arg(long, value_name = "NAME")]
    pub role: Option<String>,
    /// The job's `${{ job.check_run_id }}`; binds the request to this job.
    /// Empty means no binding.
    #[arg(long, value_name = "ID")]
    pub job_id: Option<String>,
    /// Credential lifetime (900 up to the role's maximum; default: the role's).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(900..=43200))]
    pub duration_seconds: Option<u32>,
    /// PEM bundle of the CA certificates that sign the broker's TLS
    /// certificate; when given, only these are trusted for the broker.
    #[arg(long, value_name = "PEM")]
    pub ca_file: Option<PathBuf>,
    /// Where the credentials go.
    #[command(flatten)]
    pub delivery: DeliveryArgs,
}

/// Exactly one delivery mode.
#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
pub struct DeliveryArgs {
    /// Append AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN and
    /// AWS_CREDENTIAL_EXPIRATION to $GITHUB_ENV (visible to later steps).
    #[arg(long)]
    pub github_env: bool,
    /// Write step outputs aws-access-key-id, aws-secret-access-key,
    /// aws-session-token and expiration to $GITHUB_OUTPUT (only steps that
    /// reference them see them).
    #[arg(long)]
    pub github_output: bool,
    /// Print AWS `credential_process` JSON on stdout.
    #[arg(long)]
    pub credential_process: bool,
}

/// The chosen delivery mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// `--github-env`.
    GithubEnv,
    /// `--github-output`.
    GithubOutput,
    /// `--credential-process`.
    CredentialProcess,
}

impl DeliveryArgs {
    /// The mode the flags select (clap guarantees exactly one).
    pub fn delivery(&self) -> Delivery {
        if self.github_env {
            Delivery::GithubEnv
        } else if self.github_output {
            Delivery::GithubOutput
        } else {
            Delivery::CredentialProcess
        }
    }
}

/// Everything that can stop `fetch`; each variant has its own exit code.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// A bad URL, CA bundle or proxy setting.
    #[error("{0}")]
    Usage(String),
    /// Not inside a GitHub Actions job.
    #[error("not running in a GitHub Actions job: {0}")]
    NotInActions(String),
    /// The runtime offers no ID token to this job.
    #[error(
        "no ID token available: ACTIONS_ID_TOKEN_REQUEST_URL and ACTIONS_ID_TOKEN_REQUEST_TOKEN \
         are not set; the job needs `permissions: id-token: write` (pull requests from forks never get one)"
    )]
    NoIdToken,
    /// The runtime failed to issue an ID token.
    #[error("the Actions runtime did not issue an ID token: {0}")]
    IdToken(String),
    /// No answer from the broker (or only gateway errors).
    #[error("the broker at {url} could not be reached after {attempts} attempt(s): {detail}")]
    Unreachable {
        /// The issue URL.
        url: String,
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        detail: String,
    },
    /// The broker answered with an error.
    #[error("{}", refused_text(*status, code.as_deref(), message.as_deref(), request_id.as_deref()))]
    Refused {
        /// HTTP status.
        status: u16,
        /// The broker's error code (`forbidden`, `invalid_token`, …).
        code: Option<String>,
        /// The broker's fixed message.
        message: Option<String>,
        /// The broker's request id, for its audit log.
        request_id: Option<String>,
    },
    /// The broker's 200 answer is not what DESIGN.md promises.
    #[error("the broker's answer is malformed: {0}")]
    Malformed(String),
    /// Writing the credentials out failed.
    #[error("cannot write the credentials to {target}: {detail}")]
    Output {
        /// Where.
        target: String,
        /// Why.
        detail: String,
    },
}

fn refused_text(
    status: u16,
    code: Option<&str>,
    message: Option<&str>,
    request_id: Option<&str>,
) -> String {
    let mut text = format!("the broker refused the request: HTTP {status}");
    if let Some(code) = code {
        text.push_str(&format!(" {code}"));
    }
    if let Some(message) = message {
        text.push_str(&format!(": {message}"));
    }
    match request_id {
        Some(id) => text.push_str(&format!(" (request_id {id})")),
        None => text.push_str(" (no request id: the answer did not come from the broker)"),
    }
    text
}

impl FetchError {
    /// The process exit code for this failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) => EXIT_USAGE,
            Self::NotInActions(_) => EXIT_NOT_IN_ACTIONS,
            Self::NoIdToken => EXIT_NO_ID_TOKEN,
            Self::IdToken(_) => EXIT_ID_TOKEN_FAILED,
            Self::Unreachable { .. } => EXIT_UNREACHABLE,
            Self::Refused { .. } => EXIT_REFUSED,
            Self::Malformed(_) => EXIT_MALFORMED,
            Self::Output { .. } => EXIT_OUTPUT,
        }
    }

    /// What the CI author can do about it, when there is something to say.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            Self::Refused { status: 400, .. } => Some(
                "check --role (needed when several roles match) and --duration-seconds (900 up to the role's maximum)",
            ),
            Self::Refused { status: 401, .. } => Some(
                "the broker did not accept the ID token; the message names the check: a wrong audience means --audience is not one the broker trusts",
            ),
            Self::Refused { status: 403, .. } => Some(
                "the policy grants this job no role, the request did not match the token, or the token was reused; the broker's audit log has the reason under this request id",
            ),
            Self::Refused {
                status: 404 | 405, ..
            } => Some("is --broker-url the broker's base URL (requests go to <URL>/issue)?"),
            Self::Refused {
                status: 429 | 503, ..
            } => Some("the broker cannot issue credentials right now; re-run the job later"),
            Self::Unreachable { .. } => Some(
                "check --broker-url, the runner's network path to the broker, and --ca-file when the broker uses a private CA",
            ),
            _ => None,
        }
    }
}

/// Runs `fetch` with the process's stdout; prints any error on stderr and
/// returns the exit code.
pub async fn run(args: FetchArgs, env: &BTreeMap<String, String>) -> ExitCode {
    let delivery = args.delivery.delivery();
    let mut stdout = std::io::stdout();
    match fetch(&args, env, &mut stdout).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let in_actions = delivery != Delivery::CredentialProcess
                && env.get("GITHUB_ACTIONS").map(String::as_str) == Some("true");
            if in_actions {
                eprintln!(
                    "::error title=attestation-broker fetch::{}",
                    escape_command_data(&err.to_string())
                );
            } else {
                eprintln!("attestation-broker fetch: error: {err}");
            }
            if let Some(hint) = err.hint() {
                eprintln!("hint: {hint}");
            }
            ExitCode::from(err.exit_code())
        }
    }
}

/// Obtains credentials and delivers them; `out` is stdout.
pub async fn fetch(
    args: &FetchArgs,
    env: &BTreeMap<String, String>,
    out: &mut dyn Write,
) -> Result<(), FetchError> {
    let delivery = args.delivery.delivery();
    let raw_url = args
        .broker_url
        .as_deref()
        .or_else(|| env.get("BROKER_URL").map(String::as_str))
        .filter(|url| !url.trim().is_empty())
        .ok_or_else(|| {
            FetchError::Usage("no broker URL: pass --broker-url or set BROKER_URL".into())
        })?;
    let issue_url = issue_url(raw_url)?;
    let roots = args.ca_file.as_deref().map(load_ca_file).transpose()?;
    let runner = RunnerEnv::read(env, delivery)?;
    let runtime = transport::build_client(env, None).map_err(FetchError::Usage)?;
    let broker = transport::build_client(env, roots).map_err(FetchError::Usage)?;
    let client = Client {
        runtime,
        broker,
        issue_url,
        policy: RetryPolicy::default(),
    };
    let credentials = client.obtain(args, &runner).await?;
    deliver(delivery, &credentials, &runner, out)
}

/// The broker's issue URL from a base URL (or one already ending in `/issue`).
pub fn issue_url(raw: &str) -> Result<Url, FetchError> {
    let usage = |what: &str| FetchError::Usage(format!("broker URL {raw:?} {what}"));
    let mut url = Url::parse(raw.trim()).map_err(|_| usage("is not a URL"))?;
    let loopback = match url.host() {
        Some(Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        None => return Err(usage("has no host")),
    };
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        _ => {
            return Err(usage(
                "must use https:// (http:// only for loopback hosts): the answer carries credentials",
            ));
        }
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(usage("must not carry a user name or password"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(usage("must not have a query or fragment"));
    }
    let path = url.path().trim_end_matches('/').to_owned();
    if path.ends_with("/issue") {
        url.set_path(&path);
    } else {
        url.set_path(&format!("{path}/issue"));
    }
    Ok(url)
}

/// Reads a PEM bundle of CA certificates.
fn load_ca_file(path: &Path) -> Result<Vec<reqwest::Certificate>, FetchError> {
    let usage = |what: String| FetchError::Usage(format!("--ca-file {}: {what}", path.display()));
    let size = std::fs::metadata(path)
        .map_err(|err| usage(err.to_string()))?
        .len();
    if size > MAX_CA_FILE_BYTES {
        return Err(usage("larger than 1 MiB".into()));
    }
    let pem = std::fs::read(path).map_err(|err| usage(err.to_string()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|_| usage("not a PEM certificate bundle".into()))?;
    if certs.is_empty() {
        return Err(usage("contains no PEM certificate".into()));
    }
    Ok(certs)
}

/// What `fetch` needs from the job's environment.
#[derive(Debug)]
pub struct RunnerEnv {
    repository: String,
    sha: String,
    id_token_url: Url,
    id_token_request_token: SecretString,
    /// `$GITHUB_ENV` or `$GITHUB_OUTPUT`, per mode.
    file: Option<PathBuf>,
}

impl RunnerEnv {
    /// Checks that this is an Actions job with an ID token on offer.
    pub fn read(env: &BTreeMap<String, String>, delivery: Delivery) -> Result<Self, FetchError> {
        let get = |name: &str| env.get(name).map(String::as_str).filter(|v| !v.is_empty());
        if get("GITHUB_ACTIONS") != Some("true") {
            return Err(FetchError::NotInActions(
                "GITHUB_ACTIONS is not \"true\"; run this as a step of a workflow job".into(),
            ));
        }
        let file_var = match delivery {
            Delivery::GithubEnv => Some("GITHUB_ENV"),
            Delivery::GithubOutput => Some("GITHUB_OUTPUT"),
            Delivery::CredentialProcess => None,
        };
        let missing: Vec<&str> = ["GITHUB_REPOSITORY", "GITHUB_SHA"]
            .into_iter()
            .chain(file_var)
            .filter(|name| get(name).is_none())
            .collect();
        if !missing.is_empty() {
            return Err(FetchError::NotInActions(format!(
                "{} not set",
                missing.join(", ")
            )));
        }
        let (Some(url), Some(token)) = (
            get("ACTIONS_ID_TOKEN_REQUEST_URL"),
            get("ACTIONS_ID_TOKEN_REQUEST_TOKEN"),
        ) else {
            return Err(FetchError::NoIdToken);
        };
        let id_token_url = Url::parse(url)
            .map_err(|_| FetchError::IdToken("ACTIONS_ID_TOKEN_REQUEST_URL is not a URL".into()))?;
        Ok(Self {
            repository: get("GITHUB_REPOSITORY").unwrap_or_default().to_owned(),
            sha: get("GITHUB_SHA").unwrap_or_default().to_owned(),
            id_token_url,
            id_token_request_token: SecretString::from(token),
            file: file_var.and_then(get).map(PathBuf::from),
        })
    }
}

/// Issued credentials, checked.
#[derive(Debug)]
pub struct Credentials {
    /// `ASIA…`.
    pub access_key_id: String,
    /// The secret key.
    pub secret_access_key: SecretString,
    /// The session token.
    pub session_token: SecretString,
    /// RFC 3339 expiry.
    pub expiration: String,
    /// The policy role granted, when the broker says.
    pub role: Option<String>,
    /// The STS session name, when the broker says.
    pub session_name: Option<String>,
}

/// The two HTTP clients and where to send the request.
struct Client {
    runtime: reqwest::Client,
    broker: reqwest::Client,
    issue_url: Url,
    policy: RetryPolicy,
}

/// The last failure of a retried call, kept to report once retries end.
enum LastFailure {
    Transport(String),
    Answer(Answer),
}

impl Client {
    /// ID token → `POST /issue`, retried as the module doc says.
    async fn obtain(
        &self,
        args: &FetchArgs,
        runner: &RunnerEnv,
    ) -> Result<Credentials, FetchError> {
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
            let failure = match transport::send(request, attempt_timeout(deadline)).await {
                Ok(answer) if answer.status == 200 => return parse_credentials(&answer.body),
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
            let Some(pause) = self.policy.pause_before(attempt + 1, retry_after, deadline) else {
                return Err(self.give_up(failure, attempt));
            };
            eprintln!(
                "attestation-broker fetch: attempt {attempt} of {} failed ({}); retrying in {:.1} s",
                self.policy.max_attempts,
                describe_failure(&failure),
                pause.as_secs_f64()
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
            let failure = match transport::send(request, attempt_timeout(deadline)).await {
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
            let Some(pause) = self.policy.pause_before(attempt + 1, retry_after, deadline) else {
                return Err(FetchError::IdToken(describe_failure(&failure)));
            };
            tokio::time::sleep(pause).await;
            attempt += 1;
        }
    }
}

/// The per-attempt deadline: [`transport::ATTEMPT_TIMEOUT`], cut to what is
/// left of the budget (at least a moment, so the attempt fails as a timeout).
fn attempt_timeout(deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .clamp(Duration::from_millis(100), transport::ATTEMPT_TIMEOUT)
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

/// The JSON body of `POST /issue`.
fn request_body(args: &FetchArgs, runner: &RunnerEnv, token: &SecretString) -> Vec<u8> {
    let mut body = json!({
        "oidc_token": token.expose_secret(),
        "repo": runner.repository,
        "sha": runner.sha,
    });
    if let Some(map) = body.as_object_mut() {
        if let Some(job_id) = args.job_id.as_deref().filter(|id| !id.is_empty()) {
            map.insert("job_id".into(), Value::from(job_id));
        }
        if let Some(role) = args.role.as_deref().filter(|role| !role.is_empty()) {
            map.insert("role".into(), Value::from(role));
        }
        if let Some(duration) = args.duration_seconds {
            map.insert("duration_seconds".into(), Value::from(duration));
        }
    }
    body.to_string().into_bytes()
}

/// `{"value": "<jwt>"}` from the runtime.
fn parse_id_token(body: &[u8]) -> Result<SecretString, FetchError> {
    let malformed = || FetchError::IdToken("the runtime's answer has no usable `value`".into());
    let answer: Value = serde_json::from_slice(body).map_err(|_| malformed())?;
    let token = answer
        .get("value")
        .and_then(Value::as_str)
        .ok_or_else(malformed)?;
    let parts = token.split('.').count();
    if parts != 3
        || !token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(malformed());
    }
    Ok(SecretString::from(token))
}

/// The broker's error body `{error, message, request_id}`, if it is one; the
/// request id falls back to the `x-request-id` header.
fn broker_error(answer: &Answer) -> Option<(Option<String>, Option<String>, Option<String>)> {
    let body: Value = serde_json::from_slice(&answer.body).ok()?;
    let text = |name: &str| {
        body.get(name)
            .and_then(Value::as_str)
            .filter(|text| !text.chars().any(char::is_control))
            .map(|text| text.chars().take(300).collect::<String>())
    };
    let code = text("error")?;
    let header_id = answer
        .headers
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    Some((
        Some(code),
        text("message"),
        text("request_id").or(header_id),
    ))
}

/// A non-200, non-transient answer as a refusal.
fn refused(answer: &Answer) -> FetchError {
    let (code, message, request_id) = broker_error(answer).unwrap_or_else(|| {
        let header_id = answer
            .headers
            .get("x-request-id")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        (None, None, header_id)
    });
    FetchError::Refused {
        status: answer.status,
        code,
        message,
        request_id,
    }
}

/// Printable ASCII without spaces or control characters.
fn is_printable(text: &str) -> bool {
    text.bytes().all(|b| b.is_ascii_graphic())
}

/// The 200 answer of `POST /issue`, checked field by field. Messages name
/// the field, never its value.
fn parse_credentials(body: &[u8]) -> Result<Credentials, FetchError> {
    let answer: Value =
        serde_json::from_slice(body).map_err(|_| FetchError::Malformed("not JSON".into()))?;
    let field = |name: &str| -> Result<String, FetchError> {
        let value = answer
            .get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| FetchError::Malformed(format!("`{name}` is missing or not a string")))?;
        if value.is_empty() || value.len() > MAX_FIELD_CHARS || !is_printable(value) {
            return Err(FetchError::Malformed(format!(
                "`{name}` is empty, too long, or not printable ASCII"
            )));
        }
        Ok(value.to_owned())
    };
    let optional = |name: &str| {
        answer
            .get(name)
            .and_then(Value::as_str)
            .filter(|value| !value.is_empty() && value.len() <= 256 && is_printable(value))
            .map(str::to_owned)
    };
    let credentials = Credentials {
        access_key_id: field("access_key_id")?,
        secret_access_key: SecretString::from(field("secret_access_key")?),
        session_token: SecretString::from(field("session_token")?),
        expiration: field("expiration")?,
        role: optional("role"),
        session_name: optional("session_name"),
    };
    let rfc3339 = time::format_description::well_known::Rfc3339;
    if time::OffsetDateTime::parse(&credentials.expiration, &rfc3339).is_err() {
        return Err(FetchError::Malformed(
            "`expiration` is not an RFC 3339 time".into(),
        ));
    }
    Ok(credentials)
}

/// Writes the credentials where `delivery` says.
pub fn deliver(
    delivery: Delivery,
    credentials: &Credentials,
    runner: &RunnerEnv,
    out: &mut dyn Write,
) -> Result<(), FetchError> {
    let stdout_error = |err: std::io::Error| FetchError::Output {
        target: "stdout".into(),
        detail: err.to_string(),
    };
    let secret = credentials.secret_access_key.expose_secret();
    let token = credentials.session_token.expose_secret();
    let (variable, lines) = match delivery {
        Delivery::CredentialProcess => {
            let document = json!({
                "Version": 1,
                "AccessKeyId": credentials.access_key_id,
                "SecretAccessKey": secret,
                "SessionToken": token,
                "Expiration": credentials.expiration,
            });
            writeln!(out, "{document}").map_err(stdout_error)?;
            return out.flush().map_err(stdout_error);
        }
        Delivery::GithubEnv => ("GITHUB_ENV", env_file_lines(credentials)),
        Delivery::GithubOutput => ("GITHUB_OUTPUT", output_file_lines(credentials)),
    };
    // The runner learns the masks from these lines, so they go first, and are
    // flushed before the values exist anywhere a later step could print them.
    write!(out, "::add-mask::{secret}\n::add-mask::{token}\n").map_err(stdout_error)?;
    out.flush().map_err(stdout_error)?;
    let path = runner.file.as_deref().ok_or_else(|| FetchError::Output {
        target: variable.into(),
        detail: "not set".into(),
    })?;
    append(path, &lines).map_err(|err| FetchError::Output {
        target: format!("{variable} ({})", path.display()),
        detail: err.to_string(),
    })?;
    let names = match delivery {
        Delivery::GithubEnv => {
            "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_CREDENTIAL_EXPIRATION"
        }
        _ => "outputs aws-access-key-id, aws-secret-access-key, aws-session-token, expiration",
    };
    writeln!(
        out,
        "attestation-broker fetch: credentials for role {} (session {}, access key {}) expire at {}; written to {variable}: {names}",
        credentials.role.as_deref().unwrap_or("-"),
        credentials.session_name.as_deref().unwrap_or("-"),
        credentials.access_key_id,
        credentials.expiration,
    )
    .and_then(|()| out.flush())
    .map_err(stdout_error)
}

/// `NAME=value` lines for `$GITHUB_ENV`.
fn env_file_lines(credentials: &Credentials) -> String {
    format!(
        "AWS_ACCESS_KEY_ID={}\nAWS_SECRET_ACCESS_KEY={}\nAWS_SESSION_TOKEN={}\nAWS_CREDENTIAL_EXPIRATION={}\n",
        credentials.access_key_id,
        credentials.secret_access_key.expose_secret(),
        credentials.session_token.expose_secret(),
        credentials.expiration,
    )
}

/// `name=value` lines for `$GITHUB_OUTPUT`.
fn output_file_lines(credentials: &Credentials) -> String {
    format!(
        "aws-access-key-id={}\naws-secret-access-key={}\naws-session-token={}\nexpiration={}\n",
        credentials.access_key_id,
        credentials.secret_access_key.expose_secret(),
        credentials.session_token.expose_secret(),
        credentials.expiration,
    )
}

/// Appends `text` in one write; a file this creates is private to its owner.
fn append(path: &Path, text: &str) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.append(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.flush()
}

/// Escapes workflow-command data (`%`, CR, LF) so a message stays one command.
fn escape_command_data(text: &str) -> String {
    text.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

#[cfg(test)]
mod tests;
