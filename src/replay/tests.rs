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

/// Many OS threads mark one token at the same instant, trial after trial:
/// exactly one may see `Fresh` every time.
#[test]
fn marks_racing_on_many_threads_admit_exactly_one_in_every_trial() {
    const THREADS: usize = 16;
    const TRIALS: usize = 300;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let store = ReplayStore::memory(1_000_000);
    let mut doubles = Vec::new();
    for trial in 0..TRIALS {
        let jti = format!("token-{trial}");
        let start = std::sync::Barrier::new(THREADS);
        let fresh = std::thread::scope(|scope| {
            let threads: Vec<_> = (0..THREADS)
                .map(|_| {
                    scope.spawn(|| {
                        start.wait();
                        runtime
                            .block_on(store.mark("iss", &jti, Duration::from_secs(60)))
                            .unwrap()
                    })
                })
                .collect();
            threads
                .into_iter()
                .map(|thread| thread.join().unwrap())
                .filter(|mark| *mark == Mark::Fresh)
                .count()
        });
        if fresh != 1 {
            doubles.push((trial, fresh));
        }
    }
    assert!(
        doubles.is_empty(),
        "{} of {TRIALS} trials admitted other than one (trial, fresh): {doubles:?}",
        doubles.len()
    );
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
        redis_connection(&unreachable_redis_url(), None).unwrap(),
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

/// With Redis down and `fail_open`, the local marks are the fallback: copies
/// of one token racing on many threads still get exactly one go-ahead (the
/// `Err` the caller issues on), every other copy is a replay.
#[test]
fn failing_open_copies_racing_on_many_threads_get_one_go_ahead() {
    const THREADS: usize = 16;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let store = ReplayStore::redis_with(
        redis_connection(&unreachable_redis_url(), None).unwrap(),
        THREADS,
        Duration::from_millis(500),
        1000,
        true,
    )
    .unwrap();
    for trial in 0..20 {
        let jti = format!("token-{trial}");
        let start = std::sync::Barrier::new(THREADS);
        let answers: Vec<_> = std::thread::scope(|scope| {
            let threads: Vec<_> = (0..THREADS)
                .map(|_| {
                    scope.spawn(|| {
                        start.wait();
                        runtime.block_on(store.mark("iss", &jti, Duration::from_secs(60)))
                    })
                })
                .collect();
            threads
                .into_iter()
                .map(|thread| thread.join().unwrap())
                .collect()
        });
        let go_ahead = answers.iter().filter(|answer| answer.is_err()).count();
        let replays = answers
            .iter()
            .filter(|answer| matches!(answer, Ok(Mark::Replayed)))
            .count();
        assert_eq!((go_ahead, replays), (1, THREADS - 1), "trial {trial}");
    }
}

fn key(first: u8, rest: u8) -> [u8; 32] {
    let mut key = [rest; 32];
    key[0] = first;
    key
}

#[test]
fn a_full_store_refuses_new_tokens_and_never_drops_a_live_mark() {
    let marks = LocalMarks::new(3);
    let now = Instant::now();
    let ttl = Duration::from_secs(60);
    for index in 0..3 {
        assert_eq!(marks.mark(key(index, 1), ttl, now), LocalMark::Fresh);
    }
    assert_eq!(marks.mark(key(3, 1), ttl, now), LocalMark::Full);
    for index in 0..3 {
        assert_eq!(
            marks.mark(key(index, 1), ttl, now),
            LocalMark::Replayed,
            "mark {index} must survive a full store"
        );
    }
    marks.release(&key(1, 1));
    assert_eq!(marks.mark(key(3, 1), ttl, now), LocalMark::Fresh);
    assert_eq!(marks.mark(key(1, 1), ttl, now), LocalMark::Full);
    assert_eq!(marks.len(), 3);
}

#[test]
fn expired_marks_are_reclaimed_and_make_room() {
    let marks = LocalMarks::new(2);
    let t0 = Instant::now();
    let at = |seconds| t0 + Duration::from_secs(seconds);
    // Different first bytes: different shards, so a full store must sweep
    // the other shards too.
    assert_eq!(
        marks.mark(key(0, 1), Duration::from_secs(10), t0),
        LocalMark::Fresh
    );
    assert_eq!(
        marks.mark(key(1, 1), Duration::from_secs(20), t0),
        LocalMark::Fresh
    );
    assert_eq!(
        marks.mark(key(2, 1), Duration::from_secs(10), at(9)),
        LocalMark::Full
    );
    assert_eq!(
        marks.mark(key(0, 1), Duration::from_secs(10), at(9)),
        LocalMark::Replayed
    );
    // At its expiry the first mark is gone: its token may be marked again
    // (verification refuses an expired token long before this).
    assert_eq!(
        marks.mark(key(2, 1), Duration::from_secs(30), at(10)),
        LocalMark::Fresh
    );
    assert_eq!(
        marks.mark(key(1, 1), Duration::from_secs(20), at(19)),
        LocalMark::Replayed
    );
    assert_eq!(
        marks.mark(key(0, 1), Duration::from_secs(10), at(20)),
        LocalMark::Fresh
    );
    assert_eq!(marks.len(), 2);
}

#[test]
fn released_and_re_marked_keys_do_not_grow_the_expiry_queue() {
    let marks = LocalMarks::new(10);
    let now = Instant::now();
    for round in 0..10_000u64 {
        let ttl = Duration::from_secs(60 + round);
        assert_eq!(marks.mark(key(0, 7), ttl, now), LocalMark::Fresh);
        marks.release(&key(0, 7));
    }
    assert_eq!(marks.len(), 0);
    assert!(
        marks.pending_expiries() < 100,
        "{}",
        marks.pending_expiries()
    );
    // The stale queue entry of a released mark must not drop the mark that
    // replaced it when it comes up.
    assert_eq!(
        marks.mark(key(0, 8), Duration::from_secs(5), now),
        LocalMark::Fresh
    );
    marks.release(&key(0, 8));
    assert_eq!(
        marks.mark(key(0, 8), Duration::from_secs(60), now),
        LocalMark::Fresh
    );
    let later = now + Duration::from_secs(10);
    assert_eq!(
        marks.mark(key(0, 8), Duration::from_secs(60), later),
        LocalMark::Replayed
    );
}

/// Capacity is exact under contention: threads racing to mark distinct
/// tokens in a store with room for 100 get exactly 100 `Fresh`.
#[test]
fn capacity_is_exact_when_threads_race_for_the_last_slots() {
    const THREADS: u8 = 16;
    const PER_THREAD: u8 = 50;
    let marks = LocalMarks::new(100);
    let now = Instant::now();
    let start = std::sync::Barrier::new(usize::from(THREADS));
    let fresh: usize = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..THREADS)
            .map(|thread| {
                let (marks, start) = (&marks, &start);
                scope.spawn(move || {
                    start.wait();
                    (0..PER_THREAD)
                        .filter(|index| {
                            marks.mark(key(*index, thread), Duration::from_secs(60), now)
                                == LocalMark::Fresh
                        })
                        .count()
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|thread| thread.join().unwrap())
            .sum()
    });
    assert_eq!(fresh, 100);
    assert_eq!(marks.len(), 100);
}

#[test]
fn issuer_and_jti_are_separated() {
    assert_ne!(entry_key("ab", "c"), entry_key("a", "bc"));
}

#[test]
fn a_mark_lasts_until_the_token_stops_verifying() {
    assert_eq!(token_ttl(1_000, 60, 900), Duration::from_secs(160));
    assert_eq!(token_ttl(1_000, 0, 1_000), Duration::from_secs(1));
    assert_eq!(token_ttl(1_000, 60, 5_000), Duration::from_secs(1));
    assert_eq!(token_ttl(u64::MAX, 60, 0), Duration::from_secs(u64::MAX));
}

#[tokio::test]
async fn a_verified_token_is_marked_by_issuer_and_jti_and_released() {
    let store = ReplayStore::memory(100);
    let token = |issuer: &str, jti: &str| {
        crate::verify::VerifiedClaims::for_tests(
            crate::claims::ClaimSet::default(),
            issuer,
            jti,
            2_000,
        )
    };
    let used = token("iss", "a");
    assert_eq!(
        store.mark_token(&used, 60, 1_000).await.unwrap(),
        Mark::Fresh
    );
    assert_eq!(
        store
            .mark_token(&token("iss", "a"), 60, 1_000)
            .await
            .unwrap(),
        Mark::Replayed
    );
    assert_eq!(
        store
            .mark("iss", "a", Duration::from_secs(1))
            .await
            .unwrap(),
        Mark::Replayed,
        "the same key as mark(issuer, jti)"
    );
    assert_eq!(
        store
            .mark_token(&token("other", "a"), 60, 1_000)
            .await
            .unwrap(),
        Mark::Fresh
    );
    store.release_token(&used).await.unwrap();
    assert_eq!(
        store.mark_token(&used, 60, 1_000).await.unwrap(),
        Mark::Fresh
    );
}
