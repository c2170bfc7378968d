//! The runs in flight, remembered on disk. If the launcher dies (SIGKILL,
//! OOM, a crash) its runs die with it; the next launcher started on the same
//! work directory finds them here, registers again as the same worker, and
//! ends each one itself (see `recovery`): it uploads what the dead launcher
//! had spooled but not sent, and any state Terraform could not save, then
//! reports the run failed with a clear reason, instead of leaving it to wait
//! out its lease.
//!
//! A record holds the whole lease (its secrets are sealed to the pool's key,
//! but its state credential is not), so the directory is the launcher's
//! alone (0700) and each record 0600.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use gantry_wire::worker::{OrphanedRun, RunLease};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

pub struct InFlightRuns {
    dir: PathBuf,
    _lock: Flock<File>,
}

/// What a launcher knew of a run in flight.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InFlight {
    pub lease: RunLease,
    /// The worker that held the lease: the next launcher resumes it.
    pub worker_id: String,
}

impl InFlight {
    pub fn orphan(&self) -> OrphanedRun {
        OrphanedRun {
            run_id: self.lease.run_id.clone(),
            lease_id: self.lease.lease_id.clone(),
        }
    }
}

/// The name everything about one lease of a run goes by on disk.
pub fn lease_key(lease: &RunLease) -> String {
    format!("{}.{}", lease.run_id, lease.lease_id)
}

impl InFlightRuns {
    /// Locks the work directory: two launchers must not share one.
    pub fn open(work_dir: &Path) -> Result<InFlightRuns, String> {
        let dir = work_dir.join("in-flight");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| format!("GANTRY_WORK_DIR: cannot create {}: {e}", dir.display()))?;
        let lock_path = work_dir.join("launcher.lock");
        let file = File::create(&lock_path).map_err(|e| {
            format!(
                "GANTRY_WORK_DIR: cannot create {}: {e}",
                lock_path.display()
            )
        })?;
        let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|_| {
            format!(
                "GANTRY_WORK_DIR: {} is in use by another launcher; give each launcher on a host its own work directory",
                work_dir.display()
            )
        })?;
        Ok(InFlightRuns { dir, _lock: lock })
    }

    /// The runs a previous launcher left in flight. Records an older launcher
    /// wrote (run and lease IDs only) come back without a worker ID.
    pub fn left_behind(&self) -> Vec<InFlight> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .filter_map(|entry| {
                let path = entry.ok()?.path();
                let text = std::fs::read_to_string(&path).ok()?;
                if let Ok(record) = serde_json::from_str::<InFlight>(&text) {
                    return Some(record);
                }
                let old = serde_json::from_str::<OrphanedRun>(&text).ok()?;
                // Nothing to recover from it but the report: forget it now.
                let _ = std::fs::remove_file(&path);
                Some(InFlight {
                    lease: RunLease {
                        run_id: old.run_id,
                        lease_id: old.lease_id,
                        run_type: gantry_wire::run::RunType::Task,
                        command: Vec::new(),
                        env: Default::default(),
                        image: None,
                        stack: None,
                    },
                    worker_id: String::new(),
                })
            })
            .collect()
    }

    pub fn remember(&self, lease: &RunLease, worker_id: &str) {
        let record = InFlight {
            lease: lease.clone(),
            worker_id: worker_id.to_string(),
        };
        let path = self.dir.join(format!("{}.json", lease_key(lease)));
        let written = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .and_then(|mut file| file.write_all(&serde_json::to_vec(&record).expect("serialises")));
        if let Err(error) = written {
            tracing::warn!(%error, path = %path.display(), "cannot record the run in flight");
        }
    }

    pub fn forget(&self, lease: &RunLease) {
        let _ = std::fs::remove_file(self.dir.join(format!("{}.json", lease_key(lease))));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(run: &str, lease: &str) -> RunLease {
        RunLease {
            run_id: run.into(),
            lease_id: lease.into(),
            run_type: gantry_wire::run::RunType::Task,
            command: vec!["true".into()],
            env: Default::default(),
            image: None,
            stack: None,
        }
    }

    #[test]
    fn a_run_in_flight_is_found_by_the_next_launcher_with_its_lease_and_worker() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let first = InFlightRuns::open(dir.path()).unwrap();
        assert!(
            InFlightRuns::open(dir.path()).is_err(),
            "one launcher per work directory"
        );
        first.remember(&lease("r1", "l1"), "w1");
        first.remember(&lease("r1", "l2"), "w1");
        first.forget(&lease("r1", "l2"));
        let record = dir.path().join("in-flight/r1.l1.json");
        assert_eq!(
            std::fs::metadata(&record).unwrap().permissions().mode() & 0o777,
            0o600
        );
        drop(first);

        let next = InFlightRuns::open(dir.path()).unwrap();
        let found = next.left_behind();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].lease.lease_id, "l1");
        assert_eq!(found[0].worker_id, "w1");
        assert_eq!(found[0].lease.command, ["true"]);
    }
}
