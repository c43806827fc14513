//! Canned answers to context questions, for the offline tools
//! (`policy explain --context FILE`): what GitHub would say about a commit,
//! written down as a small JSON document.
//!
//! ```json
//! {"checks": {"dependency-scan": {"status": "completed", "conclusion": "success", "app": "snyk"},
//!             "unit-tests": "unavailable"},
//!  "pull_request": {"number": 17, "approvals": 1, "changes_requested": false}}
//! ```
//!
//! `checks` maps a check name to its latest run (`status`, `conclusion`
//! (`null` or absent while not completed) and the `app` slug that created it)
//! or to `"unavailable"` (GitHub could not be asked); a check the file does not
//! name has no run. `pull_request` is the commit's pull request (`number`,
//! `approvals` of its head commit not counting its author, whether some
//! reviewer's deciding review requests changes), `null` when the commit has
//! none, or `"unavailable"`; absent means none. Both keys are optional.
//!
//! Trust: none; the file is bounded ([`MAX_CONTEXT_FILE_BYTES`], at most
//! [`MAX_CHECKS`] checks, strings of at most [`MAX_TEXT_CHARS`] characters) and
//! closed (an unknown key is an error). The answers follow the same rules the
//! GitHub client applies to GitHub's answers, so `explain` decides as the
//! server would for the same facts.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::context::{Commit, ContextAnswer, ContextAnswers, ContextCondition, ContextSource};

/// Largest context file read.
pub const MAX_CONTEXT_FILE_BYTES: u64 = 64 * 1024;

/// Most checks a context file may describe.
pub(crate) const MAX_CHECKS: usize = 256;

/// Longest string (check name, status, conclusion, app slug) accepted.
pub(crate) const MAX_TEXT_CHARS: usize = 256;

/// What the file says about one thing GitHub would be asked.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Canned<T> {
    /// `"unavailable"`: GitHub could not answer.
    Unavailable,
    /// The facts.
    Known(T),
}

/// The latest check run of a name.
#[derive(Clone, Debug, PartialEq, Eq)]
struct CheckRun {
    status: String,
    conclusion: Option<String>,
    app: Option<String>,
}

/// The commit's pull request.
#[derive(Clone, Debug, PartialEq, Eq)]
struct PullRequest {
    number: u64,
    approvals: u64,
    changes_requested: bool,
}

/// Canned answers, read from a context file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CannedContext {
    checks: BTreeMap<String, Canned<CheckRun>>,
    /// `None`: the commit has no pull request.
    pull_request: Option<Canned<PullRequest>>,
}

impl CannedContext {
    /// Parses a context file; the error names the key at fault.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.len() as u64 > MAX_CONTEXT_FILE_BYTES {
            return Err(format!("larger than {MAX_CONTEXT_FILE_BYTES} bytes"));
        }
        let value: Value = serde_json::from_str(text).map_err(|err| format!("not JSON: {err}"))?;
        let Value::Object(top) = value else {
            return Err("must be a JSON object with `checks` and/or `pull_request`".to_owned());
        };
        let mut canned = Self::default();
        for (key, value) in &top {
            match key.as_str() {
                "checks" => canned.checks = checks(value)?,
                "pull_request" => canned.pull_request = pull_request(value)?,
                other => {
                    return Err(format!(
                        "unknown key {other:?}: expected `checks` or `pull_request`"
                    ));
                }
            }
        }
        Ok(canned)
    }

    /// The answer to every condition, as the GitHub client would give it for
    /// these facts.
    pub fn answers(&self, conditions: &[ContextCondition]) -> ContextAnswers {
        let mut answers = ContextAnswers::default();
        for condition in conditions {
            answers.insert(condition.clone(), self.answer(condition));
        }
        answers
    }

    fn answer(&self, condition: &ContextCondition) -> ContextAnswer {
        match condition {
            ContextCondition::CheckPassed { name, app } => match self.checks.get(name) {
                None => ContextAnswer::Fail(format!("no check run named {name:?}")),
                Some(Canned::Unavailable) => {
                    ContextAnswer::Unavailable("unavailable in the context file".to_owned())
                }
                Some(Canned::Known(run)) => check_answer(run, app.as_deref()),
            },
            ContextCondition::PullRequestApprovals(wanted) => match &self.pull_request {
                None => ContextAnswer::Fail("no pull request for the commit".to_owned()),
                Some(Canned::Unavailable) => {
                    ContextAnswer::Unavailable("unavailable in the context file".to_owned())
                }
                Some(Canned::Known(pull)) => {
                    let seen = format!(
                        "{} approvals of pull request {}",
                        pull.approvals, pull.number
                    );
                    if pull.changes_requested {
                        ContextAnswer::Fail(format!(
                            "changes requested on pull request {}",
                            pull.number
                        ))
                    } else if pull.approvals >= u64::from(*wanted) {
                        ContextAnswer::Pass(seen)
                    } else {
                        ContextAnswer::Fail(seen)
                    }
                }
            },
        }
    }
}

fn check_answer(run: &CheckRun, app: Option<&str>) -> ContextAnswer {
    let by = run.app.as_deref().unwrap_or("an unknown app");
    if let Some(app) = app
        && run.app.as_deref() != Some(app)
    {
        // Runs by any other App are ignored: as if there were none.
        return ContextAnswer::Fail(format!("no run by app {app:?} (latest run by {by})"));
    }
    let seen = format!(
        "{}/{} by {by}",
        run.status,
        run.conclusion.as_deref().unwrap_or("none")
    );
    if run.status == "completed" && run.conclusion.as_deref() == Some("success") {
        ContextAnswer::Pass(seen)
    } else {
        ContextAnswer::Fail(seen)
    }
}

fn checks(value: &Value) -> Result<BTreeMap<String, Canned<CheckRun>>, String> {
    let Value::Object(entries) = value else {
        return Err("`checks` must be an object of check name → run".to_owned());
    };
    if entries.len() > MAX_CHECKS {
        return Err(format!("`checks` names more than {MAX_CHECKS} checks"));
    }
    let mut checks = BTreeMap::new();
    for (name, run) in entries {
        let key = format!("checks.{name:?}");
        bounded(&key, name)?;
        let canned = match run {
            Value::String(text) if text == "unavailable" => Canned::Unavailable,
            Value::Object(fields) => {
                let mut status = None;
                let mut conclusion = None;
                let mut app = None;
                for (field, value) in fields {
                    let field_key = format!("{key}.{field}");
                    match field.as_str() {
                        "status" => status = Some(text(&field_key, value)?),
                        "conclusion" if value.is_null() => conclusion = None,
                        "conclusion" => conclusion = Some(text(&field_key, value)?),
                        "app" => app = Some(text(&field_key, value)?),
                        other => {
                            return Err(format!(
                                "{key}: unknown key {other:?}: expected `status`, `conclusion`, `app`"
                            ));
                        }
                    }
                }
                let status = status.ok_or_else(|| format!("{key}: `status` is required"))?;
                Canned::Known(CheckRun {
                    status,
                    conclusion,
                    app,
                })
            }
            _ => {
                return Err(format!(
                    "{key}: must be a run (`{{\"status\": …, \"conclusion\": …, \"app\": …}}`) or \"unavailable\""
                ));
            }
        };
        checks.insert(name.clone(), canned);
    }
    Ok(checks)
}

fn pull_request(value: &Value) -> Result<Option<Canned<PullRequest>>, String> {
    let fields = match value {
        Value::Null => return Ok(None),
        Value::String(text) if text == "unavailable" => return Ok(Some(Canned::Unavailable)),
        Value::Object(fields) => fields,
        _ => {
            return Err(
                "`pull_request` must be an object, null (no pull request) or \"unavailable\""
                    .to_owned(),
            );
        }
    };
    let mut number = None;
    let mut approvals = None;
    let mut changes_requested = false;
    for (field, value) in fields {
        let key = format!("pull_request.{field}");
        match field.as_str() {
            "number" => number = Some(count(&key, value)?),
            "approvals" => approvals = Some(count(&key, value)?),
            "changes_requested" => {
                changes_requested = value
                    .as_bool()
                    .ok_or_else(|| format!("{key}: must be true or false"))?;
            }
            other => {
                return Err(format!(
                    "pull_request: unknown key {other:?}: expected `number`, `approvals`, `changes_requested`"
                ));
            }
        }
    }
    Ok(Some(Canned::Known(PullRequest {
        number: number.ok_or("pull_request: `number` is required")?,
        approvals: approvals.ok_or("pull_request: `approvals` is required")?,
        changes_requested,
    })))
}

fn bounded(key: &str, text: &str) -> Result<(), String> {
    if text.chars().count() > MAX_TEXT_CHARS {
        return Err(format!("{key}: longer than {MAX_TEXT_CHARS} characters"));
    }
    Ok(())
}

fn text(key: &str, value: &Value) -> Result<String, String> {
    let text = value
        .as_str()
        .ok_or_else(|| format!("{key}: must be a string"))?;
    bounded(key, text)?;
    Ok(text.to_owned())
}

fn count(key: &str, value: &Value) -> Result<u64, String> {
    value
        .as_u64()
        .ok_or_else(|| format!("{key}: must be a non-negative integer"))
}

impl ContextSource for CannedContext {
    fn answer(
        &self,
        _commit: &Commit,
        conditions: &[ContextCondition],
    ) -> impl std::future::Future<Output = ContextAnswers> + Send {
        std::future::ready(self.answers(conditions))
    }
}

#[cfg(test)]
mod tests;
