//! A loopback OIDC issuer: discovery document and JWKS, switchable at run time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

/// How one endpoint answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The real document.
    Normal,
    /// 500 with a short text body.
    Fail500,
    /// Accepts the request and never answers.
    Hang,
    /// 200 with a valid document padded past 1 MiB.
    Huge,
    /// 200 with a body that is not JSON.
    Malformed,
    /// 302 to a twin path that would serve the real document.
    Redirect,
}

struct Inner {
    base_url: String,
    issuer: Mutex<String>,
    keys: Mutex<Vec<Value>>,
    discovery_document: Mutex<Option<Value>>,
    discovery_mode: Mutex<Mode>,
    jwks_mode: Mutex<Mode>,
    hits: Mutex<HashMap<String, usize>>,
}

/// The running server; stops when dropped.
pub struct JwksServer {
    inner: Arc<Inner>,
    task: JoinHandle<()>,
}

/// Path of the discovery document.
pub const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";
/// Path of the key set.
pub const JWKS_PATH: &str = "/jwks";
/// Where [`Mode::Redirect`] sends the JWKS request.
pub const REDIRECTED_JWKS_PATH: &str = "/redirected/jwks";
/// Where [`Mode::Redirect`] sends the discovery request.
pub const REDIRECTED_DISCOVERY_PATH: &str = "/redirected/openid-configuration";

impl JwksServer {
    /// Starts on 127.0.0.1:0 serving `keys`; the issuer is the server's own base URL.
    pub async fn start(keys: Vec<Value>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        let inner = Arc::new(Inner {
            issuer: Mutex::new(base_url.clone()),
            base_url,
            keys: Mutex::new(keys),
            discovery_document: Mutex::new(None),
            discovery_mode: Mutex::new(Mode::Normal),
            jwks_mode: Mutex::new(Mode::Normal),
            hits: Mutex::new(HashMap::new()),
        });
        let app = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&inner));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { inner, task }
    }

    /// The `issuer` the discovery document announces (default: the base URL).
    pub fn issuer(&self) -> String {
        self.inner.issuer.lock().unwrap().clone()
    }

    /// Announces another issuer string in the discovery document.
    pub fn set_issuer(&self, issuer: &str) {
        *self.inner.issuer.lock().unwrap() = issuer.to_owned();
    }

    /// The discovery document as served by default: `issuer` as announced,
    /// `jwks_uri` = [`JwksServer::jwks_url`]. Edit it and pass it to
    /// [`JwksServer::set_discovery_document`].
    pub fn default_discovery_document(&self) -> Value {
        default_discovery(&self.inner)
    }

    /// Serves `document` as the discovery document from now on (`None`: the
    /// default one again).
    pub fn set_discovery_document(&self, document: Option<Value>) {
        *self.inner.discovery_document.lock().unwrap() = document;
    }

    /// `<base>/jwks`.
    pub fn jwks_url(&self) -> String {
        format!("{}{JWKS_PATH}", self.inner.base_url)
    }

    /// Replaces the published keys (rotation).
    pub fn set_keys(&self, keys: Vec<Value>) {
        *self.inner.keys.lock().unwrap() = keys;
    }

    /// Sets how `/jwks` answers.
    pub fn set_jwks_mode(&self, mode: Mode) {
        *self.inner.jwks_mode.lock().unwrap() = mode;
    }

    /// Sets how the discovery document answers.
    pub fn set_discovery_mode(&self, mode: Mode) {
        *self.inner.discovery_mode.lock().unwrap() = mode;
    }

    /// Requests seen on `path` so far.
    pub fn hits(&self, path: &str) -> usize {
        self.inner
            .hits
            .lock()
            .unwrap()
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    /// Requests seen on any path.
    pub fn total_hits(&self) -> usize {
        self.inner.hits.lock().unwrap().values().sum()
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(State(inner): State<Arc<Inner>>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    *inner.hits.lock().unwrap().entry(path.clone()).or_default() += 1;
    let (document, mode, redirect_to) = match path.as_str() {
        DISCOVERY_PATH => (
            discovery(&inner),
            inner.discovery_mode.lock().unwrap().clone(),
            REDIRECTED_DISCOVERY_PATH,
        ),
        JWKS_PATH => (
            jwks(&inner),
            inner.jwks_mode.lock().unwrap().clone(),
            REDIRECTED_JWKS_PATH,
        ),
        REDIRECTED_DISCOVERY_PATH => (discovery(&inner), Mode::Normal, ""),
        REDIRECTED_JWKS_PATH => (jwks(&inner), Mode::Normal, ""),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    match mode {
        Mode::Normal => json_response(document.to_string()),
        Mode::Fail500 => (StatusCode::INTERNAL_SERVER_ERROR, "upstream exploded").into_response(),
        Mode::Hang => std::future::pending::<Response>().await,
        Mode::Huge => {
            let mut padded = document;
            padded["padding"] = Value::String("A".repeat(3 * 1024 * 1024 / 2));
            json_response(padded.to_string())
        }
        Mode::Malformed => json_response("{\"keys\": [ {\"kty\": \"RSA\", ".to_owned()),
        Mode::Redirect => (
            StatusCode::FOUND,
            [(header::LOCATION, format!("{}{redirect_to}", inner.base_url))],
        )
            .into_response(),
    }
}

fn json_response(body: String) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn discovery(inner: &Inner) -> Value {
    match &*inner.discovery_document.lock().unwrap() {
        Some(document) => document.clone(),
        None => default_discovery(inner),
    }
}

fn default_discovery(inner: &Inner) -> Value {
    json!({
        "issuer": *inner.issuer.lock().unwrap(),
        "jwks_uri": format!("{}{JWKS_PATH}", inner.base_url),
        "subject_types_supported": ["public", "pairwise"],
        "response_types_supported": ["id_token"],
        "claims_supported": ["sub", "aud", "exp", "iat", "iss", "jti", "nbf", "ref", "sha", "repository",
            "repository_id", "repository_owner", "repository_owner_id", "run_id", "run_number", "run_attempt",
            "actor", "actor_id", "workflow", "event_name", "ref_type", "job_workflow_ref", "runner_environment"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid"],
    })
}

fn jwks(inner: &Inner) -> Value {
    json!({ "keys": *inner.keys.lock().unwrap() })
}
