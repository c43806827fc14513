//! The peers of `attestation-broker dev`, a self-contained local demo.
//!
//! [`DevIssuer`] plays GitHub's token service: its own RSA key made at start,
//! OIDC discovery, a JWKS and a minting endpoint answering like
//! `ACTIONS_ID_TOKEN_REQUEST_URL`. [`FakeSts`] plays AWS STS: it answers
//! AssumeRole in the AWS Query protocol with credentials that are plainly fake
//! (`ASIADEVFAKE…`, `dev-fake-secret-…`). Both are the test kit's servers
//! ([`crate::testkit`]), the same ones the tests run against. The broker's own
//! signing identity toward the STS is [`dev_credentials`].
//!
//! Invariants: both servers listen on loopback only (`start` refuses any other
//! address), and nothing here is reachable from `serve`: these keys and
//! credentials prove nothing and must never meet a real issuer or account.
//! Each server runs on a spawned task until its handle is shut down or dropped.

mod issuer;
#[cfg(test)]
mod tests;
mod token_request;

use std::net::SocketAddr;

use tokio::net::TcpListener;

pub use crate::testkit::sts::{
    FAKE_ACCESS_KEY_PREFIX, FAKE_SECRET_PREFIX, FAKE_SESSION_TOKEN_PREFIX,
};
pub use issuer::{DEV_ACTOR, DevIssuer, DevIssuerHandle};
pub use token_request::{TokenRequest, dev_owner_id, dev_repository_id};

use crate::testkit::KitError;
use crate::testkit::sts::Sts;

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

impl From<KitError> for DevError {
    fn from(err: KitError) -> Self {
        match err {
            KitError::NotLoopback(addr) => Self::NotLoopback(addr),
            KitError::Listener(err) => Self::Listener(err),
            KitError::Key => Self::KeyGeneration,
            KitError::Signing => Self::Signing,
        }
    }
}

/// The fake STS of `dev`: the test kit's [`Sts`].
#[derive(Debug)]
pub struct FakeSts;

/// A running [`FakeSts`]: the kit's [`Sts`] (URL, call counts, `shutdown`).
pub type FakeStsHandle = Sts;

impl FakeSts {
    /// Serves a fake STS on `listener`, which must be bound to a loopback address.
    pub async fn start(listener: TcpListener) -> Result<FakeStsHandle, DevError> {
        Ok(Sts::start_on(listener).await?)
    }
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
