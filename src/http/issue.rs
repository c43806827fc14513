//! POST /issue: glue only. parse → verify → rate limit → bind → decide
//! (rules and Rego) → replay → STS → audit → respond. Each step lives in its
//! own module; this one decides the order and maps each outcome to a
//! documented answer. The credential call takes the `Grant` that
//! `decision::decide` returned, and nothing else.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Extension;
use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use secrecy::{ExposeSecret, SecretString};

use super::RequestId;
use super::error::ApiError;
use crate::api::{CredentialProcess, GithubTokenResponse, IssueRequest, IssueResponse, JobId};
use crate::audit::AuditEvent;
use crate::binding::{self, RequestBinding};
use crate::decision::{self, AccessRequest, AwsSession, CredentialRequest, GithubToken, Refusal};
use crate::github::GithubClient;
use crate::policy::Denial;
use crate::policy_set::PolicySet;
use crate::replay::{Mark, ReplayError};
use crate::state::AppState;
use crate::sts::IssuedCredentials;
use crate::verify::{VerifiedClaims, token_sha256};

/// Longest accepted value of `repo`, `sha`, `job_id` and `role`.
const MAX_FIELD_LEN: usize = 256;

impl IssueRequest {
    /// What the request says about its job, with `job_id` already as text.
    fn binding<'a>(&'a self, job_id: Option<&'a str>) -> RequestBinding<'a> {
        RequestBinding {
            repo: self.repo.as_deref(),
            sha: self.sha.as_deref(),
            job_id,
        }
    }
}

/// Answer shape, chosen by `?format=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    CredentialProcess,
}

/// The handler: reads the body, sheds load, applies the deadline, and answers.
pub(crate) async fn issue(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = tokio::time::Instant::now();
    let deadline = started + state.config.request_timeout();
    // One policy for the whole request, even if a reload lands meanwhile.
    let policy = state.policy();
    let mut audit = AuditEvent::new(&request_id.0, policy.version());
    let format = match parse_format(query.as_deref()) {
        Ok(format) => format,
        Err(err) => {
            return refuse(&mut audit, err, "bad_query", "unknown format")
                .into_response_with(&request_id.0);
        }
    };
    // The whole body first, under its own short deadline, and only then a
    // place among the requests in flight: a client that trickles its body
    // holds a connection, never issuance capacity.
    let body_budget = state
        .config
        .server
        .body_read_timeout()
        .min(state.config.request_timeout());
    let bytes = match read_body(&state, &headers, body, body_budget).await {
        Ok(bytes) => bytes,
        Err((err, reason, detail)) => {
            return refuse(&mut audit, err, reason, detail).into_response_with(&request_id.0);
        }
    };
    // Shed at once rather than queue: a queue only turns overload into
    // timeouts for everyone, and the caller's retry lands on a calmer replica.
    let Ok(_permit) = state.in_flight.clone().try_acquire_owned() else {
        state.metrics.rate_limited("global");
        audit.denied(503, "overloaded", "too many requests in flight");
        return ApiError::Unavailable.into_response_with(&request_id.0);
    };
    let outcome = tokio::time::timeout_at(
        deadline,
        handle(
            &state,
            &policy,
            format,
            &headers,
            &bytes,
            &request_id.0,
            &mut audit,
        ),
    )
    .await;
    let result = match outcome {
        Ok(result) => result,
        Err(_) => {
            audit.denied(503, "deadline", "request deadline passed");
            Err(ApiError::Unavailable)
        }
    };
    match result {
        Ok(response) => response,
        Err(err) => err.into_response_with(&request_id.0),
    }
}

/// Records a refusal in the audit event and returns the answer for it.
fn refuse(
    audit: &mut AuditEvent,
    err: ApiError,
    reason: &str,
    detail: impl Into<String>,
) -> ApiError {
    audit.denied(err.parts().0.as_u16(), reason, detail);
    err
}

async fn handle(
    state: &AppState,
    policy: &PolicySet,
    format: Format,
    headers: &HeaderMap,
    bytes: &Bytes,
    request_id: &str,
    audit: &mut AuditEvent,
) -> Result<Response, ApiError> {
    let request = parse_request(headers, bytes)
        .map_err(|err| refuse(audit, err, "bad_body", "body not parsed"))?;
    let token = pick_token(
        headers,
        request.oidc_token.as_ref().map(ExposeSecret::expose_secret),
    )
    .map_err(|err| refuse(audit, err, "bad_token_field", "token missing or sent twice"))?;
    let now = unix_now();
    let verified = match state.verifier.verify(&token, now).await {
        Ok(verified) => verified,
        Err(err) => {
            state.metrics.token_rejected(err.reason_code());
            // A verified token carries its digest; only a refused one needs it here.
            audit.token_sha256(token_sha256(token.expose_secret()));
            let answer = ApiError::from_verify(&err);
            return Err(refuse(
                audit,
                answer,
                &format!("token_{}", err.reason_code()),
                err.to_string(),
            ));
        }
    };
    audit.claims(
        verified.issuer(),
        verified.claims(),
        verified.token_sha256(),
    );

    // Only after verification: the bucket is chosen by a signed claim, so
    // nobody can spend another repository's budget. Before the replay mark,
    // so a limited request does not burn its token.
    if let Err(wait) = state.repository_limit.check_token(&verified) {
        state.metrics.rate_limited("repository");
        let answer = ApiError::RateLimited {
            retry_after_seconds: crate::limits::retry_after_seconds(wait),
        };
        return Err(refuse(
            audit,
            answer,
            "rate_limited",
            format!(
                "repository over its rate limit; next request allowed in {} ms",
                wait.as_millis()
            ),
        ));
    }

    let job_id = request.job_id.as_ref().map(JobId::to_text);
    if let Some(field) = binding::mismatch(&request.binding(job_id.as_deref()), verified.claims()) {
        state.metrics.binding_mismatch(field);
        return Err(refuse(
            audit,
            ApiError::Forbidden,
            &format!("binding_mismatch_{field}"),
            format!("request `{field}` differs from the token"),
        ));
    }

    let access = AccessRequest {
        repo: request.repo.clone(),
        sha: request.sha.clone(),
        job_id,
        role: request.role.clone(),
        duration_seconds: request.duration_seconds,
        permissions: request.permissions.clone(),
    };
    // Context questions go to the GitHub App when there is one; without
    // `[github]` every question is unavailable (start-up refuses such a
    // policy; only a reload could bring one).
    let decided =
        decision::decide(policy, &verified, &access, &state.github, request_id, audit).await;
    let grant = decided.map_err(|refusal| refused(state, audit, refusal))?;

    // Refusals that do not depend on the token being fresh come before the
    // replay mark, so they do not burn it.
    let issuer = match grant.credential() {
        CredentialRequest::Aws(session) => Issuer::Sts(session),
        CredentialRequest::GitHub(token) => {
            if format == Format::CredentialProcess {
                return Err(refuse(
                    audit,
                    ApiError::FormatNotForRole,
                    "bad_query",
                    "format=credential_process asked for a role of kind `github`",
                ));
            }
            let Some(github) = &state.github else {
                return Err(refuse(
                    audit,
                    ApiError::Unavailable,
                    "github_not_configured",
                    "a role of kind `github` granted, but [github] is not configured",
                ));
            };
            Issuer::Github(github, token)
        }
    };

    mark_used(state, audit, &verified, now).await?;

    let session = match issuer {
        Issuer::Sts(session) => session,
        Issuer::Github(github, token) => {
            return issue_github(state, github, audit, &verified, grant.role(), token).await;
        }
    };
    let credentials = match state.sts.assume_role(grant.role(), session).await {
        Ok(credentials) => credentials,
        Err(err) => {
            // The caller may retry with the same token: nothing was issued.
            if let Err(release) = state.replay.release_token(&verified).await {
                tracing::warn!(error = %release, "could not release the replay mark after an STS failure");
            }
            return Err(refuse(
                audit,
                ApiError::Unavailable,
                &format!("sts_{}", err.kind()),
                err.to_string(),
            ));
        }
    };
    let expiration = rfc3339(credentials.expiration);
    state
        .metrics
        .credential_issued(grant.role(), credentials.expiration);
    audit.issued(
        &credentials.session_name,
        &credentials.access_key_id,
        &expiration,
    );
    Ok(respond(format, grant.role(), &credentials, &expiration))
}

/// Who issues the credential of a grant, settled before the replay mark.
enum Issuer<'a> {
    /// STS, for an AWS session.
    Sts(&'a AwsSession),
    /// The GitHub App, for an installation token.
    Github(&'a GithubClient, &'a GithubToken),
}

/// Issues a GitHub installation token for a granted `github` role. GitHub
/// refusing (not installed, repositories or permissions refused) is a 403;
/// GitHub unable to answer is a 503 with GitHub's `Retry-After`, and the
/// token's replay mark is released, as for STS failures.
async fn issue_github(
    state: &AppState,
    github: &GithubClient,
    audit: &mut AuditEvent,
    verified: &VerifiedClaims,
    role: &str,
    request: &GithubToken,
) -> Result<Response, ApiError> {
    let mut request_ids = Vec::new();
    let issued = match github
        .issue(
            request.owner(),
            request.repositories(),
            request.permissions(),
            &mut request_ids,
        )
        .await
    {
        Ok(issued) => issued,
        Err(err) => {
            audit.github_token(None, None, &[], request.permissions(), &request_ids);
            if err.is_refusal() {
                return Err(refuse(
                    audit,
                    ApiError::Forbidden,
                    err.reason_code(),
                    err.to_string(),
                ));
            }
            if let Err(release) = state.replay.release_token(verified).await {
                tracing::warn!(error = %release, "could not release the replay mark after a GitHub failure");
            }
            return Err(refuse(
                audit,
                ApiError::UnavailableFor {
                    retry_after_seconds: err.retry_after_seconds(),
                },
                err.reason_code(),
                err.to_string(),
            ));
        }
    };
    let digest = token_sha256(issued.token.expose_secret());
    audit.github_token(
        Some(&digest),
        Some(issued.installation_id),
        &issued.repositories,
        &issued.permissions,
        &request_ids,
    );
    let revoke_at = rfc3339(issued.revoke_at);
    state.metrics.credential_issued(role, issued.revoke_at);
    audit.issued("", "", &revoke_at);
    let answer = GithubTokenResponse {
        expires_at: rfc3339(issued.expires_at),
        permissions: issued.permissions,
        repositories: issued.repositories,
        revoke_at,
        role: role.to_owned(),
        token: issued.token,
    };
    let mut response = (StatusCode::OK, axum::Json(answer)).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// The answer to a refused decision: the rules' denial, or Rego's veto.
fn refused(state: &AppState, audit: &mut AuditEvent, refusal: Refusal) -> ApiError {
    match refusal {
        Refusal::Rules(denial) => deny(state, audit, &denial),
        Refusal::Rego {
            role,
            rule,
            decision,
        } => {
            // Rego has the last word, but only to refuse; its detail stays in the audit log.
            state.metrics.policy_denied(&role);
            audit.matched_rule(format!("{rule} + rego {}", decision.label()));
            refuse(
                audit,
                ApiError::Forbidden,
                &format!("policy_rego_{}", decision.label()),
                decision.audit_detail(),
            )
        }
    }
}

/// Marks the token used; the answer when it was used before or the store
/// cannot say (fail-closed unless `replay.fail_open`; never open when full).
async fn mark_used(
    state: &AppState,
    audit: &mut AuditEvent,
    verified: &VerifiedClaims,
    now: u64,
) -> Result<(), ApiError> {
    match state
        .replay
        .mark_token(verified, state.config.verify.leeway_seconds, now)
        .await
    {
        Ok(Mark::Fresh) => Ok(()),
        Ok(Mark::Replayed) => {
            state.metrics.replay_rejected();
            Err(refuse(
                audit,
                ApiError::Forbidden,
                "replayed",
                "token id already used",
            ))
        }
        Err(err @ ReplayError::Full(_)) => {
            // Never failed open: issuing without a mark is a replay window.
            state.metrics.replay_store_full();
            Err(refuse(
                audit,
                ApiError::Unavailable,
                "replay_store_full",
                err.to_string(),
            ))
        }
        Err(err) if state.config.replay.fail_open => {
            state.metrics.replay_store_error();
            tracing::warn!(error = %err, "replay store unavailable; issuing anyway because replay.fail_open = true");
            Ok(())
        }
        Err(err) => {
            state.metrics.replay_store_error();
            Err(refuse(
                audit,
                ApiError::Unavailable,
                "replay_store_unavailable",
                err.to_string(),
            ))
        }
    }
}

fn deny(state: &AppState, audit: &mut AuditEvent, denial: &Denial) -> ApiError {
    let (answer, role, detail) = match denial {
        Denial::Ambiguous { roles } => (
            ApiError::AmbiguousRole,
            None,
            format!("roles: {}", roles.join(",")),
        ),
        Denial::DurationOutOfRange {
            role,
            requested,
            max,
        } => (
            ApiError::DurationOutOfRange,
            Some(role.as_str()),
            format!("requested {requested} s, allowed 900..={max} s"),
        ),
        Denial::NotPermitted { role, first_failed } => {
            (ApiError::Forbidden, role.as_deref(), first_failed.clone())
        }
        Denial::DeniedByRule { role, rule } => {
            (ApiError::Forbidden, Some(role.as_str()), rule.clone())
        }
        Denial::UnknownRole => (
            ApiError::Forbidden,
            None,
            "the requested role does not exist".to_owned(),
        ),
        Denial::FieldNotForKind { role, field, kind } => (
            ApiError::FieldNotForRole,
            Some(role.as_str()),
            format!("`{field}` is not taken by roles of kind `{kind}`"),
        ),
        Denial::RepositoryOfOtherOwner { role, detail }
        | Denial::PermissionsBeyondRole { role, detail } => {
            (ApiError::Forbidden, Some(role.as_str()), detail.clone())
        }
        Denial::ContextUnavailable { role, detail } => {
            (ApiError::Unavailable, role.as_deref(), detail.clone())
        }
    };
    if answer == ApiError::Forbidden {
        // The label is a policy role name or `none`, never a caller's string.
        state.metrics.policy_denied(role.unwrap_or("none"));
    }
    if let Some(role) = role {
        audit.role(role);
    }
    audit.matched_rule(detail.clone());
    refuse(audit, answer, denial.reason_code(), detail)
}

fn parse_format(query: Option<&str>) -> Result<Format, ApiError> {
    let mut format = Format::Json;
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        if key == "format" {
            format = match value.as_ref() {
                "credential_process" => Format::CredentialProcess,
                "json" => Format::Json,
                _ => return Err(ApiError::MalformedBody),
            };
        }
    }
    Ok(format)
}

/// Why a body was refused: the answer, the audit reason and its detail.
type BodyRefusal = (ApiError, &'static str, String);

/// Reads the whole body, at most `server.max_body_bytes`, within `budget`.
async fn read_body(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    budget: Duration,
) -> Result<Bytes, BodyRefusal> {
    let limit = state.config.server.max_body_bytes;
    let too_large = || {
        (
            ApiError::BodyTooLarge,
            "bad_body",
            "body refused".to_owned(),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(too_large());
    }
    match tokio::time::timeout(budget, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(_)) => Err(too_large()),
        Err(_) => Err((
            ApiError::BodyTimeout,
            "body_timeout",
            format!("body not received within {} ms", budget.as_millis()),
        )),
    }
}

fn parse_request(headers: &HeaderMap, bytes: &Bytes) -> Result<IssueRequest, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(IssueRequest::default());
    }
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .map(|mime| mime.trim().to_ascii_lowercase())
        .is_some_and(|mime| {
            mime == "application/json"
                || (mime.starts_with("application/") && mime.ends_with("+json"))
        });
    if !is_json {
        return Err(ApiError::UnsupportedMediaType);
    }
    // Only an object: serde would also read a struct from a JSON array.
    if bytes.iter().find(|byte| !byte.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::MalformedBody);
    }
    let request: IssueRequest =
        serde_json::from_slice(bytes).map_err(|_| ApiError::MalformedBody)?;
    let too_long = [
        request.repo.as_deref(),
        request.sha.as_deref(),
        request.role.as_deref(),
    ]
    .into_iter()
    .flatten()
    .any(|value| value.len() > MAX_FIELD_LEN)
        || matches!(&request.job_id, Some(JobId::Text(text)) if text.len() > MAX_FIELD_LEN);
    if too_long {
        return Err(ApiError::MalformedBody);
    }
    Ok(request)
}

/// Fuzzing entry point, not API: decodes a `POST /issue` request as the
/// handler does (`?format=`, body, token choice, binding against a fixed
/// GitHub-shaped claim set) without a server, so `fuzz/` can drive it.
#[doc(hidden)]
pub fn fuzz_decode_issue_request(
    query: Option<&str>,
    content_type: Option<&[u8]>,
    authorization: Option<&[u8]>,
    body: &[u8],
) -> Result<Option<&'static str>, ApiError> {
    let mut headers = HeaderMap::new();
    for (name, value) in [
        (header::CONTENT_TYPE, content_type),
        (header::AUTHORIZATION, authorization),
    ] {
        if let Some(value) = value.and_then(|value| HeaderValue::from_bytes(value).ok()) {
            headers.insert(name, value);
        }
    }
    parse_format(query)?;
    let request = parse_request(&headers, &Bytes::copy_from_slice(body))?;
    pick_token(
        &headers,
        request.oidc_token.as_ref().map(ExposeSecret::expose_secret),
    )?;
    let mut claims = crate::claims::UnverifiedClaims::default();
    claims.insert("repository", "ourorg/widget-service");
    claims.insert("sha", "d6f1e2c3b4a5968778695a4b3c2d1e0f9a8b7c6d");
    claims.insert("check_run_id", "72463523102");
    let job_id = request.job_id.as_ref().map(JobId::to_text);
    Ok(binding::mismatch(
        &request.binding(job_id.as_deref()),
        claims.claim_set(),
    ))
}

/// The token from the body or the `Authorization: Bearer` header; both at
/// once must agree.
fn pick_token(headers: &HeaderMap, from_body: Option<&str>) -> Result<SecretString, ApiError> {
    let from_header = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            let (scheme, rest) = value.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        })
        .filter(|token| !token.is_empty());
    let from_body = from_body.map(str::trim).filter(|token| !token.is_empty());
    match (from_body, from_header) {
        (Some(body), Some(header)) if body != header => Err(ApiError::MalformedBody),
        (Some(token), _) | (None, Some(token)) => Ok(SecretString::from(token.to_owned())),
        (None, None) => Err(ApiError::MissingToken),
    }
}

fn respond(
    format: Format,
    role: &str,
    credentials: &IssuedCredentials,
    expiration: &str,
) -> Response {
    let answer = IssueResponse {
        access_key_id: credentials.access_key_id.clone(),
        expiration: expiration.to_owned(),
        role: Some(role.to_owned()),
        secret_access_key: credentials.secret_access_key.clone(),
        session_name: Some(credentials.session_name.clone()),
        session_token: credentials.session_token.clone(),
    };
    let mut response = match format {
        Format::Json => (StatusCode::OK, axum::Json(answer)).into_response(),
        Format::CredentialProcess => {
            (StatusCode::OK, axum::Json(CredentialProcess::from(answer))).into_response()
        }
    };
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// RFC 3339 UTC with whole seconds, e.g. `2026-11-22T09:15:00Z`.
pub(crate) fn rfc3339(at: SystemTime) -> String {
    let seconds = at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    time::OffsetDateTime::from_unix_timestamp(i64::try_from(seconds).unwrap_or(0))
        .ok()
        .and_then(|at| at.format(&format).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::claims::ClaimSet;

    /// Binds a request as the handler does: `job_id` (text or number) as text.
    fn binding_mismatch(request: &IssueRequest, claims: &ClaimSet) -> Option<&'static str> {
        let job_id = request.job_id.as_ref().map(JobId::to_text);
        binding::mismatch(&request.binding(job_id.as_deref()), claims)
    }

    fn request(json: serde_json::Value) -> IssueRequest {
        serde_json::from_value(json).unwrap()
    }

    /// The body's fields reach `binding::mismatch` (whose own tests cover the
    /// rules); `job_id` as text or as a number.
    #[test]
    fn binding_rules() {
        let mut c = ClaimSet::default();
        for (name, value) in [
            ("repository", "OurOrg/App"),
            ("sha", "abc"),
            ("check_run_id", "42"),
        ] {
            c.insert(name, value);
        }
        let cases = [
            (serde_json::json!({"repo": "ourorg/app"}), None),
            (serde_json::json!({"repo": "ourorg/app2"}), Some("repo")),
            (serde_json::json!({"sha": "ABC"}), Some("sha")),
            (serde_json::json!({"job_id": 42}), None),
            (serde_json::json!({"job_id": "42"}), None),
            (serde_json::json!({"job_id": ""}), None),
            (serde_json::json!({"job_id": "43"}), Some("job_id")),
        ];
        for (body, expected) in cases {
            assert_eq!(
                binding_mismatch(&request(body.clone()), &c),
                expected,
                "{body}"
            );
        }
        let mut no_check_run = ClaimSet::default();
        no_check_run.insert("repository", "o/r");
        assert_eq!(
            binding_mismatch(&request(serde_json::json!({"job_id": "1"})), &no_check_run),
            Some("job_id")
        );
    }

    #[test]
    fn rfc3339_has_whole_seconds_and_z() {
        let at = UNIX_EPOCH + Duration::from_millis(1_795_000_000_500);
        assert_eq!(rfc3339(at), "2026-11-18T11:06:40Z");
    }

    #[test]
    fn token_from_body_or_header() {
        let mut headers = HeaderMap::new();
        assert_eq!(
            pick_token(&headers, None).unwrap_err(),
            ApiError::MissingToken
        );
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer abc"),
        );
        assert_eq!(pick_token(&headers, None).unwrap().expose_secret(), "abc");
        assert_eq!(
            pick_token(&headers, Some("abc")).unwrap().expose_secret(),
            "abc"
        );
        assert_eq!(
            pick_token(&headers, Some("xyz")).unwrap_err(),
            ApiError::MalformedBody
        );
    }
}
