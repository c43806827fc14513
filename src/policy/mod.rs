//! The policy engine: compiled rules deciding which role, if any, a token may
//! obtain: an AWS role to assume or a GitHub installation token.
//!
//! Deny by default. A policy is a list of roles; a role grants when one of its
//! allow rules matches and none of its deny rules does; a rule matches when every
//! one of its conditions does; a condition matches when the claim is present and
//! one of its patterns (see `glob.rs`) matches the whole value. An allow rule may
//! also need facts about the token's commit (context conditions: checks passed,
//! pull request approvals), which this module names but never asks: the caller
//! collects the answers for [`Policy::context_needed`] and hands them to
//! [`Policy::evaluate_in_context`]. The language is documented for operators in
//! `docs/policy.md`.
//!
//! Trust: this module sees claims, never a raw token. The request path hands it
//! [`VerifiedClaims`] ([`Policy::evaluate_in_context`]); the offline tools hand it
//! [`UnverifiedClaims`] ([`Policy::evaluate_unverified`], [`Policy::explain`]).
//! Either way the answer is an [`Allowed`]: which role the rules chose, not a
//! permission to issue. Only `decision` turns an `Allowed` into a `Grant`, from
//! verified claims and after Rego agreed. It trusts nothing in the policy text: the
//! whole file is validated at load and refused on any error, because a partly
//! loaded policy is a security bug. Context answers are trusted as given; a
//! missing one never matches and an unavailable one never grants.
//!
//! Invariants: only this module constructs an [`Allowed`], and only after an allow
//! rule's claim conditions matched and its context answers all passed, no deny
//! rule of that role matched, and the request's fields fit the role: for an AWS
//! role the duration is within 900 s and the role's maximum, for a GitHub role the
//! repositories are the token owner's and the permissions at most the role's.
//! These are checked only once a role has been granted, so an unauthorised caller
//! learns nothing about the roles. [`Policy::evaluate_in_context`] is the
//! per-request hot path: it does not allocate except to build its result, and
//! [`Policy::context_needed`] allocates nothing for a policy without context
//! conditions. [`Policy::explain`] gives the full trace for operators.

mod canned;
pub mod diff;
mod explain;
mod github;
mod glob;
pub mod lint;
mod load;
mod miss;
mod model;
mod warnings;

#[cfg(test)]
mod tests;

use std::path::Path;

use crate::api::Permissions;
use crate::claims::{ClaimSet, UnverifiedClaims};
use crate::context::{ContextAnswers, ContextCondition};
use crate::verify::VerifiedClaims;

pub use canned::{CannedContext, MAX_CONTEXT_FILE_BYTES};
pub use explain::{ConditionTrace, ContextTrace, Explanation, RoleTrace, RuleTrace};
pub use model::RoleOutcome;

use github::RepositoryEntry;
use model::{Role, RoleKind, RuleKind};

/// Shortest credential lifetime, and the default: the STS minimum for AssumeRole.
pub const MIN_DURATION_SECONDS: u32 = 900;

/// Longest credential lifetime a role may allow: the STS maximum for AssumeRole
/// (the IAM role's own `MaxSessionDuration` must also allow it).
pub const MAX_DURATION_SECONDS: u32 = 43_200;

/// What the caller asked for, beyond its token.
#[derive(Clone, Copy, Debug, Default)]
pub struct RoleRequest<'a> {
    /// The role named in the request, if any.
    pub role: Option<&'a str>,
    /// The requested credential lifetime, if any (roles of kind `aws` only).
    pub duration_seconds: Option<u64>,
    /// The permissions the request narrows a `github` token to, if any
    /// (roles of kind `github` only).
    pub permissions: Option<&'a Permissions>,
}

/// A compiled, validated policy.
#[derive(Debug)]
pub struct Policy {
    version: String,
    roles: Vec<Role>,
}

/// A risk the loader noticed that does not stop the policy from loading.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyWarning {
    /// Role the warning is about.
    pub role: String,
    /// Rule inside the role (`allow[0]`), when the warning is about one.
    pub rule: Option<String>,
    /// Claim key, when the warning is about one.
    pub key: Option<String>,
    /// One-line reason.
    pub message: String,
}

/// A policy with the warnings found while loading it.
#[derive(Debug)]
pub struct LoadedPolicy {
    /// The compiled policy.
    pub policy: Policy,
    /// Non-fatal findings.
    pub warnings: Vec<PolicyWarning>,
}

/// One invalid key of a policy file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyIssue {
    /// Key path, e.g. `roles[1].allow[0].ref`.
    pub key: String,
    /// Reason.
    pub reason: String,
}

/// Why a policy could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file could not be read.
    #[error("{path}: cannot read policy: {reason}")]
    Read {
        /// File path.
        path: String,
        /// OS reason.
        reason: String,
    },
    /// The file is not a valid policy (exactly one problem found).
    #[error("{path}: key `{key}`: {reason}")]
    Invalid {
        /// File path or source name.
        path: String,
        /// Dotted key path.
        key: String,
        /// Reason.
        reason: String,
    },
    /// The file is not a valid policy (several problems found); displays one
    /// `FILE: key `KEY`: REASON` line per problem, in file order of the roles.
    #[error("{}", render_issues(.path, .issues))]
    InvalidMany {
        /// File path or source name.
        path: String,
        /// Every problem found; at least two.
        issues: Vec<PolicyIssue>,
    },
    /// The file is not TOML.
    #[error("{path}: line {line}, column {column}: invalid TOML: {reason}")]
    Syntax {
        /// File path or source name.
        path: String,
        /// 1-based line.
        line: usize,
        /// 1-based column, in characters.
        column: usize,
        /// Parser message.
        reason: String,
    },
}

fn render_issues(path: &str, issues: &[PolicyIssue]) -> String {
    let lines: Vec<String> = issues
        .iter()
        .map(|issue| format!("{path}: key `{}`: {}", issue.key, issue.reason))
        .collect();
    lines.join("\n")
}

/// Summary of one role for listings (`check-config`).
#[derive(Clone, Debug)]
pub struct RoleSummary {
    /// Role name.
    pub name: String,
    /// What the role issues, with its settings.
    pub credential: RoleCredential,
    /// The role's description, if the policy gives one.
    pub description: Option<String>,
    /// Number of allow rules.
    pub allow_rules: usize,
    /// Number of deny rules.
    pub deny_rules: usize,
}

/// What a role issues, for listings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RoleCredential {
    /// `kind = "aws"`.
    Aws {
        /// Role ARN.
        role_arn: String,
        /// Maximum (and default) duration.
        duration_seconds: u32,
        /// Whether STS session tags are sent.
        session_tags: bool,
    },
    /// `kind = "github"`.
    GitHub {
        /// `$repository` or `owner/name`, as written.
        repositories: Vec<String>,
        /// The most a token of the role carries.
        permissions: Permissions,
    },
}

impl RoleCredential {
    /// `aws` or `github`, the policy's `kind`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Aws { .. } => "aws",
            Self::GitHub { .. } => "github",
        }
    }
}

/// What the rules allow a role to obtain, resolved against the judged claims.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AllowedCredential {
    /// STS AssumeRole.
    Aws {
        /// ARN to assume.
        role_arn: String,
        /// Lifetime to ask STS for.
        duration_seconds: u32,
        /// Whether the credentials carry session tags.
        session_tags: bool,
    },
    /// A GitHub App installation token.
    GitHub {
        /// The token's repository owner (from the `repository` claim).
        owner: String,
        /// Repository names under `owner`, sorted, without duplicates, at least one.
        repositories: Vec<String>,
        /// Exactly the permissions the token carries: the role's, or the
        /// request's narrowing of them.
        permissions: Permissions,
    },
}

/// The rules' answer: the role they allow and what it obtains. Only this
/// module constructs it. It is not a permission to issue: `decision` makes a
/// `Grant` from it once Rego (when configured) agreed too.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allowed {
    role_name: String,
    credential: AllowedCredential,
    matched_rule: String,
}

impl Allowed {
    /// Policy name of the role.
    pub fn role_name(&self) -> &str {
        &self.role_name
    }
    /// What the role obtains.
    pub fn credential(&self) -> &AllowedCredential {
        &self.credential
    }
    /// The allow rule that granted, e.g. `deploy.allow[0]`.
    pub fn matched_rule(&self) -> &str {
        &self.matched_rule
    }
}

/// Why the policy refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Denial {
    /// No role's allow rules matched (or the named role's did not).
    NotPermitted {
        /// The role named in the request; `None` when the request named none.
        role: Option<String>,
        /// The closest miss, for the audit log only (it may quote claim values):
        /// one line, at most 1024 characters. See [`Policy::evaluate`].
        first_failed: String,
    },
    /// A deny rule matched.
    DeniedByRule {
        /// Role.
        role: String,
        /// The deny rule, e.g. `deploy.deny[0]`.
        rule: String,
    },
    /// The request named a role the policy does not have.
    UnknownRole,
    /// More than one role matched and none was named.
    Ambiguous {
        /// Matching role names (audit only).
        roles: Vec<String>,
    },
    /// The requested duration is outside 900..=role maximum.
    DurationOutOfRange {
        /// Role.
        role: String,
        /// Requested.
        requested: u64,
        /// Role maximum.
        max: u32,
    },
    /// The request sent a field the granted role's kind does not take:
    /// `duration_seconds` for a `github` role, `permissions` for an `aws` one.
    FieldNotForKind {
        /// Role.
        role: String,
        /// The request field.
        field: &'static str,
        /// The role's kind.
        kind: &'static str,
    },
    /// A `github` role names a repository of another owner than the token's
    /// (or the token's `repository` claim is not `owner/name`).
    RepositoryOfOtherOwner {
        /// Role.
        role: String,
        /// What was refused (audit only).
        detail: String,
    },
    /// An answer about the token's commit was unavailable (GitHub down, slow
    /// or rate-limited) and it could decide the request: fail closed, as
    /// unavailable (a 503), never as a grant or a refusal.
    ContextUnavailable {
        /// The role named in the request; `None` when the request named none.
        role: Option<String>,
        /// The rule and condition left undecided, with what was seen (audit only).
        detail: String,
    },
    /// The request asked for a permission the `github` role does not grant,
    /// or at a higher level.
    PermissionsBeyondRole {
        /// Role.
        role: String,
        /// The first permission refused, with the levels asked and allowed (audit only).
        detail: String,
    },
}

impl Denial {
    /// Closed set of reason codes for metrics and audit.
    pub fn reason_code(&self) -> &'static str {
        match self {
            Denial::NotPermitted { .. } => "policy_not_permitted",
            Denial::DeniedByRule { .. } => "policy_deny_rule",
            Denial::UnknownRole => "policy_unknown_role",
            Denial::Ambiguous { .. } => "ambiguous_role",
            Denial::DurationOutOfRange { .. } => "duration_out_of_range",
            Denial::FieldNotForKind { .. } => "field_not_for_role_kind",
            Denial::RepositoryOfOtherOwner { .. } => "github_repository_other_owner",
            Denial::PermissionsBeyondRole { .. } => "github_permissions_beyond_role",
            Denial::ContextUnavailable { .. } => "context_unavailable",
        }
    }
}

impl Policy {
    /// Reads and compiles a policy file.
    pub fn load(path: &Path) -> Result<LoadedPolicy, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|err| PolicyError::Read {
            path: path.display().to_string(),
            reason: err.to_string(),
        })?;
        Self::compile(&text, &path.display().to_string())
    }

    /// Compiles policy text; `source` names it in errors. Every problem in the
    /// text is reported, not just the first.
    pub fn compile(text: &str, source: &str) -> Result<LoadedPolicy, PolicyError> {
        use sha2::Digest;
        let compiled = load::compile(text).map_err(|failure| match failure {
            load::Failure::Syntax {
                line,
                column,
                reason,
            } => PolicyError::Syntax {
                path: source.to_owned(),
                line,
                column,
                reason,
            },
            load::Failure::Invalid(mut issues) => {
                if issues.len() == 1
                    && let Some(issue) = issues.pop()
                {
                    PolicyError::Invalid {
                        path: source.to_owned(),
                        key: issue.key,
                        reason: issue.reason,
                    }
                } else {
                    PolicyError::InvalidMany {
                        path: source.to_owned(),
                        issues,
                    }
                }
            }
        })?;
        let version = hex::encode(sha2::Sha256::digest(text.as_bytes()));
        Ok(LoadedPolicy {
            policy: Policy {
                version,
                roles: compiled.roles,
            },
            warnings: compiled.warnings,
        })
    }

    /// Hash of the policy text (SHA-256, lowercase hex).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Roles, in file order.
    pub fn roles(&self) -> Vec<RoleSummary> {
        self.roles
            .iter()
            .map(|role| RoleSummary {
                name: role.name.clone(),
                credential: match &role.kind {
                    RoleKind::Aws(aws) => RoleCredential::Aws {
                        role_arn: aws.arn.as_str().to_owned(),
                        duration_seconds: aws.duration_seconds,
                        session_tags: aws.session_tags,
                    },
                    RoleKind::GitHub(github) => RoleCredential::GitHub {
                        repositories: github
                            .repositories
                            .iter()
                            .map(ToString::to_string)
                            .collect(),
                        permissions: github.permissions.clone(),
                    },
                },
                description: role.description.clone(),
                allow_rules: role.allow.len(),
                deny_rules: role.deny.len(),
            })
            .collect()
    }

    /// Decides a request on verified claims. Deny by default.
    ///
    /// With a role named, only that role is evaluated. Without one, every role is,
    /// and exactly one must grant: none is [`Denial::NotPermitted`], several is
    /// [`Denial::Ambiguous`]. The duration is checked last, against the granted role.
    ///
    /// `first_failed` in [`Denial::NotPermitted`] describes the closest miss among
    /// the roles evaluated: a role blocked only by a deny rule if there is one
    /// (first in file order), otherwise the allow rule with the most matching
    /// conditions (earliest in file order on ties), and its first failing
    /// condition in claim-name order.
    ///
    /// A rule with context conditions does not grant here (nobody answered
    /// them); the request path uses [`Policy::evaluate_in_context`].
    pub fn evaluate(
        &self,
        claims: &VerifiedClaims,
        request: &RoleRequest<'_>,
    ) -> Result<Allowed, Denial> {
        self.decide(claims.claims(), request, &ContextAnswers::default())
    }

    /// The context conditions the request path must have answered before
    /// [`Policy::evaluate_in_context`] can decide `request`: the distinct
    /// conditions of the allow rules whose claim conditions all match, in the
    /// roles considered, leaving out roles a deny rule refuses and roles an
    /// allow rule without context conditions already grants. Empty for a
    /// policy without context conditions, and whenever the claims alone
    /// decide: then nobody is asked anything.
    pub fn context_needed(
        &self,
        claims: &VerifiedClaims,
        request: &RoleRequest<'_>,
    ) -> Vec<ContextCondition> {
        self.needed(claims.claims(), request)
    }

    /// Decides a request on verified claims and the answers collected for
    /// [`Policy::context_needed`]. A rule grants when its claim conditions
    /// match and every context condition's answer is a pass; a missing
    /// answer does not match. A role whose only obstacle is an unavailable
    /// answer makes the request [`Denial::ContextUnavailable`] (a 503), never
    /// a grant and never a refusal; without a role named, so does any such
    /// role, unless the request is already ambiguous.
    pub fn evaluate_in_context(
        &self,
        claims: &VerifiedClaims,
        request: &RoleRequest<'_>,
        answers: &ContextAnswers,
    ) -> Result<Allowed, Denial> {
        self.decide(claims.claims(), request, answers)
    }

    /// Decides a request on claims nobody verified, exactly as
    /// [`Policy::evaluate`] would: for the offline tools (`policy explain`,
    /// `policy check` witnesses, `policy diff` witnesses). The answer cannot
    /// lead to a credential.
    pub fn evaluate_unverified(
        &self,
        claims: &UnverifiedClaims,
        request: &RoleRequest<'_>,
    ) -> Result<Allowed, Denial> {
        self.decide(claims.claim_set(), request, &ContextAnswers::default())
    }

    /// [`Policy::evaluate_in_context`] on claims nobody verified, with
    /// answers nobody asked GitHub for (canned answers, diff witnesses).
    pub fn evaluate_unverified_in_context(
        &self,
        claims: &UnverifiedClaims,
        request: &RoleRequest<'_>,
        answers: &ContextAnswers,
    ) -> Result<Allowed, Denial> {
        self.decide(claims.claim_set(), request, answers)
    }

    /// [`Policy::context_needed`] on claims nobody verified.
    pub fn context_needed_unverified(
        &self,
        claims: &UnverifiedClaims,
        request: &RoleRequest<'_>,
    ) -> Vec<ContextCondition> {
        self.needed(claims.claim_set(), request)
    }

    /// Every context condition of the roles `request` considers, whatever
    /// the claims (the offline tools answer them all from canned answers).
    pub fn context_conditions(&self, request: &RoleRequest<'_>) -> Vec<ContextCondition> {
        let mut all: Vec<ContextCondition> = self
            .considered(request)
            .flat_map(|role| &role.allow)
            .flat_map(|rule| rule.context.iter().cloned())
            .collect();
        all.sort();
        all.dedup();
        all
    }

    fn needed(&self, claims: &ClaimSet, request: &RoleRequest<'_>) -> Vec<ContextCondition> {
        // The common case, a policy without context conditions, costs a scan
        // of the rules and no allocation.
        let any = self
            .roles
            .iter()
            .flat_map(|role| &role.allow)
            .any(|rule| !rule.context.is_empty());
        if !any {
            return Vec::new();
        }
        let mut needed: Vec<ContextCondition> = self
            .considered(request)
            .flat_map(|role| role.context_needed(claims))
            .cloned()
            .collect();
        needed.sort();
        needed.dedup();
        needed
    }

    /// The roles a request considers: the named one (names are unique), or
    /// all of them.
    fn considered<'p, 'r>(
        &'p self,
        request: &RoleRequest<'r>,
    ) -> impl Iterator<Item = &'p Role> + use<'p, 'r> {
        let named: Option<&'r str> = request.role;
        self.roles
            .iter()
            .filter(move |role| named.is_none_or(|name| role.name == name))
    }

    fn decide(
        &self,
        claims: &ClaimSet,
        request: &RoleRequest<'_>,
        answers: &ContextAnswers,
    ) -> Result<Allowed, Denial> {
        if let Some(name) = request.role {
            let role = self.role(name).ok_or(Denial::UnknownRole)?;
            return match role.outcome_in(claims, answers) {
                RoleOutcome::Granted { allow } => grant(role, allow, request, claims),
                RoleOutcome::Denied { deny, .. } => Err(Denial::DeniedByRule {
                    role: role.name.clone(),
                    rule: role.rule_name(RuleKind::Deny, deny),
                }),
                RoleOutcome::Unavailable { allow } => Err(Denial::ContextUnavailable {
                    role: Some(role.name.clone()),
                    detail: miss::unavailable(role, allow, answers),
                }),
                RoleOutcome::NotAllowed => Err(Denial::NotPermitted {
                    role: Some(role.name.clone()),
                    first_failed: miss::describe(std::slice::from_ref(role), claims, answers),
                }),
            };
        }
        let mut granting: Option<(&Role, usize)> = None;
        let mut several = false;
        let mut unavailable: Option<(&Role, usize)> = None;
        for role in &self.roles {
            match role.outcome_in(claims, answers) {
                RoleOutcome::Granted { allow } => {
                    several |= granting.is_some();
                    granting.get_or_insert((role, allow));
                }
                RoleOutcome::Unavailable { allow } => {
                    unavailable.get_or_insert((role, allow));
                }
                RoleOutcome::Denied { .. } | RoleOutcome::NotAllowed => {}
            }
        }
        match (granting, several, unavailable) {
            (_, true, _) => Err(Denial::Ambiguous {
                roles: self
                    .roles
                    .iter()
                    .filter(|role| {
                        matches!(
                            role.outcome_in(claims, answers),
                            RoleOutcome::Granted { .. }
                        )
                    })
                    .map(|role| role.name.clone())
                    .collect(),
            }),
            // One more role might grant once GitHub answers: neither a grant
            // (it could be ambiguous) nor a refusal.
            (_, false, Some((role, allow))) => Err(Denial::ContextUnavailable {
                role: None,
                detail: miss::unavailable(role, allow, answers),
            }),
            (Some((role, allow)), false, None) => grant(role, allow, request, claims),
            (None, false, None) => Err(Denial::NotPermitted {
                role: None,
                first_failed: miss::describe(&self.roles, claims, answers),
            }),
        }
    }

    /// Decides a request like [`Policy::evaluate`] and records why: every
    /// condition of every rule of every role considered (only the named role when
    /// the request names one), with the claim values seen. For operators
    /// (`policy explain`), not for the request path. Context conditions show as
    /// not evaluated; see [`Policy::explain_in_context`].
    pub fn explain(&self, claims: &UnverifiedClaims, request: &RoleRequest<'_>) -> Explanation {
        self.explain_in_context(claims, request, None)
    }

    /// [`Policy::explain`] with canned answers to the context conditions
    /// (`None`: not evaluated, and so not matched). The outcome is
    /// [`Policy::evaluate_unverified_in_context`]'s.
    pub fn explain_in_context(
        &self,
        claims: &UnverifiedClaims,
        request: &RoleRequest<'_>,
        answers: Option<&ContextAnswers>,
    ) -> Explanation {
        let none = ContextAnswers::default();
        let outcome =
            self.evaluate_unverified_in_context(claims, request, answers.unwrap_or(&none));
        let claims = claims.claim_set();
        Explanation {
            roles: self
                .considered(request)
                .map(|role| RoleTrace::of(role, claims, answers))
                .collect(),
            outcome,
        }
    }

    fn role(&self, name: &str) -> Option<&Role> {
        self.roles.iter().find(|role| role.name == name)
    }
}

/// Builds the answer once `role` matched through allow rule `allow`: checks
/// the request's fields against the role's kind, then resolves what the role
/// issues against the judged claims.
fn grant(
    role: &Role,
    allow: usize,
    request: &RoleRequest<'_>,
    claims: &ClaimSet,
) -> Result<Allowed, Denial> {
    let not_for_kind = |field: &'static str| Denial::FieldNotForKind {
        role: role.name.clone(),
        field,
        kind: role.kind.name(),
    };
    let credential = match &role.kind {
        RoleKind::Aws(aws) => {
            if request.permissions.is_some() {
                return Err(not_for_kind("permissions"));
            }
            let duration_seconds = match request.duration_seconds {
                None => aws.duration_seconds,
                Some(requested) => u32::try_from(requested)
                    .ok()
                    .filter(|seconds| {
                        (MIN_DURATION_SECONDS..=aws.duration_seconds).contains(seconds)
                    })
                    .ok_or_else(|| Denial::DurationOutOfRange {
                        role: role.name.clone(),
                        requested,
                        max: aws.duration_seconds,
                    })?,
            };
            AllowedCredential::Aws {
                role_arn: aws.arn.as_str().to_owned(),
                duration_seconds,
                session_tags: aws.session_tags,
            }
        }
        RoleKind::GitHub(github) => {
            if request.duration_seconds.is_some() {
                return Err(not_for_kind("duration_seconds"));
            }
            let (owner, repositories) = repositories(role, &github.repositories, claims)?;
            let permissions = narrow(role, &github.permissions, request.permissions)?;
            AllowedCredential::GitHub {
                owner,
                repositories,
                permissions,
            }
        }
    };
    Ok(Allowed {
        role_name: role.name.clone(),
        credential,
        matched_rule: role.rule_name(RuleKind::Allow, allow),
    })
}

/// The owner and repository names a `github` role's token reaches for the
/// token whose claims were judged: owner and `$repository` from the
/// `repository` claim; every `owner/name` entry must be of the same owner
/// (ASCII case-insensitively, as GitHub compares names).
fn repositories(
    role: &Role,
    entries: &[RepositoryEntry],
    claims: &ClaimSet,
) -> Result<(String, Vec<String>), Denial> {
    let refuse = |detail: String| Denial::RepositoryOfOtherOwner {
        role: role.name.clone(),
        detail,
    };
    let claim = claims.get("repository").unwrap_or_default();
    let Some((owner, own)) = claim
        .split_once('/')
        .filter(|(owner, name)| !owner.is_empty() && !name.is_empty() && !name.contains('/'))
    else {
        return Err(refuse(format!(
            "the token's repository claim {} is not `owner/name`",
            miss::quote(claim)
        )));
    };
    let mut names: Vec<String> = Vec::with_capacity(entries.len());
    for entry in entries {
        let name = match entry {
            RepositoryEntry::Own => own,
            RepositoryEntry::Named {
                owner: entry_owner,
                name,
            } => {
                if !entry_owner.eq_ignore_ascii_case(owner) {
                    return Err(refuse(format!(
                        "{entry} is not of the token's owner {}",
                        miss::quote(owner)
                    )));
                }
                name.as_str()
            }
        };
        if !names.iter().any(|seen| seen.eq_ignore_ascii_case(name)) {
            names.push(name.to_owned());
        }
    }
    names.sort();
    Ok((owner.to_owned(), names))
}

/// The permissions a token carries: the role's, or exactly those the request
/// asks, each at most the role's level and a level GitHub defines for it.
fn narrow(
    role: &Role,
    granted: &Permissions,
    asked: Option<&Permissions>,
) -> Result<Permissions, Denial> {
    let Some(asked) = asked else {
        return Ok(granted.clone());
    };
    let beyond = |detail: String| Denial::PermissionsBeyondRole {
        role: role.name.clone(),
        detail,
    };
    if asked.is_empty() {
        return Err(beyond(
            "the request asks for no permission at all".to_owned(),
        ));
    }
    for (name, level) in asked {
        let Some(max) = granted.get(name) else {
            return Err(beyond(format!(
                "{} is not granted by the role",
                miss::quote(name)
            )));
        };
        if level > max {
            return Err(beyond(format!(
                "{name}: asked {}, the role grants {}",
                level.as_str(),
                max.as_str()
            )));
        }
        if !github::levels(name).is_some_and(|levels| levels.contains(level)) {
            return Err(beyond(format!(
                "{name}: GitHub defines no level {} for it",
                level.as_str()
            )));
        }
    }
    Ok(asked.clone())
}
