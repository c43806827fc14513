//! attestation-broker: turns a GitHub Actions OIDC token into short-lived AWS
//! credentials, under an explicit, deny-by-default policy.
//!
//! `build_app` assembles one broker instance from a validated `Config`; the
//! binary (`main.rs`) only adds start-up, signals and listeners.

pub mod audit;
pub mod claims;
pub mod cli;
pub mod config;
pub mod dev;
pub mod http;
pub mod jwks;
pub mod metrics;
pub mod policy;
pub mod policy_set;
pub mod rego;
pub mod reload;
pub mod replay;
pub mod state;
pub mod sts;
pub mod telemetry;
pub mod verify;

use std::future::Future;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use tokio::net::TcpListener;

use crate::config::{Config, ReplayStoreKind};
use crate::jwks::JwksCache;
use crate::metrics::Metrics;
use crate::policy::LoadedPolicy;
use crate::policy_set::PolicySet;
use crate::replay::ReplayStore;
use crate::state::AppState;
use crate::sts::StsClient;
use crate::verify::Verifier;

/// What `build_app` takes besides the configuration.
#[derive(Debug, Default)]
pub struct AppOptions {
    /// Static AWS credentials for the broker's own identity (only `dev` uses
    /// this); `None` means the default provider chain.
    pub aws_credentials: Option<aws_credential_types::Credentials>,
    /// An already compiled policy (no Rego, not watched); `None` loads and
    /// watches what `[policy]` names.
    pub policy: Option<LoadedPolicy>,
}

/// One broker instance: its state and both routers.
#[derive(Debug)]
pub struct App {
    /// Shared state.
    pub state: AppState,
    /// Router for the main listener.
    pub public: Router,
    /// Router for the admin listener.
    pub admin: Router,
    /// Whether the `[policy]` files are watched for changes (not for a built-in policy).
    watch_policy: bool,
}

/// Builds a broker from a validated configuration. Loads and compiles the
/// policy (refusing to start on any error), builds the STS and HTTP clients
/// once, and prepares an empty key cache (see `App::start_background`).
pub async fn build_app(config: Config, options: AppOptions) -> anyhow::Result<App> {
    let metrics = Metrics::new().context("cannot register metrics")?;
    let (policy, warnings, watch_policy) = match options.policy {
        Some(LoadedPolicy { policy, warnings }) => (PolicySet::new(policy, None), warnings, false),
        None => {
            let (policy, warnings) = PolicySet::load(&config.policy)?;
            (policy, warnings, true)
        }
    };
    for warning in &warnings {
        tracing::warn!(policy.role = %warning.role, policy.rule = warning.rule.as_deref().unwrap_or("-"),
            policy.key = warning.key.as_deref().unwrap_or("-"), "policy warning: {}", warning.message);
    }
    metrics.set_policy_version(policy.version());
    let jwks = JwksCache::new(&config.issuers, &config.jwks, metrics.clone())
        .context("cannot build the JWKS client")?;
    let verifier = Verifier::new(&config, jwks);
    let sts = StsClient::new(&config.sts, options.aws_credentials, metrics.clone())
        .await
        .context("cannot build the STS client")?;
    let replay = match config.replay.store {
        ReplayStoreKind::Memory => ReplayStore::memory(config.replay.max_entries),
        ReplayStoreKind::Redis => {
            let url = config.replay.redis_url.as_deref().unwrap_or_default();
            let timeout = Duration::from_millis(config.replay.redis_timeout_ms);
            ReplayStore::redis(url, config.replay.redis_pool_size, timeout)?
        }
    };
    let state = AppState::new(config, verifier, policy, sts, replay, metrics);
    Ok(App {
        public: http::public_router(state.clone()),
        admin: http::admin_router(state.clone()),
        state,
        watch_policy,
    })
}

impl App {
    /// Fetches every issuer's keys once (bounded by the fetch timeout), then
    /// keeps them fresh in the background. A failed first fetch is logged;
    /// readiness stays false until a fetch succeeds.
    pub async fn start_background(&self) {
        let jwks = self.state.verifier.jwks().clone();
        let loaded = jwks.refresh_all().await;
        tracing::info!(issuers_loaded = loaded, "initial JWKS fetch done");
        let all_ok = loaded == jwks.issuer_count();
        tokio::spawn(jwks.run_refresh(all_ok));
        if self.watch_policy {
            let interval = Duration::from_secs(self.state.config.policy.reload_seconds);
            let config = self.state.config.policy.clone();
            tokio::spawn(reload::PolicyWatcher::new(self.state.clone(), config).run(interval));
        }
    }

    /// Serves both listeners until `shutdown` completes, then drains: readiness
    /// fails at once, no new connections are accepted, in-flight requests get
    /// `server.shutdown_grace_seconds` to finish.
    pub async fn serve(
        self,
        public: TcpListener,
        admin: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let wait_stop = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        let public_task = tokio::spawn(
            axum::serve(public, self.public)
                .with_graceful_shutdown(wait_stop(stop_rx.clone()))
                .into_future(),
        );
        let (admin_stop_tx, admin_stop_rx) = tokio::sync::watch::channel(false);
        let admin_task = tokio::spawn(
            axum::serve(admin, self.admin)
                .with_graceful_shutdown(wait_stop(admin_stop_rx))
                .into_future(),
        );
        shutdown.await;
        self.state.begin_shutdown();
        tracing::info!("shutdown requested: readiness now fails, draining in-flight requests");
        let _ = stop_tx.send(true);
        let grace = Duration::from_secs(self.state.config.server.shutdown_grace_seconds);
        match tokio::time::timeout(grace, public_task).await {
            Ok(Ok(Ok(()))) => tracing::info!("in-flight requests finished"),
            Ok(Ok(Err(err))) => tracing::warn!(error = %err, "main listener ended with an error"),
            Ok(Err(err)) => tracing::warn!(error = %err, "main listener task failed"),
            Err(_) => tracing::warn!(
                grace_seconds = grace.as_secs(),
                "grace period over; closing remaining connections"
            ),
        }
        let _ = admin_stop_tx.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(1), admin_task).await;
        Ok(())
    }
}
