//! The decision: verified claims and a request in, a [`Grant`] out, or the
//! reason there is none. The one place a `Grant` is made.
//!
//! [`decide`] asks the built-in rules ([`crate::policy::Policy::evaluate`]),
//! and, when they allow a role and a Rego module is configured, Rego
//! ([`crate::rego::RegoPolicy::evaluate_within_limit`]: off the async workers,
//! within its time limit). Both must agree; Rego can only refuse. Only then is
//! the `Grant` built, and it carries everything the credential call needs,
//! taken from the same verified claims the decision was made on: for AWS the
//! role ARN, the duration, the session name and the session tags
//! ([`session`] maps the claims into STS's alphabets). The credential issuer
//! (`sts::StsClient::assume_role`) takes a `Grant` and nothing else, so no
//! code path reaches it without the rules and Rego having agreed, and session
//! tags can only describe the token that was judged.
//!
//! Trust: the claims are [`VerifiedClaims`], which only `verify` builds; the
//! request fields are the caller's and are only compared by the rules and
//! shown to Rego. What is granted is a [`CredentialRequest`]: a further kind of
//! credential is a further variant, decided by the same function.

mod session;

use serde::Serialize;

use crate::audit::AuditEvent;
use crate::claims::ClaimSet;
use crate::context::{Commit, ContextAnswer, ContextAnswers, ContextCondition, ContextSource};
use crate::policy::{Allowed, AllowedCredential, Denial, RoleRequest};
use crate::policy_set::PolicySet;
use crate::rego::RegoDecision;
use crate::verify::VerifiedClaims;

pub(crate) use session::{session_name, session_tags};

/// What the caller asked for, beyond its token: Rego sees it as `input.request`.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct AccessRequest {
    /// `repo` from the request.
    pub repo: Option<String>,
    /// `sha` from the request.
    pub sha: Option<String>,
    /// `job_id` from the request, as text.
    pub job_id: Option<String>,
    /// `role` from the request.
    pub role: Option<String>,
    /// `duration_seconds` from the request.
    pub duration_seconds: Option<u64>,
    /// `permissions` from the request (roles of kind `github`); left out of
    /// Rego's input when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permissions: Option<crate::api::Permissions>,
}

/// Permission to obtain one credential, decided on verified claims by the
/// rules and Rego together. Only this module constructs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Grant {
    role: String,
    rule: String,
    policy_version: String,
    credential: CredentialRequest,
}

impl Grant {
    /// Policy name of the granted role.
    pub(crate) fn role(&self) -> &str {
        &self.role
    }
    /// The allow rule that granted, e.g. `deploy.allow[0]`.
    #[cfg(test)]
    pub(crate) fn rule(&self) -> &str {
        &self.rule
    }
    /// Version of the policy set that decided.
    #[cfg(test)]
    pub(crate) fn policy_version(&self) -> &str {
        &self.policy_version
    }
    /// The credential to obtain.
    pub(crate) fn credential(&self) -> &CredentialRequest {
        &self.credential
    }
}

/// What a grant lets the broker obtain for the caller; one variant per kind
/// of credential.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum CredentialRequest {
    /// Temporary AWS credentials from STS AssumeRole.
    Aws(AwsSession),
    /// A GitHub App installation token.
    GitHub(GithubToken),
}

/// Everything one installation-token request sends: the installation is the
/// App's installation on `owner`, the token reaches exactly `repositories`
/// (names under `owner`, never empty: the token's own repository when the
/// role says `$repository`) with exactly `permissions`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct GithubToken {
    owner: String,
    repositories: Vec<String>,
    permissions: crate::api::Permissions,
}

#[allow(
    dead_code,
    reason = "read by the GitHub App client, which mints the token; the tests read them here"
)]
impl GithubToken {
    /// The repository owner, whose installation mints the token.
    pub(crate) fn owner(&self) -> &str {
        &self.owner
    }
    /// Repository names (without the owner), sorted, at least one.
    pub(crate) fn repositories(&self) -> &[String] {
        &self.repositories
    }
    /// The permissions the token carries.
    pub(crate) fn permissions(&self) -> &crate::api::Permissions {
        &self.permissions
    }
}

/// Everything one AssumeRole call sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct AwsSession {
    role_arn: String,
    duration_seconds: u32,
    session_name: String,
    tags: Vec<(String, String)>,
}

impl AwsSession {
    /// Builds the session for `role_arn` from verified claims; tags only when
    /// the role asks for them.
    fn from_claims(
        role_arn: &str,
        duration_seconds: u32,
        with_tags: bool,
        claims: &ClaimSet,
    ) -> Self {
        Self {
            role_arn: role_arn.to_owned(),
            duration_seconds,
            session_name: session_name(claims),
            tags: if with_tags {
                session_tags(claims)
            } else {
                Vec::new()
            },
        }
    }

    /// ARN to assume.
    pub(crate) fn role_arn(&self) -> &str {
        &self.role_arn
    }
    /// Lifetime to ask STS for, in seconds.
    pub(crate) fn duration_seconds(&self) -> u32 {
        self.duration_seconds
    }
    /// RoleSessionName, already in STS's alphabet.
    pub(crate) fn session_name(&self) -> &str {
        &self.session_name
    }
    /// Session tags, already in STS's alphabet; empty when the role sends none.
    pub(crate) fn tags(&self) -> &[(String, String)] {
        &self.tags
    }
}

/// Why there is no grant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The built-in rules refused.
    Rules(Denial),
    /// The rules allowed `role` through `rule`; Rego did not.
    Rego {
        /// Policy name of the role the rules allowed.
        role: String,
        /// The allow rule that matched.
        rule: String,
        /// Rego's answer: anything but [`RegoDecision::Allow`].
        decision: RegoDecision,
    },
}

/// The context source when no GitHub App is configured: every question is
/// unavailable, so a rule that needs one fails closed (503). Start-up refuses
/// policies with context conditions without `[github]`, so on the request
/// path this only answers policies loaded by a reload.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct GithubNotConfigured;

impl ContextSource for GithubNotConfigured {
    fn answer(
        &self,
        _commit: &Commit,
        conditions: &[ContextCondition],
    ) -> impl std::future::Future<Output = ContextAnswers> + Send {
        let mut answers = ContextAnswers::default();
        for condition in conditions {
            answers.insert(
                condition.clone(),
                ContextAnswer::Unavailable("no GitHub App is configured".to_owned()),
            );
        }
        std::future::ready(answers)
    }
}

/// A source that may be absent (`[github]` not configured): then every
/// question is unavailable, as [`GithubNotConfigured`] answers.
impl<S: ContextSource> ContextSource for Option<S> {
    async fn answer(&self, commit: &Commit, conditions: &[ContextCondition]) -> ContextAnswers {
        match self {
            Some(source) => source.answer(commit, conditions).await,
            None => GithubNotConfigured.answer(commit, conditions).await,
        }
    }
}

/// Decides `request` on `claims` under `policy`: the context questions the
/// claims leave open (asked of `context`, only when there are any), the
/// rules, then Rego (when configured) within its time limit. Deny by default.
/// The questions and their answers are recorded in `audit`.
///
/// Once the rules allow a role, its name and rule are recorded in `audit`
/// before Rego is asked, so an event cut short while Rego runs (the request
/// deadline) still names them. `request_id` names the request in the log line
/// of an abandoned Rego evaluation.
pub(crate) async fn decide(
    policy: &PolicySet,
    claims: &VerifiedClaims,
    request: &AccessRequest,
    context: &impl ContextSource,
    request_id: &str,
    audit: &mut AuditEvent,
) -> Result<Grant, Refusal> {
    let role_request = RoleRequest {
        role: request.role.as_deref(),
        duration_seconds: request.duration_seconds,
        permissions: request.permissions.as_ref(),
    };
    // Only what the claims leave open is asked, and only about the commit
    // of the verified claims; nothing at all for a policy without context
    // conditions.
    let needed = policy.rules.context_needed(claims, &role_request);
    let commit = if needed.is_empty() {
        None
    } else {
        Commit::of(claims.claims())
    };
    let answers = match commit {
        Some(commit) => context.answer(&commit, &needed).await,
        // Nothing to ask, or no commit to ask about: every question stays
        // unanswered, which never matches.
        None => ContextAnswers::default(),
    };
    audit.context(&answers);
    let allowed = policy
        .rules
        .evaluate_in_context(claims, &role_request, &answers)
        .map_err(Refusal::Rules)?;
    audit.role(allowed.role_name());
    audit.matched_rule(allowed.matched_rule());
    if let Some(rego) = &policy.rego {
        let input = rego_input(claims.claims(), request, &allowed);
        let decision = rego.evaluate_within_limit(input, request_id).await;
        if !decision.allows() {
            return Err(Refusal::Rego {
                role: allowed.role_name().to_owned(),
                rule: allowed.matched_rule().to_owned(),
                decision,
            });
        }
    }
    Ok(grant(policy.version(), &allowed, claims.claims()))
}

/// The grant for what the rules (and Rego) allowed, with its session identity
/// (AWS) or its repositories and permissions (GitHub) from the claims the
/// decision was made on.
fn grant(policy_version: &str, allowed: &Allowed, claims: &ClaimSet) -> Grant {
    let credential = match allowed.credential() {
        AllowedCredential::Aws {
            role_arn,
            duration_seconds,
            session_tags,
        } => CredentialRequest::Aws(AwsSession::from_claims(
            role_arn,
            *duration_seconds,
            *session_tags,
            claims,
        )),
        AllowedCredential::GitHub {
            owner,
            repositories,
            permissions,
        } => CredentialRequest::GitHub(GithubToken {
            owner: owner.clone(),
            repositories: repositories.clone(),
            permissions: permissions.clone(),
        }),
    };
    Grant {
        role: allowed.role_name().to_owned(),
        rule: allowed.matched_rule().to_owned(),
        policy_version: policy_version.to_owned(),
        credential,
    }
}

/// The Rego input document: `{claims, request, role}`. `role` is
/// `{name, role_arn, duration_seconds}` for an AWS role and
/// `{name, kind: "github", owner, repositories: ["owner/name", …], permissions}`
/// for a GitHub one.
fn rego_input(claims: &ClaimSet, request: &AccessRequest, allowed: &Allowed) -> serde_json::Value {
    let claims: serde_json::Map<String, serde_json::Value> = claims
        .iter()
        .map(|(name, value)| (name.to_owned(), serde_json::Value::from(value)))
        .collect();
    let role = match allowed.credential() {
        AllowedCredential::Aws {
            role_arn,
            duration_seconds,
            ..
        } => serde_json::json!({
            "name": allowed.role_name(),
            "role_arn": role_arn,
            "duration_seconds": duration_seconds,
        }),
        AllowedCredential::GitHub {
            owner,
            repositories,
            permissions,
        } => serde_json::json!({
            "name": allowed.role_name(),
            "kind": "github",
            "owner": owner,
            "repositories": repositories
                .iter()
                .map(|name| format!("{owner}/{name}"))
                .collect::<Vec<_>>(),
            "permissions": permissions,
        }),
    };
    serde_json::json!({
        "claims": claims,
        "request": request,
        "role": role,
    })
}

/// An AWS session without a decision, for other modules' unit tests (the
/// STS client against its fakes): outside tests only [`decide`] makes one.
#[cfg(test)]
impl AwsSession {
    pub(crate) fn for_tests(
        role_arn: &str,
        duration_seconds: u32,
        with_tags: bool,
        claims: &[(&str, &str)],
    ) -> Self {
        let mut set = ClaimSet::default();
        for (name, value) in claims {
            set.insert(*name, *value);
        }
        Self::from_claims(role_arn, duration_seconds, with_tags, &set)
    }
}

#[cfg(test)]
mod tests;
