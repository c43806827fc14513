//! Policy text → compiled [`Role`]s, with every error and warning the text deserves.
//!
//! The TOML is walked by hand rather than through serde derives so that each
//! error names its full key path (`roles[1].allow[0].ref`) and all errors are
//! reported together. Every table is closed all the same, as with serde's
//! `deny_unknown_fields`: an unknown key anywhere is an error, because a typo in a
//! security policy must not be silently ignored.
//!
//! Nothing here trusts the text; a role is only produced when every one of its
//! keys validated, and the caller refuses the whole policy on any error.

use std::collections::HashMap;

use crate::api::Permissions;
use crate::context::ContextCondition;

use super::github::{self, RepositoryEntry};
use super::glob::{CaseFold, Glob};
use super::model::{AwsRole, Condition, GithubRole, Role, RoleArn, RoleKind, Rule, RuleKind};
use super::{MAX_DURATION_SECONDS, MIN_DURATION_SECONDS, PolicyIssue, PolicyWarning, warnings};

/// Keys a `[[roles]]` table may have.
const ROLE_KEYS: &[&str] = &[
    "name",
    "kind",
    "role_arn",
    "duration_seconds",
    "session_tags",
    "repositories",
    "permissions",
    "description",
    "allow",
    "deny",
];

/// Keys only a role of kind `aws` may have.
const AWS_ONLY_KEYS: &[&str] = &["role_arn", "duration_seconds", "session_tags"];

/// Keys only a role of kind `github` may have.
const GITHUB_ONLY_KEYS: &[&str] = &["repositories", "permissions"];

/// Rule keys that are context conditions, not claims.
const CONTEXT_KEYS: &[&str] = &["checks_passed", "pull_request_approvals"];

/// Most checks one rule may require: each is one GitHub call per decision.
const MAX_CHECKS_PER_RULE: usize = 16;

/// Longest check name accepted.
const MAX_CHECK_NAME_CHARS: usize = 256;

/// Longest GitHub App slug accepted.
const MAX_APP_SLUG_CHARS: usize = 100;

/// Most approvals a rule may require: more than any review process asks,
/// and it bounds the reviews the answer has to count.
pub(super) const MAX_APPROVALS: u32 = 50;

/// The error for a role that could never grant.
const NO_ALLOW_RULE: &str = "a role needs at least one `[[roles.allow]]` rule";

/// Longest role name: names appear in metrics labels and audit lines.
const MAX_ROLE_NAME_CHARS: usize = 64;

/// A successfully compiled policy body.
pub(super) struct Compiled {
    pub(super) roles: Vec<Role>,
    pub(super) warnings: Vec<PolicyWarning>,
}

/// Why the text did not compile.
pub(super) enum Failure {
    /// Not TOML at all.
    Syntax {
        line: usize,
        column: usize,
        reason: String,
    },
    /// TOML, but not a valid policy; never empty.
    Invalid(Vec<PolicyIssue>),
}

/// Compiles policy text.
pub(super) fn compile(text: &str) -> Result<Compiled, Failure> {
    let document: toml::Table = text.parse().map_err(|err| syntax_failure(text, &err))?;
    let mut issues = Issues::default();
    for key in document.keys().filter(|key| key.as_str() != "roles") {
        issues.push(
            segment(key),
            "unknown top-level key: a policy file holds only `[[roles]]` tables",
        );
    }
    let roles = match document.get("roles") {
        Some(toml::Value::Array(items)) if !items.is_empty() => {
            let mut names = HashMap::new();
            items
                .iter()
                .enumerate()
                .filter_map(|(index, item)| compile_role(index, item, &mut names, &mut issues))
                .collect()
        }
        None | Some(toml::Value::Array(_)) => {
            issues.push(
                "roles",
                "the policy defines no roles, so it would deny everything; add a `[[roles]]` table",
            );
            Vec::new()
        }
        Some(other) => {
            issues.push(
                "roles",
                format!(
                    "must be an array of tables (`[[roles]]`), found {}",
                    other.type_str()
                ),
            );
            Vec::new()
        }
    };
    if !issues.0.is_empty() {
        return Err(Failure::Invalid(issues.0));
    }
    let warnings = roles.iter().flat_map(warnings::for_role).collect();
    Ok(Compiled { roles, warnings })
}

fn syntax_failure(text: &str, err: &toml::de::Error) -> Failure {
    let offset = err.span().map_or(0, |span| span.start);
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit_once('\n')
        .map_or(before, |(_, tail)| tail)
        .chars()
        .count()
        + 1;
    Failure::Syntax {
        line,
        column,
        reason: err.message().trim().replace('\n', " "),
    }
}

#[derive(Default)]
struct Issues(Vec<PolicyIssue>);

impl Issues {
    fn push(&mut self, key: impl Into<String>, reason: impl Into<String>) {
        self.0.push(PolicyIssue {
            key: key.into(),
            reason: reason.into(),
        });
    }
}

/// A key as it appears in a key path: bare when TOML would write it bare, quoted otherwise.
fn segment(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-');
    if bare {
        key.to_owned()
    } else {
        format!("{key:?}")
    }
}

fn compile_role(
    index: usize,
    value: &toml::Value,
    names: &mut HashMap<String, usize>,
    issues: &mut Issues,
) -> Option<Role> {
    let key = format!("roles[{index}]");
    let Some(table) = value.as_table() else {
        issues.push(
            key,
            format!("must be a table (`[[roles]]`), found {}", value.type_str()),
        );
        return None;
    };
    for unknown in table
        .keys()
        .filter(|name| !ROLE_KEYS.contains(&name.as_str()))
    {
        issues.push(
            format!("{key}.{}", segment(unknown)),
            format!(
                "unknown role key; expected one of: {}",
                ROLE_KEYS.join(", ")
            ),
        );
    }

    let name = required_string(table, &key, "name", issues).and_then(|name| {
        let valid = (1..=MAX_ROLE_NAME_CHARS).contains(&name.len())
            && name
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || b"_.-".contains(&byte));
        if !valid {
            issues.push(
                format!("{key}.name"),
                format!("role name must be 1 to {MAX_ROLE_NAME_CHARS} characters of letters, digits and `_.-`"),
            );
            return None;
        }
        if let Some(first) = names.get(name) {
            issues.push(
                format!("{key}.name"),
                format!("duplicate role name `{name}` (first defined in roles[{first}])"),
            );
            return None;
        }
        names.insert(name.to_owned(), index);
        Some(name.to_owned())
    });

    let kind = match table.get("kind") {
        None => Some("aws"),
        Some(toml::Value::String(text)) if text == "aws" => Some("aws"),
        Some(toml::Value::String(text)) if text == "github" => Some("github"),
        Some(toml::Value::String(text)) => {
            issues.push(
                format!("{key}.kind"),
                format!("unknown kind {text:?}: expected \"aws\" or \"github\""),
            );
            None
        }
        Some(other) => {
            wrong_type(issues, &key, "kind", "a string", other);
            None
        }
    };
    let kind = match kind {
        Some("github") => compile_github(table, &key, issues).map(RoleKind::GitHub),
        Some(_) => compile_aws(table, &key, issues).map(RoleKind::Aws),
        None => None,
    };

    let description = match table.get("description") {
        None => Some(None),
        Some(toml::Value::String(text)) => Some(Some(text.clone())),
        Some(other) => {
            wrong_type(issues, &key, "description", "a string", other);
            None
        }
    };

    let allow = match table.get("allow") {
        None => {
            issues.push(format!("{key}.allow"), NO_ALLOW_RULE);
            None
        }
        Some(value) => compile_rules(value, &format!("{key}.allow"), RuleKind::Allow, issues),
    };
    let deny = match table.get("deny") {
        None => Some(Vec::new()),
        Some(value) => compile_rules(value, &format!("{key}.deny"), RuleKind::Deny, issues),
    };

    // Every field was checked above (each problem recorded): a role only when
    // all of them compiled.
    Some(Role {
        name: name?,
        kind: kind?,
        description: description?,
        allow: allow?,
        deny: deny?,
    })
}

/// The keys of a role of kind `aws`; github-only keys are errors.
fn compile_aws(table: &toml::Table, key: &str, issues: &mut Issues) -> Option<AwsRole> {
    for field in GITHUB_ONLY_KEYS {
        if table.contains_key(*field) {
            issues.push(
                format!("{key}.{field}"),
                "only for roles of kind `github`; this role is of kind `aws` (the default)",
            );
        }
    }
    let arn = required_string(table, key, "role_arn", issues).and_then(|text| {
        RoleArn::parse(text)
            .map_err(|err| issues.push(format!("{key}.role_arn"), err.to_string()))
            .ok()
    });

    let duration_seconds = match table.get("duration_seconds") {
        None => Some(MIN_DURATION_SECONDS),
        Some(toml::Value::Integer(seconds)) => u32::try_from(*seconds)
            .ok()
            .filter(|seconds| (MIN_DURATION_SECONDS..=MAX_DURATION_SECONDS).contains(seconds))
            .or_else(|| {
                issues.push(
                    format!("{key}.duration_seconds"),
                    format!(
                        "must be between {MIN_DURATION_SECONDS} and {MAX_DURATION_SECONDS} (the STS bounds), got {seconds}"
                    ),
                );
                None
            }),
        Some(other) => {
            wrong_type(issues, key, "duration_seconds", "an integer", other);
            None
        }
    };

    let session_tags = match table.get("session_tags") {
        None => Some(true),
        Some(toml::Value::Boolean(flag)) => Some(*flag),
        Some(other) => {
            wrong_type(issues, key, "session_tags", "a boolean", other);
            None
        }
    };
    Some(AwsRole {
        arn: arn?,
        duration_seconds: duration_seconds?,
        session_tags: session_tags?,
    })
}

/// The keys of a role of kind `github`; AWS-only keys are errors.
fn compile_github(table: &toml::Table, key: &str, issues: &mut Issues) -> Option<GithubRole> {
    for field in AWS_ONLY_KEYS {
        if table.contains_key(*field) {
            issues.push(
                format!("{key}.{field}"),
                "only for roles of kind `aws`: a `github` role issues installation tokens, whose \
                 lifetime is GitHub's and which the broker revokes itself",
            );
        }
    }
    let repositories = match table.get("repositories") {
        None => Some(vec![RepositoryEntry::Own]),
        Some(toml::Value::Array(items)) if items.is_empty() => {
            issues.push(
                format!("{key}.repositories"),
                "empty list: a token must reach at least one repository; leave the key out for \
                 the token's own repository",
            );
            None
        }
        Some(toml::Value::Array(items)) => {
            let before = issues.0.len();
            let mut entries: Vec<RepositoryEntry> = Vec::new();
            for (index, item) in items.iter().enumerate() {
                let item_key = format!("{key}.repositories[{index}]");
                let Some(text) = item.as_str() else {
                    issues.push(
                        item_key,
                        format!(
                            "must be a string (`$repository` or `owner/name`), found {}",
                            item.type_str()
                        ),
                    );
                    continue;
                };
                match RepositoryEntry::parse(text) {
                    Ok(entry) if entries.iter().any(|seen| same_entry(seen, &entry)) => {
                        issues.push(item_key, format!("duplicate repository {text:?}"));
                    }
                    Ok(entry) => entries.push(entry),
                    Err(reason) => issues.push(item_key, reason),
                }
            }
            (issues.0.len() == before).then_some(entries)
        }
        Some(other) => {
            wrong_type(
                issues,
                key,
                "repositories",
                "an array of strings (`$repository` or `owner/name`)",
                other,
            );
            None
        }
    };
    let permissions = match table.get("permissions") {
        None => {
            issues.push(
                format!("{key}.permissions"),
                "missing required key: a `github` role names the permissions its tokens carry, \
                 e.g. `permissions = { contents = \"read\" }`",
            );
            None
        }
        Some(toml::Value::Table(entries)) if entries.is_empty() => {
            issues.push(
                format!("{key}.permissions"),
                "empty table: a token needs at least one permission",
            );
            None
        }
        Some(toml::Value::Table(entries)) => {
            let before = issues.0.len();
            let mut permissions = Permissions::new();
            for (name, value) in entries {
                let entry_key = format!("{key}.permissions.{}", segment(name));
                let Some(levels) = github::levels(name) else {
                    issues.push(
                        entry_key,
                        "not a GitHub App permission (see the `permissions` of GitHub's \
                         \"create an installation access token\" request)",
                    );
                    continue;
                };
                let allowed: Vec<&str> = levels.iter().map(|level| level.as_str()).collect();
                let access = match value {
                    toml::Value::String(text) => {
                        github::parse_access(text).filter(|access| levels.contains(access))
                    }
                    _ => None,
                };
                match access {
                    Some(access) => {
                        permissions.insert(name.clone(), access);
                    }
                    None => issues.push(
                        entry_key,
                        format!(
                            "must be one of {} for this permission, found {}",
                            allowed
                                .iter()
                                .map(|level| format!("\"{level}\""))
                                .collect::<Vec<_>>()
                                .join(", "),
                            match value {
                                toml::Value::String(text) => format!("{text:?}"),
                                other => other.type_str().to_owned(),
                            }
                        ),
                    ),
                }
            }
            (issues.0.len() == before).then_some(permissions)
        }
        Some(other) => {
            wrong_type(
                issues,
                key,
                "permissions",
                "an inline table of permission = level",
                other,
            );
            None
        }
    };
    Some(GithubRole {
        repositories: repositories?,
        permissions: permissions?,
    })
}

/// Two entries that name the same repository (owners and names compare
/// ASCII case-insensitively, as GitHub does).
fn same_entry(a: &RepositoryEntry, b: &RepositoryEntry) -> bool {
    match (a, b) {
        (RepositoryEntry::Own, RepositoryEntry::Own) => true,
        (
            RepositoryEntry::Named { owner, name },
            RepositoryEntry::Named {
                owner: other_owner,
                name: other_name,
            },
        ) => owner.eq_ignore_ascii_case(other_owner) && name.eq_ignore_ascii_case(other_name),
        _ => false,
    }
}

fn required_string<'t>(
    table: &'t toml::Table,
    key: &str,
    field: &str,
    issues: &mut Issues,
) -> Option<&'t str> {
    match table.get(field) {
        Some(toml::Value::String(text)) => Some(text),
        None => {
            issues.push(format!("{key}.{field}"), "missing required key");
            None
        }
        Some(other) => {
            wrong_type(issues, key, field, "a string", other);
            None
        }
    }
}

fn wrong_type(issues: &mut Issues, key: &str, field: &str, expected: &str, found: &toml::Value) {
    issues.push(
        format!("{key}.{field}"),
        format!("must be {expected}, found {}", found.type_str()),
    );
}

/// Compiles `[[roles.allow]]` or `[[roles.deny]]`; `None` when any rule failed.
fn compile_rules(
    value: &toml::Value,
    key: &str,
    kind: RuleKind,
    issues: &mut Issues,
) -> Option<Vec<Rule>> {
    let Some(items) = value.as_array() else {
        issues.push(
            key,
            format!(
                "must be an array of tables (`[[roles.{}]]`), found {}",
                kind.key(),
                value.type_str()
            ),
        );
        return None;
    };
    if kind == RuleKind::Allow && items.is_empty() {
        issues.push(key, NO_ALLOW_RULE);
        return None;
    }
    let before = issues.0.len();
    let rules: Vec<Rule> = items
        .iter()
        .enumerate()
        .filter_map(|(index, item)| compile_rule(item, &format!("{key}[{index}]"), kind, issues))
        .collect();
    (issues.0.len() == before).then_some(rules)
}

fn compile_rule(
    value: &toml::Value,
    key: &str,
    kind: RuleKind,
    issues: &mut Issues,
) -> Option<Rule> {
    let Some(table) = value.as_table() else {
        issues.push(
            key,
            format!("a rule must be a table, found {}", value.type_str()),
        );
        return None;
    };
    if table.is_empty() {
        issues.push(
            key,
            "a rule needs at least one condition: an empty rule would match every token",
        );
        return None;
    }
    let before = issues.0.len();
    let mut context: Vec<ContextCondition> = Vec::new();
    for (name, value) in table
        .iter()
        .filter(|(name, _)| CONTEXT_KEYS.contains(&name.as_str()))
    {
        let context_key = format!("{key}.{name}");
        if kind == RuleKind::Deny {
            issues.push(
                context_key,
                "context conditions are only for allow rules: a deny rule must not depend on \
                 GitHub answering",
            );
            continue;
        }
        match name.as_str() {
            "checks_passed" => compile_checks(value, &context_key, &mut context, issues),
            _ => compile_approvals(value, &context_key, &mut context, issues),
        }
    }
    let mut conditions: Vec<Condition> = table
        .iter()
        .filter(|(name, _)| !CONTEXT_KEYS.contains(&name.as_str()))
        .filter_map(|(claim, value)| compile_condition(claim, value, key, issues))
        .collect();
    if issues.0.len() != before {
        return None;
    }
    if conditions.is_empty() {
        issues.push(
            key,
            "a rule needs at least one claim condition: context conditions alone would ask \
             GitHub about the commit of every token",
        );
        return None;
    }
    // Deterministic order whatever map the TOML parser uses; see model.rs.
    conditions.sort_by(|a, b| a.claim.cmp(&b.claim));
    context.sort();
    Some(Rule {
        conditions,
        context,
    })
}

/// `checks_passed = ["name", { name = "…", app = "slug" }, …]`.
fn compile_checks(
    value: &toml::Value,
    key: &str,
    context: &mut Vec<ContextCondition>,
    issues: &mut Issues,
) {
    let items = match value {
        toml::Value::Array(items) if items.is_empty() => {
            issues.push(
                key,
                "empty list: name at least one check, or remove the key",
            );
            return;
        }
        toml::Value::Array(items) => items,
        other => {
            issues.push(
                key,
                format!(
                    "must be a list of check names or `{{ name = \"…\", app = \"…\" }}` tables, found {}",
                    other.type_str()
                ),
            );
            return;
        }
    };
    if items.len() > MAX_CHECKS_PER_RULE {
        issues.push(
            key,
            format!("at most {MAX_CHECKS_PER_RULE} checks per rule (each costs a GitHub call)"),
        );
        return;
    }
    for (index, item) in items.iter().enumerate() {
        let item_key = format!("{key}[{index}]");
        let (name, app) = match item {
            toml::Value::String(name) => (Some(name.as_str()), None),
            toml::Value::Table(entry) => {
                for unknown in entry
                    .keys()
                    .filter(|field| !["name", "app"].contains(&field.as_str()))
                {
                    issues.push(
                        format!("{item_key}.{}", segment(unknown)),
                        "unknown key; a check is `{ name = \"…\", app = \"…\" }`",
                    );
                }
                let name = match entry.get("name") {
                    Some(toml::Value::String(name)) => Some(name.as_str()),
                    None => {
                        issues.push(format!("{item_key}.name"), "missing required key");
                        None
                    }
                    Some(other) => {
                        wrong_type(issues, &item_key, "name", "a string", other);
                        None
                    }
                };
                let app = match entry.get("app") {
                    None => None,
                    Some(toml::Value::String(slug)) if valid_app_slug(slug) => Some(slug.clone()),
                    Some(toml::Value::String(slug)) => {
                        issues.push(
                            format!("{item_key}.app"),
                            format!(
                                "{slug:?} is not a GitHub App slug: 1 to {MAX_APP_SLUG_CHARS} \
                                 lowercase letters, digits and `-`"
                            ),
                        );
                        None
                    }
                    Some(other) => {
                        wrong_type(issues, &item_key, "app", "a string (the App's slug)", other);
                        None
                    }
                };
                (name, app)
            }
            other => {
                issues.push(
                    &item_key,
                    format!(
                        "must be a check name or `{{ name = \"…\", app = \"…\" }}`, found {}",
                        other.type_str()
                    ),
                );
                continue;
            }
        };
        let Some(name) = name else {
            continue;
        };
        if name.is_empty() || name.chars().count() > MAX_CHECK_NAME_CHARS {
            issues.push(
                &item_key,
                format!("a check name is 1 to {MAX_CHECK_NAME_CHARS} characters"),
            );
            continue;
        }
        let condition = ContextCondition::CheckPassed {
            name: name.to_owned(),
            app,
        };
        if context.contains(&condition) {
            issues.push(&item_key, format!("duplicate check: {condition}"));
            continue;
        }
        context.push(condition);
    }
}

/// `pull_request_approvals = N`.
fn compile_approvals(
    value: &toml::Value,
    key: &str,
    context: &mut Vec<ContextCondition>,
    issues: &mut Issues,
) {
    match value {
        toml::Value::Integer(count) => match u32::try_from(*count)
            .ok()
            .filter(|count| (1..=MAX_APPROVALS).contains(count))
        {
            Some(count) => context.push(ContextCondition::PullRequestApprovals(count)),
            None => issues.push(
                key,
                format!("must be between 1 and {MAX_APPROVALS}, got {count}"),
            ),
        },
        other => issues.push(
            key,
            format!("must be an integer, found {}", other.type_str()),
        ),
    }
}

/// A GitHub App slug: what `app.slug` of a check run holds.
fn valid_app_slug(slug: &str) -> bool {
    (1..=MAX_APP_SLUG_CHARS).contains(&slug.len())
        && slug
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-')
}

fn compile_condition(
    claim: &str,
    value: &toml::Value,
    rule_key: &str,
    issues: &mut Issues,
) -> Option<Condition> {
    let key = format!("{rule_key}.{}", segment(claim));
    if claim.is_empty()
        || !claim
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'_')
    {
        issues.push(
            key,
            "claim names are lowercase letters, digits and `_`, as GitHub writes them",
        );
        return None;
    }
    let fold = CaseFold::for_claim(claim);
    let patterns = match value {
        toml::Value::Array(items) if items.is_empty() => {
            issues.push(
                key,
                "empty pattern list: it could never match; remove the key or add a pattern",
            );
            return None;
        }
        toml::Value::Array(items) => {
            let before = issues.0.len();
            let patterns: Vec<Glob> = items
                .iter()
                .enumerate()
                .filter_map(|(index, item)| {
                    compile_pattern(item, fold, &format!("{key}[{index}]"), issues)
                })
                .collect();
            if issues.0.len() != before {
                return None;
            }
            patterns
        }
        scalar => vec![compile_pattern(scalar, fold, &key, issues)?],
    };
    Some(Condition {
        claim: claim.to_owned(),
        patterns,
    })
}

fn compile_pattern(
    value: &toml::Value,
    fold: CaseFold,
    key: &str,
    issues: &mut Issues,
) -> Option<Glob> {
    // Booleans and integers compare in their string form, as GitHub sends them.
    let text = match value {
        toml::Value::String(text) => text.clone(),
        toml::Value::Boolean(flag) => flag.to_string(),
        toml::Value::Integer(number) => number.to_string(),
        toml::Value::Float(_) => {
            issues.push(key, "floats are not patterns; write the value as a string");
            return None;
        }
        other => {
            issues.push(
                key,
                format!(
                    "must be a pattern (string, boolean or integer) or an array of them, found {}",
                    other.type_str()
                ),
            );
            return None;
        }
    };
    Glob::compile(&text, fold)
        .map_err(|err| issues.push(key, err.to_string()))
        .ok()
}
