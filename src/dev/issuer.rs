//! `DevIssuer`: a local stand-in for GitHub's Actions token service.
//!
//! It makes its own RSA 2048 key at start and serves, on a loopback listener,
//! the test kit's issuer ([`crate::testkit::issuer::Issuer`]):
//! `GET /.well-known/openid-configuration` (issuer and `jwks_uri`),
//! `GET /.well-known/jwks` (the public key as a JWK), plus
//! `GET /token?repository=owner/name[&ref=…&event_name=…&audience=…&environment=…&sha=…&check_run_id=…]`,
//! which answers `{"value": "<jwt>"}` with a GitHub-shaped ID token, and
//! `GET /actions/id-token?…` (the same query, plus `api-version`), which does
//! the same only for `Authorization: Bearer <request token>`, the way the
//! Actions runtime's `ACTIONS_ID_TOKEN_REQUEST_URL` and
//! `ACTIONS_ID_TOKEN_REQUEST_TOKEN` work, so the real `fetch` client can run
//! against it. The request token is random per start. Nobody but the local
//! user should trust that key. Tokens are signed by the kit's minter
//! ([`crate::testkit::token::TokenBuilder`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;

use super::DevError;
use super::token_request::{CheckedRequest, TokenRequest, dev_owner_id, dev_repository_id};
use crate::testkit::issuer::Issuer;
use crate::testkit::keys::SigningKey;
use crate::testkit::token::TokenBuilder;
use crate::testkit::{ensure_loopback, random_hex};

/// Lifetime of a minted token, seconds (GitHub's are about 5 minutes too).
const TOKEN_LIFETIME_SECONDS: u64 = 300;
/// Workflow file named in `workflow_ref` and `job_workflow_ref`.
const WORKFLOW_PATH: &str = ".github/workflows/dev.yml";
/// `actor` claim of every dev token.
pub const DEV_ACTOR: &str = "dev-user";
/// Path of the Actions-style ID-token endpoint.
pub(super) const ACTIONS_TOKEN_PATH: &str = "/actions/id-token";

/// The development issuer: its key, issuer URL and default audience.
pub struct DevIssuer {
    key: SigningKey,
    issuer: String,
    default_audience: String,
    /// The bearer the Actions-style endpoint wants (ACTIONS_ID_TOKEN_REQUEST_TOKEN).
    request_token: String,
}

impl std::fmt::Debug for DevIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevIssuer")
            .field("issuer", &self.issuer)
            .field("kid", &self.key.kid())
            .field("default_audience", &self.default_audience)
            .finish_non_exhaustive()
    }
}

/// A running [`DevIssuer`]; stops when dropped or shut down.
#[derive(Debug)]
pub struct DevIssuerHandle {
    issuer: Arc<DevIssuer>,
    server: Issuer,
}

impl DevIssuer {
    /// Generates a key and serves the issuer on `listener`, which must be bound to
    /// a loopback address. The issuer URL is `http://<listener address>`; tokens
    /// are minted for `default_audience` unless a request names another.
    pub async fn start(
        listener: TcpListener,
        default_audience: String,
    ) -> Result<DevIssuerHandle, DevError> {
        let addr = listener.local_addr().map_err(DevError::Listener)?;
        ensure_loopback(addr)?;
        let key = SigningKey::generate_async("dev").await?;
        let issuer = Arc::new(Self {
            key: key.clone(),
            issuer: format!("http://{addr}"),
            default_audience,
            request_token: format!("dev-request-token-{}", random_hex(16)),
        });
        let routes = Router::new()
            .route("/token", get(token))
            .route(ACTIONS_TOKEN_PATH, get(actions_token))
            .with_state(issuer.clone());
        let server = Issuer::start_on(listener, vec![key.jwk()], routes).await?;
        Ok(DevIssuerHandle { issuer, server })
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
        self.key.kid()
    }

    /// Audience used when a request names none.
    pub fn default_audience(&self) -> &str {
        &self.default_audience
    }

    /// The JWKS document: `{"keys": [<the public key>]}`.
    pub fn jwks(&self) -> Value {
        json!({ "keys": [self.key.jwk()] })
    }

    /// Mints a GitHub-shaped ID token for `request`, valid for 5 minutes.
    pub fn mint(&self, request: &TokenRequest) -> Result<String, DevError> {
        let claims = self.claims(request, SystemTime::now())?;
        TokenBuilder::new(self.key.clone())
            .claims(claims)
            .try_build()
            .map_err(|_| DevError::Signing)
    }

    fn claims(
        &self,
        request: &TokenRequest,
        now: SystemTime,
    ) -> Result<Map<String, Value>, DevError> {
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
        Ok(claims)
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
        self.server.jwks_url()
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
        self.server.shutdown();
    }
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

fn random_digits(low: u64, high: u64) -> String {
    rand::random_range(low..high).to_string()
}
