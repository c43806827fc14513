//! A full trace of a policy decision, for operators (`policy explain`).
//!
//! The request path never builds one: [`super::Policy::evaluate`] short-circuits
//! and allocates nothing but its result. The trace instead evaluates every
//! condition of every rule, deny rules included, so an operator sees everything
//! that did and did not match. Its `outcome` is computed by `evaluate` itself, so
//! the trace and the real decision cannot disagree. It quotes claim values, so it
//! is for operators' eyes, never for a response body.

use std::fmt;

use crate::claims::ClaimSet;
use crate::context::{ContextAnswer, ContextAnswers, ContextCondition};

use super::model::{Condition, Role, RoleOutcome, Rule, RuleKind};
use super::{Allowed, AllowedCredential, Denial};

/// Everything a decision looked at, and the decision.
#[derive(Clone, Debug)]
pub struct Explanation {
    /// The roles considered: the named one, or all of them in file order.
    pub roles: Vec<RoleTrace>,
    /// Exactly what [`super::Policy::evaluate`] returns for the same claims.
    pub outcome: Result<Allowed, Denial>,
}

/// How one role decided.
#[derive(Clone, Debug)]
pub struct RoleTrace {
    /// Role name.
    pub role: String,
    /// The role's own decision (before role selection and the duration check).
    pub outcome: RoleOutcome,
    /// Every allow rule, in file order.
    pub allow: Vec<RuleTrace>,
    /// Every deny rule, in file order, evaluated even when no allow rule matched.
    pub deny: Vec<RuleTrace>,
}

/// How one rule decided.
#[derive(Clone, Debug)]
pub struct RuleTrace {
    /// Rule name, e.g. `deploy.allow[0]`.
    pub rule: String,
    /// Every condition, in claim-name order (the order evaluation uses).
    pub conditions: Vec<ConditionTrace>,
    /// Every context condition (allow rules only), in their sorted order.
    pub context: Vec<ContextTrace>,
}

/// How one context condition was answered.
#[derive(Clone, Debug)]
pub struct ContextTrace {
    /// The condition.
    pub condition: ContextCondition,
    /// Its answer; `None` when it was not evaluated (no canned answers) or
    /// not asked (the request path would not ask it: the claims decide).
    pub answer: Option<ContextAnswer>,
    /// Whether answers were given at all (`policy explain --context`).
    pub evaluated: bool,
}

impl ContextTrace {
    /// Whether the answer is a pass.
    pub fn matched(&self) -> bool {
        matches!(self.answer, Some(ContextAnswer::Pass(_)))
    }
}

/// How one condition decided.
#[derive(Clone, Debug)]
pub struct ConditionTrace {
    /// Claim name.
    pub claim: String,
    /// The claim's value in the token, `None` when absent.
    pub value: Option<String>,
    /// The condition's patterns, as written in the policy.
    pub patterns: Vec<String>,
    /// Whether the claim compares ASCII case-insensitively.
    pub case_insensitive: bool,
    /// Index into `patterns` of the first pattern that matched.
    pub matched_pattern: Option<usize>,
}

impl RoleTrace {
    pub(super) fn of(role: &Role, claims: &ClaimSet, answers: Option<&ContextAnswers>) -> Self {
        let rules = |kind: RuleKind, rules: &[Rule]| -> Vec<RuleTrace> {
            rules
                .iter()
                .enumerate()
                .map(|(index, rule)| RuleTrace {
                    rule: role.rule_name(kind, index),
                    conditions: rule
                        .conditions
                        .iter()
                        .map(|condition| ConditionTrace::of(condition, claims))
                        .collect(),
                    context: rule
                        .context
                        .iter()
                        .map(|condition| ContextTrace {
                            condition: condition.clone(),
                            answer: answers.and_then(|answers| answers.get(condition)).cloned(),
                            evaluated: answers.is_some(),
                        })
                        .collect(),
                })
                .collect()
        };
        let none = ContextAnswers::default();
        Self {
            role: role.name.clone(),
            outcome: role.outcome_in(claims, answers.unwrap_or(&none)),
            allow: rules(RuleKind::Allow, &role.allow),
            deny: rules(RuleKind::Deny, &role.deny),
        }
    }
}

impl RuleTrace {
    /// Whether every condition matched, context conditions included.
    pub fn matched(&self) -> bool {
        self.conditions.iter().all(ConditionTrace::matched)
            && self.context.iter().all(ContextTrace::matched)
    }
}

impl ConditionTrace {
    fn of(condition: &Condition, claims: &ClaimSet) -> Self {
        let value = claims.get(&condition.claim);
        Self {
            claim: condition.claim.clone(),
            value: value.map(str::to_owned),
            patterns: condition
                .patterns
                .iter()
                .map(|pattern| pattern.source().to_owned())
                .collect(),
            case_insensitive: condition
                .patterns
                .first()
                .is_some_and(|pattern| pattern.fold() == super::glob::CaseFold::AsciiInsensitive),
            matched_pattern: value.and_then(|value| condition.matching_pattern(value)),
        }
    }

    /// Whether the claim was present and a pattern matched it.
    pub fn matched(&self) -> bool {
        self.matched_pattern.is_some()
    }
}

/// A human-readable, multi-line rendering for `policy explain`.
impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for role in &self.roles {
            let verdict = match role.outcome {
                RoleOutcome::Granted { allow } => format!("granted by allow[{allow}]"),
                RoleOutcome::Denied { allow, deny } => {
                    format!("allow[{allow}] matched, refused by deny[{deny}]")
                }
                RoleOutcome::NotAllowed => "no allow rule matched".to_owned(),
                RoleOutcome::Unavailable { allow } => {
                    format!("undecided: allow[{allow}] needs a context answer that was unavailable")
                }
            };
            writeln!(f, "role {}: {verdict}", role.role)?;
            for rule in role.allow.iter().chain(&role.deny) {
                let state = if rule.matched() {
                    "matched"
                } else {
                    "did not match"
                };
                writeln!(f, "  {} {state}", rule.rule)?;
                for condition in &rule.conditions {
                    writeln!(f, "    {condition}")?;
                }
                for context in &rule.context {
                    writeln!(f, "    {context}")?;
                }
            }
        }
        match &self.outcome {
            Ok(grant) => match grant.credential() {
                AllowedCredential::Aws {
                    duration_seconds, ..
                } => write!(
                    f,
                    "outcome: grant role {} via {} for {duration_seconds} s",
                    grant.role_name(),
                    grant.matched_rule(),
                ),
                AllowedCredential::GitHub {
                    owner,
                    repositories,
                    permissions,
                } => write!(
                    f,
                    "outcome: grant role {} via {}: a GitHub token for {} with {}",
                    grant.role_name(),
                    grant.matched_rule(),
                    repositories
                        .iter()
                        .map(|name| format!("{owner}/{name}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    permissions
                        .iter()
                        .map(|(name, level)| format!("{name}:{}", level.as_str()))
                        .collect::<Vec<_>>()
                        .join(", "),
                ),
            },
            Err(denial) => {
                if let Denial::ContextUnavailable { .. } = denial {
                    // Neither a grant nor a refusal: the server answers 503.
                    write!(
                        f,
                        "outcome: undecided, unavailable ({}): ",
                        denial.reason_code()
                    )?;
                } else {
                    write!(f, "outcome: deny ({}): ", denial.reason_code())?;
                }
                match denial {
                    Denial::NotPermitted { first_failed, .. } => f.write_str(first_failed),
                    Denial::DeniedByRule { rule, .. } => write!(f, "{rule} matched"),
                    Denial::UnknownRole => f.write_str("the policy has no such role"),
                    Denial::Ambiguous { roles } => {
                        write!(
                            f,
                            "{} all match; the request must name one",
                            roles.join(", ")
                        )
                    }
                    Denial::DurationOutOfRange { requested, max, .. } => write!(
                        f,
                        "requested {requested} s, allowed {}..={max} s",
                        super::MIN_DURATION_SECONDS
                    ),
                    Denial::FieldNotForKind { field, kind, .. } => {
                        write!(f, "`{field}` is not taken by roles of kind `{kind}`")
                    }
                    Denial::RepositoryOfOtherOwner { detail, .. }
                    | Denial::PermissionsBeyondRole { detail, .. }
                    | Denial::ContextUnavailable { detail, .. } => f.write_str(detail),
                }
            }
        }
    }
}

impl fmt::Display for ConditionTrace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mark = if self.matched() { "ok  " } else { "FAIL" };
        let case = if self.case_insensitive {
            " (ASCII case-insensitive)"
        } else {
            ""
        };
        match &self.value {
            None => write!(f, "{mark} {}: claim absent{case}", self.claim),
            Some(value) => write!(
                f,
                "{mark} {} = {value:?} against {:?}{case}",
                self.claim, self.patterns
            ),
        }
    }
}

impl fmt::Display for ContextTrace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.answer {
            None if self.evaluated => write!(
                f,
                "-    {}: not asked (the claims decide without it)",
                self.condition
            ),
            None => write!(
                f,
                "?    {}: not evaluated (give --context FILE)",
                self.condition
            ),
            Some(answer) => {
                let mark = match answer {
                    ContextAnswer::Pass(_) => "ok  ",
                    ContextAnswer::Fail(_) => "FAIL",
                    ContextAnswer::Unavailable(_) => "N/A ",
                };
                write!(
                    f,
                    "{mark} {}: {} ({})",
                    self.condition,
                    answer.label(),
                    answer.detail()
                )
            }
        }
    }
}
