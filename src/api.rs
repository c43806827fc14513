//! The wire types of `POST /issue`: the request, the two answer shapes and
//! the error body, defined once. The broker reads requests and writes
//! answers with them (`http`), the `fetch` client writes requests and reads
//! answers with them, and the tests parse answers with them.
//!
//! - Keys are declared, and so written, in alphabetical order: the order the
//!   answers have always had on the wire, which clients may compare byte for
//!   byte.
//! - Secrets (the OIDC token, the secret access key, the session token) are
//!   [`SecretString`]: `Debug` redacts them. They leave memory only by
//!   serialising the type that holds them, which is done where that JSON is
//!   sent or written (the handler's answer, `fetch`'s request, output and
//!   cache), and nowhere else.
//! - Reading ignores unknown fields, so either side can add one without
//!   breaking the other.

use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The body of `POST /issue`. Every field is optional on the wire: the token
/// may come as `Authorization: Bearer` instead, and the binding fields only
/// narrow what the token allows.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct IssueRequest {
    /// From 900 up to the role's maximum; absent means the role's duration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<u64>,
    /// Must equal the token's `check_run_id` claim when present and non-empty.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<JobId>,
    /// The GitHub Actions OIDC token.
    #[serde(
        serialize_with = "expose_optional",
        skip_serializing_if = "Option::is_none"
    )]
    pub oidc_token: Option<SecretString>,
    /// For a `github` role: narrows the token to these permissions, each at
    /// most the role's level. Refused for an `aws` role.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permissions: Option<Permissions>,
    /// `owner/name`; must equal the `repository` claim (ASCII case-insensitive).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    /// A policy role name; needed when several roles match.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Must equal the `sha` claim exactly.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha: Option<String>,
}

/// `job_id` as a string or a number (workflow expressions produce either).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum JobId {
    /// `"72463523102"`.
    Text(String),
    /// `72463523102`.
    Number(u64),
}

impl JobId {
    /// The id as the claim spells it.
    pub fn to_text(&self) -> String {
        match self {
            JobId::Text(text) => text.clone(),
            JobId::Number(number) => number.to_string(),
        }
    }
}

/// The 200 answer of `POST /issue` (JSON).
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct IssueResponse {
    /// `ASIA…`.
    pub access_key_id: String,
    /// RFC 3339 UTC with whole seconds, e.g. `2026-11-22T09:15:00Z`.
    pub expiration: String,
    /// The policy role granted. The broker always writes it; a reader
    /// accepts its absence (`fetch` keeps the same shape in its cache).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// The secret access key.
    #[serde(serialize_with = "expose")]
    pub secret_access_key: SecretString,
    /// The STS session name. Always written by the broker, like `role`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_name: Option<String>,
    /// The session token.
    #[serde(serialize_with = "expose")]
    pub session_token: SecretString,
}

/// GitHub App permissions by GitHub's names (`contents`, `pull_requests`,
/// `checks`, …), each with its access level, in name order.
pub type Permissions = std::collections::BTreeMap<String, Access>;

/// A GitHub App permission level; ordered `read < write < admin`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// `read`.
    Read,
    /// `write`.
    Write,
    /// `admin` (a few organisation and repository administration permissions).
    Admin,
}

impl Access {
    /// GitHub's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Admin => "admin",
        }
    }
}

/// The 200 answer of `POST /issue` (JSON) for a role of kind `github`: a
/// GitHub App installation token.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct GithubTokenResponse {
    /// When GitHub expires the token (RFC 3339 UTC, whole seconds).
    pub expires_at: String,
    /// The permissions the token carries.
    pub permissions: Permissions,
    /// `owner/name` of every repository the token can reach.
    pub repositories: Vec<String>,
    /// When the broker revokes the token (RFC 3339 UTC), before `expires_at`.
    pub revoke_at: String,
    /// The policy role granted.
    pub role: String,
    /// The installation token, `ghs_…`.
    #[serde(serialize_with = "expose")]
    pub token: SecretString,
}

/// The 200 answer of `POST /issue?format=credential_process`: the shape the
/// AWS CLI and SDKs read from a `credential_process` command.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct CredentialProcess {
    /// `ASIA…`.
    pub access_key_id: String,
    /// RFC 3339 UTC.
    pub expiration: String,
    /// The secret access key.
    #[serde(serialize_with = "expose")]
    pub secret_access_key: SecretString,
    /// The session token.
    #[serde(serialize_with = "expose")]
    pub session_token: SecretString,
    /// Always 1.
    pub version: VersionOne,
}

impl From<IssueResponse> for CredentialProcess {
    fn from(answer: IssueResponse) -> Self {
        Self {
            access_key_id: answer.access_key_id,
            expiration: answer.expiration,
            secret_access_key: answer.secret_access_key,
            session_token: answer.session_token,
            version: VersionOne,
        }
    }
}

/// The `Version` of a `credential_process` answer: the number 1, the only
/// version the AWS SDKs know; any other number does not deserialise.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VersionOne;

impl Serialize for VersionOne {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u8(1)
    }
}

impl<'de> Deserialize<'de> for VersionOne {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match u8::deserialize(deserializer)? {
            1 => Ok(VersionOne),
            _ => Err(serde::de::Error::custom("`Version` is not 1")),
        }
    }
}

/// Every error answer: `{"error": CODE, "message": TEXT, "request_id": ID}`.
///
/// The broker writes it with the closed [`ErrorCode`]; a client reading
/// answers from a broker of another version may read the code as text
/// (`ErrorBody<String>`), so a code added later still reaches its user.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct ErrorBody<Code = ErrorCode> {
    /// The machine-readable code.
    pub error: Code,
    /// A fixed text chosen by the code's kind; never a value from the request.
    pub message: String,
    /// The id in the `x-request-id` header and in the audit event.
    pub request_id: String,
}

/// The error codes of the HTTP API, written in snake_case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 400, 405, 408, 413, 415, 431: the request itself is wrong.
    InvalidRequest,
    /// 401: the token failed verification.
    InvalidToken,
    /// 403: binding mismatch, replayed token or policy denial.
    Forbidden,
    /// 429: the repository is over its rate.
    RateLimited,
    /// 503: an upstream is down, the broker is overloaded, or the deadline passed.
    Unavailable,
    /// 404: no such endpoint.
    NotFound,
    /// 500: a bug.
    Internal,
}

impl ErrorCode {
    /// Every code, for tests and documentation.
    pub const ALL: [ErrorCode; 7] = [
        ErrorCode::InvalidRequest,
        ErrorCode::InvalidToken,
        ErrorCode::Forbidden,
        ErrorCode::RateLimited,
        ErrorCode::Unavailable,
        ErrorCode::NotFound,
        ErrorCode::Internal,
    ];

    /// The code as written on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidToken => "invalid_token",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Internal => "internal",
        }
    }
}

/// Writes a secret: used only by the `Serialize` of the types above.
fn expose<S: Serializer>(secret: &SecretString, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(secret.expose_secret())
}

/// [`expose`] for an optional secret (`None` is skipped before this runs).
fn expose_optional<S: Serializer>(
    secret: &Option<SecretString>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match secret {
        Some(secret) => expose(secret, serializer),
        None => serializer.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer() -> IssueResponse {
        IssueResponse {
            access_key_id: "ASIAEXAMPLE".into(),
            expiration: "2026-11-22T09:15:00Z".into(),
            role: Some("deploy".into()),
            secret_access_key: SecretString::from("s3cr3t/Key+x"),
            session_name: Some("gh-1-1-2".into()),
            session_token: SecretString::from("FwoGZXIvYXdzEXAMPLE=="),
        }
    }

    #[test]
    fn answers_are_written_in_the_documented_bytes() {
        assert_eq!(
            serde_json::to_string(&answer()).unwrap(),
            r#"{"access_key_id":"ASIAEXAMPLE","expiration":"2026-11-22T09:15:00Z","role":"deploy","secret_access_key":"s3cr3t/Key+x","session_name":"gh-1-1-2","session_token":"FwoGZXIvYXdzEXAMPLE=="}"#
        );
        assert_eq!(
            serde_json::to_string(&CredentialProcess::from(answer())).unwrap(),
            r#"{"AccessKeyId":"ASIAEXAMPLE","Expiration":"2026-11-22T09:15:00Z","SecretAccessKey":"s3cr3t/Key+x","SessionToken":"FwoGZXIvYXdzEXAMPLE==","Version":1}"#
        );
        let error = ErrorBody {
            error: ErrorCode::RateLimited,
            message: "too many requests; retry later".into(),
            request_id: "r1".into(),
        };
        assert_eq!(
            serde_json::to_string(&error).unwrap(),
            r#"{"error":"rate_limited","message":"too many requests; retry later","request_id":"r1"}"#
        );
    }

    #[test]
    fn debug_never_shows_a_secret() {
        let request = IssueRequest {
            oidc_token: Some(SecretString::from("eyJhbGciOi.payload.signature")),
            ..IssueRequest::default()
        };
        let shown = format!(
            "{request:?} {:?} {:?}",
            answer(),
            CredentialProcess::from(answer())
        );
        for secret in ["eyJhbGciOi", "s3cr3t", "FwoGZXIvYXdz"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains("ASIAEXAMPLE"), "{shown}");
    }

    #[test]
    fn requests_take_job_id_as_text_or_number_and_ignore_unknown_fields() {
        let request: IssueRequest = serde_json::from_str(
            r#"{"oidc_token":"a.b.c","job_id":42,"repo":"o/r","extra":{"x":[1]}}"#,
        )
        .unwrap();
        assert_eq!(request.job_id, Some(JobId::Number(42)));
        assert_eq!(request.job_id.map(|id| id.to_text()).as_deref(), Some("42"));
        assert_eq!(
            request
                .oidc_token
                .map(|token| token.expose_secret().to_owned()),
            Some("a.b.c".to_owned())
        );
        let request: IssueRequest = serde_json::from_str(r#"{"job_id":"42"}"#).unwrap();
        assert_eq!(request.job_id, Some(JobId::Text("42".into())));
        for bad in [
            r#"{"job_id":true}"#,
            r#"{"oidc_token":5}"#,
            r#"{"duration_seconds":-900}"#,
            r#"{"role":"a","role":"b"}"#,
        ] {
            assert!(serde_json::from_str::<IssueRequest>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn requests_are_written_with_only_the_fields_set() {
        let request = IssueRequest {
            oidc_token: Some(SecretString::from("a.b.c")),
            repo: Some("o/r".into()),
            sha: Some("abc".into()),
            job_id: Some(JobId::Text("7".into())),
            ..IssueRequest::default()
        };
        assert_eq!(
            serde_json::to_string(&request).unwrap(),
            r#"{"job_id":"7","oidc_token":"a.b.c","repo":"o/r","sha":"abc"}"#
        );
        assert_eq!(
            serde_json::to_string(&IssueRequest::default()).unwrap(),
            "{}"
        );
    }

    #[test]
    fn error_codes_are_closed_and_snake_case() {
        for code in ErrorCode::ALL {
            let written = serde_json::to_string(&code).unwrap();
            assert_eq!(written, format!("\"{}\"", code.as_str()));
            assert_eq!(serde_json::from_str::<ErrorCode>(&written).unwrap(), code);
        }
        assert!(serde_json::from_str::<ErrorCode>(r#""teapot""#).is_err());
        let text: ErrorBody<String> =
            serde_json::from_str(r#"{"error":"teapot","message":"m","request_id":"r"}"#).unwrap();
        assert_eq!(text.error, "teapot");
    }

    #[test]
    fn credential_process_version_is_one() {
        let read: CredentialProcess = serde_json::from_str(
            r#"{"AccessKeyId":"A","Expiration":"E","SecretAccessKey":"S","SessionToken":"T","Version":1}"#,
        )
        .unwrap();
        assert_eq!(read.version, VersionOne);
        assert!(
            serde_json::from_str::<CredentialProcess>(
                r#"{"AccessKeyId":"A","Expiration":"E","SecretAccessKey":"S","SessionToken":"T","Version":2}"#,
            )
            .is_err()
        );
    }
}
