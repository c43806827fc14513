//! `AppState`: everything a request needs, built once in `build_app`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;
use tokio::sync::Semaphore;

use crate::config::Config;
use crate::github::GithubClient;
use crate::limits::RepositoryRateLimiter;
use crate::metrics::Metrics;
use crate::policy_set::PolicySet;
use crate::replay::ReplayStore;
use crate::sts::StsClient;
use crate::verify::Verifier;

/// Shared state of one broker instance; cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct AppState(Arc<Inner>);

/// The parts of the state.
#[derive(Debug)]
pub(crate) struct Inner {
    /// Validated configuration.
    pub config: Config,
    /// Token verification (owns the JWKS cache).
    pub verifier: Verifier,
    /// The compiled policy (rules and Rego); replaced whole on reload. A
    /// request takes the pointer once and keeps that version to its end; a
    /// reload never waits for requests, nor they for it.
    policy: ArcSwap<PolicySet>,
    /// The STS client.
    pub sts: StsClient,
    /// Used token ids.
    pub replay: ReplayStore,
    /// Metrics registry.
    pub metrics: Metrics,
    /// Requests being processed; when none is free, new ones are shed.
    pub in_flight: Arc<Semaphore>,
    /// Verified requests per repository; beyond the quota, 429.
    pub repository_limit: RepositoryRateLimiter,
    /// The GitHub App client, when `[github]` is configured.
    pub github: Option<GithubClient>,
    shutting_down: AtomicBool,
}

impl AppState {
    /// Assembles the state.
    pub(crate) fn new(
        config: Config,
        verifier: Verifier,
        policy: PolicySet,
        sts: StsClient,
        replay: ReplayStore,
        metrics: Metrics,
        github: Option<GithubClient>,
    ) -> Self {
        let in_flight = Arc::new(Semaphore::new(config.server.max_concurrent_requests));
        let repository_limit = RepositoryRateLimiter::new(
            config.server.rate_limit_per_repository_per_minute,
            config.server.rate_limit_burst,
        );
        Self(Arc::new(Inner {
            config,
            verifier,
            policy: ArcSwap::from_pointee(policy),
            sts,
            replay,
            metrics,
            in_flight,
            repository_limit,
            github,
            shutting_down: AtomicBool::new(false),
        }))
    }

    /// The policy in force for a new request.
    pub(crate) fn policy(&self) -> Arc<PolicySet> {
        self.0.policy.load_full()
    }

    /// Replaces the policy for requests that start from now on.
    pub(crate) fn replace_policy(&self, policy: PolicySet) {
        self.0.metrics.set_policy_version(policy.version());
        self.0
            .metrics
            .register_roles(policy.rules.roles().iter().map(|role| role.name.as_str()));
        self.0.policy.store(Arc::new(policy));
    }

    /// Marks the instance as draining: readiness fails from now on.
    pub(crate) fn begin_shutdown(&self) {
        self.0.shutting_down.store(true, Ordering::SeqCst);
    }

    /// Whether the instance is draining.
    pub(crate) fn shutting_down(&self) -> bool {
        self.0.shutting_down.load(Ordering::SeqCst)
    }
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}
