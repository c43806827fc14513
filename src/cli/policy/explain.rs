//! `policy explain POLICY (--claims FILE | --token FILE [--jwks FILE [--at TIME]])`.
//!
//! Shows the decision `Policy::evaluate` makes, with the full trace of
//! `Policy::explain`. A token is trusted only when `--jwks` is given and it
//! passes every offline check of `verify::inspect` (the server's checks:
//! algorithm, kid, key, signature, exp/nbf/iat and lifetime at `--at`, jti,
//! sub) against those keys; issuer and audience are not checked, as there
//! is no configuration here. Without `--jwks` the token's
//! claims are used as written and the output says, first, that they were NOT
//! verified.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{ArgGroup, Args};
use serde_json::Value;

use crate::api::Permissions;
use crate::claims::UnverifiedClaims;
use crate::cli::output::{emit, report};
use crate::config::{MAX_TOKEN_BYTES, VerifyConfig};
use crate::policy::{
    AllowedCredential, CannedContext, ConditionTrace, ContextTrace, Denial, Explanation,
    MAX_CONTEXT_FILE_BYTES, MIN_DURATION_SECONDS, RoleOutcome, RoleRequest, RoleTrace, RuleTrace,
};
use crate::verify::{Check, InspectRules};

use super::{EXIT_ERROR, EXIT_FINDINGS, Format, load, print_json, print_load_errors, short};

/// Largest claims or JWKS file read (a GitHub JWKS is a few KiB).
const MAX_INPUT_BYTES: u64 = 1024 * 1024;

/// Arguments of `policy explain`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("input").required(true).args(["claims", "token"])))]
pub struct ExplainArgs {
    /// Policy file (TOML).
    pub policy: PathBuf,
    /// A JSON object of claims (as a token payload; `null` = absent).
    #[arg(long, value_name = "FILE")]
    pub claims: Option<PathBuf>,
    /// A JWT (compact form); its payload supplies the claims.
    #[arg(long, value_name = "FILE")]
    pub token: Option<PathBuf>,
    /// A JWKS file to verify the token against first (no network).
    #[arg(long, value_name = "FILE", requires = "token")]
    pub jwks: Option<PathBuf>,
    /// Verification time: unix seconds or RFC 3339 (default: now).
    #[arg(long, value_name = "TIME", requires = "jwks")]
    pub at: Option<String>,
    /// The role the request names (default: none, as when a request leaves it out).
    #[arg(long, value_name = "NAME")]
    pub role: Option<String>,
    /// The duration the request asks for.
    #[arg(long, value_name = "N")]
    pub duration_seconds: Option<u64>,
    /// Canned answers about the token's commit (JSON: `checks`,
    /// `pull_request`), to evaluate context conditions offline. Without it
    /// they are not evaluated, and so do not match.
    #[arg(long, value_name = "FILE")]
    pub context: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// Where the claims came from.
#[derive(serde::Serialize)]
struct Source {
    kind: &'static str,
    file: String,
    /// Whether a signature and the token's times were checked.
    verified: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    verified_at: Option<u64>,
}

#[derive(serde::Serialize)]
struct Report<'a> {
    policy: String,
    version: &'a str,
    source: Source,
    request: RequestView<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    context: Option<String>,
    decision: Decision,
    roles: Vec<RoleView<'a>>,
}

#[derive(serde::Serialize)]
struct RequestView<'a> {
    role: Option<&'a str>,
    duration_seconds: Option<u64>,
}

#[derive(serde::Serialize)]
struct Decision {
    granted: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    role_arn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    repositories: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    permissions: Option<Permissions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rule: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration_seconds: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason_code: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
}

#[derive(serde::Serialize)]
struct RoleView<'a> {
    role: &'a str,
    outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    allow_rule: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    deny_rule: Option<usize>,
    allow: Vec<RuleView<'a>>,
    deny: Vec<RuleView<'a>>,
}

#[derive(serde::Serialize)]
struct RuleView<'a> {
    rule: &'a str,
    matched: bool,
    conditions: Vec<ConditionView<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    context: Vec<ContextView>,
}

#[derive(serde::Serialize)]
struct ContextView {
    condition: String,
    key: &'static str,
    /// `pass`, `fail`, `unavailable`, `not_asked` (the claims decide
    /// without it) or `null` when not evaluated (no `--context`).
    answer: Option<&'static str>,
    detail: Option<String>,
    matched: bool,
}

#[derive(serde::Serialize)]
struct ConditionView<'a> {
    claim: &'a str,
    value: Option<&'a str>,
    patterns: &'a [String],
    case_insensitive: bool,
    matched: bool,
    matched_pattern: Option<usize>,
}

pub(super) fn run(args: &ExplainArgs) -> ExitCode {
    let loaded = match load(&args.policy) {
        Ok(loaded) => loaded,
        Err(errors) => {
            print_load_errors(&errors);
            return ExitCode::from(EXIT_ERROR);
        }
    };
    let (claims, source) = match read_claims(args) {
        Ok(found) => found,
        Err(message) => {
            report!("error: {message}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    let request = RoleRequest {
        role: args.role.as_deref(),
        duration_seconds: args.duration_seconds,
        permissions: None,
    };
    let answers = match &args.context {
        None => None,
        Some(path) => {
            let canned = read_capped(path, MAX_CONTEXT_FILE_BYTES).and_then(|text| {
                CannedContext::parse(&text).map_err(|err| format!("{}: {err}", path.display()))
            });
            match canned {
                // Exactly the questions the server would ask.
                Ok(canned) => Some(
                    canned.answers(&loaded.policy.context_needed_unverified(&claims, &request)),
                ),
                Err(message) => {
                    report!("error: {message}");
                    return ExitCode::from(EXIT_ERROR);
                }
            }
        }
    };
    let explanation = loaded
        .policy
        .explain_in_context(&claims, &request, answers.as_ref());
    let code = if explanation.outcome.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FINDINGS)
    };
    match args.format {
        Format::Json => {
            if !source.verified && source.kind == "token" {
                report!("warning: the token was NOT verified (no --jwks)");
            }
            let report = Report {
                policy: args.policy.display().to_string(),
                version: loaded.policy.version(),
                source,
                request: RequestView {
                    role: request.role,
                    duration_seconds: request.duration_seconds,
                },
                context: args.context.as_ref().map(|path| path.display().to_string()),
                decision: decision(&explanation),
                roles: explanation.roles.iter().map(role_view).collect(),
            };
            print_json(&report, code)
        }
        Format::Text => emit(code, |out| {
            if source.kind == "token" {
                if source.verified {
                    writeln!(
                        out,
                        "token: {} verified against the JWKS at {} (signature, exp/nbf/iat; issuer and audience not checked)",
                        source.file,
                        source.verified_at.unwrap_or_default()
                    )?;
                } else {
                    writeln!(
                        out,
                        "token: {} was NOT verified (no --jwks): the decision below uses its claims as written",
                        source.file
                    )?;
                }
            } else {
                writeln!(out, "claims: {}", source.file)?;
            }
            writeln!(
                out,
                "policy: {} (version {})",
                args.policy.display(),
                short(loaded.policy.version())
            )?;
            if let Some(path) = &args.context {
                writeln!(out, "context: {} (canned answers)", path.display())?;
            }
            writeln!(out, "{explanation}")
        }),
    }
}

fn read_claims(args: &ExplainArgs) -> Result<(UnverifiedClaims, Source), String> {
    if let Some(path) = &args.claims {
        let text = read_capped(path, MAX_INPUT_BYTES)?;
        let value: Value = serde_json::from_str(&text)
            .map_err(|err| format!("{}: not JSON: {err}", path.display()))?;
        let Value::Object(object) = value else {
            return Err(format!(
                "{}: must be a JSON object of claims",
                path.display()
            ));
        };
        return Ok((
            UnverifiedClaims::from_json_object(&object),
            Source {
                kind: "claims",
                file: path.display().to_string(),
                verified: false,
                verified_at: None,
            },
        ));
    }
    let Some(path) = &args.token else {
        return Err("give --claims FILE or --token FILE".to_owned());
    };
    let raw = read_capped(path, MAX_TOKEN_BYTES as u64 + 1024)?;
    let raw = raw.trim();
    let file = path.display().to_string();
    // One verification path with the server and `token inspect`: the same
    // checks, offline, against the keys given (none without --jwks).
    let keys = match &args.jwks {
        Some(jwks) => {
            let body = read_capped(jwks, MAX_INPUT_BYTES)?;
            crate::jwks::parse_jwks(body.as_bytes())
                .map_err(|err| format!("{}: {err}", jwks.display()))?
        }
        None => Vec::new(),
    };
    let now = match &args.at {
        Some(at) => parse_time(at)?,
        None => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|_| "the system clock is before 1970".to_owned())?
            .as_secs(),
    };
    // The server's defaults: RS256 (GitHub's algorithm) and its leeway. Issuer
    // and audience are not checked: there is no configuration here.
    let defaults = VerifyConfig::default();
    let algorithms = defaults.algorithms;
    let inspection = crate::verify::inspect(
        raw,
        &InspectRules {
            keys: &keys,
            issuer: None,
            audiences: None,
            algorithms: &algorithms,
            leeway: defaults.leeway_seconds,
            now,
        },
    );
    let failed = |check: &Check| check.passed == Some(false);
    if let Some(structure) = inspection
        .checks
        .iter()
        .find(|check| check.name == "structure" && failed(check))
    {
        return Err(format!("{file}: {}", structure.detail));
    }
    let Value::Object(payload) = &inspection.claims else {
        return Err(format!("{file}: the payload is not a JSON object"));
    };
    if args.jwks.is_some() && inspection.result == crate::verify::Verdict::Refused {
        let reasons: Vec<String> = inspection
            .checks
            .iter()
            .filter(|check| failed(check))
            .map(|check| format!("{}: {}", check.name, check.detail))
            .collect();
        return Err(format!(
            "{file}: token verification failed at {now}: {}",
            reasons.join("; ")
        ));
    }
    let verified = args.jwks.is_some();
    Ok((
        UnverifiedClaims::from_json_object(payload),
        Source {
            kind: "token",
            file,
            verified,
            verified_at: verified.then_some(now),
        },
    ))
}

fn read_capped(path: &Path, limit: u64) -> Result<String, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|err| format!("{}: {err}", path.display()))?;
    let mut text = String::new();
    file.take(limit + 1)
        .read_to_string(&mut text)
        .map_err(|err| format!("{}: {err}", path.display()))?;
    if text.len() as u64 > limit {
        return Err(format!("{}: larger than {limit} bytes", path.display()));
    }
    Ok(text)
}

/// Unix seconds, or an RFC 3339 timestamp.
fn parse_time(text: &str) -> Result<u64, String> {
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(seconds);
    }
    let parsed = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|_| format!("--at {text:?}: expected unix seconds or an RFC 3339 time"))?;
    u64::try_from(parsed.unix_timestamp()).map_err(|_| format!("--at {text:?}: before 1970"))
}

fn decision(explanation: &Explanation) -> Decision {
    match &explanation.outcome {
        Ok(grant) => {
            let granted = Decision {
                granted: true,
                role: Some(grant.role_name().to_owned()),
                kind: None,
                role_arn: None,
                repositories: None,
                permissions: None,
                rule: Some(grant.matched_rule().to_owned()),
                duration_seconds: None,
                reason_code: None,
                detail: None,
            };
            match grant.credential() {
                AllowedCredential::Aws {
                    role_arn,
                    duration_seconds,
                    ..
                } => Decision {
                    role_arn: Some(role_arn.clone()),
                    duration_seconds: Some(*duration_seconds),
                    ..granted
                },
                AllowedCredential::GitHub {
                    owner,
                    repositories,
                    permissions,
                } => Decision {
                    kind: Some("github"),
                    repositories: Some(
                        repositories
                            .iter()
                            .map(|name| format!("{owner}/{name}"))
                            .collect(),
                    ),
                    permissions: Some(permissions.clone()),
                    ..granted
                },
            }
        }
        Err(denial) => {
            let (role, rule, detail) = match denial {
                Denial::NotPermitted { role, first_failed } => {
                    (role.clone(), None, first_failed.clone())
                }
                Denial::DeniedByRule { role, rule } => (
                    Some(role.clone()),
                    Some(rule.clone()),
                    format!("{rule} matched"),
                ),
                Denial::UnknownRole => (None, None, "the policy has no such role".to_owned()),
                Denial::Ambiguous { roles } => (
                    None,
                    None,
                    format!("{} all match; the request must name one", roles.join(", ")),
                ),
                Denial::DurationOutOfRange {
                    role,
                    requested,
                    max,
                } => (
                    Some(role.clone()),
                    None,
                    format!("requested {requested} s, allowed {MIN_DURATION_SECONDS}..={max} s"),
                ),
                Denial::FieldNotForKind { role, field, kind } => (
                    Some(role.clone()),
                    None,
                    format!("`{field}` is not taken by roles of kind `{kind}`"),
                ),
                Denial::RepositoryOfOtherOwner { role, detail }
                | Denial::PermissionsBeyondRole { role, detail } => {
                    (Some(role.clone()), None, detail.clone())
                }
                Denial::ContextUnavailable { role, detail } => (role.clone(), None, detail.clone()),
            };
            Decision {
                granted: false,
                role,
                kind: None,
                role_arn: None,
                repositories: None,
                permissions: None,
                rule,
                duration_seconds: None,
                reason_code: Some(denial.reason_code()),
                detail: Some(detail),
            }
        }
    }
}

fn role_view(trace: &RoleTrace) -> RoleView<'_> {
    let (outcome, allow_rule, deny_rule) = match trace.outcome {
        RoleOutcome::Granted { allow } => ("granted", Some(allow), None),
        RoleOutcome::Denied { allow, deny } => ("denied", Some(allow), Some(deny)),
        RoleOutcome::NotAllowed => ("not_allowed", None, None),
        RoleOutcome::Unavailable { allow } => ("unavailable", Some(allow), None),
    };
    RoleView {
        role: &trace.role,
        outcome,
        allow_rule,
        deny_rule,
        allow: trace.allow.iter().map(rule_view).collect(),
        deny: trace.deny.iter().map(rule_view).collect(),
    }
}

fn rule_view(trace: &RuleTrace) -> RuleView<'_> {
    RuleView {
        rule: &trace.rule,
        matched: trace.matched(),
        conditions: trace.conditions.iter().map(condition_view).collect(),
        context: trace.context.iter().map(context_view).collect(),
    }
}

fn condition_view(trace: &ConditionTrace) -> ConditionView<'_> {
    ConditionView {
        claim: &trace.claim,
        value: trace.value.as_deref(),
        patterns: &trace.patterns,
        case_insensitive: trace.case_insensitive,
        matched: trace.matched(),
        matched_pattern: trace.matched_pattern,
    }
}

fn context_view(trace: &ContextTrace) -> ContextView {
    ContextView {
        condition: trace.condition.to_string(),
        key: trace.condition.key(),
        answer: match &trace.answer {
            Some(answer) => Some(answer.label()),
            None if trace.evaluated => Some("not_asked"),
            None => None,
        },
        detail: trace
            .answer
            .as_ref()
            .map(|answer| answer.detail().to_owned()),
        matched: trace.matched(),
    }
}
