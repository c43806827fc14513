//! The policy in force: the built-in rules plus, optionally, a Rego module.
//!
//! Both are compiled together at start-up and on every reload, and replaced
//! together, so a request never sees rules from one version and Rego from
//! another. The version (a hash over both texts) is what `ci_policy_info`
//! and every audit event report.

use std::path::PathBuf;

use sha2::Digest;

use crate::claims::ClaimSet;
use crate::config::PolicyConfig;
use crate::policy::{Grant, LoadedPolicy, Policy, PolicyWarning};
use crate::rego::{RegoDecision, RegoPolicy};

/// What the request asked for, as Rego sees it.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RequestFacts {
    /// `repo` from the request.
    pub repo: Option<String>,
    /// `sha` from the request.
    pub sha: Option<String>,
    /// `job_id` from the request.
    pub job_id: Option<String>,
    /// `role` from the request.
    pub role: Option<String>,
    /// `duration_seconds` from the request.
    pub duration_seconds: Option<u64>,
}

/// Rules and Rego, compiled.
#[derive(Debug)]
pub struct PolicySet {
    /// The built-in rules.
    pub rules: Policy,
    /// The Rego module, when configured.
    pub rego: Option<RegoPolicy>,
    version: String,
}

/// Why the policy set could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PolicySetError {
    /// The rules.
    #[error(transparent)]
    Rules(#[from] crate::policy::PolicyError),
    /// The Rego module.
    #[error(transparent)]
    Rego(#[from] crate::rego::RegoError),
}

/// The version of a rules text hash and an optional Rego hash.
pub fn combined_version(rules_version: &str, rego_hash: Option<&str>) -> String {
    match rego_hash {
        None => rules_version.to_owned(),
        Some(rego) => hex::encode(sha2::Sha256::digest(
            format!("{rules_version}\n{rego}").as_bytes(),
        )),
    }
}

impl PolicySet {
    /// Combines compiled rules and an optional compiled Rego module.
    pub fn new(rules: Policy, rego: Option<RegoPolicy>) -> Self {
        let version = combined_version(rules.version(), rego.as_ref().map(RegoPolicy::hash));
        Self {
            rules,
            rego,
            version,
        }
    }

    /// Loads what `[policy]` names: the rules file and the Rego file, if any.
    pub fn load(config: &PolicyConfig) -> Result<(Self, Vec<PolicyWarning>), PolicySetError> {
        let LoadedPolicy { policy, warnings } = Policy::load(&config.file)?;
        let rego = match &config.rego {
            Some(path) => Some(RegoPolicy::load(path, &config.rego_query)?),
            None => None,
        };
        Ok((Self::new(policy, rego), warnings))
    }

    /// Hash of everything in force.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Asks Rego, when configured, about a grant of the built-in rules, within
    /// the evaluation time limit and off the async workers.
    /// `None` means no Rego is configured (the rules alone decide).
    pub async fn ask_rego(
        &self,
        claims: &ClaimSet,
        request: &RequestFacts,
        grant: &Grant,
        request_id: &str,
    ) -> Option<RegoDecision> {
        let rego = self.rego.as_ref()?;
        Some(
            rego.evaluate_within_limit(rego_input(claims, request, grant), request_id)
                .await,
        )
    }
}

/// The Rego input document: `{claims, request, role}`.
pub fn rego_input(claims: &ClaimSet, request: &RequestFacts, grant: &Grant) -> serde_json::Value {
    let claims: serde_json::Map<String, serde_json::Value> = claims
        .iter()
        .map(|(name, value)| (name.to_owned(), serde_json::Value::from(value)))
        .collect();
    serde_json::json!({
        "claims": claims,
        "request": request,
        "role": {
            "name": grant.role_name(),
            "role_arn": grant.role_arn(),
            "duration_seconds": grant.duration_seconds(),
        },
    })
}

/// Files whose content makes up the policy set, for change detection.
pub fn watched_files(config: &PolicyConfig) -> Vec<PathBuf> {
    let mut files = vec![config.file.clone()];
    files.extend(config.rego.clone());
    files
}
