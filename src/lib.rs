//! attestation-broker: turns a GitHub Actions OIDC token into short-lived AWS
//! credentials, under an explicit, deny-by-default policy.
//!
//! `build_app` assembles one broker instance from a validated `Config`; the
//! binary (`main.rs`) only adds start-up, signals and listeners. `App::serve`
//! owns the serving loop: HTTP/1 only, with the inbound limits of `[server]`
//! applied by hyper before any handler runs, TLS when configured, and a
//! graceful drain on shutdown.

pub mod api;
mod audit;
mod binding;
pub mod claims;
pub mod cli;
pub mod config;
pub mod context;
mod decision;
pub mod dev;
pub mod fetch;
pub mod github;
pub mod http;
pub mod jwks;
mod limits;
pub mod metrics;
pub mod policy;
mod policy_set;
mod rego;
mod reload;
mod replay;
mod state;
mod sts;
mod telemetry;
pub mod testkit;
mod tls;
pub mod verify;

use std::future::Future;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use tokio::net::TcpListener;

use crate::config::{Config, ServerConfig};
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
    /// The GitHub App's key (only `dev` uses this, with its stand-in's
    /// key); `None` reads `[github] private_key_file`.
    pub github_key: Option<github::AppKey>,
}

/// One broker instance: its state and both routers.
#[derive(Debug)]
pub struct App {
    /// Shared state.
    pub(crate) state: AppState,
    /// Router for the main listener.
    pub(crate) public: Router,
    /// Router for the admin listener.
    pub(crate) admin: Router,
    /// Whether the `[policy]` files are watched for changes (not for a built-in policy).
    watch_policy: bool,
    /// TLS of the main listener, when configured.
    tls: Option<tls::TlsListener>,
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
    if config.github.is_none() {
        let needs = github::needs_github(&policy.rules);
        if !needs.is_empty() {
            anyhow::bail!(
                "the policy needs a GitHub App, but [github] is not configured: {}",
                needs.join("; ")
            );
        }
    }
    metrics.set_policy_version(policy.version());
    metrics.register_roles(policy.rules.roles().iter().map(|role| role.name.as_str()));
    let jwks = JwksCache::new(&config.issuers, &config.jwks, metrics.clone())
        .context("cannot build the JWKS client")?;
    let verifier = Verifier::new(&config, jwks);
    let sts = StsClient::new(&config.sts, options.aws_credentials, metrics.clone())
        .await
        .context("cannot build the STS client")?;
    let replay = ReplayStore::from_config(&config.replay)?;
    let github = match &config.github {
        Some(github) => Some(
            match options.github_key {
                Some(key) => github::GithubClient::with_key(github, key, metrics.clone()),
                None => github::GithubClient::new(github, metrics.clone()),
            }
            .context("cannot build the GitHub App client")?,
        ),
        None => None,
    };
    let tls = match config.server.tls_files() {
        Some(files) => Some(
            tls::TlsListener::load(files, config.server.header_read_timeout())
                .with_context(|| "cannot set up TLS on the main listener")?,
        ),
        None => None,
    };
    let state = AppState::new(config, verifier, policy, sts, replay, metrics, github);
    Ok(App {
        public: http::public_router(state.clone()),
        admin: http::admin_router(state.clone()),
        state,
        watch_policy,
        tls,
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
            reload::PolicyWatcher::new(self.state.clone(), config).spawn(interval);
        }
        if let Some(github) = &self.state.github {
            github.spawn_revoker();
            // In the background: readiness and AWS roles never wait for GitHub.
            let github = github.clone();
            tokio::spawn(async move { github.log_app().await });
        }
        if let Some(tls) = &self.tls {
            let interval = Duration::from_secs(self.state.config.server.tls_reload_seconds);
            tls.watcher(self.state.metrics.clone()).spawn(interval);
        }
    }

    /// Whether the main listener serves TLS.
    pub fn serves_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Serves both listeners until `shutdown` completes, then drains:
    /// readiness fails at once, the main listener stops accepting (new
    /// connections are refused), idle keep-alive connections close, and
    /// in-flight requests get `server.shutdown_grace_seconds` to finish; then
    /// the admin listener stops too. Connections still open after the grace
    /// period are closed.
    pub async fn serve(
        self,
        public: TcpListener,
        admin: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let limits = &self.state.config.server;
        let public_handle = axum_server::Handle::new();
        let admin_handle = axum_server::Handle::new();
        let public_server = with_limits(axum_server::Server::from_listener(public), limits)
            .handle(public_handle.clone());
        let public_service = self.public.into_make_service();
        let public_task = match &self.tls {
            Some(tls) => tokio::spawn(public_server.acceptor(tls.acceptor()).serve(public_service)),
            None => tokio::spawn(public_server.serve(public_service)),
        };
        let admin_task = tokio::spawn(
            with_limits(axum_server::Server::from_listener(admin), limits)
                .handle(admin_handle.clone())
                .serve(self.admin.into_make_service()),
        );

        shutdown.await;
        self.state.begin_shutdown();
        let grace = limits.shutdown_grace();
        tracing::info!(
            grace_seconds = grace.as_secs(),
            connections = public_handle.connection_count(),
            "shutdown requested: readiness now fails, draining in-flight requests"
        );
        // The grace period is kept here rather than handed to axum-server,
        // so that "finished" and "cut off" are told apart without a race.
        public_handle.graceful_shutdown(None);
        let mut public_task = public_task;
        match tokio::time::timeout(grace, &mut public_task).await {
            Ok(Ok(Ok(()))) => tracing::info!("in-flight requests finished"),
            Ok(Ok(Err(err))) => tracing::warn!(error = %err, "main listener ended with an error"),
            Ok(Err(err)) => tracing::warn!(error = %err, "main listener task failed"),
            Err(_) => {
                tracing::warn!(
                    grace_seconds = grace.as_secs(),
                    connections = public_handle.connection_count(),
                    "grace period over; closing the remaining connections"
                );
                public_handle.shutdown();
                let _ = tokio::time::timeout(Duration::from_secs(1), public_task).await;
            }
        }
        admin_handle.graceful_shutdown(Some(Duration::from_secs(1)));
        let _ = tokio::time::timeout(Duration::from_secs(2), admin_task).await;
        Ok(())
    }
}

/// HTTP/1 only, with the inbound limits of `[server]` that hyper enforces
/// before any handler runs: the header count (431 beyond), a read buffer of
/// `max_header_bytes` for the head (hyper may have read up to twice that when
/// it notices a head does not fit, so the router checks the exact size
/// again), and the slow-client deadline for each request head. HTTP/2 is not offered: CI clients speak HTTP/1.1,
/// and one protocol means one set of limits to reason about.
fn with_limits<A>(
    server: axum_server::Server<std::net::SocketAddr, A>,
    limits: &ServerConfig,
) -> axum_server::Server<std::net::SocketAddr, A> {
    let mut server = server.http1_only();
    server
        .http_builder()
        .http1()
        // hyper asserts this minimum; validation already enforces it.
        .max_buf_size(limits.max_header_bytes.max(config::MIN_HEADER_BYTES))
        .max_headers(limits.max_headers)
        .header_read_timeout(limits.header_read_timeout());
    server
}
