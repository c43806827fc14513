//! The policy engine: compiled rules deciding which role, if any, a token may assume.
//!
//! PLACEHOLDER INTERFACE — the implementation is being written. Deny by default.

use std::path::Path;

use crate::claims::ClaimSet;

/// What the caller asked for, beyond its token.
#[derive(Clone, Copy, Debug, Default)]
pub struct RoleRequest<'a> {
    /// The role named in the request, if any.
    pub role: Option<&'a str>,
    /// The requested credential lifetime, if any.
    pub duration_seconds: Option<u64>,
}

/// A compiled, validated policy.
#[derive(Debug)]
pub struct Policy {
    version: String,
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
    /// The file is not a valid policy.
    #[error("{path}: key `{key}`: {reason}")]
    Invalid {
        /// File path or source name.
        path: String,
        /// Dotted key path.
        key: String,
        /// Reason.
        reason: String,
    },
}

/// Summary of one role for listings (`check-config`).
#[derive(Clone, Debug)]
pub struct RoleSummary {
    /// Role name.
    pub name: String,
    /// Role ARN.
    pub role_arn: String,
    /// Maximum (and default) duration.
    pub duration_seconds: u32,
    /// Number of allow rules.
    pub allow_rules: usize,
    /// Number of deny rules.
    pub deny_rules: usize,
}

/// Permission to assume one role; only this module constructs it.
#[derive(Clone, Debug)]
pub struct Grant {
    role_name: String,
    role_arn: String,
    duration_seconds: u32,
    session_tags: bool,
    matched_rule: String,
}

impl Grant {
    /// Policy name of the role.
    pub fn role_name(&self) -> &str {
        &self.role_name
    }
    /// ARN to assume.
    pub fn role_arn(&self) -> &str {
        &self.role_arn
    }
    /// Lifetime to ask STS for.
    pub fn duration_seconds(&self) -> u32 {
        self.duration_seconds
    }
    /// Whether to send session tags.
    pub fn session_tags(&self) -> bool {
        self.session_tags
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
        /// Role evaluated, when one was named or exactly one was considered.
        role: Option<String>,
        /// First failed condition, for the audit log.
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

    /// Compiles policy text; `source` names it in errors.
    pub fn compile(text: &str, _source: &str) -> Result<LoadedPolicy, PolicyError> {
        use sha2::Digest;
        let version = hex::encode(sha2::Sha256::digest(text.as_bytes()));
        Ok(LoadedPolicy {
            policy: Policy { version },
            warnings: Vec::new(),
        })
    }

    /// Hash of the policy text.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Roles, in file order.
    pub fn roles(&self) -> Vec<RoleSummary> {
        Vec::new()
    }

    /// Decides a request. Deny by default.
    pub fn evaluate(&self, _claims: &ClaimSet, request: &RoleRequest<'_>) -> Result<Grant, Denial> {
        let _ = (
            Grant {
                role_name: String::new(),
                role_arn: String::new(),
                duration_seconds: 900,
                session_tags: true,
                matched_rule: String::new(),
            }
            .role_name()
            .len(),
            request,
        );
        Err(Denial::NotPermitted {
            role: None,
            first_failed: "no roles".into(),
        })
    }
}
