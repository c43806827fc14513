//! AWS STS: turns a `Grant` of AWS credentials into temporary credentials with AssumeRole.
//!
//! One `aws_sdk_sts::Client` is built at start-up and shared. It signs with the
//! broker's own identity: the static credentials handed to `StsClient::new` (only
//! `dev` does that), otherwise the SDK's default chain (environment, web identity
//! token as used by IRSA on EKS, EKS Pod Identity or ECS container credentials,
//! IMDS). Configuration never holds a static key.
//!
//! Every call is bounded by the connect, per-attempt and whole-operation timeouts
//! of `[sts]` (the per-attempt one also ends an answer that stalls mid-body), and retried by the SDK's standard strategy: throttling errors,
//! 5xx, timeouts and I/O failures are retried up to `max_attempts` with
//! exponential backoff and full jitter (`aws-smithy-runtime`'s
//! `StandardRetryStrategy`). Nothing is retried by hand here.
//!
//! Trust: everything the call sends comes from a `Grant`, which only
//! `decision::decide` makes, once the rules and Rego agreed: the role ARN and
//! duration the policy chose, and the session name and tags it built from the
//! verified claims it decided on (already in STS's alphabets). Nothing else is
//! an input. Error texts are for the audit log only: the HTTP layer answers
//! every `StsError` with a generic 503.

#[cfg(test)]
mod tests;

use std::time::{Duration, SystemTime};

use aws_sdk_sts::config::StalledStreamProtectionConfig;
use aws_sdk_sts::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_sts::operation::assume_role::AssumeRoleError;
use aws_sdk_sts::types::Tag;
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;
use secrecy::SecretString;

use crate::config::StsConfig;
use crate::decision::AwsSession;
use crate::metrics::Metrics;

/// First retry delay for throttling; later retries double it, each with full
/// jitter. The SDK's default (1 s) suits STS's per-account request quota: retrying
/// sooner would only burn the remaining attempts inside the operation deadline.
const INITIAL_BACKOFF: Duration = Duration::from_secs(1);

/// Temporary credentials returned by STS.
#[derive(Debug)]
pub(crate) struct IssuedCredentials {
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
pub(crate) enum StsError {
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
    pub(crate) fn kind(&self) -> &'static str {
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
pub(crate) struct StsClient {
    client: aws_sdk_sts::Client,
    metrics: Metrics,
    /// AssumeRole calls in flight; bounds the SDK's connection pool and our
    /// share of the account's STS request rate.
    in_flight: std::sync::Arc<tokio::sync::Semaphore>,
    /// How long a call may wait for a free slot (the operation deadline).
    slot_wait: Duration,
}

/// Timeouts and retry settings of the SDK client, in the SDK's units.
#[derive(Clone, Copy, Debug)]
struct Tuning {
    connect: Duration,
    attempt: Duration,
    operation: Duration,
    max_attempts: u32,
    initial_backoff: Duration,
}

impl Tuning {
    fn from_config(config: &StsConfig) -> Self {
        Self {
            connect: Duration::from_secs(config.connect_timeout_seconds),
            attempt: Duration::from_secs(config.attempt_timeout_seconds),
            operation: Duration::from_secs(config.operation_timeout_seconds),
            max_attempts: config.max_attempts,
            initial_backoff: INITIAL_BACKOFF,
        }
    }
}

impl StsClient {
    /// Builds the client. `credentials` overrides the default provider chain
    /// (used by `dev`); `None` uses the chain (env, web identity/IRSA, ECS, IMDS).
    ///
    /// The endpoint is `config.endpoint_url` or the SDK's regional default;
    /// endpoints set through `AWS_ENDPOINT_URL*` or the shared AWS config file are
    /// ignored, so the configuration's loopback-only rule for `http://` holds.
    /// Credentials are resolved on the first call, not here.
    pub(crate) async fn new(
        config: &StsConfig,
        credentials: Option<aws_credential_types::Credentials>,
        metrics: Metrics,
    ) -> Result<Self, StsError> {
        Self::build(config, credentials, metrics, Tuning::from_config(config)).await
    }

    async fn build(
        config: &StsConfig,
        credentials: Option<aws_credential_types::Credentials>,
        metrics: Metrics,
        tuning: Tuning,
    ) -> Result<Self, StsError> {
        if config.region.is_empty() {
            return Err(StsError::Other("sts.region must not be empty".into()));
        }
        // The SDK rejects zero attempts only when a request is made; fail at start-up.
        if tuning.max_attempts == 0 {
            return Err(StsError::Other(
                "sts.max_attempts must be at least 1".into(),
            ));
        }
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(tuning.connect)
            .operation_attempt_timeout(tuning.attempt)
            .operation_timeout(tuning.operation)
            .build();
        let retries = RetryConfig::standard()
            .with_max_attempts(tuning.max_attempts)
            .with_initial_backoff(tuning.initial_backoff);

        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(config.region.clone()))
            .timeout_config(timeouts)
            .retry_config(retries);
        if let Some(credentials) = credentials {
            loader = loader.credentials_provider(credentials);
        }
        let shared = loader.load().await;

        let mut builder = aws_sdk_sts::config::Builder::from(&shared)
            // The SDK's stalled-stream protection watches the throughput of
            // every body; an AssumeRole exchange is two bodies of a few KB,
            // and the per-attempt timeout above already ends an attempt whose
            // answer stalls (`an_answer_that_stalls_mid_body_is_a_timeout`),
            // before the protection's 20 s grace period would at any attempt
            // timeout below that (3 s by default). Off, it saves its
            // throughput accounting on every call (docs/benchmarks.md).
            .stalled_stream_protection(StalledStreamProtectionConfig::disabled());
        // Overwrites whatever endpoint the environment or profile configured.
        builder.set_endpoint_url(config.endpoint_url.as_ref().map(endpoint_string));
        Ok(Self {
            client: aws_sdk_sts::Client::from_conf(builder.build()),
            metrics,
            in_flight: std::sync::Arc::new(tokio::sync::Semaphore::new(
                config.max_concurrent_calls,
            )),
            slot_wait: Duration::from_secs(config.operation_timeout_seconds),
        })
    }

    /// Calls AssumeRole for the AWS session of a grant (only `decision`
    /// makes one): its role, duration, session name and tags. `role` is the
    /// policy role's name, for the log.
    ///
    /// Records the round trip in `ci_sts_latency_seconds` and each failed call
    /// once in `ci_sts_errors_total{kind}`. An AccessDenied is logged as an
    /// error: the role's trust policy needs fixing by a human.
    pub(crate) async fn assume_role(
        &self,
        role: &str,
        session: &AwsSession,
    ) -> Result<IssuedCredentials, StsError> {
        let result = self.assume(session).await;
        if let Err(err @ StsError::AccessDenied(_)) = &result {
            tracing::error!(policy.role = %role, aws.role_arn = %session.role_arn(), error = %err,
                "STS refused AssumeRole: check the role's trust policy (sts:AssumeRole and sts:TagSession for the broker)");
        }
        result
    }

    async fn assume(&self, session: &AwsSession) -> Result<IssuedCredentials, StsError> {
        let result = match tokio::time::timeout(self.slot_wait, self.in_flight.acquire()).await {
            Ok(Ok(_slot)) => self.call(session).await,
            Ok(Err(_)) => Err(StsError::Other("STS call limiter closed".to_owned())),
            Err(_) => Err(StsError::Timeout),
        };
        if let Err(err) = &result {
            self.metrics.sts_error(err.kind());
        }
        result
    }

    async fn call(&self, session: &AwsSession) -> Result<IssuedCredentials, StsError> {
        let duration_seconds = session.duration_seconds();
        let duration = i32::try_from(duration_seconds).map_err(|_| {
            StsError::Other(format!("duration_seconds {duration_seconds} out of range"))
        })?;
        let mut request = self
            .client
            .assume_role()
            .role_arn(session.role_arn())
            .role_session_name(session.session_name())
            .duration_seconds(duration);
        for (key, value) in session.tags() {
            let tag = Tag::builder()
                .key(key)
                .value(value)
                .build()
                .map_err(|err| StsError::Other(format!("session tag: {err}")))?;
            request = request.tags(tag);
        }

        // tokio's clock, so that paused-time tests drive it.
        let started = tokio::time::Instant::now();
        let sent = request.send().await;
        self.metrics.sts_latency(started.elapsed().as_secs_f64());
        let output = sent.map_err(|err| classify(&err))?;

        let credentials = output
            .credentials()
            .ok_or_else(|| StsError::Other("AssumeRole answer has no Credentials".into()))?;
        // The SDK fills missing required members with defaults (empty strings, the
        // epoch) instead of failing, so an incomplete answer shows up here.
        if credentials.access_key_id().is_empty()
            || credentials.secret_access_key().is_empty()
            || credentials.session_token().is_empty()
        {
            return Err(StsError::Other(
                "AssumeRole answer has incomplete Credentials".into(),
            ));
        }
        let expiration = SystemTime::try_from(*credentials.expiration())
            .map_err(|err| StsError::Other(format!("AssumeRole Expiration: {err}")))?;
        if expiration <= SystemTime::now() {
            return Err(StsError::Other(
                "AssumeRole answer has no Expiration in the future".into(),
            ));
        }
        Ok(IssuedCredentials {
            access_key_id: credentials.access_key_id().to_owned(),
            secret_access_key: SecretString::from(credentials.secret_access_key()),
            session_token: SecretString::from(credentials.session_token()),
            expiration,
            session_name: session.session_name().to_owned(),
        })
    }
}

/// `Url` always renders a path; the SDK appends the operation path to the endpoint,
/// so a bare `/` would double it.
fn endpoint_string(url: &url::Url) -> String {
    let text = url.as_str();
    if url.path() == "/" && url.query().is_none() {
        text.trim_end_matches('/').to_owned()
    } else {
        text.to_owned()
    }
}

/// Maps an SDK failure (after the SDK's retries) to an `StsError`.
fn classify<R>(err: &SdkError<AssumeRoleError, R>) -> StsError
where
    R: std::fmt::Debug + 'static,
{
    match err {
        SdkError::TimeoutError(_) => StsError::Timeout,
        SdkError::DispatchFailure(failure) if failure.is_timeout() => StsError::Timeout,
        SdkError::ServiceError(service) => {
            classify_code(service.err().code(), service.err().message())
        }
        other => StsError::Other(DisplayErrorContext(other).to_string()),
    }
}

/// Maps an AWS error code. `InvalidClientTokenId`, `ExpiredToken` and the like
/// concern the broker's own credentials, not the role: they stay `Other`, with
/// the code kept in the text for the audit log.
fn classify_code(code: Option<&str>, message: Option<&str>) -> StsError {
    let detail = format!(
        "{}: {}",
        code.unwrap_or("unknown error code"),
        message.unwrap_or("no message")
    );
    match code {
        Some("Throttling" | "ThrottlingException" | "RequestLimitExceeded") => StsError::Throttled,
        Some("AccessDenied" | "AccessDeniedException") => StsError::AccessDenied(detail),
        _ => StsError::Other(detail),
    }
}
