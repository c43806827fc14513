//! Both routers and the whole middleware stack, in one place.
//!
//! Public listener: `POST /issue` only. Admin listener: `/metrics`,
//! `/healthz`, `/readyz`. Every response carries `x-request-id` (generated
//! here; a caller's own id is never trusted into our logs), and is counted in
//! `ci_http_requests_total` under a route label from a closed set.
//!
//! Where each inbound limit lives: header count, the slow-client deadline for
//! the head and a coarse cap on the head are enforced by the server before
//! this stack sees a request (`with_limits` in `lib.rs`); the exact head size
//! is checked here (the server's read buffer may hold up to twice
//! `max_header_bytes` before it notices); the body deadline, body size, the
//! request deadline, load shedding and the per-repository rate are decided in
//! `issue.rs`, so that each refusal gets the documented JSON body, a request
//! id and an audit event.

pub mod error;
mod health;
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
pub(crate) const REQUEST_ID_HEADER: &str = "x-request-id";

/// The id of one request, shared by the response header, the error body and the audit event.
#[derive(Clone, Debug)]
pub(crate) struct RequestId(pub(crate) String);

/// Routes known to each listener; anything else is counted as `unmatched`.
const KNOWN_ROUTES: [&str; 4] = ["/issue", "/metrics", "/healthz", "/readyz"];

/// The public router (`POST /issue`).
pub(crate) fn public_router(state: AppState) -> Router {
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
pub(crate) fn admin_router(state: AppState) -> Router {
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
    // A v4 UUID from the thread's ChaCha generator (seeded from the OS):
    // `Uuid::new_v4` would make a getrandom(2) system call per request.
    let request_id = uuid::Builder::from_random_bytes(rand::random())
        .into_uuid()
        .simple()
        .to_string();
    request
        .extensions_mut()
        .insert(RequestId(request_id.clone()));
    let path = request.uri().path();
    let route = KNOWN_ROUTES
        .into_iter()
        .find(|known| *known == path)
        .unwrap_or("unmatched");
    // `&str` fields: the log formatter copies them as they are.
    let span = tracing::info_span!(
        "request",
        request_id = request_id.as_str(),
        http.method = request.method().as_str(),
        http.route = route
    );
    let head = head_size(&request);
    let mut response = if head > state.config.server.max_header_bytes {
        span.in_scope(|| tracing::debug!(head_bytes = head, "request head over max_header_bytes"));
        ApiError::HeadTooLarge.into_response_with(&request_id)
    } else {
        next.run(request).instrument(span.clone()).await
    };
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

/// Size of a request head as clients send it: the request line
/// (`METHOD SP target SP HTTP/1.1 CRLF`), one `name: value CRLF` line per
/// header, and the blank line that ends the head.
pub(crate) fn head_size(request: &Request) -> usize {
    const VERSION_AND_CRLF: usize = "HTTP/1.1\r\n".len();
    let target = request.uri().to_string().len();
    let line = request.method().as_str().len() + 1 + target + 1 + VERSION_AND_CRLF;
    let headers: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + 2 + value.len() + 2)
        .sum();
    line + headers + 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_size_counts_the_head_as_sent() {
        let request = Request::builder()
            .method("POST")
            .uri("/issue?format=json")
            .header("host", "broker")
            .header("content-length", "0")
            .body(axum::body::Body::empty())
            .unwrap();
        let wire = "POST /issue?format=json HTTP/1.1\r\nhost: broker\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(head_size(&request), wire.len());
    }
}
