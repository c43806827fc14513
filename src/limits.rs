//! Per-repository rate limit on `/issue`: a GCRA bucket (governor) per
//! `(issuer, repository_id)`, checked after the token is verified.
//!
//! Trusted: only verified claims choose a bucket ([`RepositoryRateLimiter::check_token`]
//! takes [`VerifiedClaims`]), so a caller can spend no budget but its own
//! repository's, and cannot create buckets without a token the issuer signed.
//! The bucket is the signed `repository_id`; a token without one (not GitHub's)
//! falls back to its `repository`, lowercased (GitHub names are
//! case-insensitive), and one without either shares the empty key.
//!
//! Invariants:
//! - the key space is bounded: at most [`MAX_TRACKED_REPOSITORIES`] buckets
//!   (moka evicts the least recently used beyond that), and a bucket idle for
//!   as long as a full refill takes is dropped, which loses nothing because a
//!   fresh bucket is then identical to it;
//! - an eviction can only make the limit more lenient for that one
//!   repository, never refuse a request the limit would have allowed;
//! - with the rate set to 0 nothing is tracked and every check passes.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota};

use crate::verify::VerifiedClaims;

/// Most repositories tracked at once (a few hundred bytes each).
pub(crate) const MAX_TRACKED_REPOSITORIES: u64 = 100_000;

/// The per-repository limiter of one broker instance; cheap to clone.
#[derive(Clone)]
pub(crate) struct RepositoryRateLimiter {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    quota: Quota,
    buckets: moka::sync::Cache<String, Arc<DefaultDirectRateLimiter>>,
    clock: DefaultClock,
}

impl std::fmt::Debug for RepositoryRateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RepositoryRateLimiter")
            .field("enabled", &self.inner.is_some())
            .finish_non_exhaustive()
    }
}

impl RepositoryRateLimiter {
    /// `per_minute` requests per repository per minute with bursts of up to
    /// `burst`; `per_minute = 0` turns the limit off (a `burst` of 0 counts as 1).
    pub(crate) fn new(per_minute: u32, burst: u32) -> Self {
        let Some(rate) = NonZeroU32::new(per_minute) else {
            return Self { inner: None };
        };
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::per_minute(rate).allow_burst(burst);
        // After this long without a request a bucket is full again: dropping
        // it then is exact, not an approximation.
        let refill = quota
            .replenish_interval()
            .saturating_mul(burst.get())
            .max(Duration::from_secs(1));
        let buckets = moka::sync::Cache::builder()
            .max_capacity(MAX_TRACKED_REPOSITORIES)
            .time_to_idle(refill)
            .build();
        Self {
            inner: Some(Arc::new(Inner {
                quota,
                buckets,
                clock: DefaultClock::default(),
            })),
        }
    }

    /// Takes one request from the bucket of the verified token's repository.
    /// `Err` carries how long until the next request would be allowed.
    pub(crate) fn check_token(&self, token: &VerifiedClaims) -> Result<(), Duration> {
        let claims = token.claims();
        let repository = claims
            .get("repository_id")
            .map(str::to_owned)
            .or_else(|| claims.get("repository").map(str::to_ascii_lowercase))
            .unwrap_or_default();
        self.check(token.issuer(), &repository)
    }

    /// Takes one request from the bucket of `repository_id` at `issuer`.
    fn check(&self, issuer: &str, repository_id: &str) -> Result<(), Duration> {
        let Some(inner) = &self.inner else {
            return Ok(());
        };
        // The issuer is part of the key: ids are only unique per GitHub instance.
        let key = format!("{issuer}\n{repository_id}");
        let bucket = inner.buckets.get_with(key, || {
            Arc::new(DefaultDirectRateLimiter::direct(inner.quota))
        });
        bucket
            .check()
            .map_err(|not_until| not_until.wait_time_from(inner.clock.now()))
    }
}

/// Seconds for a `Retry-After` header: the wait rounded up, at least 1.
pub(crate) fn retry_after_seconds(wait: Duration) -> u64 {
    let whole = wait.as_secs();
    let rounded = if wait.subsec_nanos() > 0 {
        whole.saturating_add(1)
    } else {
        whole
    };
    rounded.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_refusal_with_a_wait() {
        let limiter = RepositoryRateLimiter::new(1, 2);
        assert_eq!(limiter.check("iss", "1"), Ok(()));
        assert_eq!(limiter.check("iss", "1"), Ok(()));
        let wait = limiter.check("iss", "1").unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(60),
            "{wait:?}"
        );
    }

    #[test]
    fn repositories_and_issuers_have_separate_buckets() {
        let limiter = RepositoryRateLimiter::new(1, 1);
        assert_eq!(limiter.check("iss", "1"), Ok(()));
        assert!(limiter.check("iss", "1").is_err());
        assert_eq!(limiter.check("iss", "2"), Ok(()));
        assert_eq!(limiter.check("other-iss", "1"), Ok(()));
    }

    fn token(issuer: &str, pairs: &[(&str, &str)]) -> VerifiedClaims {
        let mut claims = crate::claims::ClaimSet::default();
        for (name, value) in pairs {
            claims.insert(*name, *value);
        }
        VerifiedClaims::for_tests(claims, issuer, "jti", 0)
    }

    #[test]
    fn the_signed_repository_id_picks_the_bucket() {
        let limiter = RepositoryRateLimiter::new(1, 1);
        let app = token("iss", &[("repository_id", "1"), ("repository", "o/app")]);
        assert_eq!(limiter.check_token(&app), Ok(()));
        assert!(limiter.check_token(&app).is_err());
        // A renamed repository keeps its id, and its bucket.
        let renamed = token("iss", &[("repository_id", "1"), ("repository", "o/new")]);
        assert!(limiter.check_token(&renamed).is_err());
        // Same name at another issuer: another bucket.
        assert_eq!(
            limiter.check_token(&token("other", &[("repository_id", "1")])),
            Ok(())
        );
        // Without an id, the lowercased name.
        let named = token("iss", &[("repository", "O/Named")]);
        assert_eq!(limiter.check_token(&named), Ok(()));
        assert!(
            limiter
                .check_token(&token("iss", &[("repository", "o/named")]))
                .is_err()
        );
        assert_eq!(limiter.check("iss", "o/other"), Ok(()));
    }

    #[test]
    fn zero_turns_the_limit_off() {
        let limiter = RepositoryRateLimiter::new(0, 0);
        for _ in 0..1000 {
            assert_eq!(limiter.check("iss", "1"), Ok(()));
        }
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_seconds(Duration::ZERO), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_seconds(Duration::from_secs(2)), 2);
        assert_eq!(retry_after_seconds(Duration::from_millis(2001)), 3);
    }
}
