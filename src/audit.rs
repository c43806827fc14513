//! The audit trail: exactly one JSON event (tracing target `audit`) per
//! `/issue` decision, issued or denied.
//!
//! The event is built up while the request is handled and emitted from
//! `Drop`, so every early return is covered. It records who asked (claims),
//! what was decided and why, and the access key id of what was issued —
//! never the token, the secret key or the session token; the token appears
//! only as its SHA-256.

use crate::claims::ClaimSet;
use crate::context::ContextAnswers;

/// Claims copied into every event, in this order.
const CLAIM_FIELDS: [&str; 13] = [
    "repository",
    "repository_id",
    "repository_owner_id",
    "ref",
    "sha",
    "run_id",
    "run_attempt",
    "check_run_id",
    "job_workflow_ref",
    "actor",
    "event_name",
    "environment",
    "jti",
];

/// One decision; emitted when dropped.
#[derive(Debug, Default)]
pub(crate) struct AuditEvent {
    issued: bool,
    request_id: String,
    policy_version: String,
    reason: String,
    detail: String,
    role: String,
    claims: [String; CLAIM_FIELDS.len()],
    issuer: String,
    token_sha256: String,
    matched_rule: String,
    session_name: String,
    access_key_id: String,
    expiration: String,
    context: String,
    github_request_ids: String,
    status: u16,
    started: Option<std::time::Instant>,
    github: GithubFields,
}

/// What the audit event says about a GitHub installation token: its
/// SHA-256 (never the token), installation, repositories and permissions
/// (the `x-github-request-id`s of its calls join `github_request_ids`).
#[derive(Debug, Default)]
struct GithubFields {
    token_sha256: String,
    installation_id: String,
    repositories: String,
    permissions: String,
}

impl AuditEvent {
    /// Starts the event for one request; it is a denial until `issued` is called.
    pub(crate) fn new(request_id: &str, policy_version: &str) -> Self {
        let mut event = Self::default();
        event.request_id = request_id.to_owned();
        event.policy_version = policy_version.to_owned();
        event.reason = "incomplete".to_owned();
        event.started = Some(std::time::Instant::now());
        event
    }

    /// Copies the identifying claims of a verified token.
    pub(crate) fn claims(&mut self, issuer: &str, claims: &ClaimSet, token_sha256: &str) {
        self.issuer = issuer.to_owned();
        self.token_sha256 = token_sha256.to_owned();
        for (slot, name) in self.claims.iter_mut().zip(CLAIM_FIELDS) {
            *slot = claims.get(name).unwrap_or_default().to_owned();
        }
    }

    /// The token hash, known before verification succeeds.
    pub(crate) fn token_sha256(&mut self, token_sha256: String) {
        self.token_sha256 = token_sha256;
    }

    /// Records a refusal: a closed `reason` code and a one-line `detail`.
    pub(crate) fn denied(&mut self, status: u16, reason: &str, detail: impl Into<String>) {
        self.issued = false;
        self.status = status;
        self.reason = reason.to_owned();
        self.detail = detail.into();
    }

    /// The role considered (granted or evaluated).
    pub(crate) fn role(&mut self, role: &str) {
        self.role = role.to_owned();
    }

    /// The allow rule that granted, or the first failed condition on a denial.
    pub(crate) fn matched_rule(&mut self, rule: impl Into<String>) {
        self.matched_rule = rule.into();
    }

    /// Records the context questions asked about the token's commit, each
    /// with its answer (`checks_passed `x`: pass (completed/success by
    /// snyk)`), and the `x-github-request-id` of every GitHub call made.
    pub(crate) fn context(&mut self, answers: &ContextAnswers) {
        self.context = answers
            .sorted()
            .into_iter()
            .map(|(condition, answer)| {
                format!("{condition}: {} ({})", answer.label(), answer.detail())
            })
            .collect::<Vec<_>>()
            .join("; ");
        self.github_request_ids = answers.request_ids().join(",");
    }

    /// Records an issuance.
    pub(crate) fn issued(&mut self, session_name: &str, access_key_id: &str, expiration: &str) {
        self.issued = true;
        self.status = 200;
        self.reason = "issued".to_owned();
        self.detail.clear();
        self.session_name = session_name.to_owned();
        self.access_key_id = access_key_id.to_owned();
        self.expiration = expiration.to_owned();
    }
}

impl AuditEvent {
    /// Records the GitHub side of the decision: the calls made (also on a
    /// refusal) and, once issued, the token's digest, installation,
    /// repositories and permissions.
    pub(crate) fn github_token(
        &mut self,
        token_sha256: Option<&str>,
        installation_id: Option<u64>,
        repositories: &[String],
        permissions: &crate::api::Permissions,
        request_ids: &[String],
    ) {
        let github = &mut self.github;
        github.token_sha256 = token_sha256.unwrap_or_default().to_owned();
        github.installation_id = installation_id.map(|id| id.to_string()).unwrap_or_default();
        github.repositories = repositories.join(",");
        github.permissions = permissions
            .iter()
            .map(|(name, access)| format!("{name}:{}", access.as_str()))
            .collect::<Vec<_>>()
            .join(",");
        // After the context calls' ids, in call order.
        for id in request_ids {
            if !self.github_request_ids.is_empty() {
                self.github_request_ids.push(',');
            }
            self.github_request_ids.push_str(id);
        }
    }
}

impl Drop for AuditEvent {
    fn drop(&mut self) {
        let [
            repository,
            repository_id,
            repository_owner_id,
            git_ref,
            sha,
            run_id,
            run_attempt,
            check_run_id,
            job_workflow_ref,
            actor,
            event_name,
            environment,
            jti,
        ] = &self.claims;
        let event = if self.issued {
            "credential_issued"
        } else {
            "credential_denied"
        };
        let duration_ms = self.started.map_or(0, |at| at.elapsed().as_millis() as u64);
        // Fields as `&str`, not `%Display`: the JSON formatter then writes
        // each one straight through, without the formatting machinery.
        tracing::info!(
            target: "audit",
            event,
            request_id = self.request_id.as_str(),
            status = self.status,
            reason = self.reason.as_str(),
            detail = self.detail.as_str(),
            role = self.role.as_str(),
            issuer = self.issuer.as_str(),
            repository = repository.as_str(),
            repository_id = repository_id.as_str(),
            repository_owner_id = repository_owner_id.as_str(),
            r#ref = git_ref.as_str(),
            sha = sha.as_str(),
            run_id = run_id.as_str(),
            run_attempt = run_attempt.as_str(),
            check_run_id = check_run_id.as_str(),
            job_workflow_ref = job_workflow_ref.as_str(),
            actor = actor.as_str(),
            event_name = event_name.as_str(),
            environment = environment.as_str(),
            jti = jti.as_str(),
            token_sha256 = self.token_sha256.as_str(),
            matched_rule = self.matched_rule.as_str(),
            session_name = self.session_name.as_str(),
            access_key_id = self.access_key_id.as_str(),
            expiration = self.expiration.as_str(),
            context = self.context.as_str(),
            github_request_ids = self.github_request_ids.as_str(),
            policy_version = self.policy_version.as_str(),
            github_token_sha256 = self.github.token_sha256.as_str(),
            github_installation_id = self.github.installation_id.as_str(),
            github_repositories = self.github.repositories.as_str(),
            github_permissions = self.github.permissions.as_str(),
            duration_ms,
            "{event}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::{ContextAnswer, ContextCondition};

    #[test]
    fn context_answers_and_github_request_ids_are_recorded_in_order() {
        let mut answers = ContextAnswers::default();
        answers.insert(
            ContextCondition::PullRequestApprovals(1),
            ContextAnswer::Fail("0 approvals of pull request 17".into()),
        );
        answers.insert(
            ContextCondition::CheckPassed {
                name: "dependency-scan".into(),
                app: Some("snyk".into()),
            },
            ContextAnswer::Pass("completed/success by snyk".into()),
        );
        answers.request_id("C0DE:1");
        answers.request_id("C0DE:2");
        let mut event = AuditEvent::new("r1", "v1");
        event.context(&answers);
        assert_eq!(
            event.context,
            "checks_passed `dependency-scan` by app `snyk`: pass (completed/success by snyk); \
             pull_request_approvals >= 1: fail (0 approvals of pull request 17)"
        );
        assert_eq!(event.github_request_ids, "C0DE:1,C0DE:2");
        // Nothing asked: both stay empty.
        event.context(&ContextAnswers::default());
        assert_eq!(
            (event.context.as_str(), event.github_request_ids.as_str()),
            ("", "")
        );
    }
}
