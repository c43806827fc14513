//! Handing the credentials over: `$GITHUB_ENV`, `$GITHUB_OUTPUT` or
//! `credential_process` JSON. In the Actions modes the `::add-mask::` lines
//! go out (and are flushed) before the values are written anywhere.

use std::io::Write;
use std::path::Path;

use secrecy::ExposeSecret as _;
use serde_json::json;

use super::answer::Credentials;
use super::{Delivery, FetchError, RunnerEnv};

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
pub(super) fn escape_command_data(text: &str) -> String {
    text.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}
