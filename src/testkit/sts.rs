//! A loopback AWS STS that knows AssumeRole in the Query protocol, as
//! `aws-sdk-sts` sends it (`POST /`, a form body `Action=AssumeRole&Version=…`).
//!
//! It records every request, answers the real XML shape with credentials that
//! are obviously fake (`ASIADEVFAKE…`, `dev-fake-secret-…`,
//! `dev-fake-session-token-…`), and fails on cue: each queued fault answers
//! one call ([`Sts::fail_next`]); a standing fault answers every call until
//! cleared ([`Sts::set_fault`]). It does not verify signatures but wants a
//! SigV4 `Authorization` header, and rejects what STS would (bad RoleArn,
//! RoleSessionName or DurationSeconds). Errors use STS's XML error shape.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use time::OffsetDateTime;
use time::macros::format_description;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::{
    KitError, base_url, bind_loopback, lock, loopback_addr, random_string, spawn_server, xml_escape,
};

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

/// One request as the STS saw it.
#[derive(Clone, Debug, Default)]
pub struct StsRequest {
    /// `Action` parameter.
    pub action: String,
    /// `Version` parameter.
    pub version: String,
    /// `RoleArn`.
    pub role_arn: String,
    /// `RoleSessionName`.
    pub session_name: String,
    /// `DurationSeconds`, when sent and a number.
    pub duration_seconds: Option<u64>,
    /// `Tags.member.N.Key/Value`, in N order.
    pub tags: Vec<(String, String)>,
    /// The raw `Authorization` header, when present.
    pub authorization: Option<String>,
    /// Every parameter (query and form body), by name.
    pub params: BTreeMap<String, String>,
}

impl StsRequest {
    /// The value of tag `key`, if sent.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value.as_str())
    }

    /// The value of parameter `name`, if sent.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }
}

/// Credentials the STS handed out.
#[derive(Clone, Debug)]
pub struct StsIssued {
    /// `ASIADEVFAKE…`, 20 characters.
    pub access_key_id: String,
    /// `dev-fake-secret-…`, with a `+` and a `/`.
    pub secret_access_key: String,
    /// `dev-fake-session-token-…`.
    pub session_token: String,
    /// RFC 3339, whole seconds, `Z`.
    pub expiration: String,
}

/// A failure to serve instead of credentials.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fault {
    /// 400 `Throttling` / `Rate exceeded`.
    Throttling,
    /// 403 `AccessDenied`, message naming the role ARN.
    AccessDenied,
    /// 500 `InternalFailure`.
    InternalFailure,
    /// 503 `ServiceUnavailable`.
    ServiceUnavailable,
    /// 403 `InvalidClientTokenId` (the broker's own key is unknown).
    InvalidClientTokenId,
    /// Never answers.
    Hang,
    /// Waits until [`Sts::release_held`], then answers normally.
    Hold,
    /// Answers 200 announcing the whole success document (`Content-Length`)
    /// but sends only its first half, then nothing more: an answer stalled
    /// mid-body.
    Stall,
    /// Answers 200 with the success document less the named element (e.g.
    /// `Credentials`, `Expiration`, `AccessKeyId`).
    Without(&'static str),
}

struct Inner {
    requests: Mutex<Vec<StsRequest>>,
    issued: Mutex<Vec<StsIssued>>,
    queued: Mutex<VecDeque<Fault>>,
    standing: Mutex<Option<Fault>>,
    answered: AtomicU64,
    faulted: AtomicU64,
    /// Permits for held calls ([`Fault::Hold`]).
    held: tokio::sync::Semaphore,
}

/// The running STS; stops when dropped or shut down.
pub struct Sts {
    url: url::Url,
    inner: Arc<Inner>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for Sts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sts")
            .field("url", &self.url.as_str())
            .finish_non_exhaustive()
    }
}

impl Sts {
    /// Starts on 127.0.0.1:0.
    pub async fn start() -> Result<Self, KitError> {
        Self::start_on(bind_loopback().await?).await
    }

    /// Serves on `listener`, which must be bound to a loopback address.
    pub async fn start_on(listener: TcpListener) -> Result<Self, KitError> {
        let url = url::Url::parse(&base_url(loopback_addr(&listener)?))
            .map_err(|err| KitError::Listener(std::io::Error::other(err)))?;
        let inner = Arc::new(Inner {
            requests: Mutex::default(),
            issued: Mutex::default(),
            queued: Mutex::default(),
            standing: Mutex::default(),
            answered: AtomicU64::new(0),
            faulted: AtomicU64::new(0),
            held: tokio::sync::Semaphore::new(0),
        });
        let router = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&inner));
        let task = spawn_server(listener, router, "test-sts");
        Ok(Self { url, inner, task })
    }

    /// The endpoint, e.g. `http://127.0.0.1:41235/`: `[sts] endpoint_url`.
    pub fn url(&self) -> &url::Url {
        &self.url
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<StsRequest> {
        lock(&self.inner.requests).clone()
    }

    /// Number of requests so far (failed ones included).
    pub fn calls(&self) -> usize {
        lock(&self.inner.requests).len()
    }

    /// AssumeRole calls answered with credentials so far.
    pub fn assume_role_calls(&self) -> u64 {
        self.inner.answered.load(Ordering::Relaxed)
    }

    /// Calls answered with a fault (queued or standing) so far.
    pub fn faulted_calls(&self) -> u64 {
        self.inner.faulted.load(Ordering::Relaxed)
    }

    /// Every set of credentials handed out so far.
    pub fn issued(&self) -> Vec<StsIssued> {
        lock(&self.inner.issued).clone()
    }

    /// Lets `count` held calls ([`Fault::Hold`]) answer.
    pub fn release_held(&self, count: usize) {
        self.inner.held.add_permits(count);
    }

    /// The next `count` calls fail with `fault` (before any standing fault).
    pub fn fail_next(&self, fault: Fault, count: usize) {
        lock(&self.inner.queued).extend(std::iter::repeat_n(fault, count));
    }

    /// Every call fails with `fault` until set to `None`.
    pub fn set_fault(&self, fault: Option<Fault>) {
        *lock(&self.inner.standing) = fault;
    }

    /// Stops the server.
    pub fn shutdown(self) {}
}

impl Drop for Sts {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn parse_request(headers: &HeaderMap, query: Option<&str>, body: &[u8]) -> StsRequest {
    let mut params = BTreeMap::new();
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        params.insert(key.into_owned(), value.into_owned());
    }
    for (key, value) in url::form_urlencoded::parse(body) {
        params.insert(key.into_owned(), value.into_owned());
    }
    let mut tags: BTreeMap<usize, (String, String)> = BTreeMap::new();
    for (key, value) in &params {
        let Some((index, field)) = key
            .strip_prefix("Tags.member.")
            .and_then(|rest| rest.split_once('.'))
        else {
            continue;
        };
        let Ok(index) = index.parse::<usize>() else {
            continue;
        };
        let entry = tags.entry(index).or_default();
        match field {
            "Key" => entry.0.clone_from(value),
            "Value" => entry.1.clone_from(value),
            _ => {}
        }
    }
    let get = |name: &str| params.get(name).cloned().unwrap_or_default();
    StsRequest {
        action: get("Action"),
        version: get("Version"),
        role_arn: get("RoleArn"),
        session_name: get("RoleSessionName"),
        duration_seconds: params
            .get("DurationSeconds")
            .and_then(|value| value.parse().ok()),
        tags: tags.into_values().collect(),
        authorization: headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned),
        params,
    }
}

/// An STS error: HTTP status, `Code` and `Message`.
fn error_xml(status: StatusCode, code: &str, message: &str) -> Response {
    let kind = if status.is_server_error() {
        "Receiver"
    } else {
        "Sender"
    };
    let body = format!(
        "<ErrorResponse xmlns=\"{XMLNS}\"><Error><Type>{kind}</Type><Code>{code}</Code>\
         <Message>{}</Message></Error><RequestId>{}</RequestId></ErrorResponse>",
        xml_escape(message),
        uuid::Uuid::new_v4()
    );
    (status, [(header::CONTENT_TYPE, "text/xml")], body).into_response()
}

fn validation(message: &str) -> Response {
    error_xml(StatusCode::BAD_REQUEST, "ValidationError", message)
}

async fn handle(
    State(inner): State<Arc<Inner>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request = parse_request(&headers, query.as_deref(), &body);
    lock(&inner.requests).push(request.clone());
    let queued = lock(&inner.queued).pop_front();
    let fault = queued.or(*lock(&inner.standing));
    let mut without = None;
    let mut stall = false;
    if let Some(fault) = fault {
        inner.faulted.fetch_add(1, Ordering::Relaxed);
        match fault {
            Fault::Throttling => {
                return error_xml(StatusCode::BAD_REQUEST, "Throttling", "Rate exceeded");
            }
            Fault::AccessDenied => {
                let message = format!(
                    "User: arn:aws:sts::123456789012:assumed-role/broker/x is not authorized to \
                     perform: sts:AssumeRole on resource: {}",
                    request.role_arn
                );
                return error_xml(StatusCode::FORBIDDEN, "AccessDenied", &message);
            }
            Fault::InternalFailure => {
                return error_xml(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalFailure",
                    "The request processing has failed because of an unknown error, exception or failure.",
                );
            }
            Fault::ServiceUnavailable => {
                return error_xml(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ServiceUnavailable",
                    "try later",
                );
            }
            Fault::InvalidClientTokenId => {
                return error_xml(
                    StatusCode::FORBIDDEN,
                    "InvalidClientTokenId",
                    "The security token included in the request is invalid.",
                );
            }
            Fault::Hang => return std::future::pending::<Response>().await,
            Fault::Hold => {
                if let Ok(permit) = inner.held.acquire().await {
                    permit.forget();
                }
            }
            Fault::Without(element) => without = Some(element),
            Fault::Stall => stall = true,
        }
    }
    if request.action != "AssumeRole" {
        let action = if request.action.is_empty() {
            "(none)"
        } else {
            &request.action
        };
        return error_xml(
            StatusCode::BAD_REQUEST,
            "InvalidAction",
            &format!("Could not find operation {action} for version 2011-06-15"),
        );
    }
    match assume_role(&request) {
        Ok((_, xml)) if stall => stalled_answer(xml),
        Ok((issued, mut xml)) => {
            if let Some(element) = without {
                xml = remove_element(&xml, element);
            } else {
                inner.answered.fetch_add(1, Ordering::Relaxed);
                lock(&inner.issued).push(issued);
            }
            ([(header::CONTENT_TYPE, "text/xml")], xml).into_response()
        }
        Err(response) => *response,
    }
}

/// 200 with the `Content-Length` of all of `xml`, of which only the first
/// half is ever sent.
fn stalled_answer(xml: String) -> Response {
    let length = xml.len();
    let mut head = xml.into_bytes();
    head.truncate(length / 2);
    let body = StalledBody {
        head: Some(Bytes::from(head)),
    };
    (
        [
            (header::CONTENT_TYPE, "text/xml".to_owned()),
            (header::CONTENT_LENGTH, length.to_string()),
        ],
        axum::body::Body::new(body),
    )
        .into_response()
}

/// A body that yields its head once and then never another frame.
struct StalledBody {
    head: Option<Bytes>,
}

impl axum::body::HttpBody for StalledBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        match self.head.take() {
            Some(head) => std::task::Poll::Ready(Some(Ok(http_body::Frame::data(head)))),
            // Never woken: the client's deadline is what ends it.
            None => std::task::Poll::Pending,
        }
    }
}

fn assume_role(request: &StsRequest) -> Result<(StsIssued, String), Box<Response>> {
    let signed = request
        .authorization
        .as_deref()
        .is_some_and(|value| value.starts_with("AWS4-HMAC-SHA256 "));
    if !signed {
        return Err(Box::new(error_xml(
            StatusCode::FORBIDDEN,
            "MissingAuthenticationToken",
            "Request is missing Authentication Token",
        )));
    }
    if !request.role_arn.starts_with("arn:") {
        return Err(Box::new(validation("RoleArn must be an ARN")));
    }
    if !is_session_name(&request.session_name) {
        return Err(Box::new(validation(
            "RoleSessionName must be 2-64 characters of [\\w+=,.@-]",
        )));
    }
    let duration = match request.param("DurationSeconds") {
        None => DEFAULT_DURATION_SECONDS,
        Some(text) => text
            .parse::<i64>()
            .ok()
            .filter(|seconds| DURATION_RANGE.contains(seconds))
            .ok_or_else(|| Box::new(validation("DurationSeconds must be between 900 and 43200")))?,
    };
    let expiration = (OffsetDateTime::now_utc() + time::Duration::seconds(duration))
        .format(format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
        ))
        .map_err(|err| {
            Box::new(error_xml(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalFailure",
                &err.to_string(),
            ))
        })?;
    let (account, role_name) = role_parts(&request.role_arn);
    let issued = StsIssued {
        access_key_id: format!(
            "{FAKE_ACCESS_KEY_PREFIX}{}",
            random_string(KEY_ALPHABET, ACCESS_KEY_LEN - FAKE_ACCESS_KEY_PREFIX.len())
        ),
        // `+` and `/` as in real secrets (base64), so that encoding bugs show.
        secret_access_key: format!(
            "{FAKE_SECRET_PREFIX}{}+{}/{}",
            random_string(TOKEN_ALPHABET, 8),
            random_string(TOKEN_ALPHABET, 8),
            random_string(TOKEN_ALPHABET, 6)
        ),
        session_token: format!(
            "{FAKE_SESSION_TOKEN_PREFIX}{}",
            random_string(TOKEN_ALPHABET, 64)
        ),
        expiration,
    };
    let xml = format!(
        "<AssumeRoleResponse xmlns=\"{XMLNS}\">\
<AssumeRoleResult>\
<AssumedRoleUser>\
<AssumedRoleId>AROADEVFAKE{role_id}:{session}</AssumedRoleId>\
<Arn>arn:aws:sts::{account}:assumed-role/{role}/{session}</Arn>\
</AssumedRoleUser>\
<Credentials>\
<AccessKeyId>{akid}</AccessKeyId>\
<SecretAccessKey>{secret}</SecretAccessKey>\
<SessionToken>{token}</SessionToken>\
<Expiration>{expiration}</Expiration>\
</Credentials>\
<PackedPolicySize>6</PackedPolicySize>\
</AssumeRoleResult>\
<ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata>\
</AssumeRoleResponse>",
        role_id = random_string(KEY_ALPHABET, 10),
        session = xml_escape(&request.session_name),
        account = xml_escape(account),
        role = xml_escape(role_name),
        akid = issued.access_key_id,
        secret = issued.secret_access_key,
        token = issued.session_token,
        expiration = issued.expiration,
        request_id = uuid::Uuid::new_v4(),
    );
    Ok((issued, xml))
}

/// `xml` without the first `<element>…</element>`.
fn remove_element(xml: &str, element: &str) -> String {
    let open = format!("<{element}>");
    let close = format!("</{element}>");
    match (xml.find(&open), xml.find(&close)) {
        (Some(start), Some(end)) if end >= start => {
            let tail = xml.get(end + close.len()..).unwrap_or_default();
            format!("{}{tail}", xml.get(..start).unwrap_or_default())
        }
        _ => xml.to_owned(),
    }
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
    fn an_element_is_removed_whole() {
        assert_eq!(
            remove_element("<a><b>x</b><c>y</c></a>", "b"),
            "<a><c>y</c></a>"
        );
        assert_eq!(remove_element("<a></a>", "b"), "<a></a>");
    }
}
