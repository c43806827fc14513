//! The audit trail: exactly one JSON event (tracing target `audit`) per
//! `/issue` decision, issued or denied.
//!
//! The event is built up while the request is handled and emitted from
//! `Drop`, so every early return is covered. It records who asked (claims),
//! what was decided and why, and the access key id of what was issued —
//! never the token, the secret key or the session token; the token appears
//! only as its SHA-256.

use crate::claims::ClaimSet;

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
    status: u16,
    started: Option<std::time::Instant>,
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
            policy_version = self.policy_version.as_str(),
            duration_ms,
            "{event}"
        );
    }
}
