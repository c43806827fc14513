//! `attestation-broker policy check|explain|diff`: governing policy files.
//!
//! These commands read policy files (and, for `explain`, a claims file, a token
//! and optionally a JWKS file); they never touch the network or AWS. They load
//! a policy exactly as the server does (`Policy::load`), so a file they accept
//! is a file the server accepts.
//!
//! Exit codes are shared: 0 = clean / granted / no broadening; 1 = warnings /
//! refused / broadening; 2 = errors (unreadable or invalid input, a token that
//! fails verification, an undecided analysis). clap's own usage errors also
//! exit 2.

mod check;
mod diff;
mod explain;

use std::path::Path;
use std::process::ExitCode;

use clap::{Subcommand, ValueEnum};

use crate::cli::output::{emit, report};
use crate::policy::{LoadedPolicy, Policy, PolicyError};

pub use check::CheckArgs;
pub use diff::DiffArgs;
pub use explain::ExplainArgs;

/// Exit status: findings, refusal or broadening.
const EXIT_FINDINGS: u8 = 1;
/// Exit status: errors in the input, or an analysis that did not finish.
const EXIT_ERROR: u8 = 2;

/// `policy` subcommands.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Lint a policy for risk: exit 0 clean, 1 warnings, 2 errors (or warnings with --strict).
    Check(CheckArgs),
    /// Show the decision the server would make for a claim set or token, rule by rule:
    /// exit 0 granted, 1 refused, 2 input errors.
    Explain(ExplainArgs),
    /// Compare two policies role by role, exactly: exit 0 no broadening, 1 broadening
    /// (unless --allow-broadening), 2 errors or undecided.
    Diff(DiffArgs),
}

/// Output format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Human-readable text.
    #[default]
    Text,
    /// One JSON document on stdout, for CI.
    Json,
}

/// Runs a `policy` subcommand.
pub fn run(command: &PolicyCommand) -> ExitCode {
    match command {
        PolicyCommand::Check(args) => check::run(args),
        PolicyCommand::Explain(args) => explain::run(args),
        PolicyCommand::Diff(args) => diff::run(args),
    }
}

/// One load error, as JSON.
#[derive(Clone, Debug, serde::Serialize)]
struct LoadError {
    /// The file.
    file: String,
    /// Key path, when the error is about one key.
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    /// One line.
    message: String,
}

/// Loads a policy as the server does, or lists every problem.
fn load(path: &Path) -> Result<LoadedPolicy, Vec<LoadError>> {
    Policy::load(path).map_err(|err| {
        let file = path.display().to_string();
        match err {
            PolicyError::Invalid { key, reason, .. } => vec![LoadError {
                file,
                key: Some(key),
                message: reason,
            }],
            PolicyError::InvalidMany { issues, .. } => issues
                .into_iter()
                .map(|issue| LoadError {
                    file: file.clone(),
                    key: Some(issue.key),
                    message: issue.reason,
                })
                .collect(),
            other @ (PolicyError::Read { .. } | PolicyError::Syntax { .. }) => vec![LoadError {
                file,
                key: None,
                message: other.to_string(),
            }],
        }
    })
}

fn print_load_errors(errors: &[LoadError]) {
    for error in errors {
        match &error.key {
            Some(key) => report!("error: {}: key `{key}`: {}", error.file, error.message),
            None => report!("error: {}", error.message),
        }
    }
}

/// Prints a JSON document and returns `code`; serialising our own plain
/// structs cannot fail, but if it did the caller must not see a half document
/// and a success code.
fn print_json(value: &impl serde::Serialize, code: ExitCode) -> ExitCode {
    match serde_json::to_string_pretty(value) {
        Ok(text) => emit(code, |out| writeln!(out, "{text}")),
        Err(err) => {
            report!("error: cannot render JSON: {err}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// The first 12 hex digits of a policy version, for text output.
fn short(version: &str) -> &str {
    version.get(..12).unwrap_or(version)
}
