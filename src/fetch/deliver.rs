//! Handing the credentials over: `$GITHUB_ENV`, `$GITHUB_OUTPUT` or
//! `credential_process` JSON, and taking them back (`--cleanup`). In the
//! Actions modes the `::add-mask::` lines go out (and are flushed) before the
//! values are written anywhere. A GitHub installation token goes out as
//! `GH_TOKEN` or the step output `token`, under the same rules; it has no
//! `credential_process` form.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use secrecy::ExposeSecret as _;

use super::answer::{Credentials, GithubToken};
use super::{Delivery, FetchError, RunnerEnv};
use crate::api::CredentialProcess;

/// What is handed over besides the credentials.
#[derive(Clone, Debug, Default)]
pub struct Extras {
    /// `--region`: exported as AWS_REGION and AWS_DEFAULT_REGION, or the
    /// output `aws-region` (checked by the argument parser).
    pub region: Option<String>,
    /// `--mask-access-key-id`.
    pub mask_access_key_id: bool,
}

/// The variables `--github-env` may set, blanked by `--cleanup` (an empty
/// value: the runner cannot unset a variable, and the AWS CLI and SDKs treat
/// an empty one as absent).
const EXPORTED: [&str; 6] = [
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_CREDENTIAL_EXPIRATION",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
];

/// Writes the credentials where `delivery` says.
pub fn deliver(
    delivery: Delivery,
    credentials: &Credentials,
    runner: &RunnerEnv,
    extras: &Extras,
    out: &mut dyn Write,
) -> Result<(), FetchError> {
    let secret = credentials.secret_access_key.expose_secret();
    let token = credentials.session_token.expose_secret();
    let (variable, lines) = match delivery {
        Delivery::CredentialProcess => {
            let document = serde_json::to_string(&CredentialProcess::from(credentials.clone()))
                .map_err(|err| FetchError::Output {
                    target: "stdout".into(),
                    detail: err.to_string(),
                })?;
            writeln!(out, "{document}").map_err(stdout_error)?;
            return out.flush().map_err(stdout_error);
        }
        // Nothing to hand over; `fetch` runs `cleanup` instead.
        Delivery::Cleanup => return Ok(()),
        Delivery::GithubEnv => ("GITHUB_ENV", env_file_lines(credentials, extras)),
        Delivery::GithubOutput => ("GITHUB_OUTPUT", output_file_lines(credentials, extras)),
    };
    let mut masks = vec![secret, token];
    if extras.mask_access_key_id {
        masks.push(credentials.access_key_id.as_str());
    }
    mask_and_append(out, &masks, runner, variable, &lines)?;
    let names: Vec<&str> = lines
        .lines()
        .filter_map(|line| line.split_once('=').map(|(name, _)| name))
        .collect();
    let names = match delivery {
        Delivery::GithubEnv => names.join(", "),
        _ => format!("outputs {}", names.join(", ")),
    };
    let access_key = if extras.mask_access_key_id {
        "masked"
    } else {
        credentials.access_key_id.as_str()
    };
    writeln!(
        out,
        "attestation-broker fetch: credentials for role {} (session {}, access key {access_key}) expire at {}; written to {variable}: {names}",
        credentials.role.as_deref().unwrap_or("-"),
        credentials.session_name.as_deref().unwrap_or("-"),
        credentials.expiration,
    )
    .and_then(|()| out.flush())
    .map_err(stdout_error)
}

/// Writes a GitHub installation token where `delivery` says: `GH_TOKEN` in
/// `$GITHUB_ENV`, or the step outputs `token`, `expires-at` and `revoke-at`.
/// Its `::add-mask::` line goes out first, and is flushed, as for AWS
/// credentials. `--credential-process` has no shape for it: a usage error
/// (exit 64) that prints nothing of the token.
pub fn deliver_github(
    delivery: Delivery,
    token: &GithubToken,
    runner: &RunnerEnv,
    out: &mut dyn Write,
) -> Result<(), FetchError> {
    let secret = token.token.expose_secret();
    let (variable, lines) = match delivery {
        Delivery::CredentialProcess => {
            return Err(FetchError::GithubTokenNotDeliverable {
                role: token.role.clone(),
                revoke_at: token.revoke_at.clone(),
            });
        }
        // Nothing to hand over; `fetch` runs `cleanup` instead.
        Delivery::Cleanup => return Ok(()),
        Delivery::GithubEnv => ("GITHUB_ENV", format!("GH_TOKEN={secret}\n")),
        Delivery::GithubOutput => (
            "GITHUB_OUTPUT",
            format!(
                "token={secret}\nexpires-at={}\nrevoke-at={}\n",
                token.expires_at, token.revoke_at
            ),
        ),
    };
    mask_and_append(out, &[secret], runner, variable, &lines)?;
    let names = match delivery {
        Delivery::GithubEnv => "GH_TOKEN",
        _ => "outputs token, expires-at, revoke-at",
    };
    let permissions: Vec<String> = token
        .permissions
        .iter()
        .map(|(name, access)| format!("{name}={}", access.as_str()))
        .collect();
    let permissions = if permissions.is_empty() {
        "-".to_owned()
    } else {
        permissions.join(", ")
    };
    writeln!(
        out,
        "attestation-broker fetch: GitHub installation token for role {} (repositories {}; permissions {permissions}) expires at {}, revoked by the broker at {}; written to {variable}: {names}",
        token.role,
        token.repositories.join(", "),
        token.expires_at,
        token.revoke_at,
    )
    .and_then(|()| out.flush())
    .map_err(stdout_error)
}

/// A failed write to stdout.
fn stdout_error(err: std::io::Error) -> FetchError {
    FetchError::Output {
        target: "stdout".into(),
        detail: err.to_string(),
    }
}

/// Hands values over to later steps: the runner learns the masks from the
/// `::add-mask::` lines, so they go first and are flushed before the values
/// exist anywhere a later step could print them; then `lines` are appended to
/// the file the runner named in `variable`.
fn mask_and_append(
    out: &mut dyn Write,
    masks: &[&str],
    runner: &RunnerEnv,
    variable: &str,
    lines: &str,
) -> Result<(), FetchError> {
    for value in masks {
        writeln!(out, "::add-mask::{value}").map_err(stdout_error)?;
    }
    out.flush().map_err(stdout_error)?;
    let path = runner.file.as_deref().ok_or_else(|| FetchError::Output {
        target: variable.into(),
        detail: "not set".into(),
    })?;
    append(path, lines).map_err(|err| FetchError::Output {
        target: format!("{variable} ({})", path.display()),
        detail: err.to_string(),
    })
}

/// `NAME=value` lines for `$GITHUB_ENV`.
fn env_file_lines(credentials: &Credentials, extras: &Extras) -> String {
    let mut lines = format!(
        "AWS_ACCESS_KEY_ID={}\nAWS_SECRET_ACCESS_KEY={}\nAWS_SESSION_TOKEN={}\nAWS_CREDENTIAL_EXPIRATION={}\n",
        credentials.access_key_id,
        credentials.secret_access_key.expose_secret(),
        credentials.session_token.expose_secret(),
        credentials.expiration,
    );
    if let Some(region) = &extras.region {
        lines.push_str(&format!(
            "AWS_REGION={region}\nAWS_DEFAULT_REGION={region}\n"
        ));
    }
    lines
}

/// `name=value` lines for `$GITHUB_OUTPUT`.
fn output_file_lines(credentials: &Credentials, extras: &Extras) -> String {
    let mut lines = format!(
        "aws-access-key-id={}\naws-secret-access-key={}\naws-session-token={}\nexpiration={}\n",
        credentials.access_key_id,
        credentials.secret_access_key.expose_secret(),
        credentials.session_token.expose_secret(),
        credentials.expiration,
    );
    if let Some(region) = &extras.region {
        lines.push_str(&format!("aws-region={region}\n"));
    }
    lines
}

/// `--cleanup`: blanks the exported variables in `$GITHUB_ENV` (when set)
/// and removes the cached credentials in `cache_dir` (when there is one).
/// Nothing to clean is success: the step runs with `if: always()`, also
/// after a failed fetch.
pub(super) fn cleanup(
    cache_dir: Option<&Path>,
    env: &BTreeMap<String, String>,
    out: &mut dyn Write,
) -> Result<(), FetchError> {
    let mut done = Vec::new();
    if let Some(path) = env.get("GITHUB_ENV").filter(|path| !path.is_empty()) {
        let blanks: String = EXPORTED.iter().map(|name| format!("{name}=\n")).collect();
        append(Path::new(path), &blanks).map_err(|err| FetchError::Output {
            target: format!("GITHUB_ENV ({path})"),
            detail: err.to_string(),
        })?;
        done.push(format!("blanked {} in GITHUB_ENV", EXPORTED.join(", ")));
    }
    if let Some(dir) = cache_dir {
        let removed = super::cache::clear(dir).map_err(|detail| FetchError::Output {
            target: format!("the credential cache {}", dir.display()),
            detail,
        })?;
        done.push(format!(
            "removed {removed} cached credential(s) from {}",
            dir.display()
        ));
    }
    if done.is_empty() {
        done.push("nothing to clean (no GITHUB_ENV, no credential cache)".into());
    }
    writeln!(
        out,
        "attestation-broker fetch: cleanup: {}",
        done.join("; ")
    )
    .and_then(|()| out.flush())
    .map_err(|err| FetchError::Output {
        target: "stdout".into(),
        detail: err.to_string(),
    })
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
