//! `policy check POLICY`: load like the server, then lint for risk.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::cli::output::emit;
use crate::policy::lint::{Finding, LintOptions, Severity, lint};

use super::{
    EXIT_ERROR, EXIT_FINDINGS, Format, LoadError, load, print_json, print_load_errors, short,
};

/// Arguments of `policy check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Policy file (TOML).
    pub policy: PathBuf,
    /// Make warnings fail like errors (exit 2).
    #[arg(long)]
    pub strict: bool,
    /// A role that cannot write (repeatable). When given, exactly these roles are
    /// read-only; otherwise a role is read-only when a word of its name or ARN is
    /// read, readonly, pull or plan and none is write, readwrite, push, deploy,
    /// publish or admin.
    #[arg(long = "read-only-role", value_name = "NAME")]
    pub read_only_roles: Vec<String>,
    /// The GitHub App's granted permissions, JSON: `{"contents": "write", …}`
    /// or a whole `GET /app` answer (its `permissions` are read). A role of
    /// kind `github` asking for more is an error (`permission-not-granted`).
    #[arg(long = "app-permissions", value_name = "FILE")]
    pub app_permissions: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// Largest `--app-permissions` file read.
const MAX_APP_PERMISSIONS_BYTES: u64 = 64 * 1024;

/// Reads `--app-permissions`: a permissions object, or a `GET /app` answer.
fn read_app_permissions(path: &std::path::Path) -> Result<crate::api::Permissions, LoadError> {
    let error = |message: String| LoadError {
        file: path.display().to_string(),
        key: None,
        message: format!("{}: {message}", path.display()),
    };
    let text = read_bounded(path, MAX_APP_PERMISSIONS_BYTES)
        .map_err(|reason| error(format!("--app-permissions: {reason}")))?;
    let mut value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|err| error(format!("--app-permissions: not JSON: {err}")))?;
    if let Some(permissions) = value.get_mut("permissions") {
        value = permissions.take();
    }
    serde_json::from_value(value).map_err(|err| {
        error(format!(
            "--app-permissions: expected an object of permission names and levels (read, write, admin): {err}"
        ))
    })
}

fn read_bounded(path: &std::path::Path, limit: u64) -> Result<String, String> {
    use std::io::Read as _;
    let file = std::fs::File::open(path).map_err(|err| format!("cannot read: {err}"))?;
    let mut text = String::new();
    file.take(limit + 1)
        .read_to_string(&mut text)
        .map_err(|err| format!("cannot read: {err}"))?;
    if text.len() as u64 > limit {
        return Err(format!("larger than {limit} bytes"));
    }
    Ok(text)
}

/// Roles of kind `github` asking for more than the App was granted.
fn beyond_grant(policy: &crate::policy::Policy, granted: &crate::api::Permissions) -> Vec<Finding> {
    crate::github::role_permissions(policy)
        .into_iter()
        .flat_map(|(role, asked)| {
            crate::github::missing_permissions(&asked, granted)
                .into_iter()
                .map(move |missing| Finding {
                    severity: Severity::Error,
                    role: role.clone(),
                    rule: None,
                    key: Some("permissions".to_owned()),
                    code: "permission-not-granted",
                    message: format!(
                        "asks {missing}: GitHub would refuse every token of this role"
                    ),
                    witness: None,
                })
        })
        .collect()
}

/// The JSON document (`--format json`); its shape is a contract for CI.
#[derive(serde::Serialize)]
struct Report {
    policy: String,
    version: Option<String>,
    findings: Vec<Finding>,
    errors: Vec<LoadError>,
}

pub(super) fn run(args: &CheckArgs) -> ExitCode {
    let file = args.policy.display().to_string();
    let (version, findings, errors) = match load(&args.policy) {
        Err(errors) => (None, Vec::new(), errors),
        Ok(loaded) => {
            let policy = loaded.policy;
            let names: Vec<String> = policy.roles().into_iter().map(|role| role.name).collect();
            let mut unknown: Vec<LoadError> = args
                .read_only_roles
                .iter()
                .filter(|name| !names.contains(name))
                .map(|name| LoadError {
                    file: file.clone(),
                    key: None,
                    message: format!("--read-only-role {name}: the policy has no such role"),
                })
                .collect();
            let options = LintOptions {
                read_only_roles: (!args.read_only_roles.is_empty())
                    .then(|| args.read_only_roles.clone()),
                ..LintOptions::default()
            };
            let granted = match args.app_permissions.as_deref().map(read_app_permissions) {
                None => None,
                Some(Ok(granted)) => Some(granted),
                Some(Err(err)) => {
                    unknown.push(err);
                    None
                }
            };
            let findings = if unknown.is_empty() {
                let mut findings = lint(&policy, &options);
                if let Some(granted) = &granted {
                    findings.extend(beyond_grant(&policy, granted));
                }
                findings
            } else {
                Vec::new()
            };
            (Some(policy.version().to_owned()), findings, unknown)
        }
    };
    let failed = !errors.is_empty()
        || findings
            .iter()
            .any(|finding| finding.severity == Severity::Error);
    let code = if failed || (args.strict && !findings.is_empty()) {
        EXIT_ERROR
    } else if findings.is_empty() {
        0
    } else {
        EXIT_FINDINGS
    };
    match args.format {
        Format::Json => {
            let report = Report {
                policy: file,
                version,
                findings,
                errors,
            };
            print_json(&report, ExitCode::from(code))
        }
        Format::Text => {
            print_load_errors(&errors);
            emit(ExitCode::from(code), |out| {
                if let Some(version) = &version {
                    writeln!(out, "policy: {file} (version {})", short(version))?;
                }
                for finding in &findings {
                    print_finding(out, finding)?;
                }
                let count = |severity| {
                    findings
                        .iter()
                        .filter(|finding| finding.severity == severity)
                        .count()
                };
                if version.is_some() && errors.is_empty() {
                    let strict = if args.strict && !findings.is_empty() {
                        " (--strict: warnings fail)"
                    } else {
                        ""
                    };
                    writeln!(
                        out,
                        "result: {} warning(s), {} error(s){strict}",
                        count(Severity::Warning),
                        count(Severity::Error)
                    )?;
                }
                Ok(())
            })
        }
    }
}

fn print_finding(out: &mut dyn Write, finding: &Finding) -> std::io::Result<()> {
    let severity = match finding.severity {
        Severity::Warning => "warning",
        Severity::Error => "error",
    };
    let place = [
        Some(finding.role.as_str()),
        finding.rule.as_deref(),
        finding.key.as_deref(),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join(".");
    writeln!(
        out,
        "{severity}[{}]: {place}: {}",
        finding.code, finding.message
    )?;
    if let Some(witness) = &finding.witness {
        writeln!(out, "  witness: {}", witness.one_line())?;
    }
    Ok(())
}
