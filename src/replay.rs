//! Replay protection: a token's `(iss, jti)` is accepted once until `exp + leeway`.
//!
//! The store is keyed by a SHA-256 of issuer and jti, so an entry has a fixed
//! size whatever the token carries. Marking is atomic: of two concurrent
//! requests with the same token, exactly one sees `Fresh` — in process via
//! moka's entry API, across replicas via Redis `SET key 1 NX PX ttl`.
//!
//! With Redis, every replica also keeps its own in-process marks in front of
//! it (the same bounded moka cache as the memory store). A token this replica
//! has already admitted is refused without asking Redis, so replay protection
//! on one replica survives what Redis alone would not: with `fail_open` during
//! an outage (otherwise every retry of one token would be issued), and a Redis
//! that lost its data (a restart without persistence, a failover to a lagging
//! replica). Across replicas Redis still decides. When Redis cannot answer and
//! the broker fails closed, the local mark is dropped again: nothing was
//! issued, and the caller's retry must not be taken for a replay.
//!
//! Every Redis operation runs under one deadline (pool wait, connect and
//! command together); an error or timeout is reported as `ReplayError` and the
//! caller fails closed unless configured otherwise.

use std::time::{Duration, Instant};

use sha2::Digest;

use crate::config::{ReplayConfig, ReplayStoreKind};

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

/// In-process marks: key → time to live.
type LocalMarks = moka::sync::Cache<[u8; 32], Duration>;

/// Where used token ids live.
#[derive(Clone)]
pub enum ReplayStore {
    /// In process (one replica).
    Memory(LocalMarks),
    /// Shared Redis (several replicas), behind this replica's own marks.
    Redis(RedisStore),
}

/// A pooled Redis client with a deadline on every operation, and this
/// replica's own marks in front of it.
#[derive(Clone)]
pub struct RedisStore {
    pool: deadpool_redis::Pool,
    timeout: Duration,
    local: LocalMarks,
    /// The caller issues when Redis cannot answer: keep the local mark then.
    fail_open: bool,
}

/// Prefix of every key the broker writes, so a shared Redis stays readable.
const REDIS_KEY_PREFIX: &str = "attestation-broker:replay:";

/// Local marks of a Redis store built by [`ReplayStore::redis`].
const DEFAULT_LOCAL_ENTRIES: u64 = 1_000_000;

/// Shortest time a mark is kept, ms: a token at the edge of its validity
/// still gets a mark that outlives the request.
const MIN_TTL_MILLIS: u64 = 1000;
const MIN_TTL: Duration = Duration::from_millis(MIN_TTL_MILLIS);

impl std::fmt::Debug for ReplayStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReplayStore::Memory(_) => f.write_str("ReplayStore::Memory"),
            ReplayStore::Redis(_) => f.write_str("ReplayStore::Redis"),
        }
    }
}

impl RedisStore {
    async fn run<T: redis::FromRedisValue>(&self, command: redis::Cmd) -> Result<T, ReplayError> {
        let work = async {
            let mut connection = self
                .pool
                .get()
                .await
                .map_err(|err| ReplayError(format!("no connection: {err}")))?;
            command
                .query_async::<T>(&mut connection)
                .await
                .map_err(|err| ReplayError(format!("command failed: {err}")))
        };
        tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| ReplayError(format!("no answer within {} ms", self.timeout.as_millis())))?
    }

    /// `SET key 1 NX PX ttl`: whether this call set the key.
    async fn set_once(&self, key: &[u8; 32], ttl: Duration) -> Result<bool, ReplayError> {
        let millis = u64::try_from(ttl.as_millis())
            .unwrap_or(u64::MAX)
            .max(MIN_TTL_MILLIS);
        let mut command = redis::cmd("SET");
        command
            .arg(redis_key(key))
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(millis);
        // SET … NX answers OK when it set the key and nil when the key existed.
        let set: Option<String> = self.run(command).await?;
        Ok(set.is_some())
    }
}

fn redis_key(key: &[u8; 32]) -> String {
    format!("{REDIS_KEY_PREFIX}{}", hex::encode(key))
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

fn local_marks(max_entries: u64) -> LocalMarks {
    moka::sync::Cache::builder()
        .max_capacity(max_entries)
        .expire_after(PerEntryTtl)
        .build()
}

/// Marks `key` in `local`; true when this call made the mark.
fn mark_local(local: &LocalMarks, key: [u8; 32], ttl: Duration) -> bool {
    local.entry(key).or_insert(ttl.max(MIN_TTL)).is_fresh()
}

impl ReplayStore {
    /// The store `[replay]` asks for.
    pub fn from_config(config: &ReplayConfig) -> Result<Self, ReplayError> {
        match config.store {
            ReplayStoreKind::Memory => Ok(Self::memory(config.max_entries)),
            ReplayStoreKind::Redis => Self::redis_with(
                config.redis_url.as_deref().unwrap_or_default(),
                config.redis_pool_size,
                Duration::from_millis(config.redis_timeout_ms),
                config.max_entries,
                config.fail_open,
            ),
        }
    }

    /// An in-process store remembering at most `max_entries` tokens.
    pub fn memory(max_entries: u64) -> Self {
        ReplayStore::Memory(local_marks(max_entries))
    }

    /// A Redis store at `url` with at most `pool_size` connections, failing
    /// closed; every operation (pool wait, connect, command) must finish
    /// within `timeout`. Connections are made lazily: an unreachable Redis
    /// shows in readiness.
    pub fn redis(url: &str, pool_size: usize, timeout: Duration) -> Result<Self, ReplayError> {
        Self::redis_with(url, pool_size, timeout, DEFAULT_LOCAL_ENTRIES, false)
    }

    fn redis_with(
        url: &str,
        pool_size: usize,
        timeout: Duration,
        local_entries: u64,
        fail_open: bool,
    ) -> Result<Self, ReplayError> {
        let mut config = deadpool_redis::Config::from_url(url);
        let mut pool = deadpool_redis::PoolConfig::new(pool_size);
        pool.timeouts = deadpool_redis::Timeouts {
            wait: Some(timeout),
            create: Some(timeout),
            recycle: Some(timeout),
        };
        config.pool = Some(pool);
        let pool = config
            .create_pool(Some(deadpool_redis::Runtime::Tokio1))
            .map_err(|err| ReplayError(format!("invalid Redis configuration: {err}")))?;
        Ok(ReplayStore::Redis(RedisStore {
            pool,
            timeout,
            local: local_marks(local_entries),
            fail_open,
        }))
    }

    /// Marks `(issuer, jti)` used for `ttl`; tells whether it was already used.
    pub async fn mark(&self, issuer: &str, jti: &str, ttl: Duration) -> Result<Mark, ReplayError> {
        let key = entry_key(issuer, jti);
        match self {
            ReplayStore::Memory(cache) => Ok(if mark_local(cache, key, ttl) {
                Mark::Fresh
            } else {
                Mark::Replayed
            }),
            ReplayStore::Redis(store) => {
                if !mark_local(&store.local, key, ttl) {
                    return Ok(Mark::Replayed);
                }
                match store.set_once(&key, ttl).await {
                    Ok(true) => Ok(Mark::Fresh),
                    Ok(false) => {
                        // Admitted by another replica: Redis stays the authority for
                        // it, so that replica's release frees it here too.
                        store.local.invalidate(&key);
                        Ok(Mark::Replayed)
                    }
                    Err(err) => {
                        if !store.fail_open {
                            // The caller answers 503 and issues nothing.
                            store.local.invalidate(&key);
                        }
                        Err(err)
                    }
                }
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
            ReplayStore::Redis(store) => {
                store.local.invalidate(&key);
                let mut command = redis::cmd("DEL");
                command.arg(redis_key(&key));
                let _removed: i64 = store.run(command).await?;
                Ok(())
            }
        }
    }

    /// Whether the store can currently answer (readiness).
    pub async fn healthy(&self) -> bool {
        match self {
            ReplayStore::Memory(_) => true,
            ReplayStore::Redis(store) => store.run::<String>(redis::cmd("PING")).await.is_ok(),
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

    /// A real `redis-server` on a free loopback port, stopped on drop.
    struct RedisServer {
        child: std::process::Child,
        url: String,
    }

    impl RedisServer {
        fn start() -> Self {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let child = std::process::Command::new("redis-server")
                .args([
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("redis-server must be installed (scripts/test.sh installs it)");
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "redis-server did not start"
                );
                std::thread::yield_now();
            }
            Self {
                child,
                url: format!("redis://127.0.0.1:{port}"),
            }
        }
    }

    impl Drop for RedisServer {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    #[tokio::test]
    async fn redis_marks_once_across_clients_and_fails_closed_when_down() {
        let mut server = RedisServer::start();
        let first = ReplayStore::redis(&server.url, 4, Duration::from_millis(500)).unwrap();
        let second = ReplayStore::redis(&server.url, 4, Duration::from_millis(500)).unwrap();
        assert!(first.healthy().await);
        let mut tasks = Vec::new();
        for index in 0..16 {
            let store = if index % 2 == 0 {
                first.clone()
            } else {
                second.clone()
            };
            tasks.push(tokio::spawn(async move {
                let mark = store
                    .mark("iss", "shared", Duration::from_secs(60))
                    .await
                    .unwrap();
                (store, mark)
            }));
        }
        let mut winners = Vec::new();
        for task in tasks {
            let (store, mark) = task.await.unwrap();
            if mark == Mark::Fresh {
                winners.push(store);
            }
        }
        assert_eq!(winners.len(), 1, "exactly one client may see a fresh token");
        // The replica that admitted the token releases it (its STS call failed):
        // then any replica may admit it again.
        winners[0].release("iss", "shared").await.unwrap();
        for store in [&second, &first] {
            assert_eq!(
                store
                    .mark("iss", "shared", Duration::from_secs(60))
                    .await
                    .unwrap(),
                Mark::Fresh
            );
            store.release("iss", "shared").await.unwrap();
        }

        server.child.kill().unwrap();
        server.child.wait().unwrap();
        assert!(
            first
                .mark("iss", "other", Duration::from_secs(60))
                .await
                .is_err()
        );
        assert!(!first.healthy().await);
    }

    /// A Redis URL nothing listens on.
    fn unreachable_redis_url() -> String {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        format!("redis://127.0.0.1:{port}")
    }

    #[tokio::test]
    async fn fail_open_keeps_the_local_mark_so_a_replica_still_refuses_replays() {
        let store = ReplayStore::redis_with(
            &unreachable_redis_url(),
            2,
            Duration::from_millis(200),
            100,
            true,
        )
        .unwrap();
        let ttl = Duration::from_secs(60);
        assert!(store.mark("iss", "a", ttl).await.is_err(), "Redis is down");
        assert_eq!(
            store.mark("iss", "a", ttl).await.unwrap(),
            Mark::Replayed,
            "issued once while failing open: a second use on this replica is a replay"
        );
        store.release("iss", "a").await.unwrap_err();
        assert!(
            store.mark("iss", "a", ttl).await.is_err(),
            "released locally even though Redis could not be told"
        );
    }

    #[tokio::test]
    async fn failing_closed_drops_the_local_mark_so_a_retry_is_not_a_replay() {
        let store =
            ReplayStore::redis(&unreachable_redis_url(), 2, Duration::from_millis(200)).unwrap();
        let ttl = Duration::from_secs(60);
        assert!(store.mark("iss", "a", ttl).await.is_err());
        assert!(
            store.mark("iss", "a", ttl).await.is_err(),
            "nothing was issued: the retry must reach Redis again"
        );
    }

    #[tokio::test]
    async fn a_replica_remembers_its_marks_when_redis_loses_its_data() {
        let mut server = RedisServer::start();
        let store = ReplayStore::redis(&server.url, 4, Duration::from_millis(500)).unwrap();
        let ttl = Duration::from_secs(60);
        assert_eq!(store.mark("iss", "a", ttl).await.unwrap(), Mark::Fresh);
        let mut flush = redis::cmd("FLUSHALL");
        flush.arg("SYNC");
        let _: String = match &store {
            ReplayStore::Redis(redis) => redis.run(flush).await.unwrap(),
            ReplayStore::Memory(_) => unreachable!(),
        };
        assert_eq!(store.mark("iss", "a", ttl).await.unwrap(), Mark::Replayed);
        server.child.kill().unwrap();
        server.child.wait().unwrap();
    }

    #[test]
    fn issuer_and_jti_are_separated() {
        assert_ne!(entry_key("ab", "c"), entry_key("a", "bc"));
    }
}
