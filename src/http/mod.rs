//! Both routers and the whole middleware stack, in one place.
//!
//! Public listener: `POST /issue` only. Admin listener: `/metrics`,
//! `/healthz`, `/readyz`. Every response carries `x-request-id` (generated
//! here; a caller's own id is never trusted into our logs), and is counted in
//! `ci_http_requests_total` under a route label from a closed set.
//!
//! Where each inbound limit lives: head size, header count and the
//! slow-client deadline are enforced by the server before this stack sees a
//! request (`with_limits` in `lib.rs`); body size, the request deadline, load
//! shedding and the per-repository rate are decided in `issue.rs`, so that
//! each refusal gets the documented JSON body, a request id and an audit event.

pub mod error;
pub mod health;
pub mod issue;

use std::time::Instant;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use tower_http::catch_panic::CatchPanicLayer;
use tracing::Instrument;

use crate::state::AppState;
use error::ApiError;

/// Header carrying the request id.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The id of one request, shared by the response header, the error body and the audit event.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

/// Routes known to each listener; anything else is counted as `unmatched`.
const KNOWN_ROUTES: [&str; 4] = ["/issue", "/metrics", "/healthz", "/readyz"];

/// The public router (`POST /issue`).
pub fn public_router(state: AppState) -> Router {
    Router::new()
        .route("/issue", post(issue::issue).fallback(method_not_allowed))
        .fallback(not_found)
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::Internal.into_response_with("")
        }))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// The admin router (`/metrics`, `/healthz`, `/readyz`).
pub fn admin_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(health::metrics))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

async fn not_found(axum::Extension(id): axum::Extension<RequestId>) -> Response {
    ApiError::NotFound.into_response_with(&id.0)
}

async fn method_not_allowed(axum::Extension(id): axum::Extension<RequestId>) -> Response {
    ApiError::MethodNotAllowed.into_response_with(&id.0)
}

/// Request id, span, metrics.
async fn observe(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let request_id = uuid::Uuid::new_v4().simple().to_string();
    request
        .extensions_mut()
        .insert(RequestId(request_id.clone()));
    let path = request.uri().path();
    let route = KNOWN_ROUTES
        .into_iter()
        .find(|known| *known == path)
        .unwrap_or("unmatched");
    let span = tracing::info_span!("request", request_id = %request_id, http.method = %request.method(), http.route = route);
    let mut response = next.run(request).instrument(span.clone()).await;
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    let elapsed = started.elapsed();
    state
        .metrics
        .http_request(route, response.status().as_u16(), elapsed.as_secs_f64());
    span.in_scope(|| {
        tracing::debug!(
            http.status = response.status().as_u16(),
            duration_ms = elapsed.as_millis() as u64,
            "request finished"
        );
    });
    response
}
