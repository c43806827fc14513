//! Admin endpoints: `/healthz` (the process serves), `/readyz` (it can issue),
//! `/metrics` (Prometheus text format).

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::state::AppState;

/// 200 while the process serves.
pub(super) async fn healthz() -> Response {
    (
        StatusCode::OK,
        axum::Json(serde_json::json!({"status": "ok"})),
    )
        .into_response()
}

/// 200 only when the policy is loaded, every issuer has usable keys, the
/// replay store answers (unless configured to fail open) and the instance is
/// not draining. The body names the failing checks; this listener is not
/// exposed outside the cluster.
pub(super) async fn readyz(State(state): State<AppState>) -> Response {
    let failing = failing_checks(&state).await;
    state.metrics.set_ready(failing.is_empty());
    let policy = state.policy();
    if failing.is_empty() {
        let body = serde_json::json!({"status": "ready", "policy_version": policy.version()});
        (StatusCode::OK, axum::Json(body)).into_response()
    } else {
        let body = serde_json::json!({"status": "not_ready", "failing": failing});
        (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
    }
}

/// The readiness checks that fail right now (none: ready).
async fn failing_checks(state: &AppState) -> Vec<&'static str> {
    let mut failing = Vec::new();
    if state.shutting_down() {
        failing.push("shutting_down");
    }
    if !state.verifier.jwks().ready() {
        failing.push("jwks");
    }
    if !state.config.replay.fail_open && !state.replay.healthy().await {
        failing.push("replay_store");
    }
    failing
}

/// Prometheus text exposition. `ci_ready` is evaluated afresh for each
/// scrape, with the same checks as `/readyz`: a pod the readiness probe takes
/// out of the Service is still scraped (Prometheus discovers not-ready
/// endpoints too) and reports 0.
pub(super) async fn metrics(State(state): State<AppState>) -> Response {
    state.verifier.jwks().record_ages();
    let ready = failing_checks(&state).await.is_empty();
    state.metrics.set_ready(ready);
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}
