//! What can stop `fetch`, and the exit code and hint for each (the table is
//! in the module doc of `fetch`). Messages name fields and statuses, never a
//! credential or token value.

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
/// Exit code: a bad URL, CA bundle, proxy setting or `--permission`, or a
/// GitHub token asked for with `--credential-process` (as `check-config`'s 64).
pub const EXIT_USAGE: u8 = 64;

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
    #[error(
        "the broker at {url} could not be reached after {attempts} attempt(s) within the {budget_seconds} s retry budget: {detail}"
    )]
    Unreachable {
        /// The issue URL.
        url: String,
        /// Attempts made.
        attempts: u32,
        /// `--retry-max-seconds`.
        budget_seconds: u64,
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
    /// The broker's 200 answer is not what docs/api.md promises.
    #[error("the broker's answer is malformed: {0}")]
    Malformed(String),
    /// The broker issued a GitHub installation token (a role of kind
    /// `github`), which `--credential-process` cannot carry: its JSON is AWS
    /// credentials only. The token is not printed.
    #[error(
        "role {role} issued a GitHub installation token, which --credential-process cannot deliver \
         (it prints AWS credentials only); the token was not printed, and the broker revokes it at {revoke_at}"
    )]
    GithubTokenNotDeliverable {
        /// The role granted.
        role: String,
        /// When the broker revokes the token it issued.
        revoke_at: String,
    },
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
            Self::Usage(_) | Self::GithubTokenNotDeliverable { .. } => EXIT_USAGE,
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
                status: 429 | 500 | 502 | 503 | 504,
                ..
            } => Some(
                "the broker cannot issue credentials right now; re-run the job later, or allow a longer --retry-max-seconds",
            ),
            Self::GithubTokenNotDeliverable { .. } => Some(
                "fetch a role of kind github with --github-env (GH_TOKEN) or --github-output (output `token`); --credential-process is for AWS roles",
            ),
            Self::Unreachable { .. } => Some(
                "check --broker-url, the runner's network path to the broker, and --ca-file when the broker uses a private CA; --retry-max-seconds sets how long to keep trying",
            ),
            _ => None,
        }
    }
}
