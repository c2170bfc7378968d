//! In-process wake-ups for long-polls.
//!
//! A launcher's poll sleeps until its pool has a new run or the worker has a
//! new instruction; a log tail sleeps until its run has a new chunk. These
//! signals only make waits end early: every waiter re-reads the store after
//! waking, and every wait also ends on a timeout, so a lost signal costs
//! latency, never correctness.
//!
//! The pool and worker signals also keep what each replica remembers
//! between launcher calls fresh (`worker_cache`): whatever gives a pool a
//! run wakes its pollers, and whatever changes a session or a worker's
//! stops instructs the worker.
//!
//! Replicas on one PostgreSQL database relay them to each other
//! ([`relay_between_replicas`]): each signal is also published with
//! NOTIFY, and each replica applies what the others publish to its own
//! waiters. A run made READY on one replica thus wakes an idle poller on
//! another at once. When the listening connection drops, messages may be
//! lost, so every local waiter is woken to look at the store again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::{mpsc, Notify};

use crate::worker_cache::WorkerCache;

#[derive(Default)]
pub struct Signals {
    pools: Keyed,
    workers: Keyed,
    runs: Keyed,
    /// Set on PostgreSQL: where signals go to reach the other replicas.
    relay: OnceLock<Relay>,
    /// Kept fresh by the pool and worker signals, which announce every new
    /// run to claim and every change to a worker's session or stops (see
    /// `worker_cache`).
    pub worker_cache: WorkerCache,
}

struct Relay {
    /// This process's name in messages, to ignore its own.
    origin: String,
    outbox: mpsc::UnboundedSender<String>,
}

/// What a relayed message says (its first letter).
const POOL: char = 'p';
const WORKER: char = 'w';
const RUN: char = 'r';
const RUN_ENDED: char = 'e';
/// Everything may have changed: messages were lost (no ID follows).
const EVERYONE: char = '*';

/// Messages kept for sending again while the database refuses them; past
/// this, they are replaced by one [`EVERYONE`].
const MAX_UNSENT: usize = 10_000;

/// Entries live while someone holds them: every waiter keeps its `Arc`
/// for the length of its wait, so an entry only the map holds has nobody to
/// wake and is dropped. That covers ended runs whose log a tail re-opened,
/// workers that never deregistered (a crash, a lost host) and deleted
/// pools, none of which anything else would ever remove.
#[derive(Default)]
struct Keyed(Mutex<KeyedMap>);

#[derive(Default)]
struct KeyedMap {
    entries: HashMap<String, Arc<Notify>>,
    /// The size at which the map is next swept: twice what a sweep left,
    /// so sweeping costs O(1) per insert, amortised.
    sweep_at: usize,
}

/// The smallest size worth a sweep.
const MIN_SWEEP: usize = 64;

impl Keyed {
    fn get(&self, key: &str) -> Arc<Notify> {
        let mut map = self.0.lock().expect("signal map lock");
        if let Some(notify) = map.entries.get(key) {
            return notify.clone();
        }
        if map.entries.len() >= map.sweep_at.max(MIN_SWEEP) {
            // Held only by the map: no waiter. (A pool's stored permit may
            // go with it; a poller claims before it waits, so that costs
            // nothing.)
            map.entries
                .retain(|_, notify| Arc::strong_count(notify) > 1);
            map.sweep_at = map.entries.len() * 2;
        }
        map.entries.entry(key.to_string()).or_default().clone()
    }

    fn existing(&self, key: &str) -> Option<Arc<Notify>> {
        let mut map = self.0.lock().expect("signal map lock");
        let notify = map.entries.get(key)?;
        if Arc::strong_count(notify) == 1 {
            // Nobody waits on it: nothing to wake, and nothing to keep.
            map.entries.remove(key);
            return None;
        }
        Some(notify.clone())
    }

    fn remove(&self, key: &str) {
        self.0.lock().expect("signal map lock").entries.remove(key);
    }

    /// Wakes every waiter: after messages may have been lost.
    fn wake_all(&self) {
        for notify in self.0.lock().expect("signal map lock").entries.values() {
            notify.notify_waiters();
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.lock().expect("signal map lock").entries.len()
    }
}

impl Signals {
    /// Woken once per new READY run: one poller per run, not a stampede.
    pub fn pool(&self, pool_id: &str) -> Arc<Notify> {
        self.pools.get(pool_id)
    }

    pub fn run_ready(&self, pool_id: &str) {
        self.publish(POOL, pool_id);
        self.wake_pool(pool_id);
    }

    fn wake_pool(&self, pool_id: &str) {
        self.worker_cache.forget_pool(pool_id);
        self.pools.get(pool_id).notify_one();
    }

    /// Woken when a worker has a new instruction (stop, drain, exit).
    pub fn worker(&self, worker_id: &str) -> Arc<Notify> {
        self.workers.get(worker_id)
    }

    pub fn instruct_worker(&self, worker_id: &str) {
        self.publish(WORKER, worker_id);
        self.wake_worker(worker_id);
    }

    fn wake_worker(&self, worker_id: &str) {
        self.worker_cache.forget_worker(worker_id);
        if let Some(notify) = self.workers.existing(worker_id) {
            notify.notify_waiters();
        }
    }

    pub fn instruct_pool_workers(&self, worker_ids: &[String]) {
        for id in worker_ids {
            self.instruct_worker(id);
        }
    }

    /// The worker left: its sessions end here and on the other replicas.
    pub fn worker_gone(&self, worker_id: &str) {
        self.instruct_worker(worker_id);
        self.workers.remove(worker_id);
    }

    /// Woken when a run gets a log chunk or changes state.
    pub fn run(&self, run_id: &str) -> Arc<Notify> {
        self.runs.get(run_id)
    }

    pub fn run_changed(&self, run_id: &str) {
        self.publish(RUN, run_id);
        self.wake_run(run_id);
    }

    fn wake_run(&self, run_id: &str) {
        if let Some(notify) = self.runs.existing(run_id) {
            notify.notify_waiters();
        }
    }

    pub fn run_ended(&self, run_id: &str) {
        self.publish(RUN_ENDED, run_id);
        self.end_run(run_id);
    }

    fn end_run(&self, run_id: &str) {
        self.wake_run(run_id);
        self.runs.remove(run_id);
    }

    fn publish(&self, kind: char, id: &str) {
        if let Some(relay) = self.relay.get() {
            let _ = relay.outbox.send(format!("{}{kind}{id}", relay.origin));
        }
    }

    /// Applies a message another replica published (a message is its
    /// origin, 26 characters, then a kind letter, then an ID).
    fn apply(&self, message: &str) {
        let Some(relay) = self.relay.get() else {
            return;
        };
        if message.starts_with(&relay.origin) {
            return; // our own: already applied here
        }
        let Some(body) = message.get(relay.origin.len()..) else {
            return;
        };
        let mut chars = body.chars();
        let Some(kind) = chars.next() else {
            return;
        };
        let id = chars.as_str();
        match kind {
            POOL => self.wake_pool(id),
            WORKER => self.wake_worker(id),
            RUN => self.wake_run(id),
            RUN_ENDED => self.end_run(id),
            EVERYONE => self.wake_everyone(),
            _ => {}
        }
    }

    fn wake_everyone(&self) {
        self.worker_cache.clear();
        self.pools.wake_all();
        self.workers.wake_all();
        self.runs.wake_all();
    }
}

/// Relays signals to and from the other replicas on the database at `url`.
pub async fn relay_between_replicas(signals: &Arc<Signals>, url: &str) -> anyhow::Result<()> {
    use anyhow::Context;
    use gantry_store::sql::replicas::Notifications;

    let notifications = Arc::new(
        Notifications::connect(url)
            .await
            .context("--database-url: cannot connect for notifications")?,
    );
    let mut subscription = notifications
        .subscribe()
        .await
        .context("--database-url: cannot LISTEN")?;
    let (outbox, mut sent) = mpsc::unbounded_channel::<String>();
    let origin = ulid::Ulid::new().to_string();
    if signals.relay.set(Relay { origin, outbox }).is_err() {
        anyhow::bail!("signals are already relayed");
    }
    // Out: everything queued since the last send goes in one NOTIFY round
    // trip. What cannot be sent is kept and sent again: the other replicas'
    // worker caches rely on hearing every change (see `worker_cache`).
    let everyone = format!(
        "{}{EVERYONE}",
        signals.relay.get().expect("set above").origin
    );
    tokio::spawn(async move {
        let mut batch = Vec::new();
        let mut failing_since: Option<std::time::Instant> = None;
        while sent.recv_many(&mut batch, 512).await > 0 {
            loop {
                match notifications.publish(&batch).await {
                    Ok(()) => {
                        if let Some(since) = failing_since.take() {
                            tracing::info!(after = ?since.elapsed(), "the other replicas are notified again");
                        }
                        break;
                    }
                    Err(error) => {
                        if failing_since.is_none() {
                            tracing::warn!(%error, messages = batch.len(), "cannot notify the other replicas; retrying every second");
                            failing_since = Some(std::time::Instant::now());
                        }
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                        // Take what queued meanwhile; past a bound, one
                        // message says it all.
                        while let Ok(message) = sent.try_recv() {
                            batch.push(message);
                        }
                        if batch.len() > MAX_UNSENT {
                            batch = vec![everyone.clone()];
                        }
                        batch.sort();
                        batch.dedup();
                    }
                }
            }
            batch.clear();
        }
    });
    // In.
    let signals = signals.clone();
    tokio::spawn(async move {
        loop {
            match subscription.next().await {
                Ok(Some(message)) => signals.apply(&message),
                Ok(None) => {
                    tracing::warn!(
                        "the notification connection dropped; waking every waiter to look again"
                    );
                    signals.wake_everyone();
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for the other replicas' notifications; retrying");
                    signals.wake_everyone();
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{Signals, MIN_SWEEP};

    #[test]
    fn entries_nobody_waits_on_are_dropped() {
        let signals = Signals::default();
        for i in 0..10_000 {
            // A log tail of a run that ended (its entry re-made after
            // `run_ended` removed it), and a poll of a worker that then
            // vanished without deregistering.
            let run = format!("run-{i}");
            signals.run_ended(&run);
            drop(signals.run(&run));
            drop(signals.worker(&format!("worker-{i}")));
            signals.run_ready(&format!("pool-{i}"));
        }
        assert!(
            signals.runs.len() <= MIN_SWEEP,
            "{} run entries",
            signals.runs.len()
        );
        assert!(
            signals.workers.len() <= MIN_SWEEP,
            "{} worker entries",
            signals.workers.len()
        );
        assert!(
            signals.pools.len() <= MIN_SWEEP,
            "{} pool entries",
            signals.pools.len()
        );
        // Signalling an entry nobody holds drops it at once.
        drop(signals.worker("gone"));
        signals.instruct_worker("gone");
        assert!(!signals
            .workers
            .0
            .lock()
            .unwrap()
            .entries
            .contains_key("gone"));
    }

    #[tokio::test]
    async fn a_waiter_keeps_its_entry_through_sweeps_and_is_woken() {
        let signals = Signals::default();
        let held = signals.worker("polling");
        let woken = held.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        for i in 0..10_000 {
            drop(signals.worker(&format!("worker-{i}")));
        }
        signals.instruct_worker("polling");
        tokio::time::timeout(Duration::from_secs(1), woken)
            .await
            .expect("the waiter was woken");
    }
}
