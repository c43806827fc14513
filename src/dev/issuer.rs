//! `DevIssuer`: a local stand-in for GitHub's Actions token service.
//!
//! It makes its own RSA 2048 key at start and serves, on a loopback listener:
//! `GET /.well-known/openid-configuration` (issuer and `jwks_uri`),
//! `GET /.well-known/jwks` (the public key as a JWK) and
//! `GET /token?repository=owner/name[&ref=…&event_name=…&audience=…&environment=…&sha=…&check_run_id=…]`,
//! which answers `{"value": "<jwt>"}` with a GitHub-shaped ID token, and
//! `GET /actions/id-token?…` (the same query, plus `api-version`), which does
//! the same only for `Authorization: Bearer <request token>`, the way the
//! Actions runtime's `ACTIONS_ID_TOKEN_REQUEST_URL` and
//! `ACTIONS_ID_TOKEN_REQUEST_TOKEN` work, so the real `fetch` client can run
//! against it. The request token is random per start. Nobody but the local
//! user should trust that key.
//!
//! Tokens are signed here with aws-lc-rs directly rather than through
//! `jsonwebtoken::EncodingKey`: aws-lc-rs exports a generated RSA key only as
//! PKCS#8, `EncodingKey::from_rsa_der` wants PKCS#1, and PEM import is off in our
//! build. An RS256 JWS is three base64url parts and one PKCS#1 v1.5 SHA-256
//! signature, so signing it directly avoids hand-written ASN.1 surgery; the tests
//! check the result with `jsonwebtoken` and the JWKS.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_SHA256};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::token_request::{CheckedRequest, TokenRequest, dev_owner_id, dev_repository_id};
use super::{DevError, base_url, loopback_addr, spawn_server};

/// Lifetime of a minted token, seconds (GitHub's are about 5 minutes too).
const TOKEN_LIFETIME_SECONDS: u64 = 300;
/// Workflow file named in `workflow_ref` and `job_workflow_ref`.
const WORKFLOW_PATH: &str = ".github/workflows/dev.yml";
/// `actor` claim of every dev token.
pub const DEV_ACTOR: &str = "dev-user";
/// Path of the Actions-style ID-token endpoint.
pub const ACTIONS_TOKEN_PATH: &str = "/actions/id-token";

/// The development issuer: its key, key id, issuer URL and default audience.
pub struct DevIssuer {
    key: KeyPair,
    kid: String,
    jwk: Value,
    issuer: String,
    default_audience: String,
    /// The bearer the Actions-style endpoint wants (ACTIONS_ID_TOKEN_REQUEST_TOKEN).
    request_token: String,
}

impl std::fmt::Debug for DevIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevIssuer")
            .field("issuer", &self.issuer)
            .field("kid", &self.kid)
            .field("default_audience", &self.default_audience)
            .finish_non_exhaustive()
    }
}

/// A running [`DevIssuer`]. Dropping it leaves the server running; call
/// [`DevIssuerHandle::shutdown`] to stop it.
#[derive(Debug)]
pub struct DevIssuerHandle {
    issuer: Arc<DevIssuer>,
    task: JoinHandle<()>,
}

impl DevIssuer {
    /// Generates a key and serves the issuer on `listener`, which must be bound to
    /// a loopback address. The issuer URL is `http://<listener address>`; tokens
    /// are minted for `default_audience` unless a request names another.
    pub async fn start(
        listener: TcpListener,
        default_audience: String,
    ) -> Result<DevIssuerHandle, DevError> {
        let addr = loopback_addr(&listener)?;
        // Generating an RSA key takes a noticeable moment: keep it off the reactor.
        let key = tokio::task::spawn_blocking(|| KeyPair::generate(KeySize::Rsa2048))
            .await
            .map_err(|_| DevError::KeyGeneration)?
            .map_err(|_| DevError::KeyGeneration)?;
        let issuer = Arc::new(Self::with_key(key, base_url(addr), default_audience));
        let router = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/.well-known/jwks", get(jwks))
            .route("/token", get(token))
            .route(ACTIONS_TOKEN_PATH, get(actions_token))
            .with_state(issuer.clone());
        let task = spawn_server(listener, router, "dev-issuer");
        Ok(DevIssuerHandle { issuer, task })
    }

    fn with_key(key: KeyPair, issuer: String, default_audience: String) -> Self {
        let public = key.public_key();
        let n = public.modulus().big_endian_without_leading_zero().to_vec();
        let e = public.exponent().big_endian_without_leading_zero().to_vec();
        let kid = format!("dev-{}", hex_prefix(&Sha256::digest(&n)));
        let jwk = json!({
            "kty": "RSA",
            "use": "sig",
            "alg": "RS256",
            "kid": kid,
            "n": URL_SAFE_NO_PAD.encode(&n),
            "e": URL_SAFE_NO_PAD.encode(&e),
        });
        Self {
            key,
            kid,
            jwk,
            issuer,
            default_audience,
            request_token: format!("dev-request-token-{}", random_hex(16)),
        }
    }

    /// The bearer token the Actions-style endpoint accepts: what
    /// `ACTIONS_ID_TOKEN_REQUEST_TOKEN` is on a runner.
    pub fn request_token(&self) -> &str {
        &self.request_token
    }

    /// The issuer URL, exactly as in the `iss` claim (no trailing slash).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Key id of the signing key, as in every token header and the JWKS.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Audience used when a request names none.
    pub fn default_audience(&self) -> &str {
        &self.default_audience
    }

    /// The JWKS document: `{"keys": [<the public key>]}`.
    pub fn jwks(&self) -> Value {
        json!({ "keys": [self.jwk] })
    }

    /// Mints a GitHub-shaped ID token for `request`, valid for 5 minutes.
    pub fn mint(&self, request: &TokenRequest) -> Result<String, DevError> {
        let claims = self.claims(request, SystemTime::now())?;
        self.sign(&claims)
    }

    fn claims(&self, request: &TokenRequest, now: SystemTime) -> Result<Value, DevError> {
        let CheckedRequest {
            repository,
            owner,
            git_ref,
            event_name,
            audience,
            environment,
            sha,
            check_run_id,
        } = request.check()?;
        let audience = audience.unwrap_or(&self.default_audience);

        let now = now
            .duration_since(UNIX_EPOCH)
            .map_err(|_| DevError::Signing)?
            .as_secs();
        let sha = sha.map_or_else(|| random_hex(20), str::to_owned);
        let workflow_ref = format!("{repository}/{WORKFLOW_PATH}@{git_ref}");
        // GitHub's default `sub` names the environment when the job has one.
        let sub = match (environment, event_name) {
            (Some(environment), _) => format!("repo:{repository}:environment:{environment}"),
            (None, "pull_request") => format!("repo:{repository}:pull_request"),
            (None, _) => format!("repo:{repository}:ref:{git_ref}"),
        };
        let ref_type = if git_ref.starts_with("refs/tags/") {
            "tag"
        } else {
            "branch"
        };

        let mut claims = Map::new();
        let mut put = |name: &str, value: Value| {
            claims.insert(name.to_owned(), value);
        };
        put("iss", json!(self.issuer));
        put("aud", json!(audience));
        put("sub", json!(sub));
        put("jti", json!(uuid::Uuid::new_v4().to_string()));
        put("iat", json!(now));
        put("nbf", json!(now));
        put("exp", json!(now.saturating_add(TOKEN_LIFETIME_SECONDS)));
        put("ref", json!(git_ref));
        put("ref_type", json!(ref_type));
        put("ref_protected", json!("true"));
        put("sha", json!(sha));
        put("repository", json!(repository));
        put("repository_owner", json!(owner));
        put("repository_id", json!(dev_repository_id(repository)));
        put("repository_owner_id", json!(dev_owner_id(owner)));
        put("repository_visibility", json!("private"));
        put(
            "run_id",
            json!(random_digits(1_000_000_000, 10_000_000_000)),
        );
        put("run_number", json!(random_digits(1, 1000)));
        put("run_attempt", json!("1"));
        put(
            "check_run_id",
            json!(check_run_id.map_or_else(
                || random_digits(10_000_000_000, 100_000_000_000),
                str::to_owned
            )),
        );
        put("actor", json!(DEV_ACTOR));
        put("actor_id", json!("1000001"));
        put("event_name", json!(event_name));
        put("head_ref", json!(""));
        put("base_ref", json!(""));
        put("workflow", json!("dev"));
        put("workflow_ref", json!(workflow_ref));
        put("workflow_sha", json!(sha));
        put("job_workflow_ref", json!(workflow_ref));
        put("job_workflow_sha", json!(sha));
        put("runner_environment", json!("github-hosted"));
        if let Some(environment) = environment {
            put("environment", json!(environment));
        }
        Ok(Value::Object(claims))
    }

    /// Builds the compact JWS: `b64(header).b64(claims).b64(RS256 signature)`.
    fn sign(&self, claims: &Value) -> Result<String, DevError> {
        let header = json!({ "alg": "RS256", "typ": "JWT", "kid": self.kid });
        let header = serde_json::to_vec(&header).map_err(|_| DevError::Signing)?;
        let claims = serde_json::to_vec(claims).map_err(|_| DevError::Signing)?;
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims)
        );
        let mut signature = vec![0; self.key.public_modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                signing_input.as_bytes(),
                &mut signature,
            )
            .map_err(|_| DevError::Signing)?;
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature)
        ))
    }
}

impl DevIssuerHandle {
    /// The issuer: key, URL and minting without HTTP.
    pub fn issuer(&self) -> &DevIssuer {
        &self.issuer
    }

    /// The issuer URL (`iss`), e.g. `http://127.0.0.1:41234`; put it in `[[issuers]]`.
    pub fn issuer_url(&self) -> &str {
        self.issuer.issuer()
    }

    /// `<issuer>/.well-known/jwks`.
    pub fn jwks_url(&self) -> String {
        format!("{}/.well-known/jwks", self.issuer.issuer())
    }

    /// `<issuer>/token`: the minting endpoint (add `?repository=owner/name`).
    pub fn token_url(&self) -> String {
        format!("{}/token", self.issuer.issuer())
    }

    /// `<issuer>/actions/id-token`: the Actions-style endpoint (add the
    /// query; `fetch` appends `&audience=…`).
    pub fn actions_token_url(&self) -> String {
        format!("{}{ACTIONS_TOKEN_PATH}", self.issuer.issuer())
    }

    /// Mints a token without going through HTTP.
    pub fn mint(&self, request: &TokenRequest) -> Result<String, DevError> {
        self.issuer.mint(request)
    }

    /// Stops the server.
    pub fn shutdown(self) {
        self.task.abort();
    }
}

async fn discovery(State(issuer): State<Arc<DevIssuer>>) -> Json<Value> {
    Json(json!({
        "issuer": issuer.issuer,
        "jwks_uri": format!("{}/.well-known/jwks", issuer.issuer),
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid"],
    }))
}

async fn jwks(State(issuer): State<Arc<DevIssuer>>) -> Json<Value> {
    Json(issuer.jwks())
}

async fn token(
    State(issuer): State<Arc<DevIssuer>>,
    query: Result<Query<TokenRequest>, QueryRejection>,
) -> Response {
    let Ok(Query(request)) = query else {
        return bad_request(
            "query must be repository=owner/name with optional ref, event_name, audience, environment, sha, check_run_id",
        );
    };
    match issuer.mint(&request) {
        Ok(jwt) => (
            [(header::CACHE_CONTROL, "no-store")],
            Json(json!({ "value": jwt })),
        )
            .into_response(),
        Err(DevError::InvalidRequest(message)) => bad_request(&message),
        Err(err) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({ "error": "internal", "message": err.to_string() })),
        )
            .into_response(),
    }
}

/// `GET /actions/id-token`: `/token` behind the runtime's bearer check.
async fn actions_token(
    State(issuer): State<Arc<DevIssuer>>,
    headers: HeaderMap,
    query: Result<Query<BTreeMap<String, String>>, QueryRejection>,
) -> Response {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    let authorised = bearer.is_some_and(|bearer| {
        aws_lc_rs::constant_time::verify_slices_are_equal(
            bearer.as_bytes(),
            issuer.request_token.as_bytes(),
        )
        .is_ok()
    });
    if !authorised {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({
                "error": "unauthorized",
                "message": "send Authorization: Bearer <ACTIONS_ID_TOKEN_REQUEST_TOKEN as printed by dev>",
            })),
        )
            .into_response();
    }
    let Ok(Query(mut query)) = query else {
        return bad_request("the query string is not valid");
    };
    // The runtime's own parameter; meaningless here.
    query.remove("api-version");
    let request = serde_json::to_value(query)
        .and_then(serde_json::from_value::<TokenRequest>)
        .ok();
    let Some(request) = request else {
        return bad_request(
            "query must be repository=owner/name with optional ref, event_name, audience, environment, sha, check_run_id",
        );
    };
    token(State(issuer), Ok(Query(request))).await
}

fn bad_request(message: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({ "error": "invalid_request", "message": message })),
    )
        .into_response()
}

fn hex_prefix(digest: &[u8]) -> String {
    hex::encode(digest.first_chunk::<8>().copied().unwrap_or_default())
}

fn random_hex(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    rand::fill(buffer.as_mut_slice());
    hex::encode(buffer)
}

fn random_digits(low: u64, high: u64) -> String {
    rand::random_range(low..high).to_string()
}
