//! `FakeSts`: a local stand-in for AWS STS that only knows AssumeRole.
//!
//! It speaks the AWS Query protocol as `aws-sdk-sts` sends it (`POST /`, a
//! `application/x-www-form-urlencoded` body with `Action=AssumeRole&Version=…`)
//! and answers with credentials that are obviously fake: `ASIADEVFAKE…` keys,
//! `dev-fake-secret-…` and `dev-fake-session-token-…`. It does not verify
//! signatures; it only requires a SigV4 `Authorization` header so that a broker
//! that forgot to sign shows up in the demo. Errors use STS's XML error shape.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use time::OffsetDateTime;
use time::macros::format_description;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::{DevError, base_url, loopback_addr, spawn_server};

/// Prefix of every fake access key id (real temporary keys start with `ASIA`).
pub const FAKE_ACCESS_KEY_PREFIX: &str = "ASIADEVFAKE";
/// Prefix of every fake secret access key.
pub const FAKE_SECRET_PREFIX: &str = "dev-fake-secret-";
/// Prefix of every fake session token.
pub const FAKE_SESSION_TOKEN_PREFIX: &str = "dev-fake-session-token-";

/// Length of an AWS access key id.
const ACCESS_KEY_LEN: usize = 20;
/// STS's default when DurationSeconds is absent.
const DEFAULT_DURATION_SECONDS: i64 = 3600;
/// STS's bounds for DurationSeconds (the upper one is the largest role maximum).
const DURATION_RANGE: std::ops::RangeInclusive<i64> = 900..=43_200;
/// Alphabet of the random part of access key ids (base32, as AWS uses).
const KEY_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
/// Alphabet of the random part of secrets and tokens.
const TOKEN_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
/// STS's XML namespace.
const XMLNS: &str = "https://sts.amazonaws.com/doc/2011-06-15/";

/// The fake STS server.
#[derive(Debug, Default)]
pub struct FakeSts {
    assume_role_calls: AtomicU64,
}

/// A running [`FakeSts`]. Dropping it leaves the server running; call
/// [`FakeStsHandle::shutdown`] to stop it.
#[derive(Debug)]
pub struct FakeStsHandle {
    url: url::Url,
    state: Arc<FakeSts>,
    task: JoinHandle<()>,
}

impl FakeSts {
    /// Serves a fake STS on `listener`, which must be bound to a loopback address.
    pub async fn start(listener: TcpListener) -> Result<FakeStsHandle, DevError> {
        let addr = loopback_addr(&listener)?;
        let url = url::Url::parse(&base_url(addr))
            .map_err(|err| DevError::Listener(std::io::Error::other(err)))?;
        let state = Arc::new(FakeSts::default());
        let router = Router::new()
            .route("/", post(handle))
            .with_state(state.clone());
        let task = spawn_server(listener, router, "fake-sts");
        Ok(FakeStsHandle { url, state, task })
    }
}

impl FakeStsHandle {
    /// The endpoint, e.g. `http://127.0.0.1:41235/`: `[sts] endpoint_url`.
    pub fn url(&self) -> &url::Url {
        &self.url
    }

    /// AssumeRole calls answered with credentials so far.
    pub fn assume_role_calls(&self) -> u64 {
        self.state.assume_role_calls.load(Ordering::Relaxed)
    }

    /// Stops the server.
    pub fn shutdown(self) {
        self.task.abort();
    }
}

/// An STS error: HTTP status, `Code` and `Message`.
struct QueryError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl QueryError {
    fn validation(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "ValidationError",
            message: message.into(),
        }
    }
}

impl IntoResponse for QueryError {
    fn into_response(self) -> Response {
        let kind = if self.status.is_server_error() {
            "Receiver"
        } else {
            "Sender"
        };
        let body = format!(
            "<ErrorResponse xmlns=\"{XMLNS}\"><Error><Type>{kind}</Type><Code>{}</Code>\
             <Message>{}</Message></Error><RequestId>{}</RequestId></ErrorResponse>",
            self.code,
            xml_escape(&self.message),
            uuid::Uuid::new_v4()
        );
        (self.status, [(header::CONTENT_TYPE, "text/xml")], body).into_response()
    }
}

async fn handle(State(state): State<Arc<FakeSts>>, headers: HeaderMap, body: String) -> Response {
    let form: Vec<(String, String)> = url::form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    let field = |name: &str| {
        form.iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    };
    match field("Action") {
        Some("AssumeRole") => match assume_role(&headers, &field) {
            Ok(xml) => {
                state.assume_role_calls.fetch_add(1, Ordering::Relaxed);
                ([(header::CONTENT_TYPE, "text/xml")], xml).into_response()
            }
            Err(err) => err.into_response(),
        },
        other => QueryError {
            status: StatusCode::BAD_REQUEST,
            code: "InvalidAction",
            message: format!(
                "Could not find operation {} for version 2011-06-15",
                other.unwrap_or("(none)")
            ),
        }
        .into_response(),
    }
}

fn assume_role<'a>(
    headers: &HeaderMap,
    field: &impl Fn(&str) -> Option<&'a str>,
) -> Result<String, QueryError> {
    let signed = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("AWS4-HMAC-SHA256 "));
    if !signed {
        return Err(QueryError {
            status: StatusCode::FORBIDDEN,
            code: "MissingAuthenticationToken",
            message: "Request is missing Authentication Token".into(),
        });
    }
    let role_arn = field("RoleArn")
        .filter(|arn| arn.starts_with("arn:"))
        .ok_or_else(|| QueryError::validation("RoleArn must be an ARN"))?;
    let session_name = field("RoleSessionName")
        .filter(|name| is_session_name(name))
        .ok_or_else(|| {
            QueryError::validation("RoleSessionName must be 2-64 characters of [\\w+=,.@-]")
        })?;
    let duration = match field("DurationSeconds") {
        None => DEFAULT_DURATION_SECONDS,
        Some(text) => text
            .parse::<i64>()
            .ok()
            .filter(|seconds| DURATION_RANGE.contains(seconds))
            .ok_or_else(|| {
                QueryError::validation("DurationSeconds must be between 900 and 43200")
            })?,
    };

    let expiration = OffsetDateTime::now_utc() + time::Duration::seconds(duration);
    let expiration = expiration
        .format(format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
        ))
        .map_err(|err| QueryError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "InternalFailure",
            message: err.to_string(),
        })?;
    let (account, role_name) = role_parts(role_arn);
    let access_key_id = format!(
        "{FAKE_ACCESS_KEY_PREFIX}{}",
        random_string(KEY_ALPHABET, ACCESS_KEY_LEN - FAKE_ACCESS_KEY_PREFIX.len())
    );
    let role_id = format!("AROADEVFAKE{}", random_string(KEY_ALPHABET, 10));
    Ok(format!(
        "<AssumeRoleResponse xmlns=\"{XMLNS}\">\
<AssumeRoleResult>\
<AssumedRoleUser>\
<AssumedRoleId>{role_id}:{session}</AssumedRoleId>\
<Arn>arn:aws:sts::{account}:assumed-role/{role}/{session}</Arn>\
</AssumedRoleUser>\
<Credentials>\
<AccessKeyId>{access_key_id}</AccessKeyId>\
<SecretAccessKey>{FAKE_SECRET_PREFIX}{secret}</SecretAccessKey>\
<SessionToken>{FAKE_SESSION_TOKEN_PREFIX}{token}</SessionToken>\
<Expiration>{expiration}</Expiration>\
</Credentials>\
</AssumeRoleResult>\
<ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata>\
</AssumeRoleResponse>",
        session = xml_escape(session_name),
        account = xml_escape(account),
        role = xml_escape(role_name),
        secret = random_string(TOKEN_ALPHABET, 24),
        token = random_string(TOKEN_ALPHABET, 64),
        request_id = uuid::Uuid::new_v4(),
    ))
}

/// Account and role name of `arn:aws:iam::ACCOUNT:role/PATH/NAME`, with
/// placeholders for anything else.
fn role_parts(role_arn: &str) -> (&str, &str) {
    let mut parts = role_arn.splitn(6, ':');
    let account = parts.nth(4).filter(|account| !account.is_empty());
    let role = parts
        .next()
        .and_then(|resource| resource.strip_prefix("role/"))
        .and_then(|path| path.rsplit('/').next())
        .filter(|name| !name.is_empty());
    (account.unwrap_or("000000000000"), role.unwrap_or("dev"))
}

fn is_session_name(name: &str) -> bool {
    (2..=64).contains(&name.len())
        && name.chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '=' | ',' | '.' | '@' | '-')
        })
}

fn random_string(alphabet: &[u8], len: usize) -> String {
    (0..len)
        .filter_map(|_| alphabet.get(rand::random_range(0..alphabet.len())))
        .map(|byte| char::from(*byte))
        .collect()
}

fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_arns_split_into_account_and_name() {
        assert_eq!(
            role_parts("arn:aws:iam::123456789012:role/deploy"),
            ("123456789012", "deploy")
        );
        assert_eq!(
            role_parts("arn:aws:iam::123456789012:role/path/to/ci"),
            ("123456789012", "ci")
        );
        assert_eq!(role_parts("arn:aws:iam:::user/x"), ("000000000000", "dev"));
        assert_eq!(role_parts("arn:"), ("000000000000", "dev"));
    }

    #[test]
    fn random_strings_use_the_alphabet() {
        let text = random_string(KEY_ALPHABET, 9);
        assert_eq!(text.len(), 9);
        assert!(text.bytes().all(|b| KEY_ALPHABET.contains(&b)));
    }

    #[test]
    fn xml_is_escaped() {
        assert_eq!(xml_escape("a<b>&\"'"), "a&lt;b&gt;&amp;&quot;&apos;");
    }
}
