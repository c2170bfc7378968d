//! Worker sessions remembered between calls.
//!
//! Every launcher call carries its session token, and an idle launcher
//! calls every few seconds (a heartbeat, a long-poll). Looking the session
//! up in the database each time was the largest part of what an idle worker
//! cost the control plane, so a replica keeps what it looked up.
//!
//! A remembered session is a copy, never the truth, and it is dropped
//! whenever it could have changed:
//! - a worker's session changes only through what also instructs it
//!   (drain, undrain, pool reset, cycle or delete, deregistration), and
//!   every such change goes through `Signals::instruct_worker`, here and,
//!   relayed by NOTIFY, on every other replica: that forgets the worker's
//!   sessions ([`SessionCache::forget_worker`]);
//! - when the relay may have lost messages, everything is forgotten
//!   ([`SessionCache::clear`]);
//! - a session past its expiry is never used, and no copy is used after
//!   [`MAX_AGE`], which bounds how long a change whose notification was lost
//!   (a failed NOTIFY) can go unseen on another replica.
//!
//! A lookup that raced a change must not store what it read before the
//! change: every forget bumps an epoch, and a lookup stores its answer only
//! if no forget happened since it began.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use gantry_store::SessionRecord;

/// The longest a remembered session is used without reading it again.
pub const MAX_AGE: Duration = Duration::from_secs(30);

/// The smallest size worth a sweep of old entries.
const MIN_SWEEP: usize = 1024;

#[derive(Default)]
pub struct SessionCache {
    map: Mutex<CacheMap>,
    /// Bumped by every forget; see the module comment.
    epoch: AtomicU64,
}

#[derive(Default)]
struct CacheMap {
    by_token: HashMap<String, Remembered>,
    /// Each worker's remembered token hashes (one, or two while a session
    /// is being rotated), so forgetting a worker costs O(1).
    by_worker: HashMap<String, Vec<String>>,
    /// Swept of old entries at this size: twice what the last sweep left.
    sweep_at: usize,
}

struct Remembered {
    record: SessionRecord,
    read_at: Instant,
}

/// Taken before a database lookup, handed back to [`SessionCache::remember`].
#[derive(Clone, Copy)]
pub struct LookupTicket(u64);

impl SessionCache {
    /// The remembered session for this token, if it is fresh and unexpired.
    pub fn get(&self, token_hash: &str, now_ms: i64) -> Option<SessionRecord> {
        let map = self.map.lock().expect("session cache lock");
        let remembered = map.by_token.get(token_hash)?;
        (remembered.read_at.elapsed() < MAX_AGE && remembered.record.expires_at > now_ms)
            .then(|| remembered.record.clone())
    }

    /// Marks the start of a database lookup.
    pub fn ticket(&self) -> LookupTicket {
        LookupTicket(self.epoch.load(Ordering::Acquire))
    }

    /// Remembers what a lookup read, unless something was forgotten since
    /// it began (what it read may be older than that change).
    pub fn remember(&self, ticket: LookupTicket, token_hash: &str, record: &SessionRecord) {
        let mut map = self.map.lock().expect("session cache lock");
        // Checked under the lock: a forget bumps the epoch under it too.
        if self.epoch.load(Ordering::Acquire) != ticket.0 {
            return;
        }
        if map.by_token.len() >= map.sweep_at.max(MIN_SWEEP) {
            map.sweep();
        }
        let worker_tokens = map.by_worker.entry(record.worker_id.clone()).or_default();
        if !worker_tokens.iter().any(|t| t == token_hash) {
            worker_tokens.push(token_hash.to_string());
        }
        map.by_token.insert(
            token_hash.to_string(),
            Remembered {
                record: record.clone(),
                read_at: Instant::now(),
            },
        );
    }

    /// Forgets a worker's sessions: something about it changed.
    pub fn forget_worker(&self, worker_id: &str) {
        let mut map = self.map.lock().expect("session cache lock");
        self.epoch.fetch_add(1, Ordering::AcqRel);
        if let Some(tokens) = map.by_worker.remove(worker_id) {
            for token in tokens {
                map.by_token.remove(&token);
            }
        }
    }

    /// Forgets everything: changes may have gone unheard.
    pub fn clear(&self) {
        let mut map = self.map.lock().expect("session cache lock");
        self.epoch.fetch_add(1, Ordering::AcqRel);
        map.by_token.clear();
        map.by_worker.clear();
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.lock().unwrap().by_token.len()
    }
}

impl CacheMap {
    /// Drops entries too old to be used (workers that vanished, sessions
    /// rotated away), so the map holds about the live workers.
    fn sweep(&mut self) {
        self.by_token
            .retain(|_, remembered| remembered.read_at.elapsed() < MAX_AGE);
        let by_token = &self.by_token;
        self.by_worker.retain(|_, tokens| {
            tokens.retain(|t| by_token.contains_key(t));
            !tokens.is_empty()
        });
        self.sweep_at = self.by_token.len() * 2;
    }
}

#[cfg(test)]
mod tests {
    use gantry_store::SessionRecord;

    use super::SessionCache;

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
        let cache = SessionCache::default();
        let ticket = cache.ticket();
        cache.remember(ticket, "token", &session("w1", 1_000));
        assert_eq!(cache.get("token", 999).unwrap().worker_id, "w1");
        assert!(cache.get("token", 1_000).is_none(), "expired");
        assert!(cache.get("other", 0).is_none());
    }

    #[test]
    fn forgetting_a_worker_drops_all_its_sessions_and_no_other() {
        let cache = SessionCache::default();
        cache.remember(cache.ticket(), "old", &session("w1", 1_000));
        cache.remember(cache.ticket(), "rotated", &session("w1", 2_000));
        cache.remember(cache.ticket(), "theirs", &session("w2", 1_000));
        cache.forget_worker("w1");
        assert!(cache.get("old", 0).is_none());
        assert!(cache.get("rotated", 0).is_none());
        assert!(cache.get("theirs", 0).is_some());
        cache.clear();
        assert!(cache.get("theirs", 0).is_none());
    }

    #[test]
    fn a_lookup_that_raced_a_change_is_not_remembered() {
        let cache = SessionCache::default();
        // A call reads the session (not yet drained)...
        let ticket = cache.ticket();
        // ...an operator drains the worker meanwhile...
        cache.forget_worker("w1");
        // ...and what the call read must not outlive the drain.
        cache.remember(ticket, "token", &session("w1", 1_000));
        assert!(cache.get("token", 0).is_none());
        // The next lookup, begun after the change, is remembered.
        cache.remember(cache.ticket(), "token", &session("w1", 1_000));
        assert!(cache.get("token", 0).is_some());
    }

    #[test]
    fn the_map_is_swept_of_stale_entries() {
        let cache = SessionCache::default();
        for i in 0..5_000 {
            cache.remember(
                cache.ticket(),
                &format!("t{i}"),
                &session(&format!("w{i}"), i64::MAX),
            );
        }
        // All fresh: none may go.
        assert_eq!(cache.len(), 5_000);
        {
            let mut map = cache.map.lock().unwrap();
            for remembered in map.by_token.values_mut() {
                remembered.read_at = remembered.read_at.checked_sub(super::MAX_AGE).unwrap();
            }
        }
        // The next sweep comes at twice what the last one left (4,096).
        for i in 0..3_200 {
            cache.remember(
                cache.ticket(),
                &format!("f{i}"),
                &session(&format!("f{i}"), i64::MAX),
            );
        }
        assert!(cache.len() < 5_000, "{} entries after a sweep", cache.len());
        assert!(cache.get("f3199", 0).is_some());
        assert!(cache.get("t0", 0).is_none());
    }
}
