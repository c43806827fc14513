//! AWS STS: turns a policy `Grant` into temporary credentials with AssumeRole.
//!
//! PLACEHOLDER INTERFACE — the implementation is being written.

use std::time::SystemTime;

use secrecy::SecretString;

use crate::claims::ClaimSet;
use crate::config::StsConfig;
use crate::metrics::Metrics;
use crate::policy::Grant;

/// Temporary credentials returned by STS.
#[derive(Debug)]
pub struct IssuedCredentials {
    /// `ASIA…` access key id (not secret; goes to the audit log).
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: SecretString,
    /// Session token.
    pub session_token: SecretString,
    /// When the credentials stop working.
    pub expiration: SystemTime,
    /// The RoleSessionName used (shows in CloudTrail).
    pub session_name: String,
}

/// Why AssumeRole failed.
#[derive(Debug, thiserror::Error)]
pub enum StsError {
    /// STS throttled us, after retries.
    #[error("STS throttled the request")]
    Throttled,
    /// No answer within the deadline.
    #[error("STS did not answer in time")]
    Timeout,
    /// AccessDenied: the role's trust policy does not trust the broker (or lacks sts:TagSession).
    #[error("STS denied AssumeRole: {0}")]
    AccessDenied(String),
    /// Anything else (5xx after retries, malformed answer, network).
    #[error("STS call failed: {0}")]
    Other(String),
}

impl StsError {
    /// Closed label for `ci_sts_errors_total{kind}`.
    pub fn kind(&self) -> &'static str {
        match self {
            StsError::Throttled => "throttled",
            StsError::Timeout => "timeout",
            StsError::AccessDenied(_) => "denied",
            StsError::Other(_) => "other",
        }
    }
}

/// The STS client, built once at start-up and shared.
#[derive(Clone, Debug)]
pub struct StsClient {
    metrics: Metrics,
}

impl StsClient {
    /// Builds the client. `credentials` overrides the default provider chain
    /// (used by `dev`); `None` uses the chain (env, web identity/IRSA, ECS, IMDS).
    pub async fn new(
        _config: &StsConfig,
        _credentials: Option<aws_credential_types::Credentials>,
        metrics: Metrics,
    ) -> Result<Self, StsError> {
        Ok(Self { metrics })
    }

    /// Calls AssumeRole for `grant` with a session name and tags from `claims`.
    pub async fn assume_role(
        &self,
        _grant: &Grant,
        _claims: &ClaimSet,
    ) -> Result<IssuedCredentials, StsError> {
        self.metrics.sts_error("other");
        Err(StsError::Other("not implemented".into()))
    }
}
