//! The one test kit: loopback stand-ins for the broker's peers and a token
//! minter, shared by `attestation-broker dev`, the unit and integration tests,
//! the fault-load tool and the benchmark.
//!
//! - [`issuer::Issuer`]: an OIDC issuer (discovery document + JWKS) whose
//!   keys, announced issuer, discovery document and failure mode (500, hang,
//!   huge body, not JSON, a key set with no usable key, redirect) can be
//!   switched while it runs; it counts requests per path.
//! - [`sts::Sts`]: AWS STS's AssumeRole in the Query protocol, as `aws-sdk-sts`
//!   sends it. It records every request, hands out plainly fake credentials
//!   (`ASIADEVFAKE…`, `dev-fake-secret-…`, `dev-fake-session-token-…`) and fails
//!   on cue: once per queued fault, or every call while a standing fault is set.
//! - [`github::GithubStandIn`]: GitHub's REST API for the broker's App
//!   client (App JWTs, installations, installation tokens and their
//!   revocation, check runs, pull requests, reviews), with faults per
//!   operation, ETags, and a record of every exchange.
//! - [`token::TokenBuilder`] and [`keys::SigningKey`]: GitHub-shaped ID tokens
//!   signed RS256 (or deliberately unsigned or HS256 for attacks), with
//!   aws-lc-rs.
//!
//! Every server starts with `start()` on `127.0.0.1:0` (or `start_on` with a
//! listener the caller bound), reports its URL, and stops when its handle is
//! dropped or shut down.
//!
//! Invariants: the servers listen on loopback only (`start_on` refuses any
//! other address), and nothing here is reachable from `serve`'s configuration:
//! these keys and credentials prove nothing and must never meet a real issuer
//! or account. Locks held here are never held across an await; a poisoned lock
//! is recovered (the data is counters and switches).

pub mod github;
pub mod issuer;
pub mod keys;
pub mod sts;
pub mod token;

use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};

use axum::Router;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Why a kit server could not start or a token could not be made.
#[derive(Debug, thiserror::Error)]
pub enum KitError {
    /// The listener is bound to an address other than loopback.
    #[error("test servers listen on loopback only, not on {0}")]
    NotLoopback(SocketAddr),
    /// The listener could not be bound or its address read.
    #[error("cannot use the listener: {0}")]
    Listener(#[source] std::io::Error),
    /// A key could not be generated or read.
    #[error("cannot make or read the signing key")]
    Key,
    /// A token could not be signed.
    #[error("cannot sign a token")]
    Signing,
}

/// Checks that `listener` is on loopback and returns its address.
pub(crate) fn loopback_addr(listener: &TcpListener) -> Result<SocketAddr, KitError> {
    let addr = listener.local_addr().map_err(KitError::Listener)?;
    ensure_loopback(addr)
}

/// `addr` if it is a loopback address.
pub fn ensure_loopback(addr: SocketAddr) -> Result<SocketAddr, KitError> {
    if addr.ip().is_loopback() {
        Ok(addr)
    } else {
        Err(KitError::NotLoopback(addr))
    }
}

/// Binds `127.0.0.1:0`.
pub(crate) async fn bind_loopback() -> Result<TcpListener, KitError> {
    TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(KitError::Listener)
}

/// `http://127.0.0.1:PORT` (or `http://[::1]:PORT`), without a trailing slash.
pub(crate) fn base_url(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

/// Serves `router` on `listener` in a spawned task.
pub(crate) fn spawn_server(
    listener: TcpListener,
    router: Router,
    name: &'static str,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, router).await {
            tracing::error!(server = name, error = %err, "test server stopped");
        }
    })
}

/// Locks `mutex`, recovering from poison.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Random text of `len` characters from `alphabet`.
pub(crate) fn random_string(alphabet: &[u8], len: usize) -> String {
    (0..len)
        .filter_map(|_| alphabet.get(rand::random_range(0..alphabet.len())))
        .map(|byte| char::from(*byte))
        .collect()
}

/// `len` random bytes, lowercase hex.
pub fn random_hex(len: usize) -> String {
    let mut buffer = vec![0u8; len];
    rand::fill(buffer.as_mut_slice());
    hex::encode(buffer)
}

/// XML text escaping for the five predefined entities.
pub(crate) fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_addresses_are_served() {
        let public = SocketAddr::from(([192, 0, 2, 1], 8080));
        assert!(matches!(
            ensure_loopback(public),
            Err(KitError::NotLoopback(_))
        ));
        let any = SocketAddr::from(([0, 0, 0, 0], 8080));
        assert!(ensure_loopback(any).is_err());
        assert!(ensure_loopback(SocketAddr::from(([127, 0, 0, 1], 1))).is_ok());
        assert!(ensure_loopback("[::1]:1".parse().unwrap()).is_ok());
    }

    #[test]
    fn random_strings_use_the_alphabet() {
        let alphabet = b"ABC";
        let text = random_string(alphabet, 9);
        assert_eq!(text.len(), 9);
        assert!(text.bytes().all(|b| alphabet.contains(&b)));
    }

    #[test]
    fn xml_is_escaped() {
        assert_eq!(xml_escape("a<b>&\"'"), "a&lt;b&gt;&amp;&quot;&apos;");
    }
}
