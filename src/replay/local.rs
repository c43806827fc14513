//! This replica's own replay marks: a bounded map from token key to the
//! instant its mark expires.
//!
//! Invariants, each kept under one lock so that concurrent callers cannot
//! interleave between "look" and "insert":
//! - insert if absent, else refuse: of any number of concurrent marks of one
//!   key, exactly one is [`LocalMark::Fresh`] until the mark expires or is
//!   released;
//! - a mark is never dropped before it expires, whatever the load: when the
//!   map holds `capacity` unexpired marks, a new key is [`LocalMark::Full`]
//!   (the caller refuses the request) instead of pushing an older mark out,
//!   which would reopen that token for replay;
//! - expired marks are reclaimed on the way (each shard keeps a min-heap of
//!   expiry instants), so a full map only ever holds live marks.
//!
//! The map is split into shards by the first byte of the key (a SHA-256, so
//! evenly spread), each behind its own `std::sync::Mutex`: marks of different
//! tokens rarely wait for each other, and a map resize only stalls one
//! shard. Nothing awaits while holding a lock. The capacity is one count
//! shared by all shards, reserved under the shard lock before inserting, so
//! it is exact.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Token key: SHA-256 of issuer and jti.
pub(crate) type Key = [u8; 32];

/// Number of shards (a power of two, at most 256: the first key byte picks one).
const SHARDS: usize = 16;

/// Longest a mark is kept. Token lifetimes are bounded far below this by
/// verification; this only keeps `Instant` arithmetic from overflowing.
const MAX_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Outcome of [`LocalMarks::mark`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LocalMark {
    /// This call made the mark.
    Fresh,
    /// An unexpired mark exists.
    Replayed,
    /// `capacity` unexpired marks exist: nothing was marked.
    Full,
}

#[derive(Default)]
struct Shard {
    /// Key → instant its mark expires.
    marks: HashMap<Key, Instant>,
    /// Expiry instants, earliest first. An entry whose key was released (or
    /// marked again with another expiry) is stale and skipped when it comes
    /// up; stale entries are bounded by rebuilding the heap.
    expiries: BinaryHeap<Reverse<(Instant, Key)>>,
}

impl Shard {
    /// Drops every mark expired at `now`; returns how many.
    fn reclaim(&mut self, now: Instant) -> u64 {
        let mut dropped = 0;
        while let Some(Reverse((expiry, key))) = self.expiries.peek().copied() {
            if expiry > now {
                break;
            }
            self.expiries.pop();
            if self.marks.get(&key) == Some(&expiry) {
                self.marks.remove(&key);
                dropped += 1;
            }
        }
        dropped
    }

    fn insert(&mut self, key: Key, expiry: Instant) {
        self.marks.insert(key, expiry);
        self.expiries.push(Reverse((expiry, key)));
        // Released and re-marked keys leave stale heap entries until they
        // expire; keep them from outgrowing the live marks.
        if self.expiries.len() > 2 * self.marks.len() + 64 {
            self.expiries = self
                .marks
                .iter()
                .map(|(key, expiry)| Reverse((*expiry, *key)))
                .collect();
        }
    }
}

/// Bounded, sharded replay marks. See the module documentation.
pub(crate) struct LocalMarks {
    shards: Vec<Mutex<Shard>>,
    /// Marks held in all shards (changed only under a shard lock).
    len: AtomicU64,
    capacity: u64,
}

impl std::fmt::Debug for LocalMarks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalMarks")
            .field("len", &self.len())
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl LocalMarks {
    /// Room for `capacity` unexpired marks (at least one).
    pub(crate) fn new(capacity: u64) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            len: AtomicU64::new(0),
            capacity: capacity.max(1),
        }
    }

    /// Marks held now, expired ones not yet reclaimed included.
    pub(crate) fn len(&self) -> u64 {
        self.len.load(Ordering::Acquire)
    }

    /// The most unexpired marks held at once.
    pub(crate) fn capacity(&self) -> u64 {
        self.capacity
    }

    /// The shard of `key`, locked. A poisoned lock is taken over: no code
    /// that holds one can panic halfway through an update.
    fn shard(&self, key: &Key) -> Option<MutexGuard<'_, Shard>> {
        let index = usize::from(key[0]) % SHARDS;
        self.shards.get(index).map(|shard| {
            shard
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        })
    }

    /// Takes one unit of capacity; false when full.
    fn reserve(&self) -> bool {
        self.len
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |len| {
                (len < self.capacity).then_some(len + 1)
            })
            .is_ok()
    }

    fn give_back(&self, count: u64) {
        if count > 0 {
            self.len.fetch_sub(count, Ordering::AcqRel);
        }
    }

    /// Drops expired marks in every shard, one shard lock at a time.
    fn reclaim_all(&self, now: Instant) {
        for shard in &self.shards {
            let dropped = shard
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .reclaim(now);
            self.give_back(dropped);
        }
    }

    /// Marks `key` until `now + ttl`, atomically: see [`LocalMark`].
    pub(crate) fn mark(&self, key: Key, ttl: Duration, now: Instant) -> LocalMark {
        let Some(expiry) = now.checked_add(ttl.min(MAX_TTL)) else {
            // Not reachable with a real clock; refuse rather than mark short.
            return LocalMark::Full;
        };
        // The first attempt reclaims only this key's shard; when that leaves
        // the map full, every shard is swept (without holding this one) and
        // the whole decision is taken again under the lock.
        for attempt in 0..2 {
            let Some(mut shard) = self.shard(&key) else {
                return LocalMark::Full;
            };
            let dropped = shard.reclaim(now);
            self.give_back(dropped);
            if shard.marks.contains_key(&key) {
                // Reclaimed above if it had expired: this one is live.
                return LocalMark::Replayed;
            }
            if self.reserve() {
                shard.insert(key, expiry);
                return LocalMark::Fresh;
            }
            drop(shard);
            if attempt == 0 {
                self.reclaim_all(now);
            }
        }
        LocalMark::Full
    }

    /// Expiry-queue entries held, stale ones included.
    #[cfg(test)]
    pub(crate) fn pending_expiries(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| {
                shard
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .expiries
                    .len()
            })
            .sum()
    }

    /// Forgets `key`'s mark (its issuance failed and may be retried).
    pub(crate) fn release(&self, key: &Key) {
        if let Some(mut shard) = self.shard(key)
            && shard.marks.remove(key).is_some()
        {
            self.give_back(1);
        }
    }
}
