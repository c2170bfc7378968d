//! In-process wake-ups for long-polls.
//!
//! A launcher's poll sleeps until its pool has a new run or the worker has a
//! new instruction; a log tail sleeps until its run has a new chunk. These
//! signals only make waits end early: every waiter re-reads the store after
//! waking, and every wait also ends on a timeout, so a lost signal costs
//! latency, never correctness. They are in-process: they work because one
//! control plane process owns the (SQLite) store. A store shared by several
//! replicas would have to feed them from the database (e.g. PostgreSQL's
//! LISTEN/NOTIFY); no such store exists yet.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

#[derive(Default)]
pub struct Signals {
    pools: Keyed,
    workers: Keyed,
    runs: Keyed,
}

#[derive(Default)]
struct Keyed(Mutex<HashMap<String, Arc<Notify>>>);

impl Keyed {
    fn get(&self, key: &str) -> Arc<Notify> {
        let mut map = self.0.lock().expect("signal map lock");
        map.entry(key.to_string()).or_default().clone()
    }

    fn existing(&self, key: &str) -> Option<Arc<Notify>> {
        self.0.lock().expect("signal map lock").get(key).cloned()
    }

    fn remove(&self, key: &str) {
        self.0.lock().expect("signal map lock").remove(key);
    }
}

impl Signals {
    /// Woken once per new READY run: one poller per run, not a stampede.
    pub fn pool(&self, pool_id: &str) -> Arc<Notify> {
        self.pools.get(pool_id)
    }

    pub fn run_ready(&self, pool_id: &str) {
        self.pools.get(pool_id).notify_one();
    }

    /// Woken when a worker has a new instruction (stop, drain, exit).
    pub fn worker(&self, worker_id: &str) -> Arc<Notify> {
        self.workers.get(worker_id)
    }

    pub fn instruct_worker(&self, worker_id: &str) {
        if let Some(notify) = self.workers.existing(worker_id) {
            notify.notify_waiters();
        }
    }

    pub fn instruct_pool_workers(&self, worker_ids: &[String]) {
        for id in worker_ids {
            self.instruct_worker(id);
        }
    }

    pub fn forget_worker(&self, worker_id: &str) {
        self.workers.remove(worker_id);
    }

    /// Woken when a run gets a log chunk or changes state.
    pub fn run(&self, run_id: &str) -> Arc<Notify> {
        self.runs.get(run_id)
    }

    pub fn run_changed(&self, run_id: &str) {
        if let Some(notify) = self.runs.existing(run_id) {
            notify.notify_waiters();
        }
    }

    pub fn run_ended(&self, run_id: &str) {
        self.run_changed(run_id);
        self.runs.remove(run_id);
    }
}
