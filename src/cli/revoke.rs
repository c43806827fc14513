//! `revoke-github-token`: the job's last step revokes the installation token
//! the broker issued it (`DELETE /installation/token`, authenticated with the
//! token itself), so the token dies with the job rather than at the broker's
//! scheduled revocation.
//!
//! The token comes from an environment variable (`GH_TOKEN` unless
//! `--token-env` names another) and is never printed. The API root is
//! `GITHUB_API_URL` (set by Actions; GHES included), else
//! `https://api.github.com`. Exit 0 when GitHub answers 204 or says the
//! token is already invalid (401); 64 when there is no token or the URL is
//! unusable; 1 for any other answer or no answer within the time limit.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use secrecy::SecretString;

use super::EXIT_CONFIG;
use super::output::{emit, report};
use crate::github::{RevokeOutcome, Transport, revoke_token};

/// Time limit of the one call.
const REVOKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Arguments of `revoke-github-token`.
#[derive(Debug, clap::Args)]
pub struct RevokeArgs {
    /// Environment variable holding the token.
    #[arg(long, default_value = "GH_TOKEN", value_name = "NAME")]
    pub token_env: String,
}

/// Runs the command with the process environment `env`.
pub async fn run(args: &RevokeArgs, env: &BTreeMap<String, String>) -> ExitCode {
    let name = &args.token_env;
    let Some(token) = env
        .get(name)
        .map(|value| value.trim())
        .filter(|value| !value.is_empty())
    else {
        report!("revoke-github-token: {name} is not set or empty: no token to revoke");
        return ExitCode::from(EXIT_CONFIG);
    };
    let token = SecretString::from(token.to_owned());
    let api = match env.get("GITHUB_API_URL").map(|value| value.trim()) {
        Some(text) if !text.is_empty() => match url::Url::parse(text) {
            Ok(url) => match crate::config::check_scheme(&url) {
                Ok(()) => url,
                Err(reason) => {
                    report!("revoke-github-token: GITHUB_API_URL: {reason}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            },
            Err(err) => {
                report!("revoke-github-token: GITHUB_API_URL is not a URL: {err}");
                return ExitCode::from(EXIT_CONFIG);
            }
        },
        _ => crate::config::default_api_url(),
    };
    let transport = match Transport::new(REVOKE_TIMEOUT, None) {
        Ok(transport) => transport,
        Err(err) => {
            report!("revoke-github-token: cannot build the HTTP client: {err}");
            return ExitCode::FAILURE;
        }
    };
    match revoke_token(&transport, &api, &token).await {
        Ok(RevokeOutcome::Revoked) => emit(ExitCode::SUCCESS, |out| {
            writeln!(out, "revoked the GitHub token in {name}")
        }),
        Ok(RevokeOutcome::AlreadyInvalid) => emit(ExitCode::SUCCESS, |out| {
            writeln!(
                out,
                "the GitHub token in {name} was already invalid (revoked or expired)"
            )
        }),
        Ok(RevokeOutcome::NotFound) => {
            report!(
                "revoke-github-token: {api} answered 404 to DELETE /installation/token; is GITHUB_API_URL the REST API root?"
            );
            ExitCode::FAILURE
        }
        Err(err) => {
            report!("revoke-github-token: the token in {name} was not revoked: {err}");
            ExitCode::FAILURE
        }
    }
}
