//! The policy in force: the built-in rules plus, optionally, a Rego module.
//!
//! Both are compiled together at start-up and on every reload, and replaced
//! together, so a request never sees rules from one version and Rego from
//! another. The version (a hash over both texts) is what `ci_policy_info`
//! and every audit event report. Asking both is `decision::decide`'s job.

use sha2::Digest;

use crate::config::PolicyConfig;
use crate::policy::{LoadedPolicy, Policy, PolicyWarning};
use crate::rego::RegoPolicy;

/// Rules and Rego, compiled.
#[derive(Debug)]
pub(crate) struct PolicySet {
    /// The built-in rules.
    pub rules: Policy,
    /// The Rego module, when configured.
    pub rego: Option<RegoPolicy>,
    version: String,
}

/// Why the policy set could not be loaded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PolicySetError {
    /// The rules.
    #[error(transparent)]
    Rules(#[from] crate::policy::PolicyError),
    /// The Rego module.
    #[error(transparent)]
    Rego(#[from] crate::rego::RegoError),
}

/// The version of a rules text hash and an optional Rego hash.
pub(crate) fn combined_version(rules_version: &str, rego_hash: Option<&str>) -> String {
    match rego_hash {
        None => rules_version.to_owned(),
        Some(rego) => hex::encode(sha2::Sha256::digest(
            format!("{rules_version}\n{rego}").as_bytes(),
        )),
    }
}

impl PolicySet {
    /// Combines compiled rules and an optional compiled Rego module.
    pub(crate) fn new(rules: Policy, rego: Option<RegoPolicy>) -> Self {
        let version = combined_version(rules.version(), rego.as_ref().map(RegoPolicy::hash));
        Self {
            rules,
            rego,
            version,
        }
    }

    /// Loads what `[policy]` names: the rules file and the Rego file, if any.
    pub(crate) fn load(
        config: &PolicyConfig,
    ) -> Result<(Self, Vec<PolicyWarning>), PolicySetError> {
        let LoadedPolicy { policy, warnings } = Policy::load(&config.file)?;
        let rego = match &config.rego {
            Some(path) => Some(RegoPolicy::load(path, &config.rego_query)?),
            None => None,
        };
        Ok((Self::new(policy, rego), warnings))
    }

    /// Hash of everything in force.
    pub(crate) fn version(&self) -> &str {
        &self.version
    }
}
