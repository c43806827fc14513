//! `attestation-broker fetch`: the CI-side client, run inside a GitHub
//! Actions step.
//!
//! It asks the Actions runtime for an ID token (`ACTIONS_ID_TOKEN_REQUEST_URL`
//! with `&audience=…`, authorised by `ACTIONS_ID_TOKEN_REQUEST_TOKEN`), posts
//! `{oidc_token, repo, sha, job_id, role, duration_seconds, permissions}` to
//! the broker's `POST /issue`, and hands the credentials over in one of three
//! ways: appended to `$GITHUB_ENV`, written as step outputs to
//! `$GITHUB_OUTPUT`, or printed as AWS `credential_process` JSON on stdout. A
//! fourth mode, `--cleanup`, is the job's last step: it removes cached
//! credentials and blanks the AWS variables in `$GITHUB_ENV`.
//!
//! For a role of kind `github` the broker answers a GitHub App installation
//! token instead of AWS credentials: it goes out as `GH_TOKEN` in
//! `$GITHUB_ENV` or as the step output `token` (with `expires-at` and
//! `revoke-at`), masked first like the AWS secrets; `--credential-process`
//! refuses it (exit 64) without printing it, and it is never cached.
//! `--permission NAME=LEVEL` (repeatable) asks for a narrower token.
//!
//! Invariants:
//! - The environment is read once, from the map the caller passes in.
//! - In the Actions modes the first two lines on stdout are `::add-mask::` for
//!   the secret key and the session token (for a GitHub token, the first line
//!   masks the token), flushed before the credentials are written anywhere.
//!   Nothing else ever prints any of them, nor the ID token; error messages
//!   name fields, never values.
//! - Values written to `$GITHUB_ENV` / `$GITHUB_OUTPUT` are checked to be
//!   printable ASCII without spaces, so a hostile answer cannot inject extra
//!   variables or workflow commands.
//! - Transient failures (no connection, timeouts, 429, 500, 502, 503, 504)
//!   are retried for `--retry-max-seconds` (default 60) from the first
//!   attempt, with exponential backoff and full jitter, honouring
//!   `Retry-After` as a minimum pause when it fits in what is left of the
//!   budget. No other 4xx is ever retried. Every attempt uses a fresh ID
//!   token: the broker remembers each token's `jti`, so resending a token it
//!   may already have seen would be refused as a replay.
//! - `--credential-process` reuses a credential from a private cache (see
//!   `cache`) while more than `--cache-margin-seconds` of it is left. The
//!   cache holds AWS credentials only: a GitHub token cannot be delivered in
//!   that mode, so there is nothing to cache, and its type cannot be stored.
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
//! | 64 | bad `--broker-url` / `BROKER_URL`, `--ca-file`, proxy setting, `--permission` given twice, or credential cache directory; a GitHub token answered to `--credential-process` |

mod answer;
mod cache;
mod client;
mod deliver;
mod error;
mod transport;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use secrecy::SecretString;

use crate::api::{Access, Permissions};
use url::{Host, Url};

pub use self::answer::{Credentials, GithubToken, Issued};
use self::cache::CredentialCache;
use self::client::Client;
pub use self::deliver::{Extras, deliver, deliver_github};
use self::deliver::{cleanup, escape_command_data};
pub use self::error::*;
use self::transport::RetryPolicy;

/// Largest `--ca-file` read (bytes).
const MAX_CA_FILE_BYTES: u64 = 1024 * 1024;

/// Arguments of `attestation-broker fetch` (docs/cli.md, docs/operations.md).
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
    /// AWS region to hand over with the credentials: AWS_REGION and
    /// AWS_DEFAULT_REGION with --github-env, output aws-region with
    /// --github-output. (A credential_process cannot set a region: put
    /// `region =` in the profile.)
    #[arg(long, value_name = "REGION", value_parser = parse_region, conflicts_with = "credential_process")]
    pub region: Option<String>,
    /// Mask the access key id in the job's log too (an `::add-mask::` line
    /// after those of the secret key and session token).
    #[arg(long, conflicts_with = "credential_process")]
    pub mask_access_key_id: bool,
    /// Keep retrying unreachable-broker errors, 429 and 5xx answers for up to
    /// N seconds from the first attempt (0: a single attempt).
    #[arg(long, value_name = "N", default_value_t = transport::DEFAULT_RETRY_MAX_SECONDS,
          value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub retry_max_seconds: u64,
    /// Directory of the private credential cache used by --credential-process
    /// (and emptied by --cleanup). Default: $RUNNER_TEMP/attestation-broker-cache.
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Do not cache: every --credential-process run asks the broker.
    #[arg(long, conflicts_with = "cache_dir")]
    pub no_cache: bool,
    /// Hand out a cached credential only while more than N seconds of its
    /// life are left; otherwise ask the broker for a new one.
    #[arg(long, value_name = "N", default_value_t = cache::DEFAULT_MARGIN_SECONDS,
          value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub cache_margin_seconds: u64,
    /// For a role of kind `github`: ask for a token with only these
    /// permissions, each at most the role's level (GitHub's names and
    /// levels, e.g. `contents=read`; repeat the flag for each). Without it the
    /// token carries the role's permissions.
    #[arg(long = "permission", value_name = "NAME=LEVEL", value_parser = parse_permission,
          conflicts_with_all = ["duration_seconds", "credential_process"])]
    pub permissions: Vec<(String, Access)>,
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
    /// Print AWS `credential_process` JSON on stdout, reusing a cached
    /// credential while it is comfortably valid.
    #[arg(long)]
    pub credential_process: bool,
    /// For the job's last step (`if: always()`): remove the cached
    /// credentials and blank the AWS variables in $GITHUB_ENV.
    #[arg(long)]
    pub cleanup: bool,
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
    /// `--cleanup`.
    Cleanup,
}

impl DeliveryArgs {
    /// The mode the flags select (clap guarantees exactly one).
    pub fn delivery(&self) -> Delivery {
        if self.github_env {
            Delivery::GithubEnv
        } else if self.github_output {
            Delivery::GithubOutput
        } else if self.cleanup {
            Delivery::Cleanup
        } else {
            Delivery::CredentialProcess
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
                crate::cli::output::report!(
                    "::error title=attestation-broker fetch::{}",
                    escape_command_data(&err.to_string())
                );
            } else {
                crate::cli::output::report!("attestation-broker fetch: error: {err}");
            }
            if let Some(hint) = err.hint() {
                crate::cli::output::report!("hint: {hint}");
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
    if delivery == Delivery::Cleanup {
        return cleanup(cache::cache_dir(args, env).as_deref(), env, out);
    }
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
    requested_permissions(&args.permissions)?;
    let extras = Extras {
        region: args.region.clone(),
        mask_access_key_id: args.mask_access_key_id,
    };
    let cache = match cache::cache_dir(args, env) {
        Some(dir) if delivery == Delivery::CredentialProcess => {
            Some(CredentialCache::open(&dir, args, env, &issue_url, &runner)?)
        }
        _ => None,
    };
    if let Some(credentials) = cache.as_ref().and_then(CredentialCache::load) {
        return deliver(delivery, &credentials, &runner, &extras, out);
    }
    let runtime = transport::build_client(env, None).map_err(FetchError::Usage)?;
    let broker = transport::build_client(env, roots).map_err(FetchError::Usage)?;
    let client = Client {
        runtime,
        broker,
        issue_url,
        policy: RetryPolicy::with_budget(Duration::from_secs(args.retry_max_seconds)),
    };
    let credentials = match client.obtain(args, &runner).await? {
        Issued::Aws(credentials) => credentials,
        // Never cached: `--credential-process`, the only mode with a cache,
        // refuses it, and the cache stores `Credentials` only.
        Issued::Github(token) => return deliver_github(delivery, &token, &runner, out),
    };
    if let Some(cache) = &cache
        && let Err(err) = cache.store(&credentials)
    {
        // The credential is still good: deliver it, uncached.
        crate::cli::output::report!(
            "attestation-broker fetch: warning: cannot cache the credential in {}: {err}",
            cache.path().display()
        );
    }
    deliver(delivery, &credentials, &runner, &extras, out)
}

/// `--permission NAME=LEVEL`: a GitHub permission name (lowercase letters,
/// digits, `_`) and `read`, `write` or `admin`. The broker checks that the
/// role grants it; this only checks the shape.
fn parse_permission(text: &str) -> Result<(String, Access), String> {
    let shape = || {
        "NAME=LEVEL: a GitHub permission name (e.g. contents, pull_requests) and read, write or admin".to_owned()
    };
    let (name, level) = text.split_once('=').ok_or_else(shape)?;
    if !answer::is_permission_name(name) {
        return Err(shape());
    }
    let level = match level {
        "read" => Access::Read,
        "write" => Access::Write,
        "admin" => Access::Admin,
        _ => return Err(shape()),
    };
    Ok((name.to_owned(), level))
}

/// The `permissions` of the request: `None` without `--permission`; a name
/// given twice is a usage error rather than a silent choice between levels.
pub(crate) fn requested_permissions(
    given: &[(String, Access)],
) -> Result<Option<Permissions>, FetchError> {
    if given.is_empty() {
        return Ok(None);
    }
    let mut permissions = Permissions::new();
    for (name, level) in given {
        if permissions.insert(name.clone(), *level).is_some() {
            return Err(FetchError::Usage(format!(
                "--permission {name} is given more than once; give each permission once"
            )));
        }
    }
    Ok(Some(permissions))
}

/// `--region`: an AWS region name, checked so it cannot inject anything
/// into `GITHUB_ENV` / `GITHUB_OUTPUT`.
fn parse_region(text: &str) -> Result<String, String> {
    let valid = !text.is_empty()
        && text.len() <= 32
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if valid {
        Ok(text.to_owned())
    } else {
        Err("an AWS region name: lowercase letters, digits and '-' (e.g. eu-west-1)".into())
    }
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
            Delivery::CredentialProcess | Delivery::Cleanup => None,
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

#[cfg(test)]
mod tests;
