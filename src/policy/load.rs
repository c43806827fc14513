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

use super::glob::{CaseFold, Glob};
use super::model::{Condition, Role, RoleArn, Rule, RuleKind};
use super::{MAX_DURATION_SECONDS, MIN_DURATION_SECONDS, PolicyIssue, PolicyWarning, warnings};

/// Keys a `[[roles]]` table may have.
const ROLE_KEYS: &[&str] = &[
    "name",
    "role_arn",
    "duration_seconds",
    "session_tags",
    "description",
    "allow",
    "deny",
];

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

    let arn = required_string(table, &key, "role_arn", issues).and_then(|text| {
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
            wrong_type(issues, &key, "duration_seconds", "an integer", other);
            None
        }
    };

    let session_tags = match table.get("session_tags") {
        None => Some(true),
        Some(toml::Value::Boolean(flag)) => Some(*flag),
        Some(other) => {
            wrong_type(issues, &key, "session_tags", "a boolean", other);
            None
        }
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
        arn: arn?,
        duration_seconds: duration_seconds?,
        session_tags: session_tags?,
        description: description?,
        allow: allow?,
        deny: deny?,
    })
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
        .filter_map(|(index, item)| compile_rule(item, &format!("{key}[{index}]"), issues))
        .collect();
    (issues.0.len() == before).then_some(rules)
}

fn compile_rule(value: &toml::Value, key: &str, issues: &mut Issues) -> Option<Rule> {
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
    let mut conditions: Vec<Condition> = table
        .iter()
        .filter_map(|(claim, value)| compile_condition(claim, value, key, issues))
        .collect();
    if issues.0.len() != before {
        return None;
    }
    // Deterministic order whatever map the TOML parser uses; see model.rs.
    conditions.sort_by(|a, b| a.claim.cmp(&b.claim));
    Some(Rule { conditions })
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
