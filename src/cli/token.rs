//! `attestation-broker token inspect`: "why was this token refused?"
//!
//! Shows the header, the claims and every check the server runs, each with
//! pass or fail, as of `--at` (so a captured, expired token can be checked as
//! of its issue time). The checks are the server's own pipeline
//! (`verify::inspect`). Without `--issuer` or `--audience` those checks are
//! reported as not checked and the result is not "verified". With
//! `--jwks FILE` it makes no network call. It never prints the token itself,
//! only its SHA-256.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use jsonwebtoken::Algorithm;

use crate::cli::output::{emit, report};
use crate::config::{IssuerConfig, JwksConfig, parse_algorithm};
use crate::jwks::{JwksCache, VerifyingKey, parse_jwks};
use crate::metrics::Metrics;
use crate::verify::{InspectRules, Inspection, Outcome, Verdict, inspect, token_sha256};

/// Largest token file read (a token is a few KiB; anything larger is not one).
const MAX_TOKEN_FILE_BYTES: u64 = 64 * 1024;
/// Largest JWKS file read.
const MAX_JWKS_FILE_BYTES: u64 = 1024 * 1024;

/// Output format.
#[derive(Debug, Clone, Copy, Default, ValueEnum)]
pub enum OutputFormat {
    /// Human-readable.
    #[default]
    Text,
    /// One JSON document.
    Json,
}

/// `token inspect` arguments.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("keys").required(true).multiple(true).args(["jwks", "issuer"])))]
pub struct InspectArgs {
    /// File holding the raw JWT (whitespace around it is ignored).
    pub token_file: PathBuf,
    /// JWKS file to verify against; no network call is made.
    #[arg(long)]
    pub jwks: Option<PathBuf>,
    /// Issuer to require; without `--jwks` its keys are fetched through OIDC discovery.
    #[arg(long)]
    pub issuer: Option<String>,
    /// Audience to require (repeatable); without it the audience is reported as not checked.
    #[arg(long)]
    pub audience: Vec<String>,
    /// Time to check at: unix seconds or RFC 3339 (default: now).
    #[arg(long)]
    pub at: Option<String>,
    /// Clock-skew leeway in seconds.
    #[arg(long, default_value_t = 10)]
    pub leeway_seconds: u64,
    /// Accepted algorithms.
    #[arg(long = "algorithm", default_values_t = ["RS256".to_owned()])]
    pub algorithms: Vec<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: OutputFormat,
}

/// Exit code when the token does not verify (or was not fully checked).
const EXIT_REFUSED: u8 = 1;
/// Exit code for unusable input.
const EXIT_INPUT: u8 = 2;

/// Parses `--at`: unix seconds or RFC 3339.
pub fn parse_at(text: &str) -> Result<u64, String> {
    if let Ok(seconds) = text.trim().parse::<u64>() {
        return Ok(seconds);
    }
    let at =
        time::OffsetDateTime::parse(text.trim(), &time::format_description::well_known::Rfc3339)
            .map_err(|err| format!("`{text}` is neither unix seconds nor RFC 3339: {err}"))?;
    u64::try_from(at.unix_timestamp()).map_err(|_| format!("`{text}` is before 1970"))
}

fn read_capped(path: &PathBuf, cap: u64, what: &str) -> Result<String, String> {
    let metadata = std::fs::metadata(path)
        .map_err(|err| format!("{}: cannot read {what}: {err}", path.display()))?;
    if metadata.len() > cap {
        return Err(format!(
            "{}: {what} is larger than {cap} bytes",
            path.display()
        ));
    }
    std::fs::read_to_string(path)
        .map_err(|err| format!("{}: cannot read {what}: {err}", path.display()))
}

async fn load_keys(args: &InspectArgs) -> Result<Vec<(String, VerifyingKey)>, String> {
    if let Some(path) = &args.jwks {
        let text = read_capped(path, MAX_JWKS_FILE_BYTES, "JWKS")?;
        return parse_jwks(text.as_bytes()).map_err(|err| format!("{}: {err}", path.display()));
    }
    let issuer = args.issuer.clone().unwrap_or_default();
    let config = IssuerConfig {
        issuer: issuer.clone(),
        audiences: vec!["-".to_owned()],
        jwks_url: None,
    };
    let metrics = Metrics::new().map_err(|err| err.to_string())?;
    let cache = JwksCache::new(&[config], &JwksConfig::default(), metrics)
        .map_err(|err| err.to_string())?;
    cache
        .fetch_key_set(0)
        .await
        .map_err(|err| format!("cannot fetch the keys of {issuer}: {err}"))
}

/// Runs `token inspect`.
pub async fn run(args: InspectArgs) -> ExitCode {
    match inspect_with(&args).await {
        Ok((inspection, digest)) => {
            let code = if inspection.verified {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_REFUSED)
            };
            emit(code, |out| print(out, &inspection, &digest, args.format))
        }
        Err(message) => {
            report!("error: {message}");
            ExitCode::from(EXIT_INPUT)
        }
    }
}

async fn inspect_with(args: &InspectArgs) -> Result<(Inspection, String), String> {
    let raw = read_capped(&args.token_file, MAX_TOKEN_FILE_BYTES, "token")?;
    let raw = raw.trim();
    let algorithms: Vec<Algorithm> = args
        .algorithms
        .iter()
        .map(|name| parse_algorithm(name))
        .collect::<Result<_, _>>()?;
    let now = match &args.at {
        Some(text) => parse_at(text)?,
        None => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs()),
    };
    let keys = load_keys(args).await?;
    let audiences = (!args.audience.is_empty()).then_some(args.audience.as_slice());
    let rules = InspectRules {
        keys: &keys,
        issuer: args.issuer.as_deref(),
        audiences,
        algorithms: &algorithms,
        leeway: args.leeway_seconds,
        now,
    };
    Ok((inspect(raw, &rules), token_sha256(raw)))
}

fn print(
    out: &mut dyn Write,
    inspection: &Inspection,
    digest: &str,
    format: OutputFormat,
) -> std::io::Result<()> {
    match format {
        OutputFormat::Json => {
            let mut value = serde_json::to_value(inspection).unwrap_or_default();
            if let Some(object) = value.as_object_mut() {
                object.insert("token_sha256".to_owned(), serde_json::Value::from(digest));
            }
            writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(&value).unwrap_or_default()
            )
        }
        OutputFormat::Text => {
            writeln!(out, "token_sha256: {digest}")?;
            writeln!(
                out,
                "header: {}",
                serde_json::to_string_pretty(&inspection.header).unwrap_or_default()
            )?;
            writeln!(
                out,
                "claims: {}",
                serde_json::to_string_pretty(&inspection.claims).unwrap_or_default()
            )?;
            writeln!(out, "checks:")?;
            for check in &inspection.checks {
                let mark = match check.outcome {
                    Outcome::Passed => "ok  ",
                    Outcome::Failed => "FAIL",
                    Outcome::Skipped => "skip",
                    Outcome::NotChecked => "--  ",
                };
                if check.detail.is_empty() {
                    writeln!(out, "  {mark}  {}", check.name)?;
                } else {
                    writeln!(out, "  {mark}  {}: {}", check.name, check.detail)?;
                }
            }
            match inspection.result {
                Verdict::Verified => writeln!(out, "result: verified"),
                Verdict::Refused => writeln!(out, "result: NOT verified"),
                Verdict::Incomplete => writeln!(
                    out,
                    "result: NOT fully verified: {} not checked (give --issuer and --audience); every other check passed",
                    inspection.not_checked().join(", ")
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_accepts_unix_seconds_and_rfc3339() {
        assert_eq!(parse_at("1639001456").unwrap(), 1_639_001_456);
        assert_eq!(parse_at("2021-12-08T22:10:56Z").unwrap(), 1_639_001_456);
        assert!(parse_at("yesterday").is_err());
    }
}
