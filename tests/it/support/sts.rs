//! A loopback AWS STS speaking the Query protocol for AssumeRole: records every
//! request, answers the real XML shape, and fails on cue.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rand::Rng as _;
use rand::distr::Alphanumeric;
use tokio::task::JoinHandle;

/// One AssumeRole call as the stub saw it.
#[derive(Clone, Debug)]
pub struct StsRequest {
    /// `Action` parameter.
    pub action: String,
    /// `Version` parameter.
    pub version: String,
    /// `RoleArn`.
    pub role_arn: String,
    /// `RoleSessionName`.
    pub session_name: String,
    /// `DurationSeconds`, when sent.
    pub duration_seconds: Option<u64>,
    /// `Tags.member.N.Key/Value`, in N order.
    pub tags: Vec<(String, String)>,
    /// The raw `Authorization` header, when present.
    pub authorization: Option<String>,
}

impl StsRequest {
    /// The value of tag `key`, if sent.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value.as_str())
    }
}

/// Credentials the stub handed out.
#[derive(Clone, Debug)]
pub struct StsIssued {
    /// `ASIA…`.
    pub access_key_id: String,
    /// The secret access key (recognisable: `STUBSECRET…`).
    pub secret_access_key: String,
    /// The session token (recognisable: `STUBSESSIONTOKEN…`).
    pub session_token: String,
    /// RFC 3339, `Z`.
    pub expiration: String,
}

/// A failure to serve instead of credentials.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// 400 `Throttling` / `Rate exceeded`.
    Throttling,
    /// 403 `AccessDenied`, message naming the role ARN.
    AccessDenied,
    /// 500 `InternalFailure`.
    InternalFailure,
    /// Never answers.
    Hang,
    /// Waits until [`StsServer::release_held`], then answers normally.
    Hold,
}

struct Inner {
    requests: Mutex<Vec<StsRequest>>,
    issued: Mutex<Vec<StsIssued>>,
    faults: Mutex<VecDeque<Fault>>,
    /// Permits for held calls ([`Fault::Hold`]).
    held: tokio::sync::Semaphore,
}

impl Default for Inner {
    fn default() -> Self {
        Self {
            requests: Mutex::default(),
            issued: Mutex::default(),
            faults: Mutex::default(),
            held: tokio::sync::Semaphore::new(0),
        }
    }
}

/// The running stub; stops when dropped.
pub struct StsServer {
    url: String,
    inner: Arc<Inner>,
    task: JoinHandle<()>,
}

impl StsServer {
    /// Starts on 127.0.0.1:0.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let inner = Arc::new(Inner::default());
        let app = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&inner));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, inner, task }
    }

    /// `http://127.0.0.1:PORT`, for `sts.endpoint_url`.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<StsRequest> {
        self.inner.requests.lock().unwrap().clone()
    }

    /// Number of requests so far (failed ones included).
    pub fn calls(&self) -> usize {
        self.inner.requests.lock().unwrap().len()
    }

    /// Every set of credentials handed out so far.
    pub fn issued(&self) -> Vec<StsIssued> {
        self.inner.issued.lock().unwrap().clone()
    }

    /// Lets `count` held calls ([`Fault::Hold`]) answer.
    pub fn release_held(&self, count: usize) {
        self.inner.held.add_permits(count);
    }

    /// The next `count` calls fail with `fault`.
    pub fn fail_next(&self, fault: Fault, count: usize) {
        let mut faults = self.inner.faults.lock().unwrap();
        faults.extend(std::iter::repeat_n(fault, count));
    }
}

impl Drop for StsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn random_text(len: usize) -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

fn random_upper(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

fn request_id() -> String {
    super::tokens::random_uuid()
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
        let Some(rest) = key.strip_prefix("Tags.member.") else {
            continue;
        };
        let Some((index, field)) = rest.split_once('.') else {
            continue;
        };
        let Ok(index) = index.parse::<usize>() else {
            continue;
        };
        let entry = tags.entry(index).or_default();
        match field {
            "Key" => entry.0 = value.clone(),
            "Value" => entry.1 = value.clone(),
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
    }
}

fn xml(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "text/xml")], body).into_response()
}

fn error_xml(status: StatusCode, kind: &str, code: &str, message: &str) -> Response {
    xml(
        status,
        format!(
            "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error><Type>{kind}</Type><Code>{code}</Code><Message>{}</Message></Error><RequestId>{}</RequestId></ErrorResponse>",
            xml_escape(message),
            request_id()
        ),
    )
}

async fn handle(
    State(inner): State<Arc<Inner>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request = parse_request(&headers, query.as_deref(), &body);
    inner.requests.lock().unwrap().push(request.clone());
    let fault = inner.faults.lock().unwrap().pop_front();
    match fault {
        Some(Fault::Throttling) => {
            return error_xml(
                StatusCode::BAD_REQUEST,
                "Sender",
                "Throttling",
                "Rate exceeded",
            );
        }
        Some(Fault::AccessDenied) => {
            let message = format!(
                "User: arn:aws:iam::123456789012:user/broker is not authorized to perform: sts:AssumeRole on resource: {}",
                request.role_arn
            );
            return error_xml(StatusCode::FORBIDDEN, "Sender", "AccessDenied", &message);
        }
        Some(Fault::InternalFailure) => {
            return error_xml(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Receiver",
                "InternalFailure",
                "The request processing has failed because of an unknown error, exception or failure.",
            );
        }
        Some(Fault::Hang) => return std::future::pending::<Response>().await,
        Some(Fault::Hold) => inner.held.acquire().await.unwrap().forget(),
        None => {}
    }
    if request.action != "AssumeRole" {
        return error_xml(
            StatusCode::BAD_REQUEST,
            "Sender",
            "InvalidAction",
            "Could not find operation",
        );
    }
    let (account, role_name) = match request.role_arn.split_once(":role/") {
        Some((prefix, name)) => (
            prefix.rsplit(':').next().unwrap_or_default().to_owned(),
            name.to_owned(),
        ),
        None => {
            return error_xml(
                StatusCode::BAD_REQUEST,
                "Sender",
                "ValidationError",
                "RoleArn is not a role ARN",
            );
        }
    };
    let duration = request.duration_seconds.unwrap_or(3600);
    let expiration = (time::OffsetDateTime::now_utc()
        + time::Duration::seconds(i64::try_from(duration).unwrap()))
    .replace_nanosecond(0)
    .unwrap()
    .format(&time::format_description::well_known::Rfc3339)
    .unwrap();
    let issued = StsIssued {
        access_key_id: format!("ASIA{}", random_upper(16)),
        secret_access_key: format!("STUBSECRET{}", random_text(30)),
        session_token: format!("STUBSESSIONTOKEN{}", random_text(200)),
        expiration,
    };
    inner.issued.lock().unwrap().push(issued.clone());
    let session = xml_escape(&request.session_name);
    let body = format!(
        "<AssumeRoleResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n  <AssumeRoleResult>\n    <AssumedRoleUser>\n      <AssumedRoleId>AROA{id}:{session}</AssumedRoleId>\n      <Arn>arn:aws:sts::{account}:assumed-role/{role}/{session}</Arn>\n    </AssumedRoleUser>\n    <Credentials>\n      <AccessKeyId>{akid}</AccessKeyId>\n      <SecretAccessKey>{secret}</SecretAccessKey>\n      <SessionToken>{token}</SessionToken>\n      <Expiration>{expiration}</Expiration>\n    </Credentials>\n    <PackedPolicySize>6</PackedPolicySize>\n  </AssumeRoleResult>\n  <ResponseMetadata>\n    <RequestId>{request_id}</RequestId>\n  </ResponseMetadata>\n</AssumeRoleResponse>\n",
        id = random_upper(17),
        account = xml_escape(&account),
        role = xml_escape(&role_name),
        akid = issued.access_key_id,
        secret = issued.secret_access_key,
        token = issued.session_token,
        expiration = issued.expiration,
        request_id = request_id(),
    );
    xml(StatusCode::OK, body)
}
