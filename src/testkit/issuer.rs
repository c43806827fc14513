//! A loopback OIDC issuer: discovery document and JWKS, switchable while it
//! runs (keys, announced issuer, discovery document, failure mode per
//! endpoint), counting requests per path.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::{KitError, base_url, bind_loopback, lock, loopback_addr, spawn_server};

/// Path of the discovery document.
pub const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";
/// Path of the key set (GitHub's own).
pub const JWKS_PATH: &str = "/.well-known/jwks";
/// Where [`Mode::Redirect`] sends the JWKS request.
pub const REDIRECTED_JWKS_PATH: &str = "/redirected/jwks";
/// Where [`Mode::Redirect`] sends the discovery request.
pub const REDIRECTED_DISCOVERY_PATH: &str = "/redirected/openid-configuration";

/// How one endpoint answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Mode {
    /// The real document.
    Normal,
    /// 500 with a short text body.
    Fail500,
    /// Accepts the request and never answers.
    Hang,
    /// 200 with a valid document padded past 1 MiB.
    Huge,
    /// 200 with a body that is not JSON (truncated).
    Malformed,
    /// 200 with a key set whose only key is unusable (empty exponent,
    /// `use: enc`) under the first published key's kid.
    NoUsableKey,
    /// 302 to a twin path that serves the real document.
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
    faulted: AtomicU64,
}

/// The running issuer; stops when dropped or shut down.
pub struct Issuer {
    inner: Arc<Inner>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("base_url", &self.inner.base_url)
            .finish_non_exhaustive()
    }
}

impl Issuer {
    /// Starts on 127.0.0.1:0 serving `keys`; the issuer is the server's own
    /// base URL.
    pub async fn start(keys: Vec<Value>) -> Result<Self, KitError> {
        Self::start_on(bind_loopback().await?, keys, Router::new()).await
    }

    /// Serves on `listener` (loopback only) with `extra` routes beside the
    /// discovery document and the key set (e.g. a token endpoint).
    pub async fn start_on(
        listener: TcpListener,
        keys: Vec<Value>,
        extra: Router,
    ) -> Result<Self, KitError> {
        let base_url = base_url(loopback_addr(&listener)?);
        let inner = Arc::new(Inner {
            issuer: Mutex::new(base_url.clone()),
            base_url,
            keys: Mutex::new(keys),
            discovery_document: Mutex::new(None),
            discovery_mode: Mutex::new(Mode::Normal),
            jwks_mode: Mutex::new(Mode::Normal),
            hits: Mutex::new(HashMap::new()),
            faulted: AtomicU64::new(0),
        });
        let own = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&inner));
        let task = spawn_server(listener, extra.merge(own), "test-issuer");
        Ok(Self { inner, task })
    }

    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub fn base_url(&self) -> &str {
        &self.inner.base_url
    }

    /// The `issuer` the discovery document announces (default: the base URL).
    pub fn issuer(&self) -> String {
        lock(&self.inner.issuer).clone()
    }

    /// Announces another issuer string in the discovery document.
    pub fn set_issuer(&self, issuer: &str) {
        *lock(&self.inner.issuer) = issuer.to_owned();
    }

    /// The discovery document as served by default: `issuer` as announced,
    /// `jwks_uri` = [`Issuer::jwks_url`]. Edit it and pass it to
    /// [`Issuer::set_discovery_document`].
    pub fn default_discovery_document(&self) -> Value {
        default_discovery(&self.inner)
    }

    /// Serves `document` as the discovery document from now on (`None`: the
    /// default one again).
    pub fn set_discovery_document(&self, document: Option<Value>) {
        *lock(&self.inner.discovery_document) = document;
    }

    /// `<base>/.well-known/jwks`.
    pub fn jwks_url(&self) -> String {
        format!("{}{JWKS_PATH}", self.inner.base_url)
    }

    /// The key set as served in [`Mode::Normal`].
    pub fn jwks(&self) -> Value {
        jwks(&self.inner)
    }

    /// Replaces the published keys (rotation).
    pub fn set_keys(&self, keys: Vec<Value>) {
        *lock(&self.inner.keys) = keys;
    }

    /// Sets how the key set answers.
    pub fn set_jwks_mode(&self, mode: Mode) {
        *lock(&self.inner.jwks_mode) = mode;
    }

    /// Sets how the discovery document answers.
    pub fn set_discovery_mode(&self, mode: Mode) {
        *lock(&self.inner.discovery_mode) = mode;
    }

    /// Sets how both endpoints answer.
    pub fn set_mode(&self, mode: Mode) {
        self.set_jwks_mode(mode);
        self.set_discovery_mode(mode);
    }

    /// Requests seen on `path` so far.
    pub fn hits(&self, path: &str) -> usize {
        lock(&self.inner.hits).get(path).copied().unwrap_or(0)
    }

    /// Requests seen on any path.
    pub fn total_hits(&self) -> usize {
        lock(&self.inner.hits).values().sum()
    }

    /// Requests answered with a failure mode (anything but [`Mode::Normal`]).
    pub fn faulted_hits(&self) -> u64 {
        self.inner.faulted.load(Ordering::Relaxed)
    }

    /// Stops the server.
    pub fn shutdown(self) {}
}

impl Drop for Issuer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(State(inner): State<Arc<Inner>>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    *lock(&inner.hits).entry(path.clone()).or_default() += 1;
    let (document, mode, redirect_to) = match path.as_str() {
        DISCOVERY_PATH => (
            discovery(&inner),
            *lock(&inner.discovery_mode),
            REDIRECTED_DISCOVERY_PATH,
        ),
        JWKS_PATH => (jwks(&inner), *lock(&inner.jwks_mode), REDIRECTED_JWKS_PATH),
        REDIRECTED_DISCOVERY_PATH => (discovery(&inner), Mode::Normal, ""),
        REDIRECTED_JWKS_PATH => (jwks(&inner), Mode::Normal, ""),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    if mode != Mode::Normal {
        inner.faulted.fetch_add(1, Ordering::Relaxed);
    }
    match mode {
        Mode::Normal => json_response(document.to_string()),
        Mode::Fail500 => (StatusCode::INTERNAL_SERVER_ERROR, "upstream exploded").into_response(),
        Mode::Hang => std::future::pending::<Response>().await,
        Mode::Huge => {
            let mut padded = document;
            if let Some(object) = padded.as_object_mut() {
                object.insert(
                    "padding".into(),
                    Value::String("A".repeat(3 * 1024 * 1024 / 2)),
                );
            }
            json_response(padded.to_string())
        }
        Mode::Malformed => json_response("{\"keys\": [ {\"kty\": \"RSA\", ".to_owned()),
        Mode::NoUsableKey => {
            let kid = lock(&inner.keys)
                .first()
                .and_then(|key| key.get("kid"))
                .cloned()
                .unwrap_or_else(|| json!("none"));
            json_response(
                json!({"keys": [{"kty": "RSA", "kid": kid, "n": "AQAB", "e": "", "use": "enc"}]})
                    .to_string(),
            )
        }
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
    match &*lock(&inner.discovery_document) {
        Some(document) => document.clone(),
        None => default_discovery(inner),
    }
}

fn default_discovery(inner: &Inner) -> Value {
    json!({
        "issuer": *lock(&inner.issuer),
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
    json!({ "keys": *lock(&inner.keys) })
}
