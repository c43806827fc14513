//! Reading the runtime's and the broker's answers. Every value that will be
//! written to a command file or printed is checked here first; messages name
//! the field, never its value.
//!
//! The broker's 200 answer has one of two shapes: AWS credentials
//! ([`IssueResponse`]) or, for a role of kind `github`, a GitHub App
//! installation token ([`GithubTokenResponse`]). [`parse_answer`] tells them
//! apart by their keys (`token` without `access_key_id` is the GitHub shape)
//! and checks the one it found.

use secrecy::{ExposeSecret as _, SecretString};
use serde_json::Value;

use super::FetchError;
use super::transport::Answer;
use crate::api::{ErrorBody, GithubTokenResponse, IssueResponse};

/// Longest credential field accepted. STS session tokens with session tags
/// run to a few kilobytes.
const MAX_FIELD_CHARS: usize = 16 * 1024;

/// Issued credentials: the broker's answer, checked by [`parse_credentials`]
/// (or read back from fetch's own cache through the same check).
pub type Credentials = IssueResponse;

/// A GitHub installation token: the broker's answer for a role of kind
/// `github`, checked by [`parse_answer`]. It is never cached: the cache
/// ([`super::cache`]) holds [`Credentials`] only.
pub type GithubToken = GithubTokenResponse;

/// What the broker issued.
#[derive(Debug)]
pub enum Issued {
    /// AWS credentials (a role of kind `aws`).
    Aws(Credentials),
    /// A GitHub installation token (a role of kind `github`).
    Github(GithubToken),
}

/// Longest `role`, repository or permission name accepted in a GitHub answer.
const MAX_NAME_CHARS: usize = 256;

/// `{"value": "<jwt>"}` from the runtime.
pub(super) fn parse_id_token(body: &[u8]) -> Result<SecretString, FetchError> {
    let malformed = || FetchError::IdToken("the runtime's answer has no usable `value`".into());
    let answer: Value = serde_json::from_slice(body).map_err(|_| malformed())?;
    let token = answer
        .get("value")
        .and_then(Value::as_str)
        .ok_or_else(malformed)?;
    let parts = token.split('.').count();
    if parts != 3
        || !token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(malformed());
    }
    Ok(SecretString::from(token))
}

/// The broker's error body `{error, message, request_id}`, if it is one; the
/// request id falls back to the `x-request-id` header. The code is read as
/// text, so a code a newer broker adds still reaches the user; texts with
/// control characters are dropped, long ones cut.
pub(super) fn broker_error(
    answer: &Answer,
) -> Option<(Option<String>, Option<String>, Option<String>)> {
    let body: ErrorBody<String> = serde_json::from_slice(&answer.body).ok()?;
    let text = |text: String| {
        (!text.chars().any(char::is_control)).then(|| text.chars().take(300).collect::<String>())
    };
    let code = text(body.error)?;
    let header_id = answer
        .headers
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    Some((
        Some(code),
        text(body.message),
        text(body.request_id).or(header_id),
    ))
}

/// A non-200, non-transient answer as a refusal.
pub(super) fn refused(answer: &Answer) -> FetchError {
    let (code, message, request_id) = broker_error(answer).unwrap_or_else(|| {
        let header_id = answer
            .headers
            .get("x-request-id")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        (None, None, header_id)
    });
    FetchError::Refused {
        status: answer.status,
        code,
        message,
        request_id,
    }
}

/// Printable ASCII without spaces or control characters.
fn is_printable(text: &str) -> bool {
    text.bytes().all(|b| b.is_ascii_graphic())
}

/// The keys that tell the two answer shapes apart; values are skipped unread.
#[derive(serde::Deserialize)]
struct Shape {
    access_key_id: Option<serde::de::IgnoredAny>,
    token: Option<serde::de::IgnoredAny>,
}

/// The 200 answer of `POST /issue`, of either shape. An object with `token`
/// and without `access_key_id` is a GitHub token; everything else is read as
/// AWS credentials (so an answer of neither shape gets the AWS messages).
pub(super) fn parse_answer(body: &[u8]) -> Result<Issued, FetchError> {
    // The first value only: what follows it is the chosen parser's to refuse.
    let github =
        <Shape as serde::Deserialize>::deserialize(&mut serde_json::Deserializer::from_slice(body))
            .is_ok_and(|shape| shape.token.is_some() && shape.access_key_id.is_none());
    if github {
        parse_github_token(body).map(Issued::Github)
    } else {
        parse_credentials(body).map(Issued::Aws)
    }
}

/// The GitHub shape, checked field by field: the token as the AWS secrets
/// are (it is written to `GITHUB_ENV` / `GITHUB_OUTPUT`), the times as RFC
/// 3339, and the names printed in the summary line as plain names.
fn parse_github_token(body: &[u8]) -> Result<GithubToken, FetchError> {
    let mut reader = serde_json::Deserializer::from_slice(body);
    let answer: GithubToken = serde_path_to_error::deserialize(&mut reader)
        .map_err(|err| FetchError::Malformed(github_shape_problem(&err)))?;
    reader
        .end()
        .map_err(|_| FetchError::Malformed("not JSON".into()))?;
    let malformed = |name: &str, what: &str| FetchError::Malformed(format!("`{name}` {what}"));
    let token = answer.token.expose_secret();
    if token.is_empty() || token.len() > MAX_FIELD_CHARS || !is_printable(token) {
        return Err(malformed(
            "token",
            "is empty, too long, or not printable ASCII",
        ));
    }
    let rfc3339 = time::format_description::well_known::Rfc3339;
    for (name, value) in [
        ("expires_at", &answer.expires_at),
        ("revoke_at", &answer.revoke_at),
    ] {
        if !is_printable(value) || time::OffsetDateTime::parse(value, &rfc3339).is_err() {
            return Err(malformed(name, "is not an RFC 3339 time"));
        }
    }
    let plain_name =
        |text: &str| !text.is_empty() && text.len() <= MAX_NAME_CHARS && is_printable(text);
    if !plain_name(&answer.role) {
        return Err(malformed(
            "role",
            "is empty, too long, or not printable ASCII",
        ));
    }
    let repository = |name: &String| {
        plain_name(name)
            && name.split_once('/').is_some_and(|(owner, repo)| {
                !owner.is_empty() && !repo.is_empty() && !repo.contains('/')
            })
    };
    if answer.repositories.is_empty() || !answer.repositories.iter().all(repository) {
        return Err(malformed(
            "repositories",
            "is empty or holds an entry that is not `owner/name`",
        ));
    }
    if !answer
        .permissions
        .keys()
        .all(|name| is_permission_name(name))
    {
        return Err(malformed(
            "permissions",
            "holds a name that is not a GitHub permission name",
        ));
    }
    Ok(answer)
}

/// A GitHub permission name as GitHub spells them: `contents`,
/// `pull_requests`, `organization_custom_roles`.
pub(super) fn is_permission_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// What is wrong with an answer that does not read as [`GithubToken`]: the
/// top-level field only (a deeper path could hold a key the answer made up).
fn github_shape_problem(err: &serde_path_to_error::Error<serde_json::Error>) -> String {
    let inner = err.inner();
    if inner.is_syntax() || inner.is_eof() {
        return "not JSON".into();
    }
    let missing = inner
        .to_string()
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(name, _)| name.to_owned());
    let top = err.path().iter().next().and_then(|segment| match segment {
        serde_path_to_error::Segment::Map { key } => Some(key.clone()),
        _ => None,
    });
    match missing.or(top) {
        Some(name) => format!("`{name}` is missing or not of the documented type"),
        None => "not a JSON object with the documented fields".into(),
    }
}

/// The 200 answer of `POST /issue`, read as [`IssueResponse`] and checked
/// field by field. Messages name the field, never its value.
pub(super) fn parse_credentials(body: &[u8]) -> Result<Credentials, FetchError> {
    let mut reader = serde_json::Deserializer::from_slice(body);
    let mut answer: IssueResponse = serde_path_to_error::deserialize(&mut reader)
        .map_err(|err| FetchError::Malformed(shape_problem(&err)))?;
    reader
        .end()
        .map_err(|_| FetchError::Malformed("not JSON".into()))?;
    let checked = |name: &str, value: &str| {
        if value.is_empty() || value.len() > MAX_FIELD_CHARS || !is_printable(value) {
            return Err(FetchError::Malformed(format!(
                "`{name}` is empty, too long, or not printable ASCII"
            )));
        }
        Ok(())
    };
    checked("access_key_id", &answer.access_key_id)?;
    checked(
        "secret_access_key",
        answer.secret_access_key.expose_secret(),
    )?;
    checked("session_token", answer.session_token.expose_secret())?;
    checked("expiration", &answer.expiration)?;
    let optional = |value: Option<String>| {
        value.filter(|value| !value.is_empty() && value.len() <= 256 && is_printable(value))
    };
    answer.role = optional(answer.role.take());
    answer.session_name = optional(answer.session_name.take());
    let rfc3339 = time::format_description::well_known::Rfc3339;
    if time::OffsetDateTime::parse(&answer.expiration, &rfc3339).is_err() {
        return Err(FetchError::Malformed(
            "`expiration` is not an RFC 3339 time".into(),
        ));
    }
    Ok(answer)
}

/// What is wrong with an answer that does not read as [`IssueResponse`],
/// naming the field but never a value (serde's own messages may quote one).
fn shape_problem(err: &serde_path_to_error::Error<serde_json::Error>) -> String {
    let inner = err.inner();
    if inner.is_syntax() || inner.is_eof() {
        return "not JSON".into();
    }
    let path = err.path().to_string();
    // A missing field is reported at the object itself, by a message that
    // names only the field (serde's fixed "missing field `NAME`").
    let missing = inner
        .to_string()
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(name, _)| name.to_owned());
    match missing {
        Some(name) => format!("`{name}` is missing or not a string"),
        None if path != "." => format!("`{path}` is missing or not a string"),
        None => "not a JSON object with the documented fields".into(),
    }
}
