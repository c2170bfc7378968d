//! What a replica remembers between launcher calls: workers' sessions,
//! which workers have no stop pending, and which pools have no run to
//! claim.
//!
//! An idle launcher calls every few seconds (a heartbeat, a long-poll), and
//! each call used to read its session, its pending stops and its pool's
//! claimable runs from the database. Those reads, each a hand-off to a
//! database connection, were most of what an idle worker cost the control
//! plane.
//!
//! What is remembered is a copy, never the truth, and it is forgotten
//! whenever it could have changed:
//! - a worker's session and its stops change only through what also
//!   instructs it (drain, undrain, stop, pool reset, cycle or delete,
//!   deregistration), and every such change goes through
//!   `Signals::instruct_worker`, here and, relayed by NOTIFY, on every other
//!   replica: that forgets the worker ([`WorkerCache::forget_worker`]);
//! - when the relay may have lost messages, everything is forgotten
//!   ([`WorkerCache::clear`]);
//! - a session past its expiry is never used, and nothing is used after
//!   [`MAX_AGE`]: a last bound, for a change whose notification went
//!   missing (the relay retries a NOTIFY the database refused, and forgets
//!   everything when its own connection drops, so that takes a bug). A
//!   pool's "nothing to claim" is kept at most [`CLAIM_MAX_AGE`]: what it
//!   would hide is a run, not a revocation, and a missed wake-up should
//!   cost a run no more than half a minute.
//!
//! - a pool gets a run to claim only through what also wakes its pollers
//!   (`Signals::run_ready`, relayed likewise): that forgets the pool
//!   ([`WorkerCache::forget_pool`]).
//!
//! Only the absence of stops is remembered: a stop list is always read
//! afresh, since a stop leaves it when its run ends, which instructs nobody.
//!
//! A read that raced a change must not store what it read before the
//! change: every forget bumps an epoch, and a read stores its answer only
//! if no forget happened since it began.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use gantry_store::SessionRecord;

/// The longest a session or a worker's "no stop pending" is used without
/// reading it again.
pub const MAX_AGE: Duration = Duration::from_secs(300);
/// The longest a pool's "nothing to claim" is used without looking again.
pub const CLAIM_MAX_AGE: Duration = Duration::from_secs(30);

/// The smallest size worth a sweep of old entries.
const MIN_SWEEP: usize = 1024;

#[derive(Default)]
pub struct WorkerCache {
    map: Mutex<CacheMap>,
    /// Bumped by every forget; see the module comment.
    epoch: AtomicU64,
}

#[derive(Default)]
struct CacheMap {
    sessions: HashMap<String, Remembered>,
    workers: HashMap<String, WorkerFacts>,
    /// When each pool's claimable runs were last looked for and none found.
    nothing_to_claim: HashMap<String, Instant>,
    /// Swept of old entries at this size: twice what the last sweep left.
    sweep_at: usize,
}

struct Remembered {
    record: SessionRecord,
    read_at: Instant,
}

#[derive(Default)]
struct WorkerFacts {
    /// The worker's remembered session token hashes (one, or two while a
    /// session is being rotated), so forgetting a worker costs O(1).
    tokens: Vec<String>,
    /// When its stop list was last read and found empty.
    no_stops_at: Option<Instant>,
}

fn fresh(read_at: Instant) -> bool {
    read_at.elapsed() < MAX_AGE
}

fn fresh_claim(looked_at: Instant) -> bool {
    looked_at.elapsed() < CLAIM_MAX_AGE
}

/// Taken before a database read, handed back to `remember_*`.
#[derive(Clone, Copy)]
pub struct ReadTicket(u64);

impl WorkerCache {
    /// The remembered session for this token, if it is fresh and unexpired.
    pub fn session(&self, token_hash: &str, now_ms: i64) -> Option<SessionRecord> {
        let map = self.map.lock().expect("worker cache lock");
        let remembered = map.sessions.get(token_hash)?;
        (fresh(remembered.read_at) && remembered.record.expires_at > now_ms)
            .then(|| remembered.record.clone())
    }

    /// Whether the worker's stop list was read empty, and nothing since
    /// could have added to it.
    pub fn no_stops_pending(&self, worker_id: &str) -> bool {
        let map = self.map.lock().expect("worker cache lock");
        map.workers
            .get(worker_id)
            .and_then(|facts| facts.no_stops_at)
            .is_some_and(fresh)
    }

    /// Whether the pool was found with no run to claim, and nothing since
    /// could have given it one.
    pub fn nothing_to_claim(&self, pool_id: &str) -> bool {
        let map = self.map.lock().expect("worker cache lock");
        map.nothing_to_claim
            .get(pool_id)
            .copied()
            .is_some_and(fresh)
    }

    /// Remembers that a claim in the pool found nothing.
    pub fn remember_nothing_to_claim(&self, ticket: ReadTicket, pool_id: &str) {
        let mut map = self.map.lock().expect("worker cache lock");
        if self.epoch.load(Ordering::Acquire) == ticket.0 {
            map.nothing_to_claim
                .insert(pool_id.to_string(), Instant::now());
        }
    }

    /// Forgets that the pool had nothing to claim: it may have now.
    pub fn forget_pool(&self, pool_id: &str) {
        let mut map = self.map.lock().expect("worker cache lock");
        self.epoch.fetch_add(1, Ordering::AcqRel);
        map.nothing_to_claim.remove(pool_id);
    }

    /// Marks the start of a database read.
    pub fn ticket(&self) -> ReadTicket {
        ReadTicket(self.epoch.load(Ordering::Acquire))
    }

    /// Remembers a session a read found.
    pub fn remember_session(&self, ticket: ReadTicket, token_hash: &str, record: &SessionRecord) {
        self.remember(ticket, &record.worker_id, |map, facts| {
            if !facts.tokens.iter().any(|t| t == token_hash) {
                facts.tokens.push(token_hash.to_string());
            }
            map.insert(
                token_hash.to_string(),
                Remembered {
                    record: record.clone(),
                    read_at: Instant::now(),
                },
            );
        });
    }

    /// Remembers that a read found no stop pending for the worker.
    pub fn remember_no_stops(&self, ticket: ReadTicket, worker_id: &str) {
        self.remember(ticket, worker_id, |_, facts| {
            facts.no_stops_at = Some(Instant::now())
        });
    }

    /// Stores what a read found, unless something was forgotten since it
    /// began (what it read may be older than that change).
    fn remember(
        &self,
        ticket: ReadTicket,
        worker_id: &str,
        store: impl FnOnce(&mut HashMap<String, Remembered>, &mut WorkerFacts),
    ) {
        let mut guard = self.map.lock().expect("worker cache lock");
        // Checked under the lock: a forget bumps the epoch under it too.
        if self.epoch.load(Ordering::Acquire) != ticket.0 {
            return;
        }
        let map = &mut *guard;
        if map.sessions.len() + map.workers.len() >= map.sweep_at.max(MIN_SWEEP) {
            map.sweep();
        }
        let facts = map.workers.entry(worker_id.to_string()).or_default();
        store(&mut map.sessions, facts);
    }

    /// Forgets everything about a worker: something about it changed.
    pub fn forget_worker(&self, worker_id: &str) {
        let mut map = self.map.lock().expect("worker cache lock");
        self.epoch.fetch_add(1, Ordering::AcqRel);
        if let Some(facts) = map.workers.remove(worker_id) {
            for token in facts.tokens {
                map.sessions.remove(&token);
            }
        }
    }

    /// Forgets everything: changes may have gone unheard.
    pub fn clear(&self) {
        let mut map = self.map.lock().expect("worker cache lock");
        self.epoch.fetch_add(1, Ordering::AcqRel);
        map.sessions.clear();
        map.workers.clear();
        map.nothing_to_claim.clear();
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        let map = self.map.lock().unwrap();
        map.sessions.len() + map.workers.len()
    }
}

impl CacheMap {
    /// Drops what is too old to be used (workers that vanished, sessions
    /// rotated away), so the map holds about the live workers.
    fn sweep(&mut self) {
        self.sessions
            .retain(|_, remembered| fresh(remembered.read_at));
        let sessions = &self.sessions;
        self.workers.retain(|_, facts| {
            facts.tokens.retain(|t| sessions.contains_key(t));
            facts.no_stops_at = facts.no_stops_at.filter(|at| fresh(*at));
            !facts.tokens.is_empty() || facts.no_stops_at.is_some()
        });
        self.nothing_to_claim.retain(|_, at| fresh_claim(*at));
        self.sweep_at = (self.sessions.len() + self.workers.len()) * 2;
    }
}

#[cfg(test)]
mod tests {
    use gantry_store::SessionRecord;

    use super::WorkerCache;

    fn session(worker: &str, expires_at: i64) -> SessionRecord {
        SessionRecord {
            worker_id: worker.into(),
            pool_id: "pool".into(),
            drain: false,
            registered_at: 0,
            pool_cycled_at: None,
            expires_at,
        }
    }

    #[test]
    fn a_remembered_session_is_used_until_it_expires() {
        let cache = WorkerCache::default();
        cache.remember_session(cache.ticket(), "token", &session("w1", 1_000));
        assert_eq!(cache.session("token", 999).unwrap().worker_id, "w1");
        assert!(cache.session("token", 1_000).is_none(), "expired");
        assert!(cache.session("other", 0).is_none());
    }

    #[test]
    fn forgetting_a_worker_drops_all_it_knew_and_nothing_else() {
        let cache = WorkerCache::default();
        cache.remember_session(cache.ticket(), "old", &session("w1", 1_000));
        cache.remember_session(cache.ticket(), "rotated", &session("w1", 2_000));
        cache.remember_no_stops(cache.ticket(), "w1");
        cache.remember_session(cache.ticket(), "theirs", &session("w2", 1_000));
        cache.remember_no_stops(cache.ticket(), "w2");
        assert!(cache.no_stops_pending("w1"));
        cache.forget_worker("w1");
        assert!(cache.session("old", 0).is_none());
        assert!(cache.session("rotated", 0).is_none());
        assert!(!cache.no_stops_pending("w1"));
        assert!(cache.session("theirs", 0).is_some());
        assert!(cache.no_stops_pending("w2"));
        cache.clear();
        assert!(cache.session("theirs", 0).is_none());
        assert!(!cache.no_stops_pending("w2"));
    }

    #[test]
    fn a_pool_with_nothing_to_claim_is_forgotten_when_it_gets_a_run() {
        let cache = WorkerCache::default();
        cache.remember_nothing_to_claim(cache.ticket(), "p1");
        cache.remember_nothing_to_claim(cache.ticket(), "p2");
        assert!(cache.nothing_to_claim("p1"));
        // A run made READY in p1, here or on another replica.
        cache.forget_pool("p1");
        assert!(!cache.nothing_to_claim("p1"));
        assert!(cache.nothing_to_claim("p2"));
        // A claim that looked before the run came must not hide it.
        let ticket = cache.ticket();
        cache.forget_pool("p2");
        cache.remember_nothing_to_claim(ticket, "p2");
        assert!(!cache.nothing_to_claim("p2"));
        cache.remember_nothing_to_claim(cache.ticket(), "p2");
        cache.clear();
        assert!(!cache.nothing_to_claim("p2"));
    }

    #[test]
    fn a_read_that_raced_a_change_is_not_remembered() {
        let cache = WorkerCache::default();
        // A call reads the session (not yet drained) and no stops...
        let ticket = cache.ticket();
        // ...an operator drains the worker and stops its run meanwhile...
        cache.forget_worker("w1");
        // ...and what the call read must not outlive those changes.
        cache.remember_session(ticket, "token", &session("w1", 1_000));
        cache.remember_no_stops(ticket, "w1");
        assert!(cache.session("token", 0).is_none());
        assert!(!cache.no_stops_pending("w1"));
        // The next read, begun after the change, is remembered.
        cache.remember_session(cache.ticket(), "token", &session("w1", 1_000));
        assert!(cache.session("token", 0).is_some());
    }

    #[test]
    fn the_map_is_swept_of_stale_entries() {
        let cache = WorkerCache::default();
        for i in 0..2_500 {
            cache.remember_session(
                cache.ticket(),
                &format!("t{i}"),
                &session(&format!("w{i}"), i64::MAX),
            );
        }
        // All fresh: none may go (a session and its worker's facts each).
        assert_eq!(cache.len(), 5_000);
        {
            let mut map = cache.map.lock().unwrap();
            for remembered in map.sessions.values_mut() {
                remembered.read_at = remembered.read_at.checked_sub(super::MAX_AGE).unwrap();
            }
        }
        // The next sweep comes at twice what the last one left (8,192).
        for i in 0..1_600 {
            cache.remember_session(
                cache.ticket(),
                &format!("f{i}"),
                &session(&format!("f{i}"), i64::MAX),
            );
        }
        assert!(cache.len() < 5_000, "{} entries after a sweep", cache.len());
        assert!(cache.session("f1599", 0).is_some());
        assert!(cache.session("t0", 0).is_none());
    }
}
