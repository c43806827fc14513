//! Warnings: policies that load but are probably not what their author meant.
//!
//! Each finding names a way a rule can grant or fail to refuse more than it
//! appears to: matching owners by re-registrable names, binding no owner at all,
//! or denying on a claim some tokens lack. They never stop a policy from loading
//! (an operator may have reasons), but `check-config` and start-up print them.

use super::PolicyWarning;
use super::glob::Glob;
use super::model::{Role, RuleKind};

/// Claims that pin a repository or its owner by a number GitHub never reuses.
pub(super) const ID_CLAIMS: &[&str] = &["repository_id", "repository_owner_id"];

/// Claims that name a repository or owner by a (re-registrable) name.
pub(super) const NAME_CLAIMS: &[&str] = &["repository", "repository_owner"];

/// Claims that tie a token to some repository, owner or enterprise. A rule
/// without any of them matches tokens from anywhere on GitHub, because any
/// workflow can request an OIDC token for any audience.
pub(super) const BINDING_CLAIMS: &[&str] = &[
    "repository",
    "repository_id",
    "repository_owner",
    "repository_owner_id",
    "enterprise",
    "enterprise_id",
    "sub",
    "job_workflow_ref",
    "workflow_ref",
];

/// Claims every current github.com Actions ID token carries. A deny rule on any
/// other claim silently does nothing for tokens without it.
pub(super) const ALWAYS_PRESENT_CLAIMS: &[&str] = &[
    "actor",
    "actor_id",
    "aud",
    "base_ref",
    "event_name",
    "exp",
    "head_ref",
    "iat",
    "iss",
    "job_workflow_ref",
    "job_workflow_sha",
    "jti",
    "nbf",
    "ref",
    "ref_protected",
    "ref_type",
    "repository",
    "repository_id",
    "repository_owner",
    "repository_owner_id",
    "repository_visibility",
    "run_attempt",
    "run_id",
    "run_number",
    "runner_environment",
    "sha",
    "sub",
    "workflow",
    "workflow_ref",
    "workflow_sha",
];

/// Non-fatal findings about one role.
pub(super) fn for_role(role: &Role) -> Vec<PolicyWarning> {
    let mut warnings = Vec::new();
    let warn = |rule: String, key: Option<&str>, message: String| PolicyWarning {
        role: role.name.clone(),
        rule: Some(rule),
        key: key.map(str::to_owned),
        message,
    };
    for (index, rule) in role.allow.iter().enumerate() {
        let rule_key = format!("{}[{index}]", RuleKind::Allow.key());
        let names_by_name = rule
            .conditions
            .iter()
            .find(|condition| NAME_CLAIMS.contains(&condition.claim.as_str()));
        // An id condition only pins something when none of its patterns has a wildcard.
        let pins_id = rule.conditions.iter().any(|condition| {
            ID_CLAIMS.contains(&condition.claim.as_str())
                && condition.patterns.iter().all(Glob::is_literal)
        });
        if let Some(condition) = names_by_name.filter(|_| !pins_id) {
            warnings.push(warn(
                rule_key.clone(),
                Some(&condition.claim),
                format!(
                    "rule matches `{}` by name without pinning `repository_id` or `repository_owner_id` \
                     to exact values; names can be renamed and re-registered by someone else",
                    condition.claim
                ),
            ));
        }
        let binds = rule
            .conditions
            .iter()
            .any(|condition| BINDING_CLAIMS.contains(&condition.claim.as_str()));
        if !binds {
            warnings.push(warn(
                rule_key,
                None,
                "rule binds no repository, owner or enterprise: any GitHub workflow can request a \
                 token for your audience and match it"
                    .to_owned(),
            ));
        }
    }
    for (index, rule) in role.deny.iter().enumerate() {
        let rule_key = format!("{}[{index}]", RuleKind::Deny.key());
        for condition in rule
            .conditions
            .iter()
            .filter(|condition| !ALWAYS_PRESENT_CLAIMS.contains(&condition.claim.as_str()))
        {
            warnings.push(warn(
                rule_key.clone(),
                Some(&condition.claim),
                format!(
                    "GitHub does not send `{}` in every token, and an absent claim never matches: \
                     this deny rule does not apply to tokens without it",
                    condition.claim
                ),
            ));
        }
    }
    warnings
}
