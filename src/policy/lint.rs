//! `policy check`: risks in a policy that loads, each with a code and a reason.
//!
//! Loading (`load.rs`) already refuses what is invalid; this module looks for
//! what is valid but dangerous, the ways a change can "silently broaden what an
//! OIDC token can do". Some findings are textual (a rule without a ref
//! condition); the ones about what a role can *grant* are decided exactly with
//! the language algebra of `diff/`: a write-capable role "reachable" from a
//! pull request or a self-hosted runner means some claim set with that value is
//! granted by the role, and two roles are ambiguous when some claim set is
//! granted by both. Those findings carry a witness claim set, confirmed with
//! [`Policy::evaluate`] before it is reported.
//!
//! Trust: the compiled policy, and the caller's list of read-only roles when it
//! gives one. Guarantee: every finding names its role (and rule and claim when
//! it is about one); an analysis that cannot finish within its budget is itself
//! reported as an error (`undecided`), never silently passed.

use crate::policy::glob::{CaseFold, Glob, Token};

use super::diff::{DEFAULT_BUDGET, Grants, Space, Undecided, Witness};
use crate::api::Access;
use crate::context::ContextCondition;

use super::model::{Role, RoleKind, Rule, RuleKind};
use super::warnings::{ALWAYS_PRESENT_CLAIMS, BINDING_CLAIMS, ID_CLAIMS, NAME_CLAIMS};
use super::{Policy, RoleRequest};

/// Longest duration that does not draw a finding: an hour covers real deploy
/// jobs, and a leaked credential should not outlive the job by much.
pub const LONG_DURATION_SECONDS: u32 = 3600;

/// Claims that tie a rule to a branch, tag, environment or workflow.
const SCOPE_CLAIMS: &[&str] = &["ref", "environment", "job_workflow_ref", "workflow_ref"];

/// Words in a role's name or ARN that mark it read-only, and words that
/// overrule them (`ReadWrite`, `PullAndPush`).
const READ_ONLY_WORDS: &[&str] = &["read", "readonly", "pull", "plan"];
const WRITE_WORDS: &[&str] = &["write", "readwrite", "push", "deploy", "publish", "admin"];

/// Token contexts a write-capable role should not be reachable from: code from
/// a pull request (possibly a fork, for `pull_request_target`) and runners the
/// broker's operators do not control.
const UNTRUSTED_CONTEXTS: &[(&str, &str, &str)] = &[
    (
        "event_name",
        "pull_request",
        "pull request workflows run code proposed in the pull request",
    ),
    (
        "event_name",
        "pull_request_target",
        "pull_request_target workflows run with the base repository's trust on a fork's event",
    ),
    (
        "runner_environment",
        "self-hosted",
        "self-hosted runners may be shared or persistent, outside GitHub's isolation",
    ),
];

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// A risk to review; `--strict` makes it fail.
    Warning,
    /// The check could not be completed.
    Error,
}

/// One risk in a policy.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    /// Warning or error.
    pub severity: Severity,
    /// Role the finding is about.
    pub role: String,
    /// Rule inside the role (`allow[0]`), when the finding is about one.
    pub rule: Option<String>,
    /// Claim or role key, when the finding is about one.
    pub key: Option<String>,
    /// Stable kebab-case code, e.g. `write-role-reachable`.
    pub code: &'static str,
    /// One-line reason.
    pub message: String,
    /// A claim set showing the risk, when there is one: granted by the role
    /// (by both roles, for `ambiguous-roles`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub witness: Option<Witness>,
}

/// What `policy check` is told beyond the policy.
#[derive(Clone, Debug)]
pub struct LintOptions {
    /// Roles known to be read-only. `None`: guess from names and ARNs
    /// (see [`looks_read_only`]).
    pub read_only_roles: Option<Vec<String>>,
    /// Step budget of each exact question.
    pub budget: u64,
}

impl Default for LintOptions {
    fn default() -> Self {
        Self {
            read_only_roles: None,
            budget: DEFAULT_BUDGET,
        }
    }
}

/// Whether a role looks read-only from its name or ARN: some word of either is
/// `read`, `readonly`, `pull` or `plan` and none is `write`, `readwrite`,
/// `push`, `deploy`, `publish` or `admin`. Words are split at non-alphanumeric
/// characters and camel-case boundaries (`GitHubActions-ECR-PullRole` gives
/// `git hub actions ecr pull role`), so `thread` or `planner` do not count.
pub fn looks_read_only(name: &str, arn: &str) -> bool {
    let words: Vec<String> = words(name).chain(words(arn)).collect();
    let has = |list: &[&str]| words.iter().any(|word| list.contains(&word.as_str()));
    has(READ_ONLY_WORDS) && !has(WRITE_WORDS)
}

fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut current = String::new();
    for (index, ch) in chars.iter().enumerate() {
        if !ch.is_alphanumeric() {
            if !current.is_empty() {
                out.push(std::mem::take(&mut current));
            }
            continue;
        }
        let previous = index.checked_sub(1).and_then(|before| chars.get(before));
        let following = chars.get(index + 1);
        let boundary = ch.is_uppercase()
            && previous.is_some_and(|previous| {
                previous.is_lowercase()
                    || previous.is_ascii_digit()
                    || (previous.is_uppercase()
                        && following.is_some_and(|next| next.is_lowercase()))
            });
        if boundary && !current.is_empty() {
            out.push(std::mem::take(&mut current));
        }
        current.extend(ch.to_lowercase());
    }
    if !current.is_empty() {
        out.push(current);
    }
    out.into_iter()
}

/// Every finding for `policy`, role by role in file order, then ambiguities.
pub fn lint(policy: &Policy, options: &LintOptions) -> Vec<Finding> {
    let mut findings = Vec::new();
    for role in &policy.roles {
        textual(role, &mut findings);
    }
    let contexts: Vec<(&str, Glob)> = UNTRUSTED_CONTEXTS
        .iter()
        .filter_map(|(claim, value, _)| {
            Glob::compile(value, CaseFold::for_claim(claim))
                .ok()
                .map(|glob| (*claim, glob))
        })
        .collect();
    let commit: Vec<(String, Glob)> = Space::context_patterns(&policy.roles).collect();
    let mut space = Space::new(
        Space::patterns_of(&policy.roles)
            .chain(contexts.iter().map(|(claim, glob)| (*claim, glob)))
            .chain(commit.iter().map(|(axis, glob)| (axis.as_str(), glob))),
    );
    space.set_budget(options.budget);
    let mut grants: Vec<Option<Grants>> = Vec::new();
    for role in &policy.roles {
        match space.grants(role) {
            Ok(role_grants) => grants.push(Some(role_grants)),
            Err(why) => {
                grants.push(None);
                findings.push(undecided(&role.name, &why));
            }
        }
    }
    for (role, role_grants) in policy.roles.iter().zip(&grants) {
        let Some(role_grants) = role_grants else {
            continue;
        };
        let read_only = match &options.read_only_roles {
            Some(names) => names.contains(&role.name),
            None => match &role.kind {
                RoleKind::Aws(aws) => looks_read_only(&role.name, aws.arn.as_str()),
                // A GitHub role says what it can do: read-only when every
                // permission is `read`.
                RoleKind::GitHub(github) => github
                    .permissions
                    .values()
                    .all(|access| *access == Access::Read),
            },
        };
        if !read_only {
            reachable(
                policy,
                &mut space,
                role,
                role_grants,
                &contexts,
                &mut findings,
            );
        }
    }
    ambiguities(policy, &mut space, &grants, &mut findings);
    findings
}

fn finding(
    role: &Role,
    rule: Option<String>,
    key: Option<&str>,
    code: &'static str,
    message: String,
) -> Finding {
    Finding {
        severity: Severity::Warning,
        role: role.name.clone(),
        rule,
        key: key.map(str::to_owned),
        code,
        message,
        witness: None,
    }
}

fn undecided(role: &str, why: &Undecided) -> Finding {
    Finding {
        severity: Severity::Error,
        role: role.to_owned(),
        rule: None,
        key: None,
        code: "undecided",
        message: format!("the exact analysis of this role did not finish: {why}"),
        witness: None,
    }
}

/// Findings that read the rules' text.
fn textual(role: &Role, findings: &mut Vec<Finding>) {
    if let RoleKind::Aws(aws) = &role.kind
        && aws.duration_seconds > LONG_DURATION_SECONDS
    {
        findings.push(finding(
            role,
            None,
            Some("duration_seconds"),
            "long-duration",
            format!(
                "credentials may live {} s, more than {LONG_DURATION_SECONDS} s: a leaked credential \
                 outlives the job that needed it",
                aws.duration_seconds
            ),
        ));
    }
    if let RoleKind::GitHub(github) = &role.kind
        && let Some((permission, access)) = github
            .permissions
            .iter()
            .find(|(_, access)| **access >= Access::Write)
        && role.allow.iter().all(|rule| rule.context.is_empty())
    {
        findings.push(finding(
            role,
            None,
            Some("permissions"),
            "github-write-without-context",
            format!(
                "grants `{permission} = \"{}\"` with no context condition in any allow rule: \
                 any job whose token matches can change the repository without a passed check \
                 or an approved pull request; add `checks_passed` or `pull_request_approvals`",
                access.as_str()
            ),
        ));
    }
    for (index, rule) in role.allow.iter().enumerate() {
        let name = Some(format!("{}[{index}]", RuleKind::Allow.key()));
        allow_rule(role, rule, &name, findings);
        for check in &rule.context {
            if let ContextCondition::CheckPassed {
                name: check,
                app: None,
            } = check
            {
                findings.push(finding(
                    role,
                    name.clone(),
                    Some("checks_passed"),
                    "check-without-app",
                    format!(
                        "check `{check}` is not bound to the App that must create it: a job whose \
                         token has `checks: write` can create a passing run of any name under the \
                         `github-actions` App; write `{{ name = \"{check}\", app = \"…\" }}`"
                    ),
                ));
            }
        }
    }
    for (index, rule) in role.deny.iter().enumerate() {
        let name = Some(format!("{}[{index}]", RuleKind::Deny.key()));
        for condition in rule
            .conditions
            .iter()
            .filter(|condition| !ALWAYS_PRESENT_CLAIMS.contains(&condition.claim.as_str()))
        {
            findings.push(finding(
                role,
                name.clone(),
                Some(&condition.claim),
                "deny-on-optional-claim",
                format!(
                    "GitHub does not send `{}` in every token and an absent claim never matches: \
                     this deny rule lets every token without it through",
                    condition.claim
                ),
            ));
        }
    }
}

fn allow_rule(role: &Role, rule: &Rule, name: &Option<String>, findings: &mut Vec<Finding>) {
    let claims = || {
        rule.conditions
            .iter()
            .map(|condition| condition.claim.as_str())
    };
    // An id condition only pins something when none of its patterns has a wildcard.
    let pins_id = rule.conditions.iter().any(|condition| {
        ID_CLAIMS.contains(&condition.claim.as_str())
            && condition.patterns.iter().all(Glob::is_literal)
    });
    if !pins_id && let Some(claim) = claims().find(|claim| NAME_CLAIMS.contains(claim)) {
        findings.push(finding(
            role,
            name.clone(),
            Some(claim),
            "name-without-id",
            format!(
                "matches `{claim}` by name without pinning `repository_owner_id` or `repository_id` \
                 to exact values: a renamed owner's name can be re-registered by someone else"
            ),
        ));
    }
    if !claims().any(|claim| BINDING_CLAIMS.contains(&claim)) {
        findings.push(finding(
            role,
            name.clone(),
            None,
            "unbound-rule",
            "binds no repository, owner or enterprise: any workflow on GitHub can request a token \
             for your audience and match it"
                .to_owned(),
        ));
    }
    let scoped = rule.conditions.iter().any(|condition| {
        SCOPE_CLAIMS.contains(&condition.claim.as_str())
            && !condition.patterns.iter().any(matches_any_value)
    });
    if !scoped {
        findings.push(finding(
            role,
            name.clone(),
            None,
            "no-ref-constraint",
            "constrains none of `ref`, `environment`, `job_workflow_ref` or `workflow_ref`: every \
             branch, tag and workflow of a matching repository can use it"
                .to_owned(),
        ));
    }
    for condition in rule
        .conditions
        .iter()
        .filter(|condition| NAME_CLAIMS.contains(&condition.claim.as_str()))
    {
        for pattern in condition
            .patterns
            .iter()
            .filter(|pattern| wildcard_owner(&condition.claim, pattern))
        {
            findings.push(finding(
                role,
                name.clone(),
                Some(&condition.claim),
                "wildcard-owner",
                format!(
                    "pattern {:?} lets the owner part vary: it matches owners other than yours",
                    pattern.source()
                ),
            ));
        }
    }
}

/// `**` (any value present): constrains nothing but presence.
fn matches_any_value(pattern: &Glob) -> bool {
    pattern
        .tokens()
        .iter()
        .all(|token| *token == Token::DoubleStar)
}

/// A `repository` or `repository_owner` pattern whose owner part is not fixed:
/// any `**`, a bare `*`, or a wildcard before the first `/` (`*/app`, `ourorg*/app`;
/// for `repository_owner`, anywhere).
fn wildcard_owner(claim: &str, pattern: &Glob) -> bool {
    let tokens = pattern.tokens();
    if tokens.contains(&Token::DoubleStar) || tokens == [Token::Star] {
        return true;
    }
    let owner = match claim {
        "repository" => tokens
            .iter()
            .position(|token| *token == Token::Literal('/'))
            .and_then(|slash| tokens.get(..slash))
            .unwrap_or(tokens),
        _ => tokens,
    };
    owner
        .iter()
        .any(|token| matches!(token, Token::Star | Token::Question))
}

/// `write-role-reachable`: exact reachability of each untrusted context.
fn reachable(
    policy: &Policy,
    space: &mut Space,
    role: &Role,
    grants: &Grants,
    contexts: &[(&str, Glob)],
    findings: &mut Vec<Finding>,
) {
    for ((claim, glob), (_, value, why)) in contexts.iter().zip(UNTRUSTED_CONTEXTS) {
        let found = space
            .condition(claim, &[glob])
            .and_then(|within| space.grant_within(grants, &within))
            .and_then(|found| match found {
                None => Ok(None),
                Some((allow, point)) => {
                    let witness = space.witness(&point)?;
                    confirm(policy, &[role], &witness)?;
                    Ok(Some((allow, witness)))
                }
            });
        match found {
            Ok(None) => {}
            Ok(Some((allow, witness))) => findings.push(Finding {
                witness: Some(witness),
                ..finding(
                    role,
                    Some(format!("{}[{allow}]", RuleKind::Allow.key())),
                    Some(claim),
                    "write-role-reachable",
                    format!(
                        "write-capable role is granted to tokens with {claim} = {value:?} ({why}); \
                         constrain `{claim}` in the allow rule or add a deny rule, or pass \
                         --read-only-role if the role cannot write"
                    ),
                )
            }),
            Err(why) => findings.push(undecided(&role.name, &why)),
        }
    }
}

/// `ambiguous-roles`: pairs of roles that grant a common claim set.
fn ambiguities(
    policy: &Policy,
    space: &mut Space,
    grants: &[Option<Grants>],
    findings: &mut Vec<Finding>,
) {
    let roles: Vec<(&Role, &Grants)> = policy
        .roles
        .iter()
        .zip(grants)
        .filter_map(|(role, grants)| grants.as_ref().map(|grants| (role, grants)))
        .collect();
    for (index, (first, first_grants)) in roles.iter().enumerate() {
        for (second, second_grants) in roles.iter().skip(index + 1) {
            let found = space
                .grant_intersection(first_grants, second_grants)
                .and_then(|point| point.map(|point| space.witness(&point)).transpose())
                .and_then(|witness| {
                    if let Some(witness) = &witness {
                        confirm(policy, &[first, second], witness)?;
                    }
                    Ok(witness)
                });
            match found {
                Ok(None) => {}
                Ok(Some(witness)) => findings.push(Finding {
                    witness: Some(witness),
                    ..finding(
                        first,
                        None,
                        None,
                        "ambiguous-roles",
                        format!(
                            "roles `{}` and `{}` both grant some tokens: requests that name no \
                             role are refused as ambiguous, and a caller can pick either",
                            first.name, second.name
                        ),
                    )
                }),
                Err(why) => findings.push(undecided(&first.name, &why)),
            }
        }
    }
}

/// Checks that every role of `roles` grants `witness` when named.
fn confirm(policy: &Policy, roles: &[&Role], witness: &Witness) -> Result<(), Undecided> {
    let claims = witness.to_claim_set();
    for role in roles {
        let request = RoleRequest {
            role: Some(&role.name),
            duration_seconds: None,
            permissions: None,
        };
        let answers = witness.answers(&policy.context_conditions(&request));
        if policy
            .evaluate_unverified_in_context(&claims, &request, &answers)
            .is_err()
        {
            return Err(Undecided::Unconfirmed(format!(
                "witness is not granted by role `{}`: {}",
                role.name,
                witness.one_line()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
