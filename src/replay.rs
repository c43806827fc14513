//! Replay protection: a token's `(iss, jti)` is accepted once until `exp + leeway`.
//!
//! The store is keyed by a SHA-256 of issuer and jti, so an entry has a fixed
//! size whatever the token carries. Marking is atomic: of two concurrent
//! requests with the same token, exactly one sees `Fresh`.

use std::time::{Duration, Instant};

use sha2::Digest;

/// Outcome of marking a token as used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// First use: go on.
    Fresh,
    /// Seen before: refuse.
    Replayed,
}

/// The store could not answer.
#[derive(Debug, thiserror::Error)]
#[error("replay store unavailable: {0}")]
pub struct ReplayError(pub String);

/// Where used token ids live.
#[derive(Clone)]
pub enum ReplayStore {
    /// In process (one replica).
    Memory(moka::sync::Cache<[u8; 32], Duration>),
}

impl std::fmt::Debug for ReplayStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReplayStore::Memory(_) => f.write_str("ReplayStore::Memory"),
        }
    }
}

/// Each entry expires after the time-to-live it was inserted with.
struct PerEntryTtl;

impl moka::Expiry<[u8; 32], Duration> for PerEntryTtl {
    fn expire_after_create(
        &self,
        _key: &[u8; 32],
        ttl: &Duration,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(*ttl)
    }
}

fn entry_key(issuer: &str, jti: &str) -> [u8; 32] {
    let mut hasher = sha2::Sha256::new();
    hasher.update(issuer.as_bytes());
    hasher.update([0u8]);
    hasher.update(jti.as_bytes());
    hasher.finalize().into()
}

impl ReplayStore {
    /// An in-process store remembering at most `max_entries` tokens.
    pub fn memory(max_entries: u64) -> Self {
        let cache = moka::sync::Cache::builder()
            .max_capacity(max_entries)
            .expire_after(PerEntryTtl)
            .build();
        ReplayStore::Memory(cache)
    }

    /// Marks `(issuer, jti)` used for `ttl`; tells whether it was already used.
    pub async fn mark(&self, issuer: &str, jti: &str, ttl: Duration) -> Result<Mark, ReplayError> {
        let key = entry_key(issuer, jti);
        match self {
            ReplayStore::Memory(cache) => {
                let entry = cache.entry(key).or_insert(ttl.max(Duration::from_secs(1)));
                Ok(if entry.is_fresh() {
                    Mark::Fresh
                } else {
                    Mark::Replayed
                })
            }
        }
    }

    /// Forgets a mark, so a caller whose issuance failed upstream may retry
    /// with the same token.
    pub async fn release(&self, issuer: &str, jti: &str) -> Result<(), ReplayError> {
        let key = entry_key(issuer, jti);
        match self {
            ReplayStore::Memory(cache) => {
                cache.invalidate(&key);
                Ok(())
            }
        }
    }

    /// Whether the store can currently answer (readiness).
    pub async fn healthy(&self) -> bool {
        match self {
            ReplayStore::Memory(_) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn second_use_is_a_replay_until_released() {
        let store = ReplayStore::memory(100);
        let ttl = Duration::from_secs(60);
        assert_eq!(store.mark("iss", "a", ttl).await.unwrap(), Mark::Fresh);
        assert_eq!(store.mark("iss", "a", ttl).await.unwrap(), Mark::Replayed);
        assert_eq!(
            store.mark("other-iss", "a", ttl).await.unwrap(),
            Mark::Fresh
        );
        store.release("iss", "a").await.unwrap();
        assert_eq!(store.mark("iss", "a", ttl).await.unwrap(), Mark::Fresh);
    }

    #[tokio::test]
    async fn concurrent_marks_admit_exactly_one() {
        let store = ReplayStore::memory(100);
        let mut tasks = Vec::new();
        for _ in 0..32 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .mark("iss", "same", Duration::from_secs(60))
                    .await
                    .unwrap()
            }));
        }
        let mut fresh = 0;
        for task in tasks {
            if task.await.unwrap() == Mark::Fresh {
                fresh += 1;
            }
        }
        assert_eq!(fresh, 1);
    }

    #[test]
    fn issuer_and_jti_are_separated() {
        assert_ne!(entry_key("ab", "c"), entry_key("a", "bc"));
    }
}
