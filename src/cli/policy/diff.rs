//! `policy diff OLD NEW`: the review gate for a pull request that changes the policy.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::cli::output::emit;
use crate::policy::diff::{GrantChange, PolicyDiff, Presence, RoleDiff, Witness, diff};

use super::{
    EXIT_ERROR, EXIT_FINDINGS, Format, LoadError, load, print_json, print_load_errors, short,
};

/// Arguments of `policy diff`.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The policy before the change (e.g. the base branch's file).
    pub old: PathBuf,
    /// The policy after the change.
    pub new: PathBuf,
    /// Exit 0 even when the change broadens a role (an approved broadening).
    #[arg(long)]
    pub allow_broadening: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(serde::Serialize)]
struct Side {
    policy: String,
    version: Option<String>,
}

/// The JSON document (`--format json`); `markdown` is ready to post as a review comment.
#[derive(serde::Serialize)]
struct Report<'a> {
    old: Side,
    new: Side,
    #[serde(skip_serializing_if = "Option::is_none")]
    roles: Option<&'a [RoleDiff]>,
    broadens: bool,
    undecided: bool,
    allow_broadening: bool,
    errors: Vec<LoadError>,
    markdown: String,
}

pub(super) fn run(args: &DiffArgs) -> ExitCode {
    let old_file = args.old.display().to_string();
    let new_file = args.new.display().to_string();
    let (old, new) = match (load(&args.old), load(&args.new)) {
        (Ok(old), Ok(new)) => (old, new),
        (old, new) => {
            let errors: Vec<LoadError> = [old.err(), new.err()]
                .into_iter()
                .flatten()
                .flatten()
                .collect();
            if args.format == Format::Json {
                let report = Report {
                    old: Side {
                        policy: old_file,
                        version: None,
                    },
                    new: Side {
                        policy: new_file,
                        version: None,
                    },
                    roles: None,
                    broadens: false,
                    undecided: false,
                    allow_broadening: args.allow_broadening,
                    markdown: "### Policy diff\n\nThe policy does not load; see the errors.\n"
                        .to_owned(),
                    errors,
                };
                return print_json(&report, ExitCode::from(EXIT_ERROR));
            }
            print_load_errors(&errors);
            return ExitCode::from(EXIT_ERROR);
        }
    };
    let result = diff(&old.policy, &new.policy);
    let broadens = result.broadens();
    let undecided = result.undecided();
    let code = if undecided {
        EXIT_ERROR
    } else if broadens && !args.allow_broadening {
        EXIT_FINDINGS
    } else {
        0
    };
    match args.format {
        Format::Json => {
            let report = Report {
                markdown: markdown(&result, &old_file, &new_file),
                old: Side {
                    policy: old_file,
                    version: Some(old.policy.version().to_owned()),
                },
                new: Side {
                    policy: new_file,
                    version: Some(new.policy.version().to_owned()),
                },
                roles: Some(&result.roles),
                broadens,
                undecided,
                allow_broadening: args.allow_broadening,
                errors: Vec::new(),
            };
            print_json(&report, ExitCode::from(code))
        }
        Format::Text => emit(ExitCode::from(code), |out| {
            writeln!(
                out,
                "policy diff: {old_file} (version {}) -> {new_file} (version {})",
                short(old.policy.version()),
                short(new.policy.version())
            )?;
            for role in &result.roles {
                print_role(out, role)?;
            }
            let verdict = if undecided {
                "undecided: the analysis did not finish (exit 2)"
            } else if broadens && args.allow_broadening {
                "broadens, accepted by --allow-broadening"
            } else if broadens {
                "broadens: needs review (exit 1; --allow-broadening accepts it)"
            } else {
                "no broadening"
            };
            writeln!(out, "result: {verdict}")
        }),
    }
}

/// The grant verdict of a role, in words.
fn verdict(role: &RoleDiff) -> &'static str {
    match (role.presence, role.grants) {
        (_, GrantChange::Undecided) => "UNDECIDED",
        (Presence::Added, GrantChange::Equal) => "added (grants nothing)",
        (Presence::Added, _) => "ADDED (larger)",
        (Presence::Removed, GrantChange::Equal) => "removed (granted nothing)",
        (Presence::Removed, _) => "removed (smaller)",
        (Presence::Kept, GrantChange::Equal) => "equal",
        (Presence::Kept, GrantChange::Larger) => "LARGER",
        (Presence::Kept, GrantChange::Smaller) => "smaller",
        (Presence::Kept, GrantChange::Both) => "CHANGED (larger and smaller)",
    }
}

fn print_role(out: &mut dyn Write, role: &RoleDiff) -> std::io::Result<()> {
    writeln!(out, "role {}: {}", role.role, verdict(role))?;
    if let Some(witness) = &role.larger_witness {
        writeln!(
            out,
            "  granted by NEW, refused by OLD: {}",
            witness.one_line()
        )?;
    }
    if let Some(witness) = &role.smaller_witness {
        writeln!(
            out,
            "  granted by OLD, refused by NEW: {}",
            witness.one_line()
        )?;
    }
    if let Some(why) = &role.undecided {
        writeln!(out, "  undecided: {why}")?;
    }
    for change in &role.changes {
        let review = if change.review { "REVIEW: " } else { "" };
        writeln!(
            out,
            "  {}: {:?} -> {:?} ({review}{})",
            change.field, change.old, change.new, change.note
        )?;
    }
    Ok(())
}

/// A short Markdown summary for a pull-request comment.
fn markdown(result: &PolicyDiff, old: &str, new: &str) -> String {
    let mut out = format!(
        "### Policy diff\n\n`{}` → `{}`\n\n| role | grants | settings | witness |\n|---|---|---|---|\n",
        cell(old),
        cell(new)
    );
    for role in &result.roles {
        let settings: Vec<String> = role
            .changes
            .iter()
            .map(|change| {
                let mark = if change.review { " ⚠" } else { "" };
                format!("{}: {} → {}{mark}", change.field, change.old, change.new)
            })
            .collect();
        let witness = match (&role.larger_witness, &role.smaller_witness) {
            (Some(witness), _) => format!("new only: `{}`", code(witness)),
            (None, Some(witness)) => format!("old only: `{}`", code(witness)),
            (None, None) => role.undecided.clone().unwrap_or_default(),
        };
        let grants = if role.broadens() {
            format!("**{}**", verdict(role))
        } else {
            verdict(role).to_owned()
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            cell(&role.role),
            grants,
            cell(&settings.join("; ")),
            cell(&witness)
        ));
    }
    out.push('\n');
    out.push_str(if result.undecided() {
        "**Undecided**: the analysis did not finish; review by hand.\n"
    } else if result.broadens() {
        "**Broadens**: a role grants more tokens or changed in a way that needs review.\n"
    } else {
        "No role grants more than before.\n"
    });
    out
}

/// Table cells may not contain `|` or line breaks.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace(['\n', '\r'], " ")
}

/// Code spans may not contain backticks.
fn code(witness: &Witness) -> String {
    witness.one_line().replace('`', "'")
}
