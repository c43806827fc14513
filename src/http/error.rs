//! `ApiError`: the only thing that becomes an HTTP error response.
//!
//! Bodies are `api::ErrorBody` with a code from the closed `api::ErrorCode`
//! and a fixed text chosen here; no upstream message, claim value, key id,
//! role ARN or account id can reach a caller. The detail of a refusal goes
//! to the audit log instead. Every 403 shares one message, so a caller cannot
//! tell which check refused it.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::api::{ErrorBody, ErrorCode};
use crate::verify::VerifyError;

/// Seconds a caller should wait after a 503 (a 429 says how long its bucket needs).
pub const RETRY_AFTER_SECONDS: u64 = 2;

/// An error answer, by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiError {
    /// Body is not JSON of the expected shape.
    MalformedBody,
    /// No token in body or header.
    MissingToken,
    /// Several roles match and none was named.
    AmbiguousRole,
    /// Requested duration outside 900..=role maximum.
    DurationOutOfRange,
    /// Body larger than the limit.
    BodyTooLarge,
    /// Body not received within `server.body_read_timeout_ms`.
    BodyTimeout,
    /// Request head over `server.max_header_bytes` (one the HTTP layer let through).
    HeadTooLarge,
    /// Body is not `application/json`.
    UnsupportedMediaType,
    /// The token failed verification; the coarse reason is safe to name.
    InvalidToken(TokenProblem),
    /// Binding mismatch, replay or policy denial.
    Forbidden,
    /// Rate limited (per repository).
    RateLimited {
        /// Seconds until the repository may ask again (`Retry-After`).
        retry_after_seconds: u64,
    },
    /// Upstream (JWKS, STS, replay store) unavailable, overload or deadline.
    Unavailable,
    /// GitHub unavailable or rate-limited: a 503 whose `Retry-After` is
    /// GitHub's own wait (bounded), not the fixed one.
    UnavailableFor {
        /// Seconds until GitHub may answer again (`Retry-After`).
        retry_after_seconds: u64,
    },
    /// `?format=credential_process` for a role whose credential is not AWS's.
    FormatNotForRole,
    /// A request field the granted role's kind does not take
    /// (`duration_seconds` for a GitHub role, `permissions` for an AWS role).
    FieldNotForRole,
    /// No such route.
    NotFound,
    /// Route exists, method does not.
    MethodNotAllowed,
    /// A bug: a handler panicked.
    Internal,
}

/// The coarse reason a 401 may name: what a caller can read off its own token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenProblem {
    /// Shape, encoding or size.
    Malformed,
    /// Signature, key id or key.
    Signature,
    /// Algorithm.
    Algorithm,
    /// Issuer.
    Issuer,
    /// Audience.
    Audience,
    /// exp.
    Expired,
    /// nbf or iat.
    NotYetValid,
    /// A required claim.
    MissingClaim,
}

impl ApiError {
    /// Maps a verification failure; unavailable keys are a 503, not the caller's fault.
    pub fn from_verify(err: &VerifyError) -> Self {
        let problem = match err {
            VerifyError::Malformed(_) | VerifyError::LifetimeTooLong => TokenProblem::Malformed,
            VerifyError::AlgorithmNotAccepted => TokenProblem::Algorithm,
            VerifyError::MissingKeyId
            | VerifyError::UnknownKeyId
            | VerifyError::InvalidSignature => TokenProblem::Signature,
            VerifyError::UntrustedIssuer => TokenProblem::Issuer,
            VerifyError::AudienceMismatch => TokenProblem::Audience,
            VerifyError::Expired => TokenProblem::Expired,
            VerifyError::NotYetValid | VerifyError::IssuedInFuture => TokenProblem::NotYetValid,
            VerifyError::MissingClaim(_) => TokenProblem::MissingClaim,
            VerifyError::KeysUnavailable => return ApiError::Unavailable,
        };
        ApiError::InvalidToken(problem)
    }

    /// Status, code and fixed message.
    pub fn parts(self) -> (StatusCode, ErrorCode, &'static str) {
        match self {
            ApiError::MalformedBody => (
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidRequest,
                "request body is not valid JSON of the expected shape",
            ),
            ApiError::MissingToken => (
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidRequest,
                "no OIDC token: send `oidc_token` or an `Authorization: Bearer` header",
            ),
            ApiError::AmbiguousRole => (
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidRequest,
                "more than one role matches this token: name one in `role`",
            ),
            ApiError::DurationOutOfRange => (
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidRequest,
                "`duration_seconds` is outside the range this role allows",
            ),
            ApiError::BodyTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::InvalidRequest,
                "request body is too large",
            ),
            ApiError::BodyTimeout => (
                StatusCode::REQUEST_TIMEOUT,
                ErrorCode::InvalidRequest,
                "request body was not received in time",
            ),
            ApiError::HeadTooLarge => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                ErrorCode::InvalidRequest,
                "request head is too large",
            ),
            ApiError::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ErrorCode::InvalidRequest,
                "request body must be application/json",
            ),
            ApiError::InvalidToken(problem) => (
                StatusCode::UNAUTHORIZED,
                ErrorCode::InvalidToken,
                problem.message(),
            ),
            ApiError::Forbidden => (
                StatusCode::FORBIDDEN,
                ErrorCode::Forbidden,
                "the token is not permitted to obtain credentials for this request",
            ),
            ApiError::RateLimited { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::RateLimited,
                "too many requests; retry later",
            ),
            ApiError::FormatNotForRole => (
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidRequest,
                "`format=credential_process` is only for AWS roles",
            ),
            ApiError::FieldNotForRole => (
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidRequest,
                "`duration_seconds` is only for AWS roles and `permissions` only for GitHub roles",
            ),
            ApiError::Unavailable | ApiError::UnavailableFor { .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Unavailable,
                "credentials cannot be issued right now; retry later",
            ),
            ApiError::NotFound => (
                StatusCode::NOT_FOUND,
                ErrorCode::NotFound,
                "no such endpoint",
            ),
            ApiError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                ErrorCode::InvalidRequest,
                "method not allowed",
            ),
            ApiError::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::Internal,
                "internal error",
            ),
        }
    }

    /// The response, with the request id in the body (the header is set by the middleware).
    pub fn into_response_with(self, request_id: &str) -> Response {
        let (status, code, message) = self.parts();
        let body = ErrorBody {
            error: code,
            message: message.to_owned(),
            request_id: request_id.to_owned(),
        };
        let mut response = (status, axum::Json(body)).into_response();
        let retry_after = if let ApiError::RateLimited {
            retry_after_seconds,
        }
        | ApiError::UnavailableFor {
            retry_after_seconds,
        } = self
        {
            Some(retry_after_seconds.max(1))
        } else {
            (status == StatusCode::SERVICE_UNAVAILABLE).then_some(RETRY_AFTER_SECONDS)
        };
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if matches!(self, ApiError::BodyTimeout | ApiError::HeadTooLarge) {
            // The rest of the request was never read: the connection cannot be reused.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}

impl TokenProblem {
    fn message(self) -> &'static str {
        match self {
            TokenProblem::Malformed => "token is malformed",
            TokenProblem::Signature => "token signature is invalid",
            TokenProblem::Algorithm => "token algorithm is not accepted",
            TokenProblem::Issuer => "token issuer is not trusted",
            TokenProblem::Audience => "token audience is not accepted",
            TokenProblem::Expired => "token has expired",
            TokenProblem::NotYetValid => "token is not yet valid",
            TokenProblem::MissingClaim => "token is missing a required claim",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_verify_error_maps_to_401_except_unavailable_keys() {
        let all = VerifyError::ALL;
        for err in all
            .iter()
            .filter(|err| **err != VerifyError::KeysUnavailable)
        {
            assert_eq!(
                ApiError::from_verify(err).parts().0,
                StatusCode::UNAUTHORIZED,
                "{err:?}"
            );
        }
        assert_eq!(
            ApiError::from_verify(&VerifyError::KeysUnavailable),
            ApiError::Unavailable
        );
    }

    #[test]
    fn unavailable_and_rate_limited_carry_retry_after() {
        for (err, seconds) in [
            (ApiError::Unavailable, "2"),
            (
                ApiError::RateLimited {
                    retry_after_seconds: 31,
                },
                "31",
            ),
            (
                ApiError::RateLimited {
                    retry_after_seconds: 0,
                },
                "1",
            ),
            (
                ApiError::UnavailableFor {
                    retry_after_seconds: 17,
                },
                "17",
            ),
        ] {
            let response = err.into_response_with("r1");
            assert_eq!(response.headers()[header::RETRY_AFTER], seconds);
        }
        assert!(
            !ApiError::Forbidden
                .into_response_with("r1")
                .headers()
                .contains_key(header::RETRY_AFTER)
        );
    }
}
