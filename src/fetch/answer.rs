//! Reading the runtime's and the broker's answers. Every value that will be
//! written to a command file or printed is checked here first; messages name
//! the field, never its value.

use secrecy::{ExposeSecret as _, SecretString};
use serde_json::Value;

use super::FetchError;
use super::transport::Answer;
use crate::api::{ErrorBody, IssueResponse};

/// Longest credential field accepted. STS session tokens with session tags
/// run to a few kilobytes.
const MAX_FIELD_CHARS: usize = 16 * 1024;

/// Issued credentials: the broker's answer, checked by [`parse_credentials`]
/// (or read back from fetch's own cache through the same check).
pub type Credentials = IssueResponse;

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
