//! The peers of `attestation-broker dev`, a self-contained local demo.
//!
//! [`DevIssuer`] plays GitHub's token service: its own RSA key made at start,
//! OIDC discovery, a JWKS and a minting endpoint answering like
//! `ACTIONS_ID_TOKEN_REQUEST_URL`. [`FakeSts`] plays AWS STS: it answers
//! AssumeRole in the AWS Query protocol with credentials that are plainly fake
//! (`ASIADEVFAKE…`, `dev-fake-secret-…`). The broker's own signing identity toward
//! it is [`dev_credentials`].
//!
//! Invariants: both servers listen on loopback only (`start` refuses any other
//! address), and nothing here is reachable from `serve`: these keys and
//! credentials prove nothing and must never meet a real issuer or account.
//! Each server runs on a spawned task until its handle's `shutdown` or the end
//! of the runtime; dropping a handle leaves the server running.

mod fake_sts;
mod issuer;
#[cfg(test)]
mod tests;
mod token_request;

use std::net::SocketAddr;

use axum::Router;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use fake_sts::{
    FAKE_ACCESS_KEY_PREFIX, FAKE_SECRET_PREFIX, FAKE_SESSION_TOKEN_PREFIX, FakeSts, FakeStsHandle,
};
pub use issuer::{DEV_ACTOR, DevIssuer, DevIssuerHandle};
pub use token_request::{TokenRequest, dev_owner_id, dev_repository_id};

/// Access key id of [`dev_credentials`].
pub const DEV_ACCESS_KEY_ID: &str = "AKIDDEVBROKER";
/// Secret key of [`dev_credentials`].
pub const DEV_SECRET_ACCESS_KEY: &str = "dev-broker-secret";

/// Why a dev server could not start or a dev token could not be made.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    /// The listener is bound to an address other than loopback.
    #[error("dev servers listen on loopback only, not on {0}")]
    NotLoopback(SocketAddr),
    /// The listener's local address could not be read.
    #[error("cannot read the listener's address: {0}")]
    Listener(#[source] std::io::Error),
    /// The RSA key could not be generated.
    #[error("cannot generate the development signing key")]
    KeyGeneration,
    /// A token could not be signed.
    #[error("cannot sign a development token")]
    Signing,
    /// A token request named an invalid value.
    #[error("invalid token request: {0}")]
    InvalidRequest(String),
}

/// The broker's own, obviously fake, AWS identity for signing requests to
/// [`FakeSts`]: `AKIDDEVBROKER` / `dev-broker-secret`, without session token or
/// expiry. Pass it as the `credentials` of `StsClient::new`.
pub fn dev_credentials() -> aws_credential_types::Credentials {
    aws_credential_types::Credentials::new(
        DEV_ACCESS_KEY_ID,
        DEV_SECRET_ACCESS_KEY,
        None,
        None,
        "attestation-broker-dev",
    )
}

/// Checks that `listener` is on loopback and returns its address.
fn loopback_addr(listener: &TcpListener) -> Result<SocketAddr, DevError> {
    let addr = listener.local_addr().map_err(DevError::Listener)?;
    ensure_loopback(addr)
}

fn ensure_loopback(addr: SocketAddr) -> Result<SocketAddr, DevError> {
    if addr.ip().is_loopback() {
        Ok(addr)
    } else {
        Err(DevError::NotLoopback(addr))
    }
}

/// `http://127.0.0.1:PORT` (or `http://[::1]:PORT`), without a trailing slash.
fn base_url(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

/// Serves `router` on `listener` in a spawned task.
fn spawn_server(listener: TcpListener, router: Router, name: &'static str) -> JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, router).await {
            tracing::error!(server = name, error = %err, "dev server stopped");
        }
    })
}
