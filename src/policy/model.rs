//! The compiled policy: roles, rules and conditions as plain, inspectable data.
//!
//! Everything here has been validated by `load.rs`: every role has at least one
//! allow rule, every rule at least one condition, every condition at least one
//! pattern. Conditions inside a rule are sorted by claim name, so evaluation order
//! (and therefore which condition is reported as failing first) does not depend on
//! how the TOML parser orders keys.
//!
//! The shapes are `pub(crate)` on purpose: a later `policy diff` reads them as a
//! union (allow rules) minus a union (deny rules) of products over claims of
//! regular languages (patterns).

use crate::api::Permissions;
use crate::claims::ClaimSet;
use crate::context::{ContextAnswer, ContextAnswers, ContextCondition};

use super::github::RepositoryEntry;
use super::glob::Glob;

/// A compiled role.
#[derive(Debug)]
pub(crate) struct Role {
    /// Policy name, unique in the policy.
    pub(crate) name: String,
    /// What the role issues.
    pub(crate) kind: RoleKind,
    /// Free text for listings.
    pub(crate) description: Option<String>,
    /// Any of these grants (non-empty).
    pub(crate) allow: Vec<Rule>,
    /// Any of these refuses, whatever the allow rules say.
    pub(crate) deny: Vec<Rule>,
}

/// What a role issues, with the settings of that kind of credential.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RoleKind {
    /// `kind = "aws"` (the default): STS AssumeRole.
    Aws(AwsRole),
    /// `kind = "github"`: a GitHub App installation token.
    GitHub(GithubRole),
}

/// The settings of a role of kind `aws`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct AwsRole {
    /// The IAM role to assume.
    pub(crate) arn: RoleArn,
    /// Maximum and default credential lifetime, within the STS bounds.
    pub(crate) duration_seconds: u32,
    /// Whether STS session tags are sent.
    pub(crate) session_tags: bool,
}

/// The settings of a role of kind `github`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct GithubRole {
    /// The repositories the token reaches (non-empty, no duplicates).
    pub(crate) repositories: Vec<RepositoryEntry>,
    /// The most the token may carry (non-empty; names and levels GitHub defines).
    pub(crate) permissions: Permissions,
}

impl RoleKind {
    /// The policy's name of the kind.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Self::Aws(_) => "aws",
            Self::GitHub(_) => "github",
        }
    }
}

/// A rule: the conjunction of its conditions.
#[derive(Debug)]
pub(crate) struct Rule {
    /// Non-empty, sorted by claim name.
    pub(crate) conditions: Vec<Condition>,
    /// Facts about the token's commit the rule also needs (allow rules
    /// only); sorted, without duplicates. Asked only once every claim
    /// condition matched.
    pub(crate) context: Vec<ContextCondition>,
}

/// How a rule's context conditions fared against the answers collected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ContextVerdict {
    /// Every condition's answer is a pass (or the rule has none).
    Pass,
    /// Some answer is a fail, or missing (nobody asked: not matched).
    Fail,
    /// No fail, but some answer is unavailable: the rule cannot be decided.
    Unavailable,
}

/// One claim and the patterns any of which its value must match.
#[derive(Debug)]
pub(crate) struct Condition {
    /// Claim name (`[a-z0-9_]+`).
    pub(crate) claim: String,
    /// Non-empty; compiled with the claim's case folding.
    pub(crate) patterns: Vec<Glob>,
}

/// How one role decides a claim set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoleOutcome {
    /// An allow rule matched and no deny rule did.
    Granted {
        /// Index of the first matching allow rule.
        allow: usize,
    },
    /// An allow rule matched, but so did a deny rule, which wins.
    Denied {
        /// Index of the first matching allow rule.
        allow: usize,
        /// Index of the first matching deny rule.
        deny: usize,
    },
    /// No allow rule matched.
    NotAllowed,
    /// No allow rule granted, but one whose claim conditions matched could
    /// not be decided: an answer about the token's commit was unavailable.
    /// The request then fails closed as unavailable, neither allowed nor
    /// refused.
    Unavailable {
        /// Index of the first allow rule left undecided.
        allow: usize,
    },
}

impl Role {
    /// Decides this role alone on claims only: a rule with context
    /// conditions does not grant (nobody answered them).
    pub(crate) fn outcome(&self, claims: &ClaimSet) -> RoleOutcome {
        self.outcome_in(claims, &ContextAnswers::default())
    }

    /// Decides this role alone. Deny rules (claims only) are consulted once an
    /// allow rule's claim conditions matched, and win whatever the context
    /// says; then the first allow rule whose claims match and whose context
    /// answers all pass grants.
    pub(crate) fn outcome_in(&self, claims: &ClaimSet, answers: &ContextAnswers) -> RoleOutcome {
        let mut matching = self
            .allow
            .iter()
            .enumerate()
            .filter(|(_, rule)| rule.matches(claims));
        let Some((first, first_rule)) = matching.next() else {
            return RoleOutcome::NotAllowed;
        };
        if let Some(deny) = self.deny.iter().position(|rule| rule.matches(claims)) {
            return RoleOutcome::Denied { allow: first, deny };
        }
        let mut unavailable = None;
        for (index, rule) in std::iter::once((first, first_rule)).chain(matching) {
            match rule.context_verdict(answers) {
                ContextVerdict::Pass => return RoleOutcome::Granted { allow: index },
                ContextVerdict::Unavailable => {
                    unavailable.get_or_insert(index);
                }
                ContextVerdict::Fail => {}
            }
        }
        match unavailable {
            Some(allow) => RoleOutcome::Unavailable { allow },
            None => RoleOutcome::NotAllowed,
        }
    }

    /// The context conditions this role needs answered to decide `claims`:
    /// none when a deny rule refuses anyway or an allow rule without context
    /// conditions already grants; otherwise those of every allow rule whose
    /// claim conditions all match.
    pub(crate) fn context_needed<'r>(&'r self, claims: &ClaimSet) -> Vec<&'r ContextCondition> {
        let matching: Vec<&Rule> = self
            .allow
            .iter()
            .filter(|rule| rule.matches(claims))
            .collect();
        if matching.is_empty()
            || matching.iter().any(|rule| rule.context.is_empty())
            || self.deny.iter().any(|rule| rule.matches(claims))
        {
            return Vec::new();
        }
        matching
            .into_iter()
            .flat_map(|rule| &rule.context)
            .collect()
    }

    /// `deploy.allow[0]`, the name of a rule in audit lines and traces.
    pub(crate) fn rule_name(&self, kind: RuleKind, index: usize) -> String {
        format!("{}.{}[{index}]", self.name, kind.key())
    }
}

/// Which list a rule belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RuleKind {
    /// `[[roles.allow]]`
    Allow,
    /// `[[roles.deny]]`
    Deny,
}

impl RuleKind {
    /// The policy key of the list.
    pub(crate) fn key(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
        }
    }
}

impl Rule {
    /// How the rule's context conditions fare: a missing answer is a fail
    /// (offline, nobody asked), and any fail decides before an unavailable
    /// answer does, since the rule could not grant whatever GitHub says.
    pub(crate) fn context_verdict(&self, answers: &ContextAnswers) -> ContextVerdict {
        let mut verdict = ContextVerdict::Pass;
        for condition in &self.context {
            match answers.get(condition) {
                Some(ContextAnswer::Pass(_)) => {}
                Some(ContextAnswer::Unavailable(_)) => verdict = ContextVerdict::Unavailable,
                Some(ContextAnswer::Fail(_)) | None => return ContextVerdict::Fail,
            }
        }
        verdict
    }

    /// Every claim condition matches.
    pub(crate) fn matches(&self, claims: &ClaimSet) -> bool {
        self.conditions
            .iter()
            .all(|condition| condition.matches(claims))
    }
}

impl Condition {
    /// The claim is present and some pattern matches it. An absent claim never
    /// matches, in allow and deny rules alike.
    pub(crate) fn matches(&self, claims: &ClaimSet) -> bool {
        claims
            .get(&self.claim)
            .is_some_and(|value| self.matching_pattern(value).is_some())
    }

    /// Index of the first pattern matching `value`.
    pub(crate) fn matching_pattern(&self, value: &str) -> Option<usize> {
        self.patterns
            .iter()
            .position(|pattern| pattern.matches(value))
    }
}

/// A validated IAM role ARN: `arn:<partition>:iam::<12 digits>:role/<path/><name>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RoleArn(String);

/// Partitions whose IAM ARNs the broker accepts.
const PARTITIONS: &[&str] = &["aws", "aws-cn", "aws-us-gov"];

/// IAM's limits on role names and paths.
const MAX_ROLE_NAME_CHARS: usize = 64;
const MAX_ROLE_PATH_CHARS: usize = 512;

/// Why a role ARN was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ArnError {
    /// Not six `:`-separated fields starting with `arn`.
    #[error("not an ARN: expected `arn:<partition>:iam::<account>:role/<name>`")]
    NotAnArn,
    /// Unknown partition.
    #[error("unknown partition `{0}`: expected one of aws, aws-cn, aws-us-gov")]
    Partition(String),
    /// Not an IAM ARN, or has a region.
    #[error(
        "not an IAM role ARN: expected `arn:<partition>:iam::<account>:role/<name>` (service `iam`, empty region)"
    )]
    NotIam,
    /// Account id is not 12 digits.
    #[error("account id must be exactly 12 digits")]
    Account,
    /// Resource is not `role/...`.
    #[error("resource must start with `role/`")]
    NotRole,
    /// Role name is empty, too long or uses characters IAM refuses.
    #[error("role name must be 1 to 64 characters of letters, digits and `+=,.@_-`")]
    RoleName,
    /// Role path has an empty segment, a non-printable character or is too long.
    #[error(
        "role path must be `/`-separated non-empty segments of printable ASCII, at most 512 characters"
    )]
    RolePath,
}

impl RoleArn {
    /// Validates an ARN string.
    pub(crate) fn parse(text: &str) -> Result<Self, ArnError> {
        let mut fields = text.splitn(6, ':');
        let (
            Some("arn"),
            Some(partition),
            Some(service),
            Some(region),
            Some(account),
            Some(resource),
        ) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        )
        else {
            return Err(ArnError::NotAnArn);
        };
        if !PARTITIONS.contains(&partition) {
            return Err(ArnError::Partition(partition.to_owned()));
        }
        if service != "iam" || !region.is_empty() {
            return Err(ArnError::NotIam);
        }
        if account.len() != 12 || !account.bytes().all(|byte| byte.is_ascii_digit()) {
            return Err(ArnError::Account);
        }
        let Some(path_and_name) = resource.strip_prefix("role/") else {
            return Err(ArnError::NotRole);
        };
        let (path, name) = match path_and_name.rsplit_once('/') {
            Some((path, name)) => (Some(path), name),
            None => (None, path_and_name),
        };
        let name_ok = (1..=MAX_ROLE_NAME_CHARS).contains(&name.len())
            && name
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || b"+=,.@_-".contains(&byte));
        if !name_ok {
            return Err(ArnError::RoleName);
        }
        if let Some(path) = path {
            // IAM paths are `/seg/.../`; here the outer slashes are implied by `role/` and the name.
            let path_ok = path.len() + 2 <= MAX_ROLE_PATH_CHARS
                && path.split('/').all(|segment| {
                    !segment.is_empty() && segment.bytes().all(|byte| byte.is_ascii_graphic())
                });
            if !path_ok {
                return Err(ArnError::RolePath);
            }
        }
        Ok(Self(text.to_owned()))
    }

    /// The ARN as written.
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}
