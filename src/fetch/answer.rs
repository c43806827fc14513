//! Reading the runtime's and the broker's answers. Every value that will be
//! written to a command file or printed is checked here first; messages name
//! the field, never its value.

use secrecy::SecretString;
use serde_json::Value;

use super::FetchError;
use super::transport::Answer;

/// Longest credential field accepted. STS session tokens with session tags
/// run to a few kilobytes.
const MAX_FIELD_CHARS: usize = 16 * 1024;

/// Issued credentials, checked.
#[derive(Debug)]
pub struct Credentials {
    /// `ASIA…`.
    pub access_key_id: String,
    /// The secret key.
    pub secret_access_key: SecretString,
    /// The session token.
    pub session_token: SecretString,
    /// RFC 3339 expiry.
    pub expiration: String,
    /// The policy role granted, when the broker says.
    pub role: Option<String>,
    /// The STS session name, when the broker says.
    pub session_name: Option<String>,
}

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
/// request id falls back to the `x-request-id` header.
pub(super) fn broker_error(
    answer: &Answer,
) -> Option<(Option<String>, Option<String>, Option<String>)> {
    let body: Value = serde_json::from_slice(&answer.body).ok()?;
    let text = |name: &str| {
        body.get(name)
            .and_then(Value::as_str)
            .filter(|text| !text.chars().any(char::is_control))
            .map(|text| text.chars().take(300).collect::<String>())
    };
    let code = text("error")?;
    let header_id = answer
        .headers
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    Some((
        Some(code),
        text("message"),
        text("request_id").or(header_id),
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

/// The 200 answer of `POST /issue`, checked field by field. Messages name
/// the field, never its value.
pub(super) fn parse_credentials(body: &[u8]) -> Result<Credentials, FetchError> {
    let answer: Value =
        serde_json::from_slice(body).map_err(|_| FetchError::Malformed("not JSON".into()))?;
    let field = |name: &str| -> Result<String, FetchError> {
        let value = answer
            .get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| FetchError::Malformed(format!("`{name}` is missing or not a string")))?;
        if value.is_empty() || value.len() > MAX_FIELD_CHARS || !is_printable(value) {
            return Err(FetchError::Malformed(format!(
                "`{name}` is empty, too long, or not printable ASCII"
            )));
        }
        Ok(value.to_owned())
    };
    let optional = |name: &str| {
        answer
            .get(name)
            .and_then(Value::as_str)
            .filter(|value| !value.is_empty() && value.len() <= 256 && is_printable(value))
            .map(str::to_owned)
    };
    let credentials = Credentials {
        access_key_id: field("access_key_id")?,
        secret_access_key: SecretString::from(field("secret_access_key")?),
        session_token: SecretString::from(field("session_token")?),
        expiration: field("expiration")?,
        role: optional("role"),
        session_name: optional("session_name"),
    };
    let rfc3339 = time::format_description::well_known::Rfc3339;
    if time::OffsetDateTime::parse(&credentials.expiration, &rfc3339).is_err() {
        return Err(FetchError::Malformed(
            "`expiration` is not an RFC 3339 time".into(),
        ));
    }
    Ok(credentials)
}
